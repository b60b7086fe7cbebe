/**
 * Which cores a process may run on (Linux `taskset`), so that figure 8 can also measure the
 * registry the way it is deployed: on a machine of its own, not sharing a core with the S3
 * server and the client it sits between.
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';

/** True when this machine has two cores or more and `taskset` (util-linux) is installed. */
export function canPin(): boolean {
  return availableParallelism() >= 2 && spawnSync('taskset', ['--version']).status === 0;
}

/** Restricts every thread of each process to `cpus` (a taskset list, e.g. "0" or "1-3"). */
export function pin(pids: number[], cpus: string): void {
  for (const pid of pids) {
    const res = spawnSync('taskset', ['--all-tasks', '--cpu-list', '--pid', cpus, String(pid)], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`taskset ${cpus} ${pid}: ${res.stderr}`);
  }
}

/** Every core of the machine, as a taskset list. */
export const allCores = () => `0-${availableParallelism() - 1}`;
