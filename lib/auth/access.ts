/**
 * Access in the Docker registry token vocabulary: resource type, name, actions. Requests need
 * it, grants give it, tokens carry the intersection of what was asked and what was granted.
 */
import { isValidName } from '../oci/names.js';

export type Action = 'pull' | 'push' | 'delete';
export const ACTIONS: readonly Action[] = ['pull', 'push', 'delete'];

export interface Access {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

/** A grant: actions on repositories matching a pattern (an exact name, or `prefix/*`). */
export interface Grant {
  pattern: string;
  actions: Action[];
}

export function isValidPattern(pattern: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('/*')) return isValidName(pattern.slice(0, -2));
  return isValidName(pattern);
}

/**
 * Whether `pattern` covers `repo`. `team/*` covers everything below `team/` (not `team` itself,
 * not `teammate/x`); `*` covers every repository. Names are compared exactly: they are already
 * validated lowercase, and nothing is decoded, so `a/../b` or `%2F` cannot sneak under a prefix.
 */
export function covers(pattern: string, repo: string): boolean {
  if (pattern === '*') return true;
  if (pattern.endsWith('/*')) return repo.startsWith(pattern.slice(0, -1)) && repo.length > pattern.length - 1;
  return pattern === repo;
}

export function allowedActions(grants: Grant[], repo: string): Set<Action> {
  const out = new Set<Action>();
  for (const g of grants) if (covers(g.pattern, repo)) for (const a of g.actions) out.add(a);
  return out;
}

/**
 * Parses a token request's `scope` (`repository:<name>:<actions>` or `registry:catalog:*`).
 * Unparseable scopes are dropped: the token simply does not grant them.
 */
export function parseScope(scope: string): Access | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  const type = scope.slice(0, first);
  const name = scope.slice(first + 1, last);
  const actions = scope.slice(last + 1).split(',').filter(Boolean);
  if (type === 'repository' && isValidName(name)) return { type, name, actions };
  if (type === 'registry' && name === 'catalog') return { type, name, actions };
  return undefined;
}

/** The part of what was asked that the grants allow. */
export function grantable(asked: Access[], grants: Grant[], authenticated: boolean): Access[] {
  const out: Access[] = [];
  for (const a of asked) {
    if (a.type === 'registry') {
      // Listing the catalog is for authenticated callers; it shows only what they may pull.
      if (authenticated && a.actions.includes('*')) out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
      continue;
    }
    const allowed = allowedActions(grants, a.name);
    const actions = a.actions.filter((x): x is Action => (ACTIONS as readonly string[]).includes(x) && allowed.has(x as Action));
    if (actions.length) out.push({ type: 'repository', name: a.name, actions: [...new Set(actions)] });
  }
  return out;
}

export function scopeString(access: Access): string {
  return `${access.type}:${access.name}:${access.actions.join(',')}`;
}
