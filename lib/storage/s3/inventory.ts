/**
 * What the bucket holds, for garbage collection's orphan sweep: ListObjectsV2 resumed with
 * StartAfter (any key, so a sweep can stop at its budget and the next run carry on after the
 * last key it judged), and the multipart uploads left incomplete.
 */
import { AbortMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { type IncompleteWrite, type Inventory, type ListedObject, countRequest } from '../types.js';
import { s3ErrorName } from './client.js';
import type { S3ObjectStore } from './objects.js';

export class S3Inventory implements Inventory {
  constructor(private readonly store: S3ObjectStore) {}

  async list(prefix: string, after: string | undefined, max: number): Promise<{ objects: ListedObject[]; more: boolean }> {
    const objects: ListedObject[] = [];
    let token: string | undefined;
    let more = true;
    while (objects.length < max && more) {
      countRequest(this.store.stats, 'ListObjectsV2');
      const res = await this.store.s3.send(
        new ListObjectsV2Command({
          Bucket: this.store.bucket,
          Prefix: prefix,
          // StartAfter counts only on the first request; the token carries on from there.
          ...(token ? { ContinuationToken: token } : { StartAfter: after }),
          MaxKeys: Math.min(1000, max - objects.length),
        }),
      );
      for (const o of res.Contents ?? []) {
        if (o.Key) objects.push({ key: o.Key, size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 });
      }
      more = Boolean(res.IsTruncated);
      token = res.NextContinuationToken;
      if (more && !token) break; // a server that truncates without a token: resume by key next time
    }
    return { objects, more };
  }

  async incompleteWrites(prefix: string): Promise<IncompleteWrite[]> {
    const out: IncompleteWrite[] = [];
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    do {
      countRequest(this.store.stats, 'ListMultipartUploads');
      const res = await this.store.s3.send(
        new ListMultipartUploadsCommand({ Bucket: this.store.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }),
      );
      for (const u of res.Uploads ?? []) {
        if (u.Key && u.UploadId) out.push({ key: u.Key, id: u.UploadId, started: u.Initiated?.getTime() ?? 0 });
      }
      const truncated = Boolean(res.IsTruncated) && (res.NextKeyMarker !== keyMarker || res.NextUploadIdMarker !== idMarker);
      keyMarker = truncated ? res.NextKeyMarker : undefined;
      idMarker = truncated ? res.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return out;
  }

  async abortWrite(write: IncompleteWrite): Promise<void> {
    countRequest(this.store.stats, 'AbortMultipartUpload');
    await this.store.s3
      .send(new AbortMultipartUploadCommand({ Bucket: this.store.bucket, Key: write.key, UploadId: write.id }))
      .catch((err) => {
        // Completed or aborted meanwhile (a finish, the purge, the lifecycle rule): nothing to free.
        if (s3ErrorName(err) !== 'NoSuchUpload') throw err;
      });
  }
}
