/** File modes: what a data directory lets other local users see. */
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Asserts every directory under `dir` (itself included) is 0700 and every file 0600; returns the files' names. */
export async function assertPrivateTree(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (d: string): Promise<void> => {
    assert.equal((await stat(d)).mode & 0o777, 0o700, d);
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) await walk(path);
      else {
        files.push(entry.name);
        assert.equal((await stat(path)).mode & 0o777, 0o600, path);
      }
    }
  };
  await walk(dir);
  return files;
}
