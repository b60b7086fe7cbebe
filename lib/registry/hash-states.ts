/**
 * Where resumable hash states live: one object per offset, `uploads/<id>/hashstates/sha256/<offset>`
 * (distribution's layout), written before the offset is committed so the committed offset
 * always has its state.
 */
import { RegistryError } from '../oci/errors.js';
import { ResumableSha256 } from '../hash/sha256-state.js';
import type { Upload } from '../metadata/types.js';
import { NotReadable, type StorageDriver, type WriteState, keys } from '../storage/types.js';

export class HashStates {
  constructor(private readonly storage: StorageDriver) {}

  async save(uploadId: string, offset: number, state: Uint8Array): Promise<void> {
    await this.storage.objects.put(keys.hashState(uploadId, 'sha256', offset), state);
  }

  async drop(uploadId: string, offset: number): Promise<void> {
    if (offset > 0) await this.storage.objects.delete([keys.hashState(uploadId, 'sha256', offset)]);
  }

  /**
   * The hash of the first `offset` bytes. Normally one small read: the state stored at
   * `offset`. If that state is missing, resume from the newest older one and hash the gap from
   * the stored data, where the backend can still read it.
   */
  async resume(uploadId: string, write: WriteState): Promise<ResumableSha256> {
    const offset = write.size;
    if (offset === 0) return new ResumableSha256();
    const exact = await this.storage.objects.get(keys.hashState(uploadId, 'sha256', offset));
    if (exact) return ResumableSha256.unmarshal(exact);

    const stored = await this.storage.objects.list(keys.hashStatePrefix(uploadId, 'sha256'));
    const older = stored
      .map((k) => Number(k.slice(k.lastIndexOf('/') + 1)))
      .filter((n) => Number.isSafeInteger(n) && n > 0 && n < offset)
      .sort((a, b) => b - a);
    let hash = new ResumableSha256();
    for (const candidate of older) {
      const bytes = await this.storage.objects.get(keys.hashState(uploadId, 'sha256', candidate));
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
 * its write and the hash state at its offset. Best effort: S3's lifecycle rule is the backstop.
 */
export async function freeUpload(storage: StorageDriver, upload: Pick<Upload, 'id' | 'offset' | 'write'>): Promise<void> {
  await Promise.allSettled([storage.ingester.abort(upload.write), new HashStates(storage).drop(upload.id, upload.offset)]);
}
