/**
 * Ingester on a local directory. An upload's bytes are written into a scratch file under the
 * upload's prefix (`uploads/<id>/data`), at the upload's offset; committing fsyncs it and
 * renames it to the blob key (`blobs/<upload id>`), fsyncing the directory: no copy, no
 * read-back, and nothing but a commit ever writes at a blob's key. So aborting or purging an
 * upload frees only scratch, never a blob a finished upload made of the same bytes.
 */
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RegistryError } from '../../oci/errors.js';
import type { AppendContext, Committed, Ingester, WriteState } from '../types.js';
import { keys } from '../types.js';
import { type FsObjectStore, isNotFound, syncDir } from './objects.js';

/** Positional writes need a descriptor that is not in append mode. */
const READ_WRITE_CREATE = constants.O_RDWR | constants.O_CREAT;

export class FsIngester implements Ingester {
  constructor(private readonly objects: FsObjectStore) {}

  create(uploadId: string): WriteState {
    return { key: keys.blob(uploadId), size: 0, scratchKey: keys.uploadData(uploadId) };
  }

  async append(state: WriteState, body: AsyncIterable<Uint8Array>, ctx: AppendContext): Promise<WriteState> {
    const file = await this.openScratch(state, ctx);
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

  /**
   * The scratch file, holding at least the committed bytes. An upload that wrote nothing yet
   * creates it; one that did must find them all: a file lost or cut short by a crash would
   * otherwise be extended with zeros that the stored hash state never saw.
   */
  private async openScratch(state: WriteState, ctx: AppendContext): Promise<FileHandle> {
    const path = this.objects.path(scratchOf(state));
    if (state.size === 0) {
      await this.objects.ensureDir(dirname(path));
      const file = await open(path, READ_WRITE_CREATE, 0o600);
      await syncDir(dirname(path)).catch(async (err) => {
        await file.close();
        throw err;
      });
      return file;
    }
    const file = await open(path, constants.O_RDWR).catch((err) => {
      throw isNotFound(err) ? lostWrite(state, undefined, ctx) : err;
    });
    const size = (await file.stat()).size;
    if (size >= state.size) return file;
    await file.close();
    throw lostWrite(state, size, ctx);
  }

  async commit(state: WriteState, body: AsyncIterable<Uint8Array> | undefined, ctx: AppendContext): Promise<Committed> {
    if (!body && (await this.objects.stat(scratchOf(state))) === undefined && (await this.objects.stat(state.key)) === state.size) {
      // An earlier commit of this write already renamed it into place (its finish then
      // failed): committing again is that same result.
      return { key: state.key, size: state.size };
    }
    // Without a final chunk, append still leaves the file at exactly the committed size
    // (zero-length blobs, bytes of a failed attempt past the end), synced.
    const final = await this.append(state, body ?? (async function* () {})(), ctx);
    await this.objects.moveIntoPlace(this.objects.path(scratchOf(state)), this.objects.path(state.key));
    return { key: final.key, size: final.size };
  }

  async readWritten(state: WriteState, from: number, to: number): Promise<AsyncIterable<Uint8Array>> {
    if (to <= from) return (async function* () {})();
    return this.objects.open(scratchOf(state), { start: from, end: to - 1 });
  }

  async release(): Promise<void> {
    // Nothing to release: the scratch file is rewritten in place and there are no tail objects.
  }

  async abort(state: WriteState): Promise<void> {
    // Only the scratch file: whatever is at the blob key was put there by a commit.
    await this.objects.delete([scratchOf(state)]);
  }
}

/**
 * Writes recorded before scratch files existed have none: their bytes are at the blob key,
 * which this driver no longer writes outside a commit, so they must be restarted.
 */
function scratchOf(state: WriteState): string {
  if (!state.scratchKey) throw new RegistryError('BLOB_UPLOAD_INVALID', 'upload was started by an older version of the registry; restart the upload');
  return state.scratchKey;
}

function lostWrite(state: WriteState, actual: number | undefined, ctx: AppendContext): RegistryError {
  const message = `upload data ${state.scratchKey} holds ${actual ?? 'no'} bytes of the ${state.size} its record says were written`;
  ctx.report?.({ kind: 'upload-data-missing', message, key: state.scratchKey, upload: ctx.uploadId, expected: state.size, actual });
  return new RegistryError('BLOB_UPLOAD_INVALID', 'the bytes written so far are lost; restart the upload', { detail: { offset: state.size } });
}
