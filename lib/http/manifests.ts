/**
 * Manifest endpoints: GET, HEAD, PUT, DELETE /v2/<name>/manifests/<reference>.
 */
import { RegistryError } from '../oci/errors.js';
import type { Registry } from '../registry/index.js';
import { type Reference, parseReference } from '../registry/manifests.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import { notAllowed } from './responses.js';

export const manifestLocation = (repo: string, digest: string) => `/v2/${repo}/manifests/${digest}`;

export async function onManifest(reg: Registry, req: RegistryRequest, repo: string, ref: string): Promise<RegistryResponse> {
  const reference = req.method === 'GET' || req.method === 'HEAD' ? lookupReference(ref) : parseReference(ref);
  switch (req.method) {
    case 'HEAD': {
      // One read: a tag's record carries the digest, type and size.
      const stored = await reg.manifests.stat(repo, reference);
      acceptable(req, stored.mediaType, reference);
      return { status: 200, headers: manifestHeaders(stored) };
    }
    case 'GET': {
      const stored = await reg.manifests.get(repo, reference);
      acceptable(req, stored.mediaType, reference);
      return { status: 200, headers: manifestHeaders(stored), body: stored.bytes };
    }
    case 'PUT': {
      const stored = await reg.manifests.put(repo, reference, req.headers['content-type'], req.body);
      const headers: Record<string, string> = {
        Location: manifestLocation(repo, stored.digest),
        'Docker-Content-Digest': stored.digest,
        'Content-Length': '0',
      };
      // Tells the client we processed the subject, so it need not maintain a referrers tag.
      if (stored.subject) headers['OCI-Subject'] = stored.subject;
      return { status: 201, headers };
    }
    case 'DELETE':
      await reg.manifests.delete(repo, reference);
      return { status: 202, headers: { 'Content-Length': '0' } };
    default:
      throw notAllowed('GET, HEAD, PUT, DELETE');
  }
}

/**
 * A reference to read. Nothing can be stored under one that is neither a tag nor a digest, so
 * reading it answers what reading any absent manifest answers (404, as distribution does and
 * the OCI conformance suite expects); only writing it is a client error (400).
 */
function lookupReference(ref: string): Reference {
  try {
    return parseReference(ref);
  } catch (err) {
    if (!(err instanceof RegistryError) || err.status !== 400) throw err;
    throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { detail: { reference: ref } });
  }
}

function manifestHeaders(stored: { digest: string; mediaType: string; size: number }): Record<string, string> {
  return {
    'Content-Type': stored.mediaType,
    'Content-Length': String(stored.size),
    'Docker-Content-Digest': stored.digest,
    ETag: `"${stored.digest}"`,
  };
}

/**
 * Content negotiation: a client that lists the media types it understands and leaves ours out
 * gets 404 (as from distribution), not a document it cannot parse. No Accept means anything.
 */
function acceptable(req: RegistryRequest, mediaType: string, reference: Reference): void {
  const accept = req.headers['accept'];
  if (!accept) return;
  const types = accept.split(',').map((t) => t.split(';')[0]!.trim().toLowerCase());
  if (types.some((t) => t === '*/*' || t === 'application/*' || t === mediaType || t === '')) return;
  throw new RegistryError('MANIFEST_UNKNOWN', `manifest is a ${mediaType}, which the request's Accept header does not include`, {
    detail: { mediaType, accept: types, ...(reference.tag !== undefined ? { tag: reference.tag } : { digest: reference.digest.value }) },
  });
}
