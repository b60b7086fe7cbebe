/**
 * Worker-thread side of lib/hash/thread.ts: holds resumable SHA-256 jobs by id, hashes the
 * blocks posted to it and sends each block back for reuse. Hashing runs on WebAssembly
 * (sha256-wasm.ts, hash-wasm: about twice the speed of the JavaScript hash for the same CPU), or
 * on ResumableSha256 where WebAssembly cannot start; both save the same state. The pool's
 * messages wait in the port until the listener below is attached, after the hash has loaded.
 */
import { parentPort } from 'node:worker_threads';
import { ResumableSha256 } from './sha256-state.js';
import { WasmSha256, loadWasmSha256 } from './sha256-wasm.js';

interface Hash {
  update(data: Uint8Array): unknown;
  marshal(): Uint8Array;
}

const wasm = await loadWasmSha256();
const resume = (state: Uint8Array): Hash => (wasm ? WasmSha256.unmarshal(state) : ResumableSha256.unmarshal(state));
const digestOf = (h: Hash): Uint8Array => (h instanceof WasmSha256 ? h.digest() : (h as ResumableSha256).peekDigest());

type Message =
  | { id: number; op: 'start'; state: Uint8Array }
  | { id: number; op: 'update'; block: Uint8Array; length: number }
  | { id: number; op: 'query' }
  | { id: number; op: 'end' };

const jobs = new Map<number, Hash>();

// Which hash this thread runs, for the pool's record (hashThreadEngines() in thread.ts).
parentPort!.postMessage({ id: 0, engine: wasm ? 'wasm' : 'js' });

parentPort!.on('message', (m: Message) => {
  switch (m.op) {
    case 'start':
      jobs.set(m.id, resume(m.state));
      break;
    case 'update':
      jobs.get(m.id)?.update(m.block.subarray(0, m.length));
      parentPort!.postMessage({ id: m.id, ack: m.length, block: m.block }, [m.block.buffer as ArrayBuffer]);
      break;
    case 'query': {
      const h = jobs.get(m.id);
      if (h) parentPort!.postMessage({ id: m.id, state: h.marshal(), digest: digestOf(h) });
      break;
    }
    case 'end':
      jobs.delete(m.id);
      break;
  }
});
