/**
 * Listings: tags of a repository, the repository catalog, and the referrers of a manifest.
 * Pages follow the spec: `?n=` and `?last=`, with a `Link: <...>; rel="next"` header while more
 * remain.
 */
import { parseDigest } from '../oci/digest.js';
import { MediaTypes } from '../oci/manifest.js';
import type { Page } from '../metadata/types.js';
import type { Registry } from '../registry/index.js';
import { badQuery } from '../registry/manifests.js';
import { json } from './app.js';
import type { RequestContext } from './auth.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import { notAllowed } from './uploads.js';

export async function onTags(reg: Registry, req: RegistryRequest, repo: string): Promise<RegistryResponse> {
  readOnly(req);
  const n = pageSize(req);
  const page = await reg.manifests.tags(repo, n, req.query.get('last') ?? undefined);
  return paged(json(200, { name: repo, tags: page.items }), `/v2/${repo}/tags/list`, n, page);
}

export async function onCatalog(reg: Registry, req: RegistryRequest, ctx: RequestContext): Promise<RegistryResponse> {
  readOnly(req);
  const n = pageSize(req);
  // Only what the caller may pull is listed, so a page is filled from as many as it takes.
  const page = await reg.manifests.repositories(n, req.query.get('last') ?? undefined, (repo) => ctx.canPull(repo));
  return paged(json(200, { repositories: page.items }), '/v2/_catalog', n, page);
}

export async function onReferrers(reg: Registry, req: RegistryRequest, repo: string, ref: string): Promise<RegistryResponse> {
  readOnly(req);
  const digest = parseDigest(ref);
  const artifactType = req.query.get('artifactType') ?? undefined;
  const manifests = await reg.manifests.referrers(repo, digest, artifactType);
  const res = json(200, { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests });
  res.headers['Content-Type'] = MediaTypes.ociIndex;
  if (artifactType !== undefined) res.headers['OCI-Filters-Applied'] = 'artifactType';
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

function paged(res: RegistryResponse, path: string, n: number | undefined, page: Page<string>): RegistryResponse {
  const last = page.items[page.items.length - 1];
  if (page.more && n !== undefined && last !== undefined) {
    res.headers['Link'] = `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
  }
  return res;
}
