/**
 * Authorization of each request, and the token endpoint of the Docker registry token flow.
 *
 *   GET|HEAD of blobs, manifests, tags, referrers   pull on the repository
 *   POST, PATCH, PUT (uploads, manifests)           push on the repository
 *   DELETE of blobs, manifests, tags                delete on the repository
 *   GET of uploads (status)                         push on the repository
 *   GET /v2/                                        an authenticated caller
 *   GET /v2/_catalog                                a user; a bearer's token must carry
 *                                                   registry:catalog:* (Docker token spec)
 *
 * The catalog lists what the user's grants (loaded from the store for a bearer, whose token
 * names no repositories) and the anonymous grants let them pull.
 *
 * Repository names are checked against the caller's grants as sent, before their grammar: an
 * unauthenticated caller gets the 401 challenge, a caller presenting credentials that do not
 * cover the raw name gets 403 DENIED (a token cannot be asked for an invalid name, so a 401
 * would only send the client round in circles), and only a caller covered by the raw string
 * (e.g. `team/*` covers `team/../x`) learns that the name is invalid (400, from the app).
 *
 * A mount needs pull on the source too; without it the mount quietly becomes a new upload
 * (as the spec allows), so nothing about the source is revealed.
 */
import { RegistryError } from '../oci/errors.js';
import { type Access, type Action, grantable, parseScope, scopeString } from '../auth/access.js';
import { isValidName } from '../oci/names.js';
import { ANONYMOUS, type Authorizer, type Principal, quoted } from '../auth/authorizer.js';
import { type ClientView, TrustedProxies, clientView } from './forwarded.js';
import type { Registry } from '../registry/index.js';
import type { Route } from './router.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import { json, notAllowed } from './responses.js';
import { readAll } from '../registry/body.js';

export interface RequestContext {
  /** Whether the caller may pull from `repo` (always, on an open registry). */
  canPull(repo: string): boolean;
}

export const OPEN: RequestContext = { canPull: () => true };

const CATALOG: Access = { type: 'registry', name: 'catalog', actions: ['*'] };
const NOBODY: Principal = { via: 'anonymous', grants: [] };

/** What a request needs: an action on its repository, an authenticated caller, or catalog access. */
function required(route: Route, method: string): { action: Action } | 'authenticated' | 'catalog' | undefined {
  const read = method === 'GET' || method === 'HEAD';
  switch (route.name) {
    case 'base':
      return 'authenticated';
    case 'catalog':
      return 'catalog';
    case 'token':
      return undefined;
    case 'uploads':
    case 'upload':
      return { action: 'push' };
    default:
      return { action: read ? 'pull' : method === 'DELETE' ? 'delete' : 'push' };
  }
}

export async function authorize(reg: Registry, route: Route, req: RegistryRequest): Promise<RequestContext> {
  const auth = reg.auth;
  if (!auth) return OPEN;
  const need = required(route, req.method);
  if (!need) return OPEN;
  const origin = viewOf(auth, req);
  // A scope in a challenge only for a name a token could be asked for (and that is safe to echo).
  const validName = route.repo !== undefined && isValidName(route.repo);
  const needed: Access | undefined =
    need === 'catalog' ? CATALOG : need === 'authenticated' || !validName ? undefined : { type: 'repository', name: route.repo!, actions: [need.action] };
  // Nothing to look up for a caller who must be authenticated and presents nothing.
  if ((need === 'authenticated' || need === 'catalog') && !req.headers['authorization']) throw auth.deny(NOBODY, needed, origin);
  let principal: Principal;
  try {
    principal = await auth.authenticate(req.headers['authorization'], origin.source);
  } catch (err) {
    // Bad credentials: say so, with the challenge that tells the client where to get a token.
    if (err instanceof RegistryError && err.status === 401) {
      const challenge = auth.deny(NOBODY, needed, origin);
      err.headers['WWW-Authenticate'] = challenge.headers['WWW-Authenticate']!;
    }
    throw err;
  }
  if (need === 'authenticated') {
    if (principal.user === undefined) throw auth.deny(principal, needed, origin);
    return contextOf(auth, principal);
  }
  if (need === 'catalog') {
    if (principal.user === undefined) throw auth.deny(principal, needed, origin);
    if (principal.via === 'bearer') {
      if (!auth.mayListCatalog(principal)) throw auth.deny(principal, needed, origin);
      // The listing follows the user's grants (as a Basic login's would), not the token's repositories.
      principal = { ...principal, grants: [...(await auth.userGrants(principal.user)), ...principal.grants], access: undefined };
    }
    return contextOf(auth, principal);
  }
  if (!auth.may(principal, route.repo!, need.action)) {
    if (!validName && principal.via !== 'anonymous') throw new RegistryError('DENIED', 'requested access to the resource is denied');
    throw auth.deny(principal, needed, origin);
  }
  return contextOf(auth, principal);
}

function contextOf(auth: NonNullable<Registry['auth']>, principal: Principal): RequestContext {
  return { canPull: (repo) => auth.may(principal, repo, 'pull') };
}

const proxiesOf = new WeakMap<Authorizer, TrustedProxies>();

const NO_PROXIES = new TrustedProxies([]);
/** A host as a client may send it (name or address, optional port): anything else is not echoed. */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * The registry's own origin as this caller reaches it (the realm's, when one is configured, as on
 * a deployed stack; else the scheme and host the request came by), or undefined if the Host is
 * not one to echo. The upload host, which does not know the registry's address, names blobs there.
 */
export function registryOrigin(reg: Registry, req: RegistryRequest): string | undefined {
  const realm = reg.auth?.settings.realm;
  if (realm) return new URL(realm).origin;
  const view = reg.auth ? viewOf(reg.auth, req) : clientView(req, NO_PROXIES);
  return HOST.test(view.host) ? `${view.proto}://${view.host}` : undefined;
}

/** The caller's address and the URL they used, believing forwarding headers only from trusted proxies. */
function viewOf(auth: Authorizer, req: RegistryRequest): ClientView {
  let proxies = proxiesOf.get(auth);
  if (!proxies) proxiesOf.set(auth, (proxies = new TrustedProxies(auth.settings.trustedProxies)));
  return clientView(req, proxies);
}

/**
 * The token endpoint. GET with optional Basic credentials (docker, podman, skopeo) or POST
 * with an OAuth2 password grant (containerd); the token grants the requested scopes that the
 * caller's grants allow, and nothing else. Anonymous callers get a token for anonymous grants.
 */
export async function onToken(reg: Registry, req: RegistryRequest): Promise<RegistryResponse> {
  const auth = reg.auth;
  if (!auth) throw new RegistryError('UNSUPPORTED', 'authentication is not enabled on this registry', { status: 404 });
  let params: URLSearchParams;
  let basic: string | undefined;
  if (req.method === 'GET') {
    params = req.query;
    const header = req.headers['authorization'];
    if (header && !/^basic /i.test(header)) throw basicChallenge(auth.settings.service, new RegistryError('UNAUTHORIZED', 'the token endpoint takes Basic credentials'));
    basic = header?.slice(6).trim();
  } else if (req.method === 'POST') {
    const form = await readAll(req.body, 64 * 1024, () => new RegistryError('SIZE_INVALID', 'token request too large', { status: 413 }));
    params = new URLSearchParams(form.toString('utf8'));
    const grant = params.get('grant_type');
    if (grant !== 'password') {
      return json(400, { error: 'unsupported_grant_type', error_description: 'only the password grant is supported' });
    }
    const username = params.get('username') ?? '';
    basic = username ? Buffer.from(`${username}:${params.get('password') ?? ''}`).toString('base64') : undefined;
  } else {
    throw notAllowed('GET, POST');
  }
  const service = params.get('service');
  if (service && service !== auth.settings.service) {
    throw new RegistryError('DENIED', `this registry issues tokens for service "${auth.settings.service}"`, { detail: { service } });
  }
  // The caller's grants and the anonymous ones, exactly as a Basic request to the registry gets them.
  let caller: Principal;
  try {
    caller = await auth.authenticate(basic ? `Basic ${basic}` : undefined, viewOf(auth, req).source);
  } catch (err) {
    throw err instanceof RegistryError && err.status === 401 ? basicChallenge(auth.settings.service, err) : err;
  }
  const asked = params
    .getAll('scope')
    .flatMap((s) => s.split(' '))
    .map(parseScope)
    .filter((a): a is Access => a !== undefined);
  const access = grantable(asked, caller.grants, caller.user !== undefined);
  const issued = await (await auth.tokens()).issue(caller.user ?? ANONYMOUS, access);
  const body =
    req.method === 'POST'
      ? { access_token: issued.token, token_type: 'Bearer', expires_in: issued.expiresIn, issued_at: issued.issuedAt, scope: access.map(scopeString).join(' ') }
      : { token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt };
  return noStore(json(200, body));
}

/** A token is a credential: no cache or proxy may keep it (RFC 6749 section 5.1). */
function noStore(res: RegistryResponse): RegistryResponse {
  return { ...res, headers: { ...res.headers, 'Cache-Control': 'no-store', Pragma: 'no-cache' } };
}

/** The token endpoint's refusal of credentials says which ones it takes (RFC 7235: a 401 carries a challenge). */
function basicChallenge(service: string, err: RegistryError): RegistryError {
  err.headers['WWW-Authenticate'] = `Basic realm=${quoted(service)},charset="UTF-8"`;
  return err;
}

