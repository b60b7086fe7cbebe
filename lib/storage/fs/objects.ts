/**
 * ObjectStore on a local directory: the embedded default. Keys map to paths under `root`.
 *
 * Crash safety, as containerd's content store ingests: a new object is written under the
 * scratch directory `tmp/`, fsynced, renamed into place, and its directory fsynced, so after
 * a crash a key holds either nothing or all of its bytes. A crash leaves at most a
 * `tmp/<key, slashes as _>.<attempt>.tmp` file, recognisable for a later clean-up.
 */
import { type Dirent } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { randomUUID } from 'node:crypto';
import { type ByteRange, type ObjectStore, ObjectNotFound, ObjectTruncated, countRequest, newStats } from '../types.js';

/** Scratch directory for objects being written, under the root (rename needs one filesystem). */
export const SCRATCH_DIR = 'tmp';

export class FsObjectStore implements ObjectStore {
  readonly stats = newStats();

  constructor(readonly root: string) {}

  /** Keys are produced by lib/storage/types.ts `keys`; anything that could escape root is a bug. */
  path(key: string): string {
    if (key.split('/').some((p) => p === '..' || p === '.' || p === '') || key.startsWith('/')) {
      throw new Error(`invalid object key: ${key}`);
    }
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    countRequest(this.stats, 'put');
    const path = this.path(key);
    const tmp = this.scratchPath(key, randomUUID());
    await this.ensureDir(dirname(tmp));
    // Write elsewhere, fsync, rename: a reader (or a restart after a crash) never sees half an object.
    const file = await open(tmp, 'w', 0o600);
    try {
      await file.writeFile(bytes);
      await file.sync();
    } finally {
      await file.close();
    }
    await this.moveIntoPlace(tmp, path);
  }

  /** Where an attempt writes `key` before it is complete. */
  scratchPath(key: string, attempt: string): string {
    return join(this.root, SCRATCH_DIR, `${key.split('/').join('_')}.${attempt}.tmp`);
  }

  /** Renames a complete, fsynced file to `path` and makes the new directory entry durable. */
  async moveIntoPlace(from: string, path: string): Promise<void> {
    await this.ensureDir(dirname(path));
    await rename(from, path);
    await syncDir(dirname(path));
  }

  /** mkdir -p, with each directory it creates made durable in its parent. */
  async ensureDir(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true, mode: 0o700 });
    if (!first) return;
    for (let d = dir; ; d = dirname(d)) {
      await syncDir(dirname(d));
      if (d === first) break;
    }
  }

  async stat(key: string): Promise<number | undefined> {
    countRequest(this.stats, 'stat');
    try {
      return (await stat(this.path(key))).size;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    countRequest(this.stats, 'get');
    try {
      const data = await readFile(this.path(key));
      this.stats.bytesRead += data.length;
      return data;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async open(key: string, range?: ByteRange, size?: number): Promise<AsyncIterable<Uint8Array>> {
    countRequest(this.stats, 'open');
    // Surface a missing or short file now, rather than as a stream cut short mid-response.
    const file = await open(this.path(key), 'r').catch((err) => {
      throw isNotFound(err) ? new ObjectNotFound(key) : err;
    });
    if (size !== undefined) {
      const actual = (await file.stat()).size;
      if (actual !== size) {
        await file.close();
        throw new ObjectTruncated(key, size, actual);
      }
    }
    return this.counted(file.createReadStream(range ? { start: range.start, end: range.end } : {}));
  }

  /** Counts bytes as they are consumed, so stats reflect what was really read. */
  async *counted(source: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
    for await (const chunk of source) {
      this.stats.bytesRead += chunk.length;
      yield chunk;
    }
  }

  async list(prefix: string): Promise<string[]> {
    countRequest(this.stats, 'list');
    const dir = this.path(prefix.replace(/\/+$/, ''));
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { recursive: true, withFileTypes: true });
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    const out: string[] = [];
    // Objects are files; the directories between them are not keys.
    for (const entry of entries) {
      if (!entry.isFile() || entry.name.endsWith('.tmp')) continue;
      const full = join(entry.parentPath, entry.name);
      const key = relative(this.root, full).split(sep).join('/');
      out.push(key);
    }
    return out.sort();
  }

  async delete(keys: string[]): Promise<void> {
    countRequest(this.stats, 'delete');
    await Promise.all(keys.map((key) => rm(this.path(key), { force: true })));
    // Prune directories the deletes emptied (upload scratch areas), up to the key's top level.
    const dirs = new Set(keys.map((k) => dirname(this.path(k))));
    for (let dir of dirs) {
      while (dir.startsWith(this.root + sep) && relative(this.root, dir).includes(sep)) {
        try {
          await rmdir(dir);
        } catch {
          break; // not empty, or already gone
        }
        dir = dirname(dir);
      }
    }
  }
}

/** Makes a directory's entries (a file created or renamed in it) durable. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === 'ENOENT';
}
