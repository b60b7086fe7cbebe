/**
 * Ingester on a local directory. An upload's bytes accumulate in a scratch file under the
 * upload's prefix, `uploads/<id>/data.<attempt>`, named after the request (attempt) that
 * created it; committing fsyncs it and renames it to its own blob key, `blobs/<id>.<attempt>`,
 * fsyncing the directory: no copy, no read-back, and nothing but a commit ever writes at a blob
 * key. So aborting or purging an upload frees only scratch, never a blob a finished upload made.
 *
 * Racing attempts never write into each other's bytes. The next request continues the scratch
 * file the record names in place (bytes past the committed size belong to a request that failed
 * and are cut off first), unless the record says a writer whose lease was taken over may still
 * be running (AppendContext.contended): that writer may write anywhere past the offset it
 * started at, which is where the committed bytes now are. Then the request copies the committed
 * bytes into a scratch file of its own (a reflink where the filesystem has them) and continues
 * there; the commit point, the conditional DynamoDB update naming the attempt, decides which
 * file the upload continues from. A file the stale writer finished into a blob is only read.
 */
import { constants } from 'node:fs';
import { type FileHandle, copyFile, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RegistryError } from '../../oci/errors.js';
import { type AppendContext, type Committed, type Ingester, ObjectNotFound, type WriteState } from '../types.js';
import { keys } from '../types.js';
import { type FsObjectStore, isNotFound, syncDir } from './objects.js';

/** Positional writes need a descriptor that is not in append mode. */
const READ_WRITE_CREATE = constants.O_RDWR | constants.O_CREAT;

/** An open scratch file holding the committed bytes, and where it is committed to. */
interface Scratch {
  file: FileHandle;
  scratchKey: string;
  key: string;
  /** Created by this attempt (not the record's): dropped if the attempt fails. */
  own: boolean;
}

export class FsIngester implements Ingester {
  constructor(private readonly objects: FsObjectStore) {}

  create(uploadId: string): WriteState {
    // No scratch file until the first bytes: the request writing them creates its own.
    return { key: keys.blob(uploadId), size: 0 };
  }

  async append(state: WriteState, body: AsyncIterable<Uint8Array>, ctx: AppendContext): Promise<WriteState> {
    const scratch = await this.openScratch(state, ctx);
    let size: number;
    try {
      size = await this.write(scratch, state.size, body, ctx);
    } catch (err) {
      await this.drop(scratch);
      throw err;
    }
    if (size === state.size && scratch.own) {
      // Nothing written: the record's write stays as it is.
      await this.drop(scratch);
      return state;
    }
    await scratch.file.close();
    return { key: scratch.key, size, scratchKey: scratch.scratchKey };
  }

  /** Writes the body at `offset` after cutting the file there, fsyncs; returns the new size. */
  private async write(scratch: Scratch, offset: number, body: AsyncIterable<Uint8Array>, ctx: AppendContext): Promise<number> {
    const { file } = scratch;
    // Bytes past the committed size belong to an attempt that failed: drop them. Committed
    // bytes [0, offset) are never touched, so the record's write stays valid whatever happens.
    await file.truncate(offset);
    let position = offset;
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
    return position;
  }

  /** Closes a scratch file; deletes it if this attempt created it. */
  private async drop(scratch: Scratch): Promise<void> {
    await scratch.file.close().catch(() => undefined);
    if (scratch.own) await this.objects.delete([scratch.scratchKey]).catch(() => undefined);
  }

  /**
   * A scratch file holding the committed bytes, for this attempt to write past them: the
   * record's own (in place), or a new one of this attempt's. The committed bytes must all be
   * there: a file lost or cut short by a crash would otherwise be extended with zeros that the
   * stored hash state never saw.
   */
  private async openScratch(state: WriteState, ctx: AppendContext): Promise<Scratch> {
    const own = { scratchKey: keys.uploadData(ctx.uploadId, ctx.attempt), key: `${keys.blob(ctx.uploadId)}.${ctx.attempt}` };
    const path = this.objects.path(own.scratchKey);
    if (state.size === 0) {
      await this.objects.ensureDir(dirname(path));
      return { ...own, file: await this.createDurably(path), own: true };
    }
    const recorded = scratchOf(state);
    if (!ctx.contended) {
      const file = await open(this.objects.path(recorded), constants.O_RDWR).catch((err) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
      if (file) {
        const size = (await file.stat()).size;
        if (size >= state.size) return { file, scratchKey: recorded, key: state.key, own: false };
        await file.close();
        throw lostWrite(state, size, ctx);
      }
    }
    // Copy the committed bytes out of the record's file, or out of the blob an earlier commit
    // (a finish that failed afterwards, or a stale one) renamed it to: both are only read.
    for (let tries = 0; ; tries++) {
      const source = await this.committedSource(state, ctx);
      try {
        await copyFile(this.objects.path(source), path, constants.COPYFILE_FICLONE);
        break;
      } catch (err) {
        // A stale finish renamed the scratch file to its blob between the look and the copy.
        if (!isNotFound(err) || tries > 0) throw err;
      }
    }
    const file = await open(path, constants.O_RDWR);
    await syncDir(dirname(path)).catch(async (err) => {
      await file.close();
      throw err;
    });
    return { ...own, file, own: true };
  }

  /** The key holding the committed bytes [0, state.size): the scratch file, or the blob it became. */
  private async committedSource(state: WriteState, ctx: AppendContext): Promise<string> {
    const recorded = scratchOf(state);
    const scratchSize = await this.objects.stat(recorded);
    if (scratchSize !== undefined) {
      if (scratchSize >= state.size) return recorded;
      throw lostWrite(state, scratchSize, ctx);
    }
    if (((await this.objects.stat(state.key)) ?? -1) >= state.size) return state.key;
    throw lostWrite(state, undefined, ctx);
  }

  private async createDurably(path: string): Promise<FileHandle> {
    const file = await open(path, READ_WRITE_CREATE | constants.O_TRUNC, 0o600);
    await syncDir(dirname(path)).catch(async (err) => {
      await file.close();
      throw err;
    });
    return file;
  }

  async commit(state: WriteState, body: AsyncIterable<Uint8Array> | undefined, ctx: AppendContext): Promise<Committed> {
    if (!body && state.size > 0 && (await this.objects.stat(scratchOf(state))) === undefined && (await this.objects.stat(state.key)) === state.size) {
      // An earlier commit of this write already renamed it into place (its finish then
      // failed): committing again is that same result.
      return { key: state.key, size: state.size };
    }
    const scratch = await this.openScratch(state, ctx);
    let size: number;
    try {
      // Without a final chunk this still leaves the file at exactly the committed size
      // (zero-length blobs, bytes of a failed attempt past the end), synced.
      size = await this.write(scratch, state.size, body ?? (async function* () {})(), ctx);
      await scratch.file.close();
    } catch (err) {
      await this.drop(scratch);
      throw err;
    }
    await this.objects.moveIntoPlace(this.objects.path(scratch.scratchKey), this.objects.path(scratch.key)).catch((err: NodeJS.ErrnoException) => {
      // The file went while this request wrote it: the request that took the upload over
      // released it (this one is stale). That request's record is what counts; this one is told
      // so, and its bytes went with the file.
      if (err.code === 'ENOENT') throw new RegistryError('BLOB_UPLOAD_INVALID', 'another request took this upload over; ask for its status and continue from its Range', { detail: { offset: state.size } });
      throw err;
    });
    return { key: scratch.key, size };
  }

  async readWritten(state: WriteState, from: number, to: number): Promise<AsyncIterable<Uint8Array>> {
    if (to <= from) return (async function* () {})();
    const range = { start: from, end: to - 1 };
    return this.objects.open(scratchOf(state), range).catch((err) => {
      // Renamed to its blob by a commit whose finish then failed: the bytes are read there.
      if (err instanceof ObjectNotFound) return this.objects.open(state.key, range);
      throw err;
    });
  }

  async release(previous: WriteState, current: WriteState | undefined): Promise<void> {
    // The record moved on to another scratch file (a request that could not continue in place),
    // or the write completed: the old file is nobody's. A stale writer may still hold it open;
    // its writes then go nowhere.
    if (previous.scratchKey && previous.scratchKey !== current?.scratchKey) await this.objects.delete([previous.scratchKey]);
  }

  async abort(state: WriteState): Promise<void> {
    // Only the scratch file: whatever is at a blob key was put there by a commit.
    if (state.scratchKey) await this.objects.delete([state.scratchKey]);
  }
}

/**
 * A write with committed bytes names its scratch file. Writes recorded before scratch files
 * existed have none: their bytes are at the blob key, which this driver no longer writes
 * outside a commit, so they must be restarted.
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
