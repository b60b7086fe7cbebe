/**
 * Who is calling, and may they do this. Callers are anonymous, a user with a password (HTTP
 * Basic, on the registry itself or at the token endpoint), or the bearer of a token from the
 * token endpoint. Anonymous callers have the grants given to the user `anonymous` (public pull);
 * users have theirs plus those; a token has exactly the access it carries (plus anonymous).
 *
 * Refusals follow the Docker token flow: an anonymous caller gets 401 with a Bearer challenge
 * naming the realm, service and scope to ask for; a token without the needed scope gets 401
 * with error="insufficient_scope" (the client asks for a new one); a user whose grants do not
 * allow the action gets 403 DENIED. Failed logins are counted per user and, past a limit
 * within a window, refused outright (429) until the window ends.
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

interface Cached {
  user: string;
  grants: Grant[];
  until: number;
}

export class Authorizer {
  private readonly verified = new Map<string, Cached>();
  private anonymous: { grants: Grant[]; until: number } | undefined;

  constructor(
    private readonly users: UserStore,
    readonly tokens: () => Promise<TokenService>,
    readonly settings: AuthSettings,
  ) {}

  async authenticate(authorization: string | undefined): Promise<Principal> {
    const anonymous = await this.anonymousGrants();
    if (!authorization) return { via: 'anonymous', grants: anonymous };
    const space = authorization.indexOf(' ');
    const scheme = authorization.slice(0, space < 0 ? undefined : space).toLowerCase();
    const value = space < 0 ? '' : authorization.slice(space + 1).trim();
    if (scheme === 'bearer') {
      try {
        const { subject, access } = await (await this.tokens()).verify(value);
        return { user: subject === ANONYMOUS ? undefined : subject, via: 'bearer', grants: anonymous, access };
      } catch (err) {
        if (err instanceof InvalidToken) throw unauthorized(`invalid token: ${err.message}`);
        throw err;
      }
    }
    if (scheme === 'basic') {
      const { user, grants } = await this.checkPassword(value);
      return { user, via: 'basic', grants: [...grants, ...anonymous] };
    }
    throw unauthorized('unsupported authorization scheme (use Basic or Bearer)');
  }

  /** Verifies Basic credentials (`base64(user:password)`); returns the user and their grants. */
  async checkPassword(basic: string): Promise<{ user: string; grants: Grant[] }> {
    const decoded = Buffer.from(basic, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const user = colon < 0 ? '' : decoded.slice(0, colon);
    const password = colon < 0 ? '' : decoded.slice(colon + 1);
    if (!isValidUserName(user) || !password) throw unauthorized('invalid username or password');

    const cacheKey = createHash('sha256').update(`${user}\0${password}`).digest('hex');
    const hit = this.verified.get(cacheKey);
    if (hit && hit.until > Date.now()) return hit;

    const failures = await this.users.failures(user);
    if (failures >= this.settings.failureLimit) {
      throw new RegistryError('TOOMANYREQUESTS', 'too many failed logins for this user; try again later', {
        headers: { 'Retry-After': String(Math.ceil(this.settings.failureWindowMs / 1000)) },
      });
    }
    const record = await this.users.getUser(user);
    if (!(await verifyPassword(password, record?.passwordHash))) {
      await this.users.recordFailure(user, this.settings.failureWindowMs);
      throw unauthorized('invalid username or password');
    }
    if (failures > 0) await this.users.clearFailures(user);
    const entry: Cached = { user, grants: await this.users.grants(user), until: Date.now() + this.settings.cacheMs };
    if (this.verified.size > 1000) this.verified.clear();
    this.verified.set(cacheKey, entry);
    return entry;
  }

  private async anonymousGrants(): Promise<Grant[]> {
    if (this.anonymous && this.anonymous.until > Date.now()) return this.anonymous.grants;
    const grants = await this.users.grants(ANONYMOUS);
    this.anonymous = { grants, until: Date.now() + this.settings.cacheMs };
    return grants;
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
