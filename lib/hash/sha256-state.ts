/**
 * Resumable SHA-256: @noble/hashes' SHA-256 whose state can be saved after one request and
 * restored by the next, so finishing an upload never re-reads the uploaded bytes.
 *
 * Byte format (version "sha\x03"): exactly Go's crypto/sha256 MarshalBinary layout, which is
 * what distribution stores under `_uploads/<id>/hashstates/sha256/<offset>`:
 *
 *   offset  size  field
 *   0       4     magic "sha\x03"
 *   4       32    chaining words h0..h7, big-endian uint32
 *   36      64    pending partial block (length % 64 bytes), zero-padded to 64
 *   100     8     total bytes hashed, big-endian uint64
 *                 = 108 bytes
 *
 * noble keeps this state in protected fields (chaining words via get()/set(), `buffer`, `pos`,
 * `length`); a subclass is the supported way to reach them. The package version is pinned
 * exactly, and test/unit/sha256-state.test.ts checks the round trip against node:crypto, so an
 * upgrade that changes those internals fails loudly instead of corrupting digests.
 */
import { _SHA256 } from '@noble/hashes/sha2.js';

export const SHA256_STATE_MAGIC = 'sha\x03';
export const SHA256_STATE_SIZE = 108;
const BLOCK = 64;

export class ResumableSha256 extends _SHA256 {
  /** Bytes hashed so far. */
  get bytesHashed(): number {
    return this.length;
  }

  /** Serializes the state; the hash stays usable. */
  marshal(): Uint8Array {
    const out = new Uint8Array(SHA256_STATE_SIZE);
    const view = new DataView(out.buffer);
    for (let i = 0; i < 4; i++) out[i] = SHA256_STATE_MAGIC.charCodeAt(i);
    const words = this.get();
    for (let i = 0; i < 8; i++) view.setUint32(4 + 4 * i, words[i]! >>> 0, false);
    out.set(this.buffer.subarray(0, this.pos), 36);
    view.setBigUint64(100, BigInt(this.length), false);
    return out;
  }

  static unmarshal(state: Uint8Array): ResumableSha256 {
    if (state.length !== SHA256_STATE_SIZE) throw new Error(`sha256 state must be ${SHA256_STATE_SIZE} bytes, got ${state.length}`);
    for (let i = 0; i < 4; i++) {
      if (state[i] !== SHA256_STATE_MAGIC.charCodeAt(i)) throw new Error('sha256 state has an unknown format (bad magic)');
    }
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
    const length = view.getBigUint64(100, false);
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('sha256 state length out of range');
    const h = new ResumableSha256();
    const w = (i: number) => view.getUint32(4 + 4 * i, false) | 0;
    h.set(w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7));
    h.length = Number(length);
    h.pos = h.length % BLOCK;
    h.buffer.set(state.subarray(36, 36 + h.pos), 0);
    return h;
  }

  /** The digest of everything hashed so far, without ending this hash. */
  peekDigest(): Uint8Array {
    return this.clone().digest();
  }
}
