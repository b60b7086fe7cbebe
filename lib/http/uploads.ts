/**
 * Upload endpoints: POST /v2/<name>/blobs/uploads/ and /v2/<name>/blobs/uploads/<id>.
 */
import { RegistryError } from '../oci/errors.js';
import { assertName } from '../oci/names.js';
import type { RequestContext } from './auth.js';
import { parseDigest } from '../oci/digest.js';
import type { Registry } from '../registry/index.js';
import { uploadRange } from '../registry/uploads.js';
import type { Status } from '../metadata/types.js';
import { parseContentRange } from './ranges.js';
import { notAllowed } from './responses.js';
import type { RegistryRequest, RegistryResponse } from './types.js';

const UPLOAD_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const uploadLocation = (repo: string, id: string) => `/v2/${repo}/blobs/uploads/${id}`;
export const blobLocation = (repo: string, digest: string) => `/v2/${repo}/blobs/${digest}`;

/**
 * Where a client continues an upload: a path on this server, or (SKIFF_UPLOAD_ORIGIN) an
 * absolute URL on the upload host carrying a capability.
 */
export type Locate = (repo: string, id: string) => string | Promise<string>;
export const relativeLocation: Locate = uploadLocation;

/**
 * POST: start an upload, upload a whole blob (?digest=), or mount one (?mount=&from=). A started
 * upload (a mount falling back to one included) is continued where `locate` says.
 */
export async function postUpload(reg: Registry, req: RegistryRequest, repo: string, ctx: RequestContext, locate: Locate): Promise<RegistryResponse> {
  const mount = req.query.get('mount');
  if (mount !== null) {
    const digest = parseDigest(mount, 'mount');
    const from = req.query.get('from');
    // Without a source repository the caller may read there is nothing to mount from: a blob
    // is only readable through a repository that links it. Fall back to a new upload, as the
    // spec allows, which reveals nothing about the source.
    const link = from && (assertName(from), ctx.canPull(from)) ? await reg.blobs.mount(repo, from, digest.value) : undefined;
    if (link) return created(repo, link.digest);
  } else {
    const digest = req.query.get('digest');
    if (digest !== null) {
      const descriptor = await reg.uploads.monolithic(repo, parseDigest(digest), req.body);
      return created(repo, descriptor.digest);
    }
  }
  if ((req.body.length ?? 0) > 0) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'a POST with a body needs ?digest= (monolithic upload)');
  }
  // The chunk limit is this server's: an upload continued elsewhere (the upload host) has its own.
  const maxChunk = locate === relativeLocation ? reg.config.uploads.maxChunkBytes : 0;
  return uploadStatus(202, await reg.uploads.start(repo), maxChunk, locate);
}

/**
 * GET, PATCH, PUT, DELETE on an upload's Location; the Locations answered are `locate`'s, and a
 * finished blob's is on `registry` (the registry's origin, when this is the upload host).
 */
export async function onUpload(reg: Registry, req: RegistryRequest, repo: string, id: string, locate: Locate, registry = ''): Promise<RegistryResponse> {
  const maxChunk = reg.config.uploads.maxChunkBytes;
  try {
    if (!UPLOAD_ID.test(id)) throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { detail: { uuid: id } });
    switch (req.method) {
      case 'GET':
        return uploadStatus(204, await reg.uploads.status(repo, id), maxChunk, locate);
      case 'PATCH': {
        const range = parseContentRange(req.headers['content-range']);
        return uploadStatus(202, await reg.uploads.append(repo, id, req.body, range), maxChunk, locate);
      }
      case 'PUT': {
        const digest = parseDigest(req.query.get('digest'));
        const range = parseContentRange(req.headers['content-range']);
        const descriptor = await reg.uploads.finish(repo, id, digest, req.body, range);
        return created(repo, descriptor.digest, registry);
      }
      case 'DELETE':
        await reg.uploads.cancel(repo, id);
        return { status: 204, headers: {} };
      default:
        throw notAllowed('GET, PATCH, PUT, DELETE');
    }
  } catch (err) {
    // A client that lost track of the offset needs the upload's Location with the Range.
    if (err instanceof RegistryError && err.status === 416) {
      // Refused before the upload was read (a Content-Range that ends before it starts): the
      // client still needs to know where the upload is, or that it is gone (404).
      err.headers['Range'] ??= uploadRange((await reg.uploads.status(repo, id)).offset);
      err.headers['Location'] = await locate(repo, id);
      err.headers['Docker-Upload-UUID'] = id;
    }
    throw err;
  }
}

async function uploadStatus(status: number, upload: Status, maxChunk: number, locate: Locate): Promise<RegistryResponse> {
  const headers: Record<string, string> = {
    Location: await locate(upload.repo, upload.id),
    Range: uploadRange(upload.offset),
    'Docker-Upload-UUID': upload.id,
  };
  // RFC 9110: a 204 carries no Content-Length.
  if (status !== 204) headers['Content-Length'] = '0';
  // Tell chunking clients the largest chunk we take, before they send one too big.
  if (maxChunk > 0) headers['OCI-Chunk-Max-Length'] = String(maxChunk);
  return { status, headers };
}

function created(repo: string, digest: string, registry = ''): RegistryResponse {
  return {
    status: 201,
    headers: { Location: registry + blobLocation(repo, digest), 'Docker-Content-Digest': digest, 'Content-Length': '0' },
  };
}
