/**
 * What the data directory holds, for garbage collection's orphan sweep: a directory walk in key
 * order, resumable after any key. Every page re-reads the prefix's directory tree (names only;
 * only the objects returned are stat'ed): fine for the local driver, whose trees are a laptop's.
 * Scratch files (`tmp/*.tmp`, which `ObjectStore.list` hides) are listed too: they are what a
 * crash leaves behind.
 */
import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { type IncompleteWrite, type Inventory, type ListedObject, countRequest } from '../types.js';
import { type FsObjectStore, isNotFound } from './objects.js';

export class FsInventory implements Inventory {
  constructor(private readonly store: FsObjectStore) {}

  async list(prefix: string, after: string | undefined, max: number): Promise<{ objects: ListedObject[]; more: boolean }> {
    countRequest(this.store.stats, 'walk');
    let entries: Dirent[];
    try {
      entries = await readdir(this.store.path(prefix.replace(/\/+$/, '')), { recursive: true, withFileTypes: true });
    } catch (err) {
      if (isNotFound(err)) return { objects: [], more: false };
      throw err;
    }
    // Keys compared as strings, as S3 orders them, so a cursor means the same on both drivers.
    const keys = entries
      .filter((e) => e.isFile())
      .map((e) => relative(this.store.root, join(e.parentPath, e.name)).split(sep).join('/'))
      .filter((k) => k.startsWith(prefix) && (after === undefined || k > after))
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const objects: ListedObject[] = [];
    for (const key of keys.slice(0, max)) {
      try {
        const s = await stat(this.store.path(key));
        objects.push({ key, size: s.size, modified: s.mtimeMs });
      } catch (err) {
        if (!isNotFound(err)) throw err; // deleted since the walk: nothing to judge
      }
    }
    return { objects, more: keys.length > max };
  }

  async incompleteWrites(): Promise<IncompleteWrite[]> {
    // An upload's partial file is an object under uploads/, listed like any other.
    return [];
  }

  async abortWrite(): Promise<void> {}
}
