/**
 * CPU time of a process and of each of its threads (Linux /proc), so the benchmark can show
 * where a run's CPU went: how many cores the upload host used, and whether its hashing spread
 * over several threads rather than one.
 */
import { readFile, readdir } from 'node:fs/promises';

/** Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux). */
const TICKS = 100;

export type ThreadTimes = Map<number, number>;

/** CPU seconds (user + system) of each thread of `pid`, by thread id. */
export async function threadTimes(pid: number): Promise<ThreadTimes> {
  const out: ThreadTimes = new Map();
  let tids: string[];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return out; // not Linux, or the process is gone
  }
  for (const tid of tids) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    // Fields after the command name (which may hold spaces) start at ") ": utime and stime
    // are fields 14 and 15 of the line, 12 and 13 after it.
    const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    if (fields.length > 13) out.set(Number(tid), (Number(fields[11]) + Number(fields[12])) / TICKS);
  }
  return out;
}

/** Per-thread CPU seconds spent between two samples, busiest first (the main thread is `pid`). */
export function spent(pid: number, before: ThreadTimes, after: ThreadTimes): { tid: number; main: boolean; seconds: number }[] {
  return [...after]
    .map(([tid, s]) => ({ tid, main: tid === pid, seconds: s - (before.get(tid) ?? 0) }))
    .filter((t) => t.seconds > 0)
    .sort((a, b) => b.seconds - a.seconds);
}

/** "2.31 cores: main 1.02 s, 0.81, 0.77, 0.70 s, rest 0.12 s" over `wallMs`. */
export function describe(threads: { main: boolean; seconds: number }[], wallMs: number, top = 5): string {
  const total = threads.reduce((n, t) => n + t.seconds, 0);
  const main = threads.find((t) => t.main)?.seconds ?? 0;
  const others = threads.filter((t) => !t.main);
  const shown = others.slice(0, top).map((t) => t.seconds.toFixed(1));
  const rest = others.slice(top).reduce((n, t) => n + t.seconds, 0);
  return `${(total / (wallMs / 1000)).toFixed(2)} cores (CPU ${total.toFixed(1)} s in ${(wallMs / 1000).toFixed(1)} s): main thread ${main.toFixed(1)} s, busiest others ${shown.join(' / ')} s, rest ${rest.toFixed(1)} s`;
}
