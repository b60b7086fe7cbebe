/**
 * Resumable SHA-256 on worker threads, so hashing a large streamed body overlaps with the event
 * loop's network and storage I/O, and several bodies hash in parallel: a pool of threads, one
 * per core at most, each started when first needed; a new hash goes to an idle thread, or to
 * the least busy one once the pool is full. (One shared thread capped every stream of the
 * process at one core's worth of SHA-256 together.)
 *
 * Memory is bounded and steady: chunks are copied into 1 MiB blocks that are transferred to
 * a thread and transferred back once hashed, then reused; at most IN_FLIGHT bytes per hash are
 * out at once, and a sender past that waits. If a thread cannot start or dies, its hashes fail
 * and later callers fall back to hashing inline.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import type { ResumableHash } from './hashes.js';

const BLOCK = 1024 * 1024;
const IN_FLIGHT = 16 * BLOCK;

interface Job {
  slot: Slot;
  pending: number;
  waiters: (() => void)[];
  queries: ((r: { state: Uint8Array; digest: Uint8Array } | Error) => void)[];
}

type Reply = { id: number; ack?: number; block?: Uint8Array; state?: Uint8Array; digest?: Uint8Array; engine?: string };

/** One thread of the pool and the hashes it carries. */
interface Slot {
  worker: Worker;
  /** Hashes assigned and not closed. */
  active: number;
  /** Replies being awaited: the thread keeps the process alive only while there are some. */
  awaited: number;
  broken: boolean;
  /** The SHA-256 the thread runs ('wasm', or 'js' where WebAssembly cannot start), once it says. */
  engine?: string;
}

/** Threads in the pool at most: one per core the process may use. */
export const POOL_SIZE = Math.max(1, availableParallelism());

const slots: Slot[] = [];
let unavailable = false;
let nextId = 1;
const jobs = new Map<number, Job>();
const blocks: Uint8Array[] = [];

function hold(slot: Slot): void {
  if (slot.awaited++ === 0) slot.worker.ref();
}

function letGo(slot: Slot): void {
  if (--slot.awaited === 0) slot.worker.unref();
}

/**
 * In a build the worker is the compiled sibling module. Under tsx (development and tests) it is
 * TypeScript, and Node 20 does not carry tsx's loader into worker threads, so a two-line
 * bootstrap registers tsx in the worker before importing it.
 */
function startWorker(): Worker {
  // Loaded on first use: a Lambda function never starts a thread and need not load the module.
  const { Worker } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./sha256-thread.js', import.meta.url));
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./sha256-thread.ts', import.meta.url).href;
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`, { eval: true });
}

function startSlot(): Slot {
  const slot: Slot = { worker: startWorker(), active: 0, awaited: 0, broken: false };
  slot.worker.on('message', (m: Reply) => {
    if (m.engine) slot.engine = m.engine;
    if (m.block && blocks.length < (2 * POOL_SIZE * IN_FLIGHT) / BLOCK) blocks.push(m.block);
    const job = jobs.get(m.id);
    if (!job) return;
    if (m.ack !== undefined) {
      job.pending -= m.ack;
      if (job.pending <= IN_FLIGHT / 2) for (const wake of job.waiters.splice(0)) wake();
    } else {
      job.queries.shift()?.({ state: m.state!, digest: m.digest! });
    }
  });
  const fail = (err: Error) => {
    if (slot.broken) return;
    slot.broken = true;
    slots.splice(slots.indexOf(slot), 1);
    for (const job of jobs.values()) {
      if (job.slot !== slot) continue;
      for (const wake of job.waiters.splice(0)) wake();
      for (const q of job.queries.splice(0)) q(err);
    }
  };
  slot.worker.on('error', fail);
  slot.worker.on('exit', (code) => fail(new Error(`hash thread exited (${code})`)));
  // After the listeners: attaching a 'message' listener refs the port again. A thread must
  // never keep the process alive on its own.
  slot.worker.unref();
  slots.push(slot);
  return slot;
}

/** An idle thread, a new one while the pool has room, or else the least busy. */
function pick(): Slot | undefined {
  if (unavailable) return undefined;
  let best: Slot | undefined;
  for (const s of slots) if (!best || s.active < best.active) best = s;
  if ((!best || best.active > 0) && slots.length < POOL_SIZE) {
    try {
      best = startSlot();
    } catch {
      if (!best) unavailable = true;
    }
  }
  return best;
}

/** The SHA-256 each running thread uses, as far as the threads have said (for tests). */
export function hashThreadEngines(): (string | undefined)[] {
  return slots.map((s) => s.engine);
}

/** Threads running now (for tests and the benchmark). */
export function hashThreads(): number {
  return slots.length;
}

/** A resumable hash continuing from `state` on a pool thread, or undefined if none is available. */
export function threadedSha256(state: Uint8Array): ResumableHash | undefined {
  const slot = pick();
  if (!slot) return undefined;
  const w = slot.worker;
  const id = nextId++;
  const job: Job = { slot, pending: 0, waiters: [], queries: [] };
  jobs.set(id, job);
  slot.active++;
  w.postMessage({ id, op: 'start', state });
  let block: Uint8Array | undefined;
  let fill = 0;
  let closed = false;

  const send = () => {
    if (!block || fill === 0) return;
    if (slot.broken) throw new Error('hash thread is gone');
    job.pending += fill;
    w.postMessage({ id, op: 'update', block, length: fill }, [block.buffer as ArrayBuffer]);
    block = undefined;
    fill = 0;
  };

  const query = () =>
    new Promise<{ state: Uint8Array; digest: Uint8Array }>((resolve, reject) => {
      send();
      hold(slot);
      job.queries.push((r) => {
        letGo(slot);
        if (r instanceof Error) reject(r);
        else resolve(r);
      });
      w.postMessage({ id, op: 'query' });
    });

  return {
    update(chunk: Uint8Array) {
      for (let off = 0; off < chunk.length; ) {
        block ??= blocks.pop() ?? new Uint8Array(BLOCK);
        const n = Math.min(BLOCK - fill, chunk.length - off);
        block.set(chunk.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === BLOCK) send();
      }
      if (job.pending > IN_FLIGHT) {
        hold(slot);
        return new Promise<void>((wake) =>
          job.waiters.push(() => {
            letGo(slot);
            wake();
          }),
        );
      }
    },
    digest: async () => (await query()).digest,
    marshal: async () => (await query()).state,
    close() {
      if (closed) return;
      closed = true;
      jobs.delete(id);
      slot.active--;
      if (block) blocks.push(block);
      block = undefined;
      if (!slot.broken) w.postMessage({ id, op: 'end' });
    },
  };
}
