/**
 * Recognising an S3 write whose answer was lost: it applied, then the answer timed out, or the
 * SDK sent it again and the retry met what the first try did (CompleteMultipartUpload: the
 * multipart upload is gone, NoSuchUpload). The object the write made says whether it was ours:
 * S3's ETag is the MD5 of a single PUT's bytes, and of a multipart completion the MD5 of its
 * parts' MD5s with `-<count>`, so comparing it with what we sent identifies our write exactly
 * (another request's completion of the same multipart upload with other parts does not match).
 * ETags that are not MD5s (SSE-KMS) identify nothing: then the failure stands.
 */
import { createHash } from 'node:crypto';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { type Part, countRequest } from '../types.js';
import { bareEtag, isS3NotFound, s3Status } from './client.js';
import type { S3ObjectStore } from './objects.js';

/**
 * Whether the object at `key` is the completion of exactly `parts` ('ours'), of something else
 * ('other'), or absent ('none'). Part ETags that are not MD5s (SSE-KMS) cannot be told apart:
 * an object there counts as another's.
 */
export async function completedWith(store: S3ObjectStore, key: string, parts: Part[]): Promise<'ours' | 'other' | 'none'> {
  const expected = multipartEtag(parts);
  countRequest(store.stats, 'HeadObject');
  try {
    const head = await store.s3.send(new HeadObjectCommand({ Bucket: store.bucket, Key: key }));
    const ours = expected !== undefined && bareEtag(head.ETag) === expected && head.ContentLength === parts.reduce((n, p) => n + p.size, 0);
    return ours ? 'ours' : 'other';
  } catch (err) {
    if (isS3NotFound(err)) return 'none';
    throw err;
  }
}

/** S3's ETag of an object completed from `parts`; undefined when a part's ETag is not an MD5. */
export function multipartEtag(parts: Part[]): string | undefined {
  const md5s: Buffer[] = [];
  for (const p of parts) {
    const hex = bareEtag(p.etag);
    if (!/^[0-9a-f]{32}$/i.test(hex)) return undefined;
    md5s.push(Buffer.from(hex, 'hex'));
  }
  return `${createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${parts.length}`;
}

/** A failure after which the write may have applied: no answer, or a server error (not a refusal). */
export function outcomeUnknown(err: unknown): boolean {
  const status = s3Status(err);
  return status === undefined || status >= 500;
}

/** PutObject, answered as a success when its answer was lost but the object holds exactly `bytes`. */
export async function putRecognised(store: S3ObjectStore, key: string, bytes: Uint8Array): Promise<void> {
  try {
    await store.put(key, bytes);
  } catch (err) {
    if (!outcomeUnknown(err)) throw err;
    const expected = createHash('md5').update(bytes).digest('hex');
    countRequest(store.stats, 'HeadObject');
    const head = await store.s3.send(new HeadObjectCommand({ Bucket: store.bucket, Key: key })).catch(() => undefined);
    if (head && bareEtag(head.ETag) === expected && head.ContentLength === bytes.length) return;
    throw err;
  }
}
