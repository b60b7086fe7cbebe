/**
 * The purge: frees what abandoned uploads hold. An upload nobody finished expires
 * SKIFF_UPLOAD_TTL_SECONDS after its last write; the purge then claims it (no request can use it
 * from then on), aborts its write (the multipart upload and tail on S3, the partial file on the
 * filesystem), drops its scratch objects and only then deletes its record. S3's lifecycle rules
 * and DynamoDB's TTL remain backstops for what a purge misses; on the filesystem the purge is
 * all there is.
 *
 * It reads only upload sessions (a sparse index on expiry), acts page by page as it reads, and
 * stops at a time budget: what it did not reach is still expired and still in the index, so the
 * next run takes it up, and what it purged has left the index.
 */
import type { MetadataStore } from '../metadata/types.js';
import type { StorageDriver } from '../storage/types.js';
import { freeUpload } from './hash-states.js';

export interface PurgeResult {
  purged: number;
  skipped: number;
  /** Uploads whose storage could not be freed now; the next run takes them up again. */
  failed: number;
  /** The budget ran out before every expired upload was seen. */
  more: boolean;
}

export interface PurgeOptions {
  /** Expiry cut-off (default: now). */
  now?: number;
  /** Stop taking up new uploads after this long (default 4 minutes: the function's timeout is 5). */
  budgetMs?: number;
  /** Index entries read per page. */
  pageSize?: number;
}

export async function purgeExpiredUploads(meta: MetadataStore, storage: StorageDriver, opts: PurgeOptions = {}): Promise<PurgeResult> {
  const now = opts.now ?? Date.now();
  const deadline = Date.now() + (opts.budgetMs ?? 240_000);
  let purged = 0;
  let skipped = 0;
  let failed = 0;
  let cursor: string | undefined;
  do {
    const page = await meta.uploads.expired(now, cursor, opts.pageSize);
    cursor = page.cursor;
    for (const [i, seen] of page.uploads.entries()) {
      // Claimed first: from then on no request can use the upload, so nothing is freed under a
      // writer's feet. The record goes last, once its storage is freed: until then it stays in
      // the index, and a run that failed half-way is finished by the next one.
      try {
        const upload = await meta.uploads.claimExpired(seen, now);
        if (upload) {
          await freeUpload(storage, upload.id, upload.write, { strict: true });
          await meta.uploads.removeClaimed(upload.id);
          purged++;
        } else {
          skipped++;
        }
      } catch {
        failed++;
      }
      // Out of time: the rest of this page, and the pages after it, wait for the next run.
      if (Date.now() >= deadline && (i < page.uploads.length - 1 || cursor)) return { purged, skipped, failed, more: true };
    }
  } while (cursor);
  return { purged, skipped, failed, more: false };
}
