/**
 * Repairing a multipart upload that a failed request wrote into. This runs only when
 * CompleteMultipartUpload refused our part list (InvalidPart), never on the normal path.
 *
 * A request that fails after writing parts leaves them behind, and S3 cannot delete a part:
 * - it may have overwritten the provisional last part: the committed tail is still in its own
 *   object, so we upload it again;
 * - it may have written parts past the end ("strays"). AWS completes with the parts we list
 *   and drops the rest; Ceph RGW refuses while parts exist that the list omits. Then we
 *   complete everything into a scratch object and copy our bytes out of it server-side into a
 *   new object: the one repair whose cost grows with the blob, paid only in this rare case;
 * - a full, committed part whose content changed means a writer that lost its lease wrote over
 *   committed data: that cannot be repaired and must never be completed.
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { RegistryError } from '../../oci/errors.js';
import type { IntegrityReporter } from '../../telemetry.js';
import { type Part, WriteGone, countRequest } from '../types.js';
import { bareEtag, s3ErrorName } from './client.js';
import { completedWith } from './lost-answers.js';
import type { S3ObjectStore } from './objects.js';
import { MIN_PART } from './parts.js';

interface Listed {
  etag: string;
  size: number;
}

export interface RepairInput {
  key: string;
  multipartId: string;
  /** The parts the blob consists of, in order (numbers 1..n). */
  parts: Part[];
  /** Reads the committed tail, when the last part is the provisional one. */
  tail?: () => Promise<Uint8Array | undefined>;
  /** Every repair (and every part beyond repair) is reported: stored parts disagreed with the record. */
  report?: IntegrityReporter;
}

/** Fixes what can be fixed and completes; returns the key now holding the blob. */
export async function repairAndComplete(store: S3ObjectStore, given: RepairInput): Promise<string> {
  // The tail is read at most once, however many parts need it (the repair, then the padding).
  let tailRead: Promise<Uint8Array | undefined> | undefined;
  const input: RepairInput = { ...given, tail: given.tail && (() => (tailRead ??= given.tail!())) };
  const { key, multipartId, parts } = input;
  const report = (kind: 'multipart-repaired' | 'multipart-corrupt', message: string, extra: Record<string, unknown> = {}) =>
    input.report?.({ kind, message, key, multipartId, ...extra });
  const listed = await listParts(store, key, multipartId);
  const replaced: number[] = [];
  for (const part of parts) {
    if (bareEtag(listed.get(part.number)?.etag) === bareEtag(part.etag)) continue;
    const isTail = input.tail && part.number === parts.length;
    if (!isTail) {
      report('multipart-corrupt', `stored part ${part.number} differs from the upload record`, { part: part.number });
      throw new RegistryError('BLOB_UPLOAD_INVALID', `stored part ${part.number} does not match the upload record; restart the upload`);
    }
    const tail = await input.tail!();
    if (!tail || tail.length !== part.size) {
      report('multipart-corrupt', `upload tail ${tail ? `holds ${tail.length} bytes, expected ${part.size}` : 'is missing'}`, { part: part.number });
      throw new RegistryError('BLOB_UPLOAD_INVALID', 'upload tail is missing; restart the upload');
    }
    part.etag = await uploadPart(store, key, multipartId, part.number, tail);
    listed.set(part.number, { etag: part.etag, size: part.size });
    replaced.push(part.number);
  }
  const strays = [...listed.keys()].filter((n) => n > parts.length);
  if (!strays.length) {
    await complete(store, key, multipartId, parts);
    report('multipart-repaired', 'completed after putting back the parts a failed request overwrote', { replaced });
    return key;
  }
  const rebuilt = await rebuild(store, input, listed);
  report('multipart-repaired', `rebuilt at ${rebuilt} without the parts failed requests left behind`, { replaced, strays, rebuilt });
  return rebuilt;
}

/**
 * Completes every part present (ours, then the strays) into the scratch object at `key`, then
 * copies our bytes, part by part, into a new multipart upload at `<key>.r`. Every part but the
 * last must be >= 5 MiB for the first completion, so small parts are padded first; the padding
 * lies past our bytes and is never copied.
 */
async function rebuild(store: S3ObjectStore, input: RepairInput, listed: Map<number, Listed>): Promise<string> {
  const { key, multipartId, parts } = input;
  const numbers = [...listed.keys()].sort((a, b) => a - b);
  const last = numbers[numbers.length - 1]!;
  for (const n of numbers) {
    const entry = listed.get(n)!;
    if (n === last || entry.size >= MIN_PART) continue;
    const ours = parts.find((p) => p.number === n);
    const pad = Buffer.alloc(MIN_PART);
    if (ours) pad.set((await input.tail?.()) ?? new Uint8Array(0));
    listed.set(n, { etag: await uploadPart(store, key, multipartId, n, pad), size: MIN_PART });
  }
  await complete(
    store,
    key,
    multipartId,
    numbers.map((n) => ({ number: n, etag: listed.get(n)!.etag, size: listed.get(n)!.size })),
  );

  const target = `${key}.r`;
  countRequest(store.stats, 'CreateMultipartUpload');
  const created = await store.s3.send(new CreateMultipartUploadCommand({ Bucket: store.bucket, Key: target, ContentType: 'application/octet-stream' }));
  const copies: Part[] = [];
  let offset = 0;
  for (const part of parts) {
    countRequest(store.stats, 'UploadPartCopy');
    const res = await store.s3.send(
      new UploadPartCopyCommand({
        Bucket: store.bucket,
        Key: target,
        UploadId: created.UploadId,
        PartNumber: part.number,
        CopySource: `${store.bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`,
        CopySourceRange: `bytes=${offset}-${offset + part.size - 1}`,
      }),
    );
    copies.push({ number: part.number, etag: res.CopyPartResult?.ETag ?? '', size: part.size });
    offset += part.size;
  }
  await complete(store, target, created.UploadId!, copies);
  // Our bytes are safe at the target: the scratch object's delete is best effort (a lost answer
  // must not fail a finish whose blob exists).
  await store.delete([key]).catch(() => undefined);
  return target;
}

export async function listParts(store: S3ObjectStore, key: string, multipartId: string): Promise<Map<number, Listed>> {
  const out = new Map<number, Listed>();
  let marker: string | undefined;
  do {
    countRequest(store.stats, 'ListParts');
    const res = await store.s3.send(new ListPartsCommand({ Bucket: store.bucket, Key: key, UploadId: multipartId, PartNumberMarker: marker }));
    for (const p of res.Parts ?? []) out.set(p.PartNumber!, { etag: p.ETag ?? '', size: p.Size ?? 0 });
    marker = res.IsTruncated ? res.NextPartNumberMarker : undefined;
  } while (marker);
  return out;
}

/** S3's refusals of a part list: the upload's problem, never an unknown outcome. */
const REFUSALS = new Set(['InvalidPart', 'InvalidPartOrder', 'EntityTooSmall']);

/**
 * Completes the multipart upload with `parts`. A completion whose answer was lost (a timeout
 * after it applied, or the SDK's retry of it meeting NoSuchUpload because the first try already
 * completed it) is recognised by the object it made: its ETag is S3's multipart ETag of exactly
 * this part list (MD5 of the parts' MD5s, `-<count>`) and its size their sum. Every attempt at a
 * finish completes the same multipart upload, so only the part list, not metadata set when the
 * upload was created, tells our completion from another attempt's.
 */
export async function complete(store: S3ObjectStore, key: string, multipartId: string, parts: Part[]): Promise<void> {
  countRequest(store.stats, 'CompleteMultipartUpload');
  try {
    await store.s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: store.bucket,
        Key: key,
        UploadId: multipartId,
        MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.number, ETag: p.etag })) },
      }),
    );
  } catch (err) {
    if (REFUSALS.has(s3ErrorName(err) ?? '')) throw err;
    const found = await completedWith(store, key, parts).catch(() => undefined);
    if (found === 'ours') return;
    // Another request completed this multipart upload with other parts (a stale finish): ours
    // can never complete. Whatever S3 said (NoSuchUpload, or RGW's "completion already in
    // progress"), the upload has to start over.
    if (found === 'other') throw new WriteGone(`multipart upload of ${key} was completed with other parts`, { cause: err });
    throw err;
  }
}

async function uploadPart(store: S3ObjectStore, key: string, multipartId: string, number: number, body: Uint8Array): Promise<string> {
  countRequest(store.stats, 'UploadPart');
  const res = await store.s3.send(
    new UploadPartCommand({ Bucket: store.bucket, Key: key, UploadId: multipartId, PartNumber: number, Body: body, ContentLength: body.length }),
  );
  return res.ETag ?? '';
}
