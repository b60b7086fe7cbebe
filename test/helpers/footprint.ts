/**
 * What the real clients and their daemons must not leave on the machine (issue 10: "nothing is
 * left under /var/lib or /run"). A test suite lists the system before its first client runs and
 * asserts, as its last test, that nothing appeared since (test/helpers/clients.ts and daemons.ts
 * say how each client and daemon is kept inside its own directory).
 *
 * Listed: every name in /var/lib and /run two levels deep (a new /var/lib/containers/cache, a
 * /run/containerd/..., a /run/libpod/...), and three levels deep the paths the clients and
 * daemons use by default, so that a file written into a directory that already existed there
 * (a blob-info-cache-v1.boltdb in an existing /var/lib/containers/cache) shows too.
 *
 * Only additions count: what other processes of the machine remove in the meantime is theirs.
 * (`npm test` runs the test files one at a time (test/run.ts), so a path is blamed on the suite
 * that added it; on a machine where another test run uses the same clients at the same time, that
 * run could add a path while a suite runs.) Paths are compared by name only: a write into a file
 * that was already there does not show.
 */
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Listed two levels deep. (/var/run is a symbolic link to /run.) */
const SYSTEM_DIRS = ['/var/lib', '/run'];

/**
 * Listed three levels deep: the daemons' defaults (dockerd, containerd and its `opt` plugin),
 * and the store, blob-info cache and run-time state of skopeo, podman and buildah.
 */
const DEFAULT_PATHS = [
  '/var/lib/docker', '/var/lib/containerd', '/run/containerd', '/run/docker', '/run/docker.sock', '/run/docker.pid', '/etc/docker', '/opt/containerd',
  '/var/lib/containers', '/run/containers', '/run/libpod', '/run/runc', '/run/crun',
];

async function listTree(path: string, depth: number): Promise<string[]> {
  const st = await stat(path).catch(() => undefined);
  if (!st) return [];
  if (!st.isDirectory() || depth === 0) return [path];
  const out = [path];
  for (const name of (await readdir(path).catch(() => [])).sort()) out.push(...(await listTree(join(path, name), depth - 1)));
  return out;
}

/** Every path listed as the file comment says, sorted. */
export async function systemFootprint(): Promise<string[]> {
  const out = new Set<string>();
  for (const dir of SYSTEM_DIRS) for (const entry of await listTree(dir, 2)) out.add(entry);
  for (const p of DEFAULT_PATHS) for (const entry of await listTree(p, 3)) out.add(entry);
  return [...out].sort();
}

/** A listing taken before a suite's clients ran, to compare the system with after them. */
export class Footprint {
  private constructor(readonly entries: readonly string[]) {}

  static async take(): Promise<Footprint> {
    return new Footprint(await systemFootprint());
  }

  /** The paths that exist now and did not when this listing was taken. */
  async added(): Promise<string[]> {
    const before = new Set(this.entries);
    return (await systemFootprint()).filter((p) => !before.has(p));
  }

  /** Fails naming every path that appeared since the listing (`who`: what ran in between). */
  async assertNothingAdded(who: string): Promise<void> {
    assert.deepEqual(await this.added(), [], `${who} left these paths on the system (they did not exist before)`);
  }
}
