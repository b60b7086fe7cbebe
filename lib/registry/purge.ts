/**
 * The purge: frees what abandoned uploads hold. An upload nobody finished expires
 * SKIFF_UPLOAD_TTL_SECONDS after its last write; the purge then aborts its write (the multipart
 * upload and tail on S3, the partial file on the filesystem), drops its hash state and deletes
 * its record. S3's lifecycle rules and DynamoDB's TTL remain backstops for what a purge misses;
 * on the filesystem the purge is all there is.
 */
import type { MetadataStore } from '../metadata/types.js';
import type { StorageDriver } from '../storage/types.js';
import { freeUpload } from './hash-states.js';

export interface PurgeResult {
  purged: number;
  skipped: number;
}

export async function purgeExpiredUploads(meta: MetadataStore, storage: StorageDriver, now = Date.now(), limit = 1000): Promise<PurgeResult> {
  let purged = 0;
  let skipped = 0;
  for (const upload of await meta.uploads.expired(now, limit)) {
    // The record goes first: once it is gone no request can use the upload, so nothing is
    // freed under a writer's feet.
    if (!(await meta.uploads.removeExpired(upload, now))) {
      skipped++;
      continue;
    }
    await freeUpload(storage, upload.id, upload.write);
    purged++;
  }
  return { purged, skipped };
}
