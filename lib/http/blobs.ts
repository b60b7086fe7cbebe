/**
 * Blob endpoints: GET, HEAD, DELETE /v2/<name>/blobs/<digest>.
 */
import { RegistryError } from '../oci/errors.js';
import { parseDigest } from '../oci/digest.js';
import type { Link } from '../metadata/types.js';
import type { Registry } from '../registry/index.js';
import { parseReadRange } from './ranges.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import { notAllowed } from './responses.js';

export async function onBlob(reg: Registry, req: RegistryRequest, repo: string, ref: string): Promise<RegistryResponse> {
  const digest = parseDigest(ref).value;
  switch (req.method) {
    case 'HEAD':
      // Never a redirect: HEAD answers from metadata alone, one read.
      return { status: 200, headers: blobHeaders(await reg.blobs.stat(repo, digest)) };
    case 'GET':
      return getBlob(reg, req, await reg.blobs.stat(repo, digest));
    case 'DELETE':
      await reg.blobs.unlink(repo, digest);
      return { status: 202, headers: { 'Content-Length': '0' } };
    default:
      throw notAllowed('GET, HEAD, DELETE');
  }
}

async function getBlob(reg: Registry, req: RegistryRequest, link: Link): Promise<RegistryResponse> {
  const url = await reg.blobs.redirect(link);
  if (url) return { status: 307, headers: { Location: url, 'Docker-Content-Digest': link.digest, 'Content-Length': '0' } };

  const range = parseReadRange(req.headers['range'], link.size);
  if (range === 'unsatisfiable') {
    throw new RegistryError('SIZE_INVALID', 'requested range not satisfiable', {
      status: 416,
      headers: { 'Content-Range': `bytes */${link.size}` },
      detail: { size: link.size },
    });
  }
  const body = await reg.blobs.open(link, range);
  const headers = blobHeaders(link);
  if (!range) return { status: 200, headers, body };
  headers['Content-Length'] = String(range.end - range.start + 1);
  headers['Content-Range'] = `bytes ${range.start}-${range.end}/${link.size}`;
  return { status: 206, headers, body };
}

function blobHeaders(link: Link): Record<string, string> {
  return {
    'Content-Type': 'application/octet-stream',
    'Content-Length': String(link.size),
    'Docker-Content-Digest': link.digest,
    ETag: `"${link.digest}"`,
    'Accept-Ranges': 'bytes',
    // Content-addressed: the bytes behind a digest never change.
    'Cache-Control': 'max-age=31536000, immutable',
  };
}
