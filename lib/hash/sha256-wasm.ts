/**
 * Resumable SHA-256 on a WebAssembly compression function (lib/hash/wasm/sha256.c), for the
 * hash threads. The JavaScript SHA-256 in @noble/hashes was the upload host's largest CPU cost:
 * about one core per 100 MB/s pushed, on a machine that also runs the network and S3 side of
 * the same bytes. The WebAssembly function hashes the same bytes with about half the CPU.
 *
 * Its state is the same as ResumableSha256's and saves in the same format (Go's MarshalBinary,
 * lib/hash/sha256-state.ts), so a hash started on one can continue on the other; the unit test
 * checks both against node:crypto.
 *
 * One instance (one module's memory) serves every hash of a thread: the chaining words are
 * copied in before and out after each call, 32 bytes, so any number of hashes share it.
 */
import { SHA256_STATE_MAGIC, SHA256_STATE_SIZE } from './sha256-state.js';
import { SHA256_WASM } from './sha256-wasm-binary.js';

const BLOCK = 64;

// The project's TypeScript libraries (ES2022, @types/node 20) do not declare WebAssembly; the
// little used here, as Node provides it.
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
};

interface Exports {
  memory: { buffer: ArrayBuffer };
  input(): number;
  words(): number;
  inputBytes(): number;
  compress(count: number): void;
}

interface Engine {
  compress(count: number): void;
  /** Where the blocks to compress go (the module's input area). */
  input: Uint8Array;
  /** The module's chaining words. */
  words: Uint32Array;
}

let engine: Engine | undefined;

function load(): Engine {
  if (engine) return engine;
  const module = new WebAssembly.Module(Buffer.from(SHA256_WASM, 'base64'));
  const x = new WebAssembly.Instance(module, {}).exports as unknown as Exports;
  // The module's memory never grows, so these views stay valid.
  engine = {
    compress: x.compress,
    input: new Uint8Array(x.memory.buffer, x.input(), x.inputBytes()),
    words: new Uint32Array(x.memory.buffer, x.words(), 8),
  };
  return engine;
}

/** Whether WebAssembly SHA-256 works here (it instantiates once per thread). */
export function wasmSha256Available(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

const INITIAL = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

export class WasmSha256 {
  /** Chaining words h0..h7. */
  private readonly h = Uint32Array.from(INITIAL);
  /** Bytes of the current, incomplete block. */
  private readonly pending = new Uint8Array(BLOCK);
  private pos = 0;
  /** Bytes hashed so far. */
  length = 0;
  private readonly engine = load();

  update(data: Uint8Array): this {
    const { input, words, compress } = this.engine;
    let off = 0;
    this.length += data.length;
    if (this.pos > 0) {
      const take = Math.min(BLOCK - this.pos, data.length);
      this.pending.set(data.subarray(0, take), this.pos);
      this.pos += take;
      off = take;
      if (this.pos < BLOCK) return this;
      input.set(this.pending);
      words.set(this.h);
      compress(1);
      this.h.set(words);
      this.pos = 0;
    }
    while (data.length - off >= BLOCK) {
      const bytes = Math.min(data.length - off - ((data.length - off) % BLOCK), input.length);
      input.set(data.subarray(off, off + bytes));
      words.set(this.h);
      compress(bytes / BLOCK);
      this.h.set(words);
      off += bytes;
    }
    if (off < data.length) {
      this.pending.set(data.subarray(off));
      this.pos = data.length - off;
    }
    return this;
  }

  /** The digest of everything so far; the hash stays usable. */
  digest(): Uint8Array {
    const total = this.length;
    // Padding: 0x80, zeros up to 56 mod 64, then the length in bits, big-endian.
    const padLength = ((this.pos < 56 ? 56 : 120) - this.pos) + 8;
    const pad = new Uint8Array(padLength);
    pad[0] = 0x80;
    new DataView(pad.buffer).setBigUint64(padLength - 8, BigInt(total) * 8n, false);
    const done = this.clone().update(pad);
    const out = new Uint8Array(32);
    const view = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) view.setUint32(4 * i, done.h[i]!, false);
    return out;
  }

  clone(): WasmSha256 {
    const c = new WasmSha256();
    c.h.set(this.h);
    c.pending.set(this.pending);
    c.pos = this.pos;
    c.length = this.length;
    return c;
  }

  /** The state in Go's MarshalBinary layout (see sha256-state.ts). */
  marshal(): Uint8Array {
    const out = new Uint8Array(SHA256_STATE_SIZE);
    const view = new DataView(out.buffer);
    for (let i = 0; i < 4; i++) out[i] = SHA256_STATE_MAGIC.charCodeAt(i);
    for (let i = 0; i < 8; i++) view.setUint32(4 + 4 * i, this.h[i]!, false);
    out.set(this.pending.subarray(0, this.pos), 36);
    view.setBigUint64(100, BigInt(this.length), false);
    return out;
  }

  static unmarshal(state: Uint8Array): WasmSha256 {
    if (state.length !== SHA256_STATE_SIZE) throw new Error(`sha256 state must be ${SHA256_STATE_SIZE} bytes, got ${state.length}`);
    for (let i = 0; i < 4; i++) {
      if (state[i] !== SHA256_STATE_MAGIC.charCodeAt(i)) throw new Error('sha256 state has an unknown format (bad magic)');
    }
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
    const length = view.getBigUint64(100, false);
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('sha256 state length out of range');
    const h = new WasmSha256();
    for (let i = 0; i < 8; i++) h.h[i] = view.getUint32(4 + 4 * i, false);
    h.length = Number(length);
    h.pos = h.length % BLOCK;
    h.pending.set(state.subarray(36, 36 + h.pos));
    return h;
  }
}
