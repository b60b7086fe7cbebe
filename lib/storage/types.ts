/**
 * Storage interfaces. Two roles, after containerd's content store:
 *
 * - ObjectStore (the Provider side): named objects. It serves committed blobs (whole or by
 *   range, or as a presigned URL) and keeps the small scratch objects of uploads in flight
 *   (hash states, the S3 tail).
 * - Ingester (the Ingester/Writer side): how the bytes of an upload accumulate across requests
 *   and become a blob object. Its progress is a WriteState that the upload record persists
 *   between requests; the ingester itself is stateless, so any Lambda instance can continue
 *   any upload.
 *
 * Neither knows about repositories, digests or DynamoDB: the upload service (lib/registry)
 * owns sessions, leases, hashing and the commit point.
 */
import type { IntegrityReporter } from '../telemetry.js';

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive. */
  end: number;
}

export interface ObjectStore {
  /** Stores a small object in one request (hash states, tails). */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** Reads a whole small object; undefined when it does not exist. */
  get(key: string): Promise<Uint8Array | undefined>;
  /**
   * Streams an object or a byte range of it. Throws ObjectNotFound when absent, and
   * ObjectTruncated when `size` (what the metadata records) is given and the object's differs.
   */
  open(key: string, range?: ByteRange, size?: number): Promise<AsyncIterable<Uint8Array>>;
  /** The object's size in bytes; undefined when it does not exist. */
  stat(key: string): Promise<number | undefined>;
  /** Keys under a prefix (scratch areas only: never on a hot path). */
  list(prefix: string): Promise<string[]>;
  /** Deletes keys; missing keys are not an error. */
  delete(keys: string[]): Promise<void>;
  /** A short-lived URL that serves the object directly, when the backend can make one. */
  presign?(key: string, expiresIn: number): Promise<string>;
  /** Counters for what this store read, so tests and benchmarks can measure read-back. */
  readonly stats: StorageStats;
}

export interface StorageStats {
  /** Bytes of object data read back from the backend, by any path (get, open, driver internals). */
  bytesRead: number;
  /** Backend requests by operation name, for tests and benchmarks that count round trips. */
  requests: Record<string, number>;
}

export function newStats(): StorageStats {
  return { bytesRead: 0, requests: {} };
}

export function countRequest(stats: StorageStats, op: string): void {
  stats.requests[op] = (stats.requests[op] ?? 0) + 1;
}

/** Where an upload's bytes stand. Persisted with the upload record; owned by the ingester. */
export interface WriteState {
  /** Object key at which the blob is being assembled; the blob's key once committed. */
  key: string;
  /** Bytes accepted so far (the upload's offset). */
  size: number;
  /** S3: the multipart upload assembling `key`, created when the first part is written. */
  multipartId?: string;
  /** S3: committed full parts 1..parts, each at least the 5 MiB part minimum. */
  parts?: number;
  /** S3: bytes held in those parts. The tail holds [partBytes, size). */
  partBytes?: number;
  /**
   * S3: object holding the tail (< 5 MiB, not yet in a full part). The same bytes are also
   * uploaded as provisional part `parts + 1`, so a finish with no further data completes the
   * multipart upload without reading or copying anything.
   */
  tailKey?: string;
  /** S3: ETag of the provisional part `parts + 1`. */
  tailEtag?: string;
  /**
   * Filesystem: the file the bytes accumulate in, under the upload's scratch prefix and named
   * after the attempt that created it (`uploads/<id>/data.<attempt>`; `uploads/<id>/data` in
   * records written before files were per attempt); commit renames it to `key`, its own blob
   * key, so nothing but a commit ever writes at a blob's key. None until the first bytes.
   */
  scratchKey?: string;
}

export interface Part {
  number: number;
  etag: string;
  size: number;
}

/**
 * The record of parts written to a multipart upload, kept by the upload service with a fence
 * (the attempt's lease sequence), so a writer that lost its lease cannot rewrite history.
 */
export interface PartLedger {
  /** Notes a full part this attempt uploaded; it is stored when the attempt commits. */
  record(part: Part): void;
  /** The recorded parts 1..count in order; throws if one is missing. */
  list(count: number): Promise<Part[]>;
}

export interface AppendContext {
  uploadId: string;
  ledger: PartLedger;
  /** Unique per attempt; scratch objects of an attempt carry it so racing attempts never collide. */
  attempt: string;
  /**
   * Another attempt may still be writing where `state` points: the lease was taken over from a
   * writer that never committed or released (its lease ran out in the record while it ran on).
   * An ingester that continues a write in place must then start one of its own.
   */
  contended?: boolean;
  /** Called between data chunks; throws to stop the write (lost lease, client gone). */
  checkpoint?: () => void;
  /** Where the driver reports stored bytes that disagree with the upload record (and repairs). */
  report?: IntegrityReporter;
}

export interface Committed {
  key: string;
  size: number;
}

export interface Ingester {
  /** A fresh write for an upload; no I/O. */
  create(uploadId: string): WriteState;
  /**
   * Appends a body at state.size and returns the new state. The input state stays valid if this
   * throws: nothing it references is modified, so the upload can continue from it.
   */
  append(state: WriteState, body: AsyncIterable<Uint8Array>, ctx: AppendContext): Promise<WriteState>;
  /**
   * Makes the blob object at state.key from the written bytes plus an optional final body.
   * Returns where the bytes are and how many there are. Never copies or re-reads data that
   * earlier requests wrote.
   */
  commit(state: WriteState, body: AsyncIterable<Uint8Array> | undefined, ctx: AppendContext): Promise<Committed>;
  /** Streams written bytes [from, to) of an uncommitted write, where the backend can. */
  readWritten(state: WriteState, from: number, to: number): Promise<AsyncIterable<Uint8Array>>;
  /**
   * Frees what `previous` referenced and `current` no longer does: scratch objects, and a
   * multipart upload `previous` started that `current` does not carry (a write whose commit
   * failed). With `current` undefined the write has completed: only scratch objects go.
   */
  release(previous: WriteState, current: WriteState | undefined): Promise<void>;
  /** Drops an uncommitted write entirely (cancel, failed finish). */
  abort(state: WriteState): Promise<void>;
}

export interface StorageDriver {
  readonly kind: 'fs' | 's3';
  readonly objects: ObjectStore;
  readonly ingester: Ingester;
  readonly inventory: Inventory;
}

/** An object as a listing shows it: enough for garbage collection to judge it by age. */
export interface ListedObject {
  key: string;
  size: number;
  /** When it was last written (S3 LastModified, file mtime), epoch ms. */
  modified: number;
}

/** An S3 multipart upload nobody completed or aborted yet. */
export interface IncompleteWrite {
  key: string;
  /** The backend's id of the write (S3 UploadId). */
  id: string;
  /** When it was started, epoch ms. */
  started: number;
}

/**
 * What storage holds, for garbage collection's orphan sweep (lib/registry/orphans.ts): listings
 * in key order that a later call can resume after any key, so a sweep can stop at its time
 * budget and the next run carry on. Never on a request path.
 */
export interface Inventory {
  /**
   * Up to `max` objects under `prefix` whose keys sort after `after` (from the start when
   * undefined), in key order; `more` when the listing did not reach the end of the prefix.
   */
  list(prefix: string, after: string | undefined, max: number): Promise<{ objects: ListedObject[]; more: boolean }>;
  /** Writes under `prefix` that were started and never completed or aborted (S3 only; none on fs). */
  incompleteWrites(prefix: string): Promise<IncompleteWrite[]>;
  /** Drops an incomplete write and the parts it holds; one already gone is not an error. */
  abortWrite(write: IncompleteWrite): Promise<void>;
}

export class ObjectNotFound extends Error {
  constructor(
    readonly key: string,
    message = `object not found: ${key}`,
  ) {
    super(message);
    this.name = 'ObjectNotFound';
  }
}

/**
 * Raised when the backend no longer holds an upload's write (S3: its multipart upload was
 * aborted, or completed by a finish whose answer was lost).
 */
export class WriteGone extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WriteGone';
  }
}

/**
 * An object shorter (or longer) than the metadata says: a crash or a lost write left it so.
 * It counts as missing: serving it would send fewer bytes than the Content-Length promised.
 */
export class ObjectTruncated extends ObjectNotFound {
  constructor(
    key: string,
    readonly expected: number,
    readonly actual: number | undefined,
  ) {
    super(key, `object ${key} holds ${actual ?? 'fewer'} bytes, expected ${expected}`);
    this.name = 'ObjectTruncated';
  }
}

/** Raised when written bytes cannot be read back (S3 parts are unreadable until completed). */
export class NotReadable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotReadable';
  }
}

/** Object keys shared by both drivers, so a bucket and a data directory look alike. */
export const keys = {
  blob: (uploadId: string) => `blobs/${uploadId}`,
  uploadPrefix: (uploadId: string) => `uploads/${uploadId}/`,
  /**
   * The hash state of the first `offset` bytes as written by `attempt` (the request that wrote
   * them), so racing attempts never overwrite or delete each other's state: the upload record
   * names the attempt whose state counts. Without an attempt: the layout of records written
   * before states were keyed by attempt.
   */
  hashState: (uploadId: string, algorithm: string, offset: number, attempt?: string) =>
    attempt ? `uploads/${uploadId}/hashstates/${algorithm}/${attempt}/${offset}` : `uploads/${uploadId}/hashstates/${algorithm}/${offset}`,
  hashStatePrefix: (uploadId: string, algorithm: string) => `uploads/${uploadId}/hashstates/${algorithm}/`,
  tail: (uploadId: string, attempt: string) => `uploads/${uploadId}/tail/${attempt}`,
  /** Filesystem: where an attempt's bytes accumulate until commit renames them to `blob(uploadId).<attempt>`. */
  uploadData: (uploadId: string, attempt: string) => `uploads/${uploadId}/data.${attempt}`,
};
