/**
 * ObjectStore on a local directory: the embedded default. Keys map to paths under `root`.
 */
import { type Dirent, createReadStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { randomUUID } from 'node:crypto';
import { type ByteRange, type ObjectStore, ObjectNotFound, countRequest, newStats } from '../types.js';

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
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // Write then rename: a reader never sees half a hash state.
    const tmp = `${path}.${randomUUID()}.tmp`;
    await writeFile(tmp, bytes, { mode: 0o600 });
    await rename(tmp, path);
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

  async open(key: string, range?: ByteRange): Promise<AsyncIterable<Uint8Array>> {
    countRequest(this.stats, 'open');
    const stream = createReadStream(this.path(key), range ? { start: range.start, end: range.end } : {});
    // Surface a missing file now, as ObjectNotFound, rather than as a stream error mid-response.
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', (err) => reject(isNotFound(err) ? new ObjectNotFound(key) : err));
    });
    return this.counted(stream);
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

export function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === 'ENOENT';
}
