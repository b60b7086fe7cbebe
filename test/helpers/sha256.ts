/** What the SHA-256 unit tests share: a deterministic byte pattern and node:crypto's digest to compare with. */
import { createHash } from 'node:crypto';

/** `n` bytes of a fixed pattern (the Go state fixtures in the tests were made from it). */
export function pattern(n: number): Uint8Array {
  const data = new Uint8Array(n);
  for (let i = 0; i < n; i++) data[i] = (i * 7 + 3) % 251;
  return data;
}

export const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
export const nodeSha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
