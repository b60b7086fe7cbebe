/**
 * The registry's HTTP contract in one place: routing, the version header, and the mapping of
 * every failure to OCI error JSON. A RegistryError is the client's problem and carries its own
 * status; anything else is ours, is logged, and becomes a 500 (or 503 when a backend throttles).
 *
 * The same app runs in one of two roles:
 *   registry  the whole distribution API, authorized per request (lib/http/auth.ts); with
 *             SKIFF_UPLOAD_ORIGIN set, the uploads it starts are sent to the upload host;
 *   uploads   the upload host: only upload sessions (PATCH, PUT, GET, DELETE on
 *             /v2/<name>/blobs/uploads/<id>) and GET /healthz, each session request authorized
 *             by the capability in its query alone (lib/auth/capability.ts); everything else 404.
 */
import { Contended } from '../metadata/types.js';
import { RegistryError } from '../oci/errors.js';
import type { Registry } from '../registry/index.js';
import { authorize, onToken, registryOrigin } from './auth.js';
import { onBlob } from './blobs.js';
import { onCatalog, onReferrers, onTags } from './listings.js';
import { onManifest } from './manifests.js';
import { type Route, matchRoute } from './router.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import { API_VERSION, errorResponse, json, notAllowed } from './responses.js';
import { type Locate, onUpload, postUpload, relativeLocation, uploadLocation } from './uploads.js';
import { CAPABILITY_PARAM, type UploadCapabilities } from '../auth/capability.js';

/** What the app needs of a logger (Powertools' Logger in production). */
export interface Log {
  info(message: string, ...extra: Record<string, unknown>[]): void;
  warn(message: string, ...extra: Record<string, unknown>[]): void;
  error(message: string, ...extra: Record<string, unknown>[]): void;
}

export type AppRole = 'registry' | 'uploads';

export class RegistryApp {
  /** Requests streaming an upload body right now (capped by SKIFF_MAX_STREAMS). */
  private streams = 0;
  /** The upload host's origin when uploads this app starts are continued there (see uploadHostLocate). */
  private readonly uploadOrigin?: string;
  private readonly capabilities?: UploadCapabilities;

  constructor(
    readonly registry: Registry,
    private readonly log: Log,
    readonly role: AppRole = 'registry',
  ) {
    const origin = registry.config.uploadHost.origin;
    if ((role === 'uploads' || origin) && !registry.capabilities) throw new Error('the upload host needs token keys to sign and check capabilities');
    this.capabilities = registry.capabilities;
    this.uploadOrigin = role === 'uploads' ? undefined : origin;
  }

  async handle(req: RegistryRequest): Promise<RegistryResponse> {
    let res: RegistryResponse;
    let route: Route | undefined;
    let streaming = false;
    try {
      route = matchRoute(req.path);
      if (this.role === 'uploads' && req.path === '/healthz') route = undefined;
      else if (!route || (this.role === 'uploads' && route.name !== 'upload')) throw unknownEndpoint(req.path);
      if (carriesUpload(route, req)) {
        this.admitStream();
        streaming = true;
      }
      if (!route) res = health(req);
      else res = this.role === 'uploads' ? await this.onUploadHost(route, req) : await this.dispatch(route, req);
    } catch (err) {
      res = this.failure(err, req);
    } finally {
      if (streaming) this.streams--;
    }
    res.route = route?.name ?? (req.path === '/healthz' ? 'healthz' : undefined);
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
        return postUpload(reg, req, route.repo!, ctx, this.uploadOrigin ? this.uploadHostLocate(this.uploadOrigin, registryOrigin(reg, req)) : relativeLocation);
      case 'upload':
        return onUpload(reg, req, route.repo!, route.ref!, relativeLocation);
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

  /**
   * The upload host: the capability in the query alone authorizes (an Authorization header is
   * never looked at), and every Location it answers with carries a fresh one.
   */
  private async onUploadHost(route: Route, req: RegistryRequest): Promise<RegistryResponse> {
    const grant = await this.capabilities!.check(req.query.get(CAPABILITY_PARAM), route.repo!, route.ref!);
    // A capability is only ever issued for a valid name; kept for defence in depth.
    if (route.invalid) throw route.invalid;
    const locate = this.uploadHostLocate(this.registry.config.uploadHost.origin ?? '', grant.registry);
    return onUpload(this.registry, req, route.repo!, route.ref!, locate, grant.registry);
  }

  /**
   * Locations on the upload host at `origin` ('' on the host itself: relative), with a
   * capability that also names the registry's origin (`registry`), passed on from one to the next.
   */
  private uploadHostLocate(origin: string, registry: string | undefined): Locate {
    return async (repo, id) => `${origin}${uploadLocation(repo, id)}?${CAPABILITY_PARAM}=${await this.capabilities!.issue(repo, id, { registry })}`;
  }

  /** Past SKIFF_MAX_STREAMS bodies in flight a request is turned away before its body is read. */
  private admitStream(): void {
    if (this.streams >= this.registry.config.uploadHost.maxStreams) {
      throw new RegistryError('UNAVAILABLE', 'too many uploads in progress on this server; retry shortly', {
        status: 503,
        headers: { 'Retry-After': '2' },
        detail: { maxStreams: this.registry.config.uploadHost.maxStreams },
      });
    }
    this.streams++;
  }

  failure(err: unknown, req: Pick<RegistryRequest, 'method' | 'path'>): RegistryResponse {
    const known = err instanceof RegistryError ? err : fromBackend(err);
    // A 503 of our own (SKIFF_MAX_STREAMS reached) is load, not a fault; a backend's is.
    if (!known || (known.status >= 500 && (known.code !== 'UNAVAILABLE' || known.cause !== undefined))) {
      this.log.error('request failed', { method: req.method, path: req.path, error: describe(err) });
    } else if (known.code === 'UNAVAILABLE') {
      this.log.warn('request turned away', { method: req.method, path: req.path, reason: known.message });
    }
    return errorResponse(known ?? new RegistryError('UNKNOWN', 'internal server error'));
  }
}

function unknownEndpoint(path: string): RegistryError {
  return new RegistryError('UNSUPPORTED', 'unknown API endpoint', { status: 404, detail: { path } });
}

/** Whether the request streams a blob body (the requests SKIFF_MAX_STREAMS counts). */
function carriesUpload(route: Route | undefined, req: RegistryRequest): boolean {
  if (route?.name !== 'upload' && route?.name !== 'uploads') return false;
  return (req.method === 'PATCH' || req.method === 'PUT' || req.method === 'POST') && req.body.length !== 0;
}

/** GET /healthz on the upload host: the process is up (what a load balancer's health check asks). */
function health(req: RegistryRequest): RegistryResponse {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw notAllowed('GET, HEAD');
  return json(200, { status: 'ok' });
}

/** Network failures of an AWS SDK call that its own retries did not get past. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Throttling and unavailability of S3 or DynamoDB: tell the client to come back. Every write is
 * safe to repeat (a retry that finds its own work done answers as the first would have), so a
 * call that failed or timed out, its answer unknown, is the client's to retry: 503 with
 * Retry-After, not 500. A filesystem error (EIO, ENOSPC) stays a 500: retrying will not mend a disk.
 */
export function fromBackend(err: unknown): RegistryError | undefined {
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number }; $fault?: string } | undefined;
  const name = e?.name ?? '';
  const status = e?.$metadata?.httpStatusCode;
  if (/Throttl|SlowDown|ProvisionedThroughputExceeded|RequestLimitExceeded|TooManyRequests/.test(name) || status === 503) {
    return new RegistryError('TOOMANYREQUESTS', 'storage backend is busy; retry later', { status: 429, headers: { 'Retry-After': '1' } });
  }
  // Writes that kept meeting other writes on the same item after the client's own retries.
  if (err instanceof Contended) {
    return new RegistryError('TOOMANYREQUESTS', `${err.message}; retry later`, { status: 429, headers: { 'Retry-After': '1' } });
  }
  const sdk = e?.$metadata !== undefined;
  if (sdk && (UNREACHABLE.has(e?.code ?? '') || /^(TimeoutError|RequestTimeout|RequestTimeoutException|NetworkingError)$/.test(name) || (e?.$fault === 'server' && (status === 500 || status === 502 || status === 504)))) {
    return new RegistryError('UNAVAILABLE', 'storage backend did not answer; retry later', { status: 503, headers: { 'Retry-After': '1' }, cause: err });
  }
  return undefined;
}

function describe(err: unknown): Record<string, unknown> {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack };
  return { value: String(err) };
}

