/**
 * Who is calling, and may they do this. Callers are anonymous, a user with a password (HTTP
 * Basic, on the registry itself or at the token endpoint), or the bearer of a token from the
 * token endpoint. Anonymous callers have the grants given to the user `anonymous` (public pull);
 * users have theirs plus those; a token has exactly the access it carries (plus anonymous).
 *
 * Refusals follow the Docker token flow: an anonymous caller gets 401 with a Bearer challenge
 * naming the realm, service and scope to ask for; a token without the needed scope gets 401
 * with error="insufficient_scope" (the client asks for a new one); a user whose grants do not
 * allow the action gets 403 DENIED.
 *
 * Logins are limited per source address, so that a guesser slows only their own guessing and
 * never locks a user out everywhere. Before a password is checked, the attempt is reserved with
 * a conditional increment of two counters: the name at this source (`failureLimit`) and every
 * name at this source (`sourceFailureLimit`, the budget for made-up names and for spraying one
 * password over many users). A full counter refuses the attempt outright (429) until its window
 * ends; a right password gives its reservation back. Real and made-up names take exactly the
 * same steps (the same reads and writes, then one scrypt), so neither the answer nor its timing
 * tells them apart. At most `verifyConcurrency` scrypts run at once (see gate.ts).
 */
import { createHash } from 'node:crypto';
import type { Config } from '../config.js';
import { RegistryError } from '../oci/errors.js';
import type { UserStore } from '../metadata/types.js';
import { type Access, type Action, type Grant, allowedActions, scopeString } from './access.js';
import { VerificationGate } from './gate.js';
import { verifyPassword } from './passwords.js';
import { InvalidToken, type TokenService } from './tokens.js';

export const ANONYMOUS = 'anonymous';
const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;

export function isValidUserName(name: string): boolean {
  return USER_NAME.test(name) && name !== ANONYMOUS;
}

export interface Principal {
  /** The authenticated user; undefined when anonymous. */
  user?: string;
  via: 'anonymous' | 'basic' | 'bearer';
  /** Grants in force: the user's and the anonymous ones. */
  grants: Grant[];
  /** For a bearer: the access its token carries. */
  access?: Access[];
}

export interface AuthSettings {
  service: string;
  /** Absolute token endpoint URL; derived from the request's host when unset. */
  realm?: string;
  failureLimit: number;
  /** Failed logins from one source, whatever the names, within the window. */
  sourceFailureLimit: number;
  failureWindowMs: number;
  /** Password verifications running at once, and callers that may wait for one. */
  verifyConcurrency: number;
  verifyQueue: number;
  /** How long a verified password (and its grants) is trusted without checking again. */
  cacheMs: number;
  /** CIDRs of proxies whose X-Forwarded-For/-Host/-Proto are believed (see lib/http/forwarded.ts). */
  trustedProxies: string[];
}

export function authSettings(c: Config['auth']): AuthSettings {
  return {
    service: c.service,
    realm: c.realm,
    failureLimit: c.failureLimit,
    sourceFailureLimit: c.sourceFailureLimit,
    failureWindowMs: c.failureWindowSeconds * 1000,
    cacheMs: c.cacheSeconds * 1000,
    verifyConcurrency: c.verifyConcurrency,
    verifyQueue: c.verifyQueue,
    trustedProxies: c.trustedProxies,
  };
}

interface Cached {
  user: string;
  grants: Grant[];
  until: number;
}

export class Authorizer {
  private readonly verified = new Map<string, Cached>();
  private readonly userGrantCache = new Map<string, { grants: Grant[]; until: number }>();
  private readonly gate: VerificationGate;
  private anonymous: { grants: Grant[]; until: number } | undefined;

  constructor(
    private readonly users: UserStore,
    readonly tokens: () => Promise<TokenService>,
    readonly settings: AuthSettings,
  ) {
    this.gate = new VerificationGate(settings.verifyConcurrency, settings.verifyQueue);
  }

  /** `source`: the client's address, for counting failed logins (see the module comment). */
  async authenticate(authorization: string | undefined, source?: string): Promise<Principal> {
    // Read alongside the credentials' check rather than before it (awaited where used; the
    // catch only keeps an early refusal from leaving its failure unhandled).
    const anonymous = this.anonymousGrants();
    anonymous.catch(() => undefined);
    if (!authorization) return { via: 'anonymous', grants: await anonymous };
    const space = authorization.indexOf(' ');
    const scheme = authorization.slice(0, space < 0 ? undefined : space).toLowerCase();
    const value = space < 0 ? '' : authorization.slice(space + 1).trim();
    if (scheme === 'bearer') {
      try {
        const { subject, access } = await (await this.tokens()).verify(value);
        return { user: subject === ANONYMOUS ? undefined : subject, via: 'bearer', grants: await anonymous, access };
      } catch (err) {
        if (err instanceof InvalidToken) throw unauthorized(`invalid token: ${err.message}`);
        throw err;
      }
    }
    if (scheme === 'basic') {
      const { user, grants } = await this.checkPassword(value, source);
      return { user, via: 'basic', grants: [...grants, ...(await anonymous)] };
    }
    throw unauthorized('unsupported authorization scheme (use Basic or Bearer)');
  }

  /** Verifies Basic credentials (`base64(user:password)`); returns the user and their grants. */
  private async checkPassword(basic: string, source?: string): Promise<{ user: string; grants: Grant[] }> {
    const { user, password } = parseBasic(basic);
    if (!isValidUserName(user) || !password) throw unauthorized('invalid username or password');

    const cacheKey = createHash('sha256').update(`${user}\0${password}`).digest('hex');
    const hit = this.verified.get(cacheKey);
    if (hit && hit.until > Date.now()) return hit;

    const ticket = this.gate.admit();
    if (!ticket) throw tooMany('too many logins in progress; try again shortly', 1);
    try {
      // The whole check runs in a slot, its writes too: a burst of logins then costs the table
      // (as well as the thread pool) at most `verifyConcurrency` checks at a time.
      await ticket.run(async () => {
        const from = source || 'unknown';
        const { failureLimit, sourceFailureLimit, failureWindowMs } = this.settings;
        // The same steps for every name (see the module comment): the user read alongside the
        // reservations, then one scrypt; nothing is written after it on a failure. The source's
        // reservation comes first, so a source past its budget creates no counter per new name.
        const reserve = async () =>
          (await this.users.reserveAttempt(ANY_NAME, from, sourceFailureLimit, failureWindowMs)) &&
          (await this.users.reserveAttempt(user, from, failureLimit, failureWindowMs));
        const [record, reserved] = await Promise.all([this.users.getUser(user), reserve()]);
        if (!reserved) throw tooMany('too many failed logins from this address; try again later', Math.ceil(failureWindowMs / 1000));
        if (!(await verifyPassword(password, record?.passwordHash))) throw unauthorized('invalid username or password');
        await Promise.all([this.users.clearFailures(user, from), this.users.releaseAttempt(ANY_NAME, from)]);
      });
    } finally {
      ticket.leave();
    }
    const grants = await this.userGrants(user);
    const entry: Cached = { user, grants, until: Date.now() + this.settings.cacheMs };
    if (this.verified.size > 1000) this.verified.clear();
    this.verified.set(cacheKey, entry);
    return entry;
  }

  /**
   * A user's grants from the store (for a bearer listing the catalog, whose token names no
   * repositories), trusted for as long as a verified password is.
   */
  async userGrants(user: string): Promise<Grant[]> {
    const hit = this.userGrantCache.get(user);
    if (hit && hit.until > Date.now()) return hit.grants;
    const grants = await this.users.grants(user);
    if (this.userGrantCache.size > 1000) this.userGrantCache.clear();
    this.userGrantCache.set(user, { grants, until: Date.now() + this.settings.cacheMs });
    return grants;
  }

  /** What anonymous callers may do: pull only, whatever the store holds (the CLI refuses more). */
  private async anonymousGrants(): Promise<Grant[]> {
    if (this.anonymous && this.anonymous.until > Date.now()) return this.anonymous.grants;
    const grants = (await this.users.grants(ANONYMOUS))
      .filter((g) => g.actions.includes('pull'))
      .map((g) => ({ pattern: g.pattern, actions: ['pull'] as Action[] }));
    this.anonymous = { grants, until: Date.now() + this.settings.cacheMs };
    return grants;
  }

  /** Whether a bearer's token carries `registry:catalog:*`, which listing the catalog needs. */
  mayListCatalog(principal: Principal): boolean {
    return Boolean(principal.access?.some((a) => a.type === 'registry' && a.name === 'catalog' && a.actions.includes('*')));
  }

  may(principal: Principal, repo: string, action: Action): boolean {
    if (allowedActions(principal.grants, repo).has(action)) return true;
    return Boolean(principal.access?.some((a) => a.type === 'repository' && a.name === repo && a.actions.includes(action)));
  }

  /** The refusal for a caller who lacks `needed` (see the module comment). */
  deny(principal: Principal, needed: Access | undefined, origin: RequestOrigin): RegistryError {
    if (principal.via === 'basic') {
      return new RegistryError('DENIED', 'requested access to the resource is denied', { detail: needed ? { scope: scopeString(needed) } : undefined });
    }
    const params = [`realm=${quoted(this.realm(origin))}`, `service=${quoted(this.settings.service)}`];
    if (needed) params.push(`scope=${quoted(scopeString(needed))}`);
    if (principal.via === 'bearer') params.push('error="insufficient_scope"');
    return new RegistryError('UNAUTHORIZED', 'authentication required', {
      headers: { 'WWW-Authenticate': `Bearer ${params.join(',')}` },
      detail: needed ? { scope: scopeString(needed) } : undefined,
    });
  }

  realm(origin: RequestOrigin): string {
    return this.settings.realm ?? `${origin.proto}://${origin.host}/auth/token`;
  }
}

export interface RequestOrigin {
  proto: string;
  host: string;
}

/**
 * A challenge parameter as an RFC 9110 quoted-string: `"` and `\` escaped, so that a value
 * taken from the request (the Host in the realm) cannot end the string and add parameters.
 */
export function quoted(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

function unauthorized(message: string): RegistryError {
  return new RegistryError('UNAUTHORIZED', message);
}

function tooMany(message: string, retryAfterSeconds: number): RegistryError {
  return new RegistryError('TOOMANYREQUESTS', message, { headers: { 'Retry-After': String(retryAfterSeconds) } });
}

/** The failed-login counter of a source across every name tried from it. */
export const ANY_NAME = '*';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * `user:password` from Basic credentials, decoded strictly: canonical base64 (RFC 7617) and
 * valid UTF-8 only. A lenient decoder ignores trailing garbage and turns every invalid byte into
 * U+FFFD, so one stored password would match many different byte strings.
 */
export function parseBasic(value: string): { user: string; password: string } {
  if (!BASE64.test(value)) throw unauthorized('malformed Basic credentials');
  let decoded: string;
  try {
    decoded = UTF8.decode(Buffer.from(value, 'base64'));
  } catch {
    throw unauthorized('Basic credentials must be UTF-8');
  }
  const colon = decoded.indexOf(':');
  if (colon < 0) throw unauthorized('malformed Basic credentials');
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
