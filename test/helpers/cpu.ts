/**
 * CPU time spent by this process and everything it started (Linux /proc), for tests that report
 * what they cost: on a shared machine wall time says more about the neighbours than about the
 * test, CPU seconds do not. The shared backends (Ceph RGW, DynamoDB Local) are not counted.
 */
import { readFileSync, readdirSync } from 'node:fs';

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

interface Stat {
  ppid: number;
  /** utime + stime + cutime + cstime (the process, and its children it has waited for), in ticks. */
  ticks: number;
}

function readStat(pid: string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // gone, or not a process
  }
  // The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
}

/**
 * CPU seconds used so far by this process, its descendants alive now, and the descendants that
 * exited and were waited for (counted in their parent's cutime/cstime). A difference of two calls
 * is what ran in between, provided nothing that ran then is still to be waited for.
 */
export function treeCpuSeconds(): number {
  const stats = new Map<number, Stat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(name);
    if (s) stats.set(Number(name), s);
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
      if (p === process.pid) return true;
      const s = stats.get(p);
      if (!s) return false;
      p = s.ppid;
    }
    return false;
  };
  let ticks = 0;
  for (const [pid, s] of stats) if (inTree(pid)) ticks += s.ticks;
  return ticks / TICKS_PER_SECOND;
}
