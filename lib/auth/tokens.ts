/**
 * Registry bearer tokens: short-lived JWTs (jose, HS256) carrying the granted access, in the
 * Docker registry token format. Several keys are accepted for verification and the first signs,
 * so a key can be rotated without downtime: add the new one first, retire the old one after a
 * token lifetime.
 */
import { randomUUID } from 'node:crypto';
import type { Access } from './access.js';

/** jose is loaded on the first token operation: an open registry never pays for it at cold start. */
const jose = () => import('jose');

export interface TokenKey {
  kid: string;
  secret: Uint8Array;
}

/** `kid=base64url-secret[,kid=secret...]`; every secret at least 32 bytes. */
export function parseKeys(spec: string): TokenKey[] {
  const keys = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry) => {
      const eq = entry.indexOf('=');
      if (eq <= 0) throw new Error('token keys must be "kid=secret" pairs separated by commas');
      const kid = entry.slice(0, eq);
      const secret = Buffer.from(entry.slice(eq + 1), 'base64url');
      if (secret.length < 32) throw new Error(`token key "${kid}" is shorter than 32 bytes`);
      return { kid, secret: new Uint8Array(secret) };
    });
  if (!keys.length) throw new Error('no token keys given');
  if (new Set(keys.map((k) => k.kid)).size !== keys.length) throw new Error('token key ids must be unique');
  return keys;
}

export interface TokenSettings {
  issuer: string;
  service: string;
  ttlSeconds: number;
}

export interface Issued {
  token: string;
  expiresIn: number;
  issuedAt: string;
}

export interface Verified {
  subject: string;
  access: Access[];
}

export class InvalidToken extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'InvalidToken';
  }
}

export class TokenService {
  constructor(
    private readonly keys: TokenKey[],
    readonly settings: TokenSettings,
  ) {}

  async issue(subject: string, access: Access[]): Promise<Issued> {
    const now = Math.floor(Date.now() / 1000);
    const token = await this.sign({ access }, { subject, audience: this.settings.service, expiresAt: now + this.settings.ttlSeconds });
    return { token, expiresIn: this.settings.ttlSeconds, issuedAt: new Date(now * 1000).toISOString() };
  }

  async verify(token: string): Promise<Verified> {
    const payload = await this.verifyClaims(token, this.settings.service);
    return { subject: payload.sub!, access: accessClaim(payload.access) };
  }

  /**
   * Signs `claims` with the current key for `audience`. Other kinds of token (the upload
   * capability, lib/auth/capability.ts) use this with an audience of their own, so that no token
   * of one kind verifies as another.
   */
  async sign(claims: Record<string, unknown>, opts: { subject: string; audience: string; expiresAt: number }): Promise<string> {
    const signer = this.keys[0]!;
    const now = Math.floor(Date.now() / 1000);
    const { SignJWT } = await jose();
    return new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', kid: signer.kid, typ: 'JWT' })
      .setIssuer(this.settings.issuer)
      .setSubject(opts.subject)
      .setAudience(opts.audience)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(opts.expiresAt)
      .setJti(randomUUID())
      .sign(signer.secret);
  }

  /** The claims of a token signed by one of the keys (by `kid`) for exactly `audience`; InvalidToken otherwise. */
  async verifyClaims(token: string, audience: string): Promise<import('jose').JWTPayload> {
    const { jwtVerify } = await jose();
    try {
      const { payload } = await jwtVerify(
        token,
        (header) => {
          const key = this.keys.find((k) => k.kid === header.kid);
          if (!key) throw new InvalidToken('token signed with an unknown key');
          return key.secret;
        },
        { algorithms: ['HS256'], issuer: this.settings.issuer, audience, clockTolerance: 5, requiredClaims: ['exp', 'sub', 'iat'] },
      );
      return payload;
    } catch (err) {
      if (err instanceof InvalidToken) throw err;
      throw new InvalidToken(describe(err));
    }
  }
}

function accessClaim(value: unknown): Access[] {
  if (!Array.isArray(value)) throw new InvalidToken('token has no access claim');
  return value.map((a) => {
    if (typeof a !== 'object' || a === null) throw new InvalidToken('malformed access claim');
    const { type, name, actions } = a as Record<string, unknown>;
    if ((type !== 'repository' && type !== 'registry') || typeof name !== 'string' || !Array.isArray(actions) || actions.some((x) => typeof x !== 'string')) {
      throw new InvalidToken('malformed access claim');
    }
    return { type, name, actions: actions as string[] };
  });
}

function describe(err: unknown): string {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'ERR_JWT_EXPIRED') return 'token expired';
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') return `token ${(err as { claim?: string }).claim ?? 'claim'} is not valid here`;
  if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return 'token signature is not valid';
  if (code === 'ERR_JOSE_ALG_NOT_ALLOWED') return 'token algorithm is not accepted';
  return 'token is malformed';
}
