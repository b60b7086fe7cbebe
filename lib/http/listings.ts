/**
 * Listings: tags of a repository, the repository catalog, and the referrers of a manifest.
 * Pages follow the spec: `?n=` and `?last=`, with a `Link: <...>; rel="next"` header while more
 * remain. No page holds more than the server's maximum (SKIFF_MAX_PAGE), with or without `n`,
 * so a response always fits in what Lambda may answer.
 */
import { parseDigest } from '../oci/digest.js';
import { MediaTypes } from '../oci/manifest.js';
import type { Page } from '../metadata/types.js';
import type { Registry } from '../registry/index.js';
import { badQuery } from '../registry/manifests.js';
import { json, notAllowed } from './responses.js';
import type { RequestContext } from './auth.js';
import type { RegistryRequest, RegistryResponse } from './types.js';

export async function onTags(reg: Registry, req: RegistryRequest, repo: string): Promise<RegistryResponse> {
  readOnly(req);
  const n = reg.manifests.pageLimit(pageSize(req));
  const page = await reg.manifests.tags(repo, n, req.query.get('last') ?? undefined);
  return paged(json(200, { name: repo, tags: page.items }), `/v2/${repo}/tags/list`, n, page);
}

export async function onCatalog(reg: Registry, req: RegistryRequest, ctx: RequestContext): Promise<RegistryResponse> {
  readOnly(req);
  const n = reg.manifests.pageLimit(pageSize(req));
  // Only what the caller may pull is listed, so a page is filled from as many as it takes.
  const page = await reg.manifests.repositories(n, req.query.get('last') ?? undefined, (repo) => ctx.canPull(repo));
  return paged(json(200, { repositories: page.items }), '/v2/_catalog', n, page);
}

export async function onReferrers(reg: Registry, req: RegistryRequest, repo: string, ref: string): Promise<RegistryResponse> {
  readOnly(req);
  const digest = parseDigest(ref);
  // An empty artifactType filters nothing: no referrer reports an empty one.
  const artifactType = req.query.get('artifactType') || undefined;
  const rawLast = req.query.get('last');
  const last = rawLast === null || rawLast === '' ? undefined : parseDigest(rawLast, 'last').value;
  const page = await reg.manifests.referrers(repo, digest, artifactType, last);
  const res = json(200, { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: page.items });
  res.headers['Content-Type'] = MediaTypes.ociIndex;
  if (artifactType !== undefined) res.headers['OCI-Filters-Applied'] = 'artifactType';
  // Spec 1.1 lets a registry page referrers; the Link keeps the filter.
  if (page.more && page.last !== undefined) {
    const query = new URLSearchParams();
    if (artifactType !== undefined) query.set('artifactType', artifactType);
    query.set('last', page.last);
    res.headers['Link'] = `</v2/${repo}/referrers/${digest.value}?${query}>; rel="next"`;
  }
  return res;
}

function readOnly(req: RegistryRequest): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw notAllowed('GET, HEAD');
}

function pageSize(req: RegistryRequest): number | undefined {
  const raw = req.query.get('n');
  if (raw === null || raw === '') return undefined;
  if (!/^\d{1,9}$/.test(raw)) throw badQuery('n must be a non-negative integer');
  return Number(raw);
}

function paged(res: RegistryResponse, path: string, n: number, page: Page<string>): RegistryResponse {
  const last = page.items[page.items.length - 1];
  if (page.more && last !== undefined) {
    res.headers['Link'] = `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
  }
  return res;
}
