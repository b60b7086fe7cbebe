/**
 * Resumable SHA-256 on a worker thread (one per process, shared by all requests, started on
 * first use), so hashing a large streamed body overlaps with the event loop's network and
 * storage I/O.
 *
 * Memory is bounded and steady: chunks are copied into 1 MiB blocks that are transferred to
 * the thread and transferred back once hashed, then reused; at most IN_FLIGHT bytes are out at
 * once, and a sender past that waits. If the thread cannot start or dies, callers fall back to
 * hashing inline.
 */
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import type { ResumableHash } from './hashes.js';

const BLOCK = 1024 * 1024;
const IN_FLIGHT = 16 * BLOCK;

interface Job {
  pending: number;
  waiters: (() => void)[];
  queries: ((r: { state: Uint8Array; digest: Uint8Array } | Error) => void)[];
}

type Reply = { id: number; ack?: number; block?: Uint8Array; state?: Uint8Array; digest?: Uint8Array };

let worker: Worker | undefined;
let broken = false;
let nextId = 1;
const jobs = new Map<number, Job>();
const blocks: Uint8Array[] = [];
/** Replies being awaited: the thread keeps the process alive only while there are some. */
let awaited = 0;

function hold(): void {
  if (awaited++ === 0) worker?.ref();
}

function letGo(): void {
  if (--awaited === 0) worker?.unref();
}

/**
 * In a build the worker is the compiled sibling module. Under tsx (development and tests) it is
 * TypeScript, and Node 20 does not carry tsx's loader into worker threads, so a two-line
 * bootstrap registers tsx in the worker before importing it.
 */
function startWorker(): Worker {
  // Loaded on first use: a Lambda function never starts the thread and need not load the module.
  const { Worker } = createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./sha256-thread.js', import.meta.url));
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./sha256-thread.ts', import.meta.url).href;
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`, { eval: true });
}

function thread(): Worker | undefined {
  if (broken) return undefined;
  if (worker) return worker;
  try {
    worker = startWorker();
  } catch {
    broken = true;
    return undefined;
  }
  worker.on('message', (m: Reply) => {
    if (m.block && blocks.length < 2 * IN_FLIGHT / BLOCK) blocks.push(m.block);
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
    broken = true;
    worker = undefined;
    for (const job of jobs.values()) {
      for (const wake of job.waiters.splice(0)) wake();
      for (const q of job.queries.splice(0)) q(err);
    }
  };
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`hash thread exited (${code})`)));
  // After the listeners: attaching a 'message' listener refs the port again. The thread must
  // never keep the process alive on its own.
  worker.unref();
  return worker;
}

/** A resumable hash continuing from `state` on the worker thread, or undefined if unavailable. */
export function threadedSha256(state: Uint8Array): ResumableHash | undefined {
  const w = thread();
  if (!w) return undefined;
  const id = nextId++;
  const job: Job = { pending: 0, waiters: [], queries: [] };
  jobs.set(id, job);
  w.postMessage({ id, op: 'start', state });
  let block: Uint8Array | undefined;
  let fill = 0;

  const send = () => {
    if (!block || fill === 0) return;
    if (broken) throw new Error('hash thread is gone');
    job.pending += fill;
    w.postMessage({ id, op: 'update', block, length: fill }, [block.buffer as ArrayBuffer]);
    block = undefined;
    fill = 0;
  };

  const query = () =>
    new Promise<{ state: Uint8Array; digest: Uint8Array }>((resolve, reject) => {
      send();
      hold();
      job.queries.push((r) => {
        letGo();
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
        hold();
        return new Promise<void>((wake) =>
          job.waiters.push(() => {
            letGo();
            wake();
          }),
        );
      }
    },
    digest: async () => (await query()).digest,
    marshal: async () => (await query()).state,
    close() {
      jobs.delete(id);
      if (block) blocks.push(block);
      block = undefined;
      if (!broken) w.postMessage({ id, op: 'end' });
    },
  };
}
