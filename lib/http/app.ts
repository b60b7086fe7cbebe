/**
 * The registry's HTTP contract in one place: routing, the version header, and the mapping of
 * every failure to OCI error JSON. A RegistryError is the client's problem and carries its own
 * status; anything else is ours, is logged, and becomes a 500 (or 503 when a backend throttles).
 */
import { Contended } from '../metadata/types.js';
import { RegistryError } from '../oci/errors.js';
import type { Registry } from '../registry/index.js';
import { authorize, onToken } from './auth.js';
import { onBlob } from './blobs.js';
import { onCatalog, onReferrers, onTags } from './listings.js';
import { onManifest } from './manifests.js';
import { type Route, matchRoute } from './router.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import { API_VERSION, errorResponse, json, notAllowed } from './responses.js';
import { onUpload, postUpload } from './uploads.js';

/** What the app needs of a logger (Powertools' Logger in production). */
export interface Log {
  info(message: string, ...extra: Record<string, unknown>[]): void;
  warn(message: string, ...extra: Record<string, unknown>[]): void;
  error(message: string, ...extra: Record<string, unknown>[]): void;
}

export class RegistryApp {
  constructor(
    readonly registry: Registry,
    private readonly log: Log,
  ) {}

  async handle(req: RegistryRequest): Promise<RegistryResponse> {
    let res: RegistryResponse;
    let route: Route | undefined;
    try {
      route = matchRoute(req.path);
      if (!route) throw new RegistryError('UNSUPPORTED', 'unknown API endpoint', { status: 404, detail: { path: req.path } });
      res = await this.dispatch(route, req);
    } catch (err) {
      res = this.failure(err, req);
    }
    res.route = route?.name;
    Object.assign(res.headers, API_VERSION);
    if (req.method === 'HEAD') delete res.body;
    return res;
  }

  private async dispatch(route: Route, req: RegistryRequest): Promise<RegistryResponse> {
    const reg = this.registry;
    if (route.name === 'token') return onToken(reg, req);
    // Authorization first, on the name as sent: an unauthenticated caller is challenged and a
    // caller the grants do not cover is refused before the name's grammar is even looked at.
    const ctx = await authorize(reg, route, req);
    if (route.invalid) throw route.invalid;
    switch (route.name) {
      case 'base':
        if (req.method !== 'GET' && req.method !== 'HEAD') throw notAllowed('GET, HEAD');
        return json(200, {});
      case 'uploads':
        if (req.method !== 'POST') throw notAllowed('POST');
        return postUpload(reg, req, route.repo!, ctx);
      case 'upload':
        return onUpload(reg, req, route.repo!, route.ref!);
      case 'blob':
        return onBlob(reg, req, route.repo!, route.ref!);
      case 'manifest':
        return onManifest(reg, req, route.repo!, route.ref!);
      case 'tags':
        return onTags(reg, req, route.repo!);
      case 'referrers':
        return onReferrers(reg, req, route.repo!, route.ref!);
      case 'catalog':
        return onCatalog(reg, req, ctx);
    }
  }

  failure(err: unknown, req: Pick<RegistryRequest, 'method' | 'path'>): RegistryResponse {
    const known = err instanceof RegistryError ? err : fromBackend(err);
    if (!known || known.status >= 500) {
      this.log.error('request failed', { method: req.method, path: req.path, error: describe(err) });
    }
    return errorResponse(known ?? new RegistryError('UNKNOWN', 'internal server error'));
  }
}

/** Throttling and unavailability of S3 or DynamoDB: tell the client to come back. */
function fromBackend(err: unknown): RegistryError | undefined {
  const name = (err as { name?: string } | undefined)?.name ?? '';
  const status = (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
  if (/Throttl|SlowDown|ProvisionedThroughputExceeded|RequestLimitExceeded|TooManyRequests/.test(name) || status === 503) {
    return new RegistryError('TOOMANYREQUESTS', 'storage backend is busy; retry later', { status: 429, headers: { 'Retry-After': '1' } });
  }
  // Writes that kept meeting other writes on the same item after the client's own retries.
  if (err instanceof Contended) {
    return new RegistryError('TOOMANYREQUESTS', `${err.message}; retry later`, { status: 429, headers: { 'Retry-After': '1' } });
  }
  return undefined;
}

function describe(err: unknown): Record<string, unknown> {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack };
  return { value: String(err) };
}

