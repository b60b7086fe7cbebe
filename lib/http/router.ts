/**
 * Routes of the distribution API. Repository names contain "/", so each pattern anchors on
 * the suffix and takes everything before it (possibly nothing) as the name.
 *
 * The route carries the name as sent, not yet validated: authorization comes first (an
 * unauthenticated caller is challenged, a caller whose grants do not cover the raw string is
 * refused, whatever the string), and only then does the app throw `invalid`, the 400
 * NAME_INVALID for a name outside the spec's grammar (or a last segment that does not decode).
 * Nothing is ever decoded or normalized in the name, so `a/../b` or `a%2Fb` cannot pass for
 * another repository in a grant check.
 */
import { RegistryError } from '../oci/errors.js';
import { assertName } from '../oci/names.js';

export type RouteName = 'base' | 'catalog' | 'uploads' | 'upload' | 'blob' | 'manifest' | 'tags' | 'referrers' | 'token';

export interface Route {
  name: RouteName;
  /** Repository name as sent (still percent-encoded); valid only if `invalid` is unset. */
  repo?: string;
  /** Last path segment, percent-decoded: upload id, digest or manifest reference. */
  ref?: string;
  /** Why the path cannot be served (400 NAME_INVALID), thrown once the caller is authorized. */
  invalid?: RegistryError;
}

const PATTERNS: [RouteName, RegExp][] = [
  ['uploads', /^\/v2\/(.*)\/blobs\/uploads\/?$/],
  ['upload', /^\/v2\/(.*)\/blobs\/uploads\/([^/]+)$/],
  ['blob', /^\/v2\/(.*)\/blobs\/([^/]+)$/],
  ['manifest', /^\/v2\/(.*)\/manifests\/([^/]+)$/],
  ['tags', /^\/v2\/(.*)\/tags\/list$/],
  ['referrers', /^\/v2\/(.*)\/referrers\/([^/]+)$/],
];

export function matchRoute(path: string): Route | undefined {
  if (path === '/v2' || path === '/v2/') return { name: 'base' };
  if (path === '/v2/_catalog') return { name: 'catalog' };
  if (path === '/auth/token') return { name: 'token' };
  for (const [name, pattern] of PATTERNS) {
    const m = pattern.exec(path);
    if (!m) continue;
    const repo = m[1]!;
    const route: Route = { name, repo };
    try {
      assertName(repo);
    } catch (err) {
      route.invalid = err as RegistryError;
    }
    if (m[2] !== undefined) {
      try {
        route.ref = decodeURIComponent(m[2]);
      } catch {
        route.invalid ??= new RegistryError('NAME_INVALID', 'malformed percent-encoding in path', { detail: { segment: m[2] } });
      }
    }
    return route;
  }
  return undefined;
}
