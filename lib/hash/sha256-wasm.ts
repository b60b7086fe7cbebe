/**
 * Resumable SHA-256 on WebAssembly (hash-wasm's SHA-256), for the hash threads. The JavaScript
 * SHA-256 in @noble/hashes was the upload host's largest CPU cost: about one core per 100 MB/s
 * pushed, on a machine that also runs the network and S3 side of the same bytes. hash-wasm
 * hashes the same bytes with about half the CPU.
 *
 * Its state saves in the same format as ResumableSha256's (Go's MarshalBinary,
 * lib/hash/sha256-state.ts), so a hash started on one continues on the other: a Lambda request
 * and the upload host take turns on one upload. hash-wasm saves and loads its own state, whose
 * layout (4.13.0, pinned exactly) is:
 *
 *   offset  size  field
 *   0       4     hash-wasm's check of its own binary (load() refuses a state from another)
 *   4       64    pending partial block (length % 64 bytes; a full block is compressed at once)
 *   68      8     total bytes hashed, little-endian uint64
 *   76      32    chaining words h0..h7, little-endian uint32
 *   108     8     digest size (32)
 *
 * test/unit/sha256-wasm.test.ts converts both ways at every position around the block
 * boundaries against node:crypto and Go's saved state, so an upgrade that changes this layout
 * fails there instead of corrupting digests.
 *
 * One hasher (one WebAssembly instance) serves every hash of a thread: each hash keeps its
 * state, loaded before and saved after each update (116 bytes, against the 1 MiB blocks hashed).
 */
import { type IHasher, createSHA256 } from 'hash-wasm';
import { SHA256_STATE_MAGIC, SHA256_STATE_SIZE } from './sha256-state.js';

const BLOCK = 64;
const STATE_BYTES = 116;
const PENDING = 4;
const LENGTH = 68;
const WORDS = 76;

let hasher: IHasher | undefined;
/** A fresh state (the initial chaining words, hash-wasm's check and digest size). */
let initial: Uint8Array | undefined;

/** Loads hash-wasm's SHA-256 for this thread; false if WebAssembly cannot start here. */
export async function loadWasmSha256(): Promise<boolean> {
  if (hasher) return true;
  try {
    const h = await createSHA256();
    initial = h.init().save();
    if (initial.length !== STATE_BYTES) throw new Error(`hash-wasm's SHA-256 state is ${initial.length} bytes, not ${STATE_BYTES}: its layout changed`);
    hasher = h;
    return true;
  } catch {
    return false;
  }
}

export class WasmSha256 {
  /** hash-wasm's state of this hash. */
  private state: Uint8Array;

  constructor(state?: Uint8Array) {
    if (!hasher || !initial) throw new Error('WebAssembly SHA-256 is not loaded (await loadWasmSha256() first)');
    this.state = state ?? initial.slice();
  }

  /** Bytes hashed so far. */
  get length(): number {
    return Number(view(this.state).getBigUint64(LENGTH, true));
  }

  update(data: Uint8Array): this {
    this.state = hasher!.load(this.state).update(data).save();
    return this;
  }

  /** The digest of everything so far; the hash stays usable. */
  digest(): Uint8Array {
    return hasher!.load(this.state).digest('binary');
  }

  /** The state in Go's MarshalBinary layout (see sha256-state.ts). */
  marshal(): Uint8Array {
    const from = view(this.state);
    const out = new Uint8Array(SHA256_STATE_SIZE);
    const to = view(out);
    for (let i = 0; i < 4; i++) out[i] = SHA256_STATE_MAGIC.charCodeAt(i);
    for (let i = 0; i < 8; i++) to.setUint32(4 + 4 * i, from.getUint32(WORDS + 4 * i, true), false);
    const length = from.getBigUint64(LENGTH, true);
    out.set(this.state.subarray(PENDING, PENDING + Number(length % BigInt(BLOCK))), 36);
    to.setBigUint64(100, length, false);
    return out;
  }

  static unmarshal(state: Uint8Array): WasmSha256 {
    if (state.length !== SHA256_STATE_SIZE) throw new Error(`sha256 state must be ${SHA256_STATE_SIZE} bytes, got ${state.length}`);
    for (let i = 0; i < 4; i++) {
      if (state[i] !== SHA256_STATE_MAGIC.charCodeAt(i)) throw new Error('sha256 state has an unknown format (bad magic)');
    }
    const from = view(state);
    const length = from.getBigUint64(100, false);
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('sha256 state length out of range');
    const h = new WasmSha256();
    const to = view(h.state);
    for (let i = 0; i < 8; i++) to.setUint32(WORDS + 4 * i, from.getUint32(4 + 4 * i, false), true);
    to.setBigUint64(LENGTH, length, true);
    h.state.set(state.subarray(36, 36 + Number(length % BigInt(BLOCK))), PENDING);
    return h;
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
