/**
 * Which cores a process may run on (Linux `taskset`), so that figure 8 can also measure the
 * registry the way it is deployed: on a machine of its own, not sharing a core with the S3
 * server and the client it sits between. Each process's own core list is read before it is
 * pinned and given back after, exactly (os.availableParallelism() counts only the cores the
 * calling thread may use, so it cannot say what "all" was once this process is pinned).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** The cores `pid` may run on, as a taskset list ("0-1", "0,2"), from /proc. */
export function coresOf(pid: number): string {
  const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no Cpus_allowed_list for ${pid}`);
  return m[1]!;
}

/** Every core in a taskset list, in order: "0-2,5" -> [0, 1, 2, 5]. */
export function expand(list: string): number[] {
  return list.split(',').flatMap((part) => {
    const [a, b] = part.split('-').map(Number);
    return b === undefined ? [a!] : Array.from({ length: b - a! + 1 }, (_, i) => a! + i);
  });
}

/** Two cores this process may use, or none (one core, no /proc, or no taskset). */
export function twoCores(): [number, number] | undefined {
  try {
    const cores = expand(coresOf(process.pid));
    if (cores.length < 2 || spawnSync('taskset', ['--version']).status !== 0) return undefined;
    return [cores[0]!, cores[1]!];
  } catch {
    return undefined;
  }
}

/**
 * Pins each group of processes to its core, runs `fn`, and gives every process back the cores
 * it had, even when `fn` or a pin fails (a restore that fails is reported, not thrown over the
 * error that got there first).
 */
export async function pinned<T>(groups: { pids: number[]; core: number }[], fn: () => Promise<T>, log: (msg: string) => void): Promise<T> {
  const saved = new Map<number, string>();
  try {
    for (const { pids, core } of groups) {
      for (const pid of pids) {
        saved.set(pid, coresOf(pid));
        taskset(pid, String(core));
      }
    }
    return await fn();
  } finally {
    for (const [pid, cores] of saved) {
      try {
        taskset(pid, cores);
      } catch (err) {
        log(`could not give pid ${pid} its cores ${cores} back: ${(err as Error).message}`);
      }
    }
  }
}

function taskset(pid: number, cores: string): void {
  const res = spawnSync('taskset', ['--all-tasks', '--cpu-list', '--pid', cores, String(pid)], { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`taskset ${cores} ${pid}: ${res.stderr.trim()}`);
}
