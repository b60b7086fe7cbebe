/**
 * Ingester on a local directory. An upload's bytes are written straight into the file that
 * becomes the blob (`blobs/<upload id>`), at the upload's offset, so committing is an fsync:
 * no rename, no copy, no read-back.
 */
import { constants } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { AppendContext, Committed, Ingester, WriteState } from '../types.js';
import { keys } from '../types.js';
import type { FsObjectStore } from './objects.js';

/** Positional writes need a descriptor that is not in append mode. */
const READ_WRITE_CREATE = constants.O_RDWR | constants.O_CREAT;

export class FsIngester implements Ingester {
  constructor(private readonly objects: FsObjectStore) {}

  create(uploadId: string): WriteState {
    return { key: keys.blob(uploadId), size: 0 };
  }

  async append(state: WriteState, body: AsyncIterable<Uint8Array>, ctx: AppendContext): Promise<WriteState> {
    const path = this.objects.path(state.key);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const file = await open(path, READ_WRITE_CREATE, 0o600);
    try {
      // Bytes past the committed size belong to an attempt that failed: drop them. Committed
      // bytes [0, size) are never touched, so `state` stays valid whatever happens below.
      await file.truncate(state.size);
      let position = state.size;
      for await (const chunk of body) {
        ctx.checkpoint?.();
        let written = 0;
        while (written < chunk.length) {
          const { bytesWritten } = await file.write(chunk, written, chunk.length - written, position);
          written += bytesWritten;
          position += bytesWritten;
        }
      }
      await file.sync();
      return { ...state, size: position };
    } finally {
      await file.close();
    }
  }

  async commit(state: WriteState, body: AsyncIterable<Uint8Array> | undefined, ctx: AppendContext): Promise<Committed> {
    // Without a final chunk, append still leaves the file at exactly the committed size
    // (zero-length blobs, bytes of a failed attempt past the end), synced.
    const final = await this.append(state, body ?? (async function* () {})(), ctx);
    return { key: final.key, size: final.size };
  }

  async readWritten(state: WriteState, from: number, to: number): Promise<AsyncIterable<Uint8Array>> {
    if (to <= from) return (async function* () {})();
    return this.objects.open(state.key, { start: from, end: to - 1 });
  }

  async release(): Promise<void> {
    // Nothing to release: the file is rewritten in place and there are no tail objects.
  }

  async abort(state: WriteState): Promise<void> {
    await rm(this.objects.path(state.key), { force: true });
  }
}
