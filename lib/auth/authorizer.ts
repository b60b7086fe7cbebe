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
 * Failed logins are counted per user and source address and, past a limit within a window, that
 * source's logins as that user are refused outright (429) until the window ends: someone
 * guessing from one address locks only that address out, never the user everywhere. Failures
 * for names that are no user are counted in memory only (bounded), so made-up names write
 * nothing to the table, and they lock out the same way (the lockout does not tell users apart
 * from non-users).
 */
import { createHash } from 'node:crypto';
import { RegistryError } from '../oci/errors.js';
import type { UserStore } from '../metadata/types.js';
import { type Access, type Action, type Grant, allowedActions, scopeString } from './access.js';
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
  failureWindowMs: number;
  /** How long a verified password (and its grants) is trusted without checking again. */
  cacheMs: number;
}


/** Failed logins for names that are no user: in memory, at most `max` counters, each for a window. */
class TransientFailures {
  private readonly counts = new Map<string, { failures: number; windowEnds: number }>();

  constructor(private readonly max = 10_000) {}

  failures(key: string): number {
    const entry = this.counts.get(key);
    return entry && entry.windowEnds > Date.now() ? entry.failures : 0;
  }

  record(key: string, windowMs: number): void {
    const now = Date.now();
    const entry = this.counts.get(key);
    if (entry && entry.windowEnds > now) {
      entry.failures++;
      return;
    }
    this.counts.delete(key);
    if (this.counts.size >= this.max) {
      for (const [k, v] of this.counts) if (v.windowEnds <= now) this.counts.delete(k);
      // Still full: the oldest counters go first (a Map iterates in insertion order).
      for (const k of this.counts.keys()) {
        if (this.counts.size < this.max) break;
        this.counts.delete(k);
      }
    }
    this.counts.set(key, { failures: 1, windowEnds: now + windowMs });
  }
}

interface Cached {
  user: string;
  grants: Grant[];
  until: number;
}

export class Authorizer {
  private readonly verified = new Map<string, Cached>();
  private readonly userGrantCache = new Map<string, { grants: Grant[]; until: number }>();
  private readonly strangers = new TransientFailures();
  private anonymous: { grants: Grant[]; until: number } | undefined;

  constructor(
    private readonly users: UserStore,
    readonly tokens: () => Promise<TokenService>,
    readonly settings: AuthSettings,
  ) {}

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
    const decoded = Buffer.from(basic, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const user = colon < 0 ? '' : decoded.slice(0, colon);
    const password = colon < 0 ? '' : decoded.slice(colon + 1);
    if (!isValidUserName(user) || !password) throw unauthorized('invalid username or password');

    const cacheKey = createHash('sha256').update(`${user}\0${password}`).digest('hex');
    const hit = this.verified.get(cacheKey);
    if (hit && hit.until > Date.now()) return hit;

    const from = source || 'unknown';
    const stranger = `${user}\0${from}`;
    const [record, stored] = await Promise.all([this.users.getUser(user), this.users.failures(user, from)]);
    const failures = record ? stored : this.strangers.failures(stranger);
    if (failures >= this.settings.failureLimit) {
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins for this user from this address; try again later', {
        headers: { 'Retry-After': String(Math.ceil(this.settings.failureWindowMs / 1000)) },
      });
    }
    if (!(await verifyPassword(password, record?.passwordHash))) {
      if (record) await this.users.recordFailure(user, from, this.settings.failureWindowMs);
      else this.strangers.record(stranger, this.settings.failureWindowMs);
      throw unauthorized('invalid username or password');
    }
    if (failures > 0) await this.users.clearFailures(user, from);
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
    const params = [`realm="${this.realm(origin)}"`, `service="${this.settings.service}"`];
    if (needed) params.push(`scope="${scopeString(needed)}"`);
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

function unauthorized(message: string): RegistryError {
  return new RegistryError('UNAUTHORIZED', message);
}
