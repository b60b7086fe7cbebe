/**
 * Where resumable hash states live: one object per attempt and offset,
 * `uploads/<id>/hashstates/sha256/<attempt>/<offset>`, written before the attempt commits its
 * offset, so the committed record (which names its attempt) always has its state, and a stale
 * attempt racing the winner can neither overwrite nor delete the winner's state.
 */
import { RegistryError } from '../oci/errors.js';
import { ResumableSha256 } from '../hash/sha256-state.js';
import type { Upload } from '../metadata/types.js';
import { NotReadable, type StorageDriver, type WriteState, keys } from '../storage/types.js';

/** What names a hash state: the upload, the offset, and the attempt that wrote those bytes. */
export type StateRef = Pick<Upload, 'id' | 'offset' | 'attempt' | 'write'>;

export class HashStates {
  constructor(private readonly storage: StorageDriver) {}

  async save(uploadId: string, offset: number, attempt: string, state: Uint8Array): Promise<void> {
    await this.storage.objects.put(keys.hashState(uploadId, 'sha256', offset, attempt), state);
  }

  /** Deletes one attempt's state; only for a state its caller committed or wrote itself. */
  async drop(uploadId: string, offset: number, attempt: string | undefined): Promise<void> {
    if (offset > 0) await this.storage.objects.delete([keys.hashState(uploadId, 'sha256', offset, attempt)]);
  }

  /**
   * The hash of the upload's first `offset` bytes. Normally one small read: the state the record
   * names. If that state is missing, resume from the newest older one and hash the gap from the
   * stored data, where the backend can still read it. (An older state left by an attempt that
   * never committed hashes other bytes: at worst the digest then does not match and the upload
   * is refused, never accepted under a wrong digest.)
   */
  async resume(upload: StateRef): Promise<ResumableSha256> {
    const { id: uploadId, offset, write } = upload;
    if (offset === 0) return new ResumableSha256();
    const exact = await this.storage.objects.get(keys.hashState(uploadId, 'sha256', offset, upload.attempt));
    if (exact) return ResumableSha256.unmarshal(exact);

    const prefix = keys.hashStatePrefix(uploadId, 'sha256');
    const older = (await this.storage.objects.list(prefix))
      .map((k) => ({ key: k, offset: Number(k.slice(k.lastIndexOf('/') + 1)) }))
      .filter((s) => Number.isSafeInteger(s.offset) && s.offset > 0 && s.offset < offset)
      .sort((a, b) => b.offset - a.offset);
    let hash = new ResumableSha256();
    for (const candidate of older) {
      const bytes = await this.storage.objects.get(candidate.key);
      if (bytes) {
        hash = ResumableSha256.unmarshal(bytes);
        break;
      }
    }
    try {
      for await (const chunk of await this.storage.ingester.readWritten(write, hash.bytesHashed, offset)) hash.update(chunk);
    } catch (err) {
      if (err instanceof NotReadable) {
        throw new RegistryError('BLOB_UPLOAD_INVALID', 'the upload lost its hash state; restart the upload', { detail: { offset } });
      }
      throw err;
    }
    if (hash.bytesHashed !== offset) throw new Error(`hash resume reached ${hash.bytesHashed}, expected ${offset}`);
    return hash;
  }
}

/**
 * Frees what an upload that will never finish holds in storage (cancelled, refused, expired):
 * its write, when given, and every scratch object under its prefix (hash states and tails,
 * including those of attempts that never committed). Best effort unless `strict`: S3's
 * lifecycle rule is the backstop.
 */
export async function freeUpload(storage: StorageDriver, id: string, write: WriteState | undefined, opts: { strict?: boolean } = {}): Promise<void> {
  const work = [
    write ? storage.ingester.abort(write) : undefined,
    storage.objects.list(keys.uploadPrefix(id)).then((scratch) => (scratch.length ? storage.objects.delete(scratch) : undefined)),
  ];
  const failed = (await Promise.allSettled(work)).find((r) => r.status === 'rejected');
  // strict: the caller retries later (the purge), so it needs to know.
  if (opts.strict && failed) throw (failed as PromiseRejectedResult).reason;
}
