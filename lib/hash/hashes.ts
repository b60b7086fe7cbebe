/**
 * The SHA-256s an upload request uses, behind one small interface:
 *
 * - one-shot (node:crypto): for a request that starts an upload at offset 0 and finishes it
 *   (monolithic POST, the whole blob as the finishing PUT's body). Nothing will continue it, so
 *   no state is saved, and OpenSSL is an order of magnitude faster than the resumable hash;
 * - resumable (@noble/hashes, state in Go's format): everything else. For a large streamed body
 *   it runs on a worker thread so hashing overlaps with the event loop's network and storage
 *   I/O; small bodies (every Lambda request) hash inline.
 */
import { createHash } from 'node:crypto';
import { ResumableSha256 } from './sha256-state.js';
import { threadedSha256 } from './thread.js';

export interface StreamHash {
  /** May return a promise: wait for it before sending more (the hash is behind). */
  update(chunk: Uint8Array): void | Promise<void>;
  /** The digest of everything so far; the hash stays usable. */
  digest(): Promise<Uint8Array>;
}

export interface ResumableHash extends StreamHash {
  /** The resumable state of everything so far (108 bytes, Go's MarshalBinary layout). */
  marshal(): Promise<Uint8Array>;
  /** Releases resources (the worker-side job); the hash is unusable afterwards. */
  close(): void;
}

/** Bodies above this size, or of unknown size, hash on the worker thread. */
export const THREAD_THRESHOLD = 8 * 1024 * 1024;

export function oneShotSha256(): StreamHash {
  const hash = createHash('sha256');
  return {
    update: (chunk) => void hash.update(chunk),
    digest: async () => hash.copy().digest(),
  };
}

export function inlineSha256(hash: ResumableSha256): ResumableHash {
  return {
    update: (chunk) => void hash.update(chunk),
    digest: async () => hash.peekDigest(),
    marshal: async () => hash.marshal(),
    close: () => undefined,
  };
}

/**
 * Continues `from` for a body of `length` bytes (undefined: unknown, streamed), on the worker
 * thread when `thread` allows and the body is large.
 */
export function resumeSha256(from: ResumableSha256, length: number | undefined, thread: boolean): ResumableHash {
  if (!thread || (length !== undefined && length <= THREAD_THRESHOLD)) return inlineSha256(from);
  return threadedSha256(from.marshal()) ?? inlineSha256(from);
}

export { ResumableSha256 };
