/**
 * Upload capabilities: what authorizes a request on the upload host (lib/http/app.ts, upload
 * host mode). The registry API hands one out in the Location of an upload it starts, after
 * authorizing the caller as usual; the upload host then trusts the capability alone, because
 * containerd and go-containerregistry send no credentials to a host other than the registry's.
 *
 * A capability is a JWT signed with the token keys (HS256, `kid`-selected, so key rotation works
 * the same way as for tokens) over one repository, one upload id and the push right, expiring
 * with the upload (at most the upload TTL). Its audience is `<service>:upload`, so a registry
 * bearer token is never accepted as a capability, nor a capability as a bearer token. A leaked
 * Location therefore lets its holder write to (or cancel) that one upload until it expires, and
 * nothing else: it cannot read blobs, start uploads, or touch another repository or upload.
 */
import { RegistryError } from '../oci/errors.js';
import { InvalidToken, type TokenService } from './tokens.js';

/** The query parameter that carries the capability in an upload Location. */
export const CAPABILITY_PARAM = '_cap';

export interface CapabilitySettings {
  service: string;
  /** Lifetime of a capability: the upload TTL (an upload expires this long after its last write). */
  ttlSeconds: number;
}

/** What a valid capability grants beyond the upload itself. */
export interface Grant {
  /** The registry's origin, for the finished blob's Location (absent: a relative Location). */
  registry?: string;
}

export class UploadCapabilities {
  constructor(
    private readonly tokens: () => Promise<TokenService>,
    private readonly settings: CapabilitySettings,
    private readonly now: () => number = Date.now,
  ) {}

  private get audience(): string {
    return `${this.settings.service}:upload`;
  }

  /**
   * A capability to push to upload `id` of `repo`; `ttlSeconds` overrides the lifetime (at most
   * the upload TTL). `registry` is the registry's origin as the client reached it: the upload
   * host names the finished blob there (it does not know that address itself).
   */
  async issue(repo: string, id: string, opts: { ttlSeconds?: number; registry?: string } = {}): Promise<string> {
    const expiresAt = Math.floor(this.now() / 1000) + Math.min(opts.ttlSeconds ?? this.settings.ttlSeconds, this.settings.ttlSeconds);
    const claims: Record<string, unknown> = { repo, upload: id, actions: ['push'] };
    if (opts.registry) claims.reg = opts.registry;
    return (await this.tokens()).sign(claims, { subject: id, audience: this.audience, expiresAt });
  }

  /**
   * Throws unless `token` is a valid capability for exactly this repository (as sent in the
   * path) and upload. Every refusal is the same 401, so a caller learns nothing about why (or
   * whether the upload exists). Answers what the capability says beyond that: the registry's origin.
   */
  async check(token: string | null, repo: string, id: string): Promise<Grant> {
    if (!token) throw refused();
    let claims: Record<string, unknown>;
    try {
      claims = await (await this.tokens()).verifyClaims(token, this.audience);
    } catch (err) {
      if (err instanceof InvalidToken) throw refused();
      throw err;
    }
    const actions = claims.actions;
    if (claims.repo !== repo || claims.upload !== id || claims.sub !== id || !Array.isArray(actions) || !actions.includes('push')) throw refused();
    return { registry: typeof claims.reg === 'string' ? claims.reg : undefined };
  }
}

function refused(): RegistryError {
  return new RegistryError('UNAUTHORIZED', 'this upload host needs the upload capability from the Location the registry returned; it is missing, not valid, or expired');
}
