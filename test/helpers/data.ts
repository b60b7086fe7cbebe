/**
 * Test data: deterministic pseudo-random bytes of any size, generated as a stream (AES-CTR
 * keystream), so a 256 MiB upload never has to exist in the test's memory.
 */
import { createCipheriv, createHash } from 'node:crypto';

export function bytes(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let off = 0;
  for (const chunk of stream(size, seed)) {
    out.set(chunk, off);
    off += chunk.length;
  }
  return out;
}

export function* stream(size: number, seed = 1, chunk = 1024 * 1024): Generator<Buffer> {
  const key = Buffer.alloc(16);
  key.writeUInt32BE(seed >>> 0, 0);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(chunk);
  for (let left = size; left > 0; left -= chunk) {
    const n = Math.min(chunk, left);
    yield cipher.update(n === chunk ? zeros : zeros.subarray(0, n));
  }
}

export async function* asyncStream(size: number, seed = 1, chunk = 1024 * 1024): AsyncGenerator<Buffer> {
  for (const c of stream(size, seed, chunk)) yield c;
}

/** `data` as a streamed request body (no Content-Length), in pieces of `size` bytes. */
export async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let o = 0; o < data.length; o += size) yield data.subarray(o, o + size);
}

/**
 * A request body that sends `data` up to `at`, then waits until `release()`: a request held
 * open mid-body while the test does something else.
 */
export function gated(data: Uint8Array, at: number): { body: AsyncIterable<Uint8Array>; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  async function* body() {
    yield data.subarray(0, at);
    await gate;
    yield data.subarray(at);
  }
  return { body: body(), release };
}

export function sha256(data: Uint8Array | Iterable<Uint8Array>): string {
  const h = createHash('sha256');
  if (data instanceof Uint8Array) h.update(data);
  else for (const c of data) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

export function sha512(data: Uint8Array): string {
  return `sha512:${createHash('sha512').update(data).digest('hex')}`;
}

export const MiB = 1024 * 1024;
