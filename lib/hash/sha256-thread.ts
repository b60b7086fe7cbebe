/**
 * Worker-thread side of lib/hash/thread.ts: holds resumable SHA-256 jobs by id, hashes the
 * blocks posted to it and sends each block back for reuse.
 */
import { parentPort } from 'node:worker_threads';
import { ResumableSha256 } from './sha256-state.js';

type Message =
  | { id: number; op: 'start'; state: Uint8Array }
  | { id: number; op: 'update'; block: Uint8Array; length: number }
  | { id: number; op: 'query' }
  | { id: number; op: 'end' };

const jobs = new Map<number, ResumableSha256>();

parentPort!.on('message', (m: Message) => {
  switch (m.op) {
    case 'start':
      jobs.set(m.id, ResumableSha256.unmarshal(m.state));
      break;
    case 'update':
      jobs.get(m.id)?.update(m.block.subarray(0, m.length));
      parentPort!.postMessage({ id: m.id, ack: m.length, block: m.block }, [m.block.buffer as ArrayBuffer]);
      break;
    case 'query': {
      const h = jobs.get(m.id);
      if (h) parentPort!.postMessage({ id: m.id, state: h.marshal(), digest: h.peekDigest() });
      break;
    }
    case 'end':
      jobs.delete(m.id);
      break;
  }
});
