/**
 * Routes of the distribution API. Repository names contain "/", so each pattern anchors on
 * the suffix and takes everything before it as the name; the name is then checked against the
 * spec's grammar (400 NAME_INVALID, as JSON, even for names the patterns could mistake).
 */
import { RegistryError } from '../oci/errors.js';
import { assertName } from '../oci/names.js';

export type RouteName = 'base' | 'catalog' | 'uploads' | 'upload' | 'blob' | 'manifest' | 'tags' | 'referrers' | 'token';

export interface Route {
  name: RouteName;
  /** Repository name (validated). */
  repo?: string;
  /** Last path segment, percent-decoded: upload id, digest or manifest reference. */
  ref?: string;
}

const PATTERNS: [RouteName, RegExp][] = [
  ['uploads', /^\/v2\/(.+)\/blobs\/uploads\/?$/],
  ['upload', /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/],
  ['blob', /^\/v2\/(.+)\/blobs\/([^/]+)$/],
  ['manifest', /^\/v2\/(.+)\/manifests\/([^/]+)$/],
  ['tags', /^\/v2\/(.+)\/tags\/list$/],
  ['referrers', /^\/v2\/(.+)\/referrers\/([^/]+)$/],
];

export function matchRoute(path: string): Route | undefined {
  if (path === '/v2' || path === '/v2/') return { name: 'base' };
  if (path === '/v2/_catalog') return { name: 'catalog' };
  if (path === '/auth/token') return { name: 'token' };
  for (const [name, pattern] of PATTERNS) {
    const m = pattern.exec(path);
    if (!m) continue;
    const repo = assertName(m[1]!);
    return m[2] === undefined ? { name, repo } : { name, repo, ref: decodeSegment(m[2]) };
  }
  return undefined;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RegistryError('NAME_INVALID', 'malformed percent-encoding in path', { detail: { segment } });
  }
}
