/**
 * Cuts a byte stream into multipart-upload parts with bounded memory: one part buffer being
 * filled plus at most `concurrency` parts in flight, whatever the body's size.
 */
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { RegistryError } from '../../oci/errors.js';
import { type AppendContext, type Part, type WriteState, countRequest } from '../types.js';
import type { BufferPool } from './buffers.js';
import type { S3ObjectStore } from './objects.js';

/** S3's minimum size of every part but the last. */
export const MIN_PART = 5 * 1024 * 1024;
/** S3's maximum number of parts in one multipart upload. */
export const MAX_PARTS = 10_000;

export interface PartOptions {
  partSize: number;
  concurrency: number;
  /** Where part buffers come from and go back to. */
  buffers: BufferPool;
}

export interface Uploaded extends Part {
  /** Recorded in the ledger (a full part) rather than provisional or final. */
  recorded: boolean;
}

export class PartWriter {
  /** Body bytes consumed (not counting the previous tail placed in front of them). */
  bytesIn = 0;
  multipartId: string | undefined;
  private created = false;
  private creating: Promise<string> | undefined;
  private nextNumber: number;
  private buffer: Buffer | undefined;
  private fill = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown;
  private readonly uploaded: Uploaded[] = [];

  constructor(
    private readonly store: S3ObjectStore,
    private readonly state: WriteState,
    private readonly ctx: AppendContext,
    private readonly opts: PartOptions,
  ) {
    this.multipartId = state.multipartId;
    this.nextNumber = (state.parts ?? 0) + 1;
  }

  /**
   * Consumes the body. `prefix` supplies bytes that go before it (the previous tail); it is
   * called only once data actually arrives, so an empty body costs no read. Returns whether
   * the body had any bytes.
   */
  async write(body: AsyncIterable<Uint8Array>, prefix: () => Promise<Uint8Array | undefined>): Promise<boolean> {
    let started = false;
    for await (const chunk of body) {
      if (chunk.length === 0) continue;
      this.ctx.checkpoint?.();
      if (!started) {
        started = true;
        const head = await prefix();
        if (head?.length) await this.push(head);
      }
      this.bytesIn += chunk.length;
      await this.push(chunk);
    }
    return started;
  }

  private async push(chunk: Uint8Array): Promise<void> {
    const size = this.opts.partSize;
    for (let off = 0; off < chunk.length; ) {
      this.buffer ??= this.opts.buffers.take();
      const n = Math.min(size - this.fill, chunk.length - off);
      this.buffer.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill === size) {
        const full = this.buffer;
        this.buffer = undefined;
        this.fill = 0;
        await this.enqueue(full, true, () => this.opts.buffers.give(full));
      }
    }
  }

  /** Whether any part has been handed to S3 (or is waiting for a slot) in this attempt. */
  get started(): boolean {
    return this.nextNumber > (this.state.parts ?? 0) + 1;
  }

  /** Bytes received but not yet sent as a part (less than one part size). */
  remainder(): Uint8Array {
    return this.buffer ? this.buffer.subarray(0, this.fill) : new Uint8Array(0);
  }

  /**
   * Starts uploading the next part once a slot is free. `record` is false for the provisional
   * or final part. `done` runs when S3 no longer needs the bytes.
   */
  async enqueue(bytes: Uint8Array, record: boolean, done?: () => void): Promise<void> {
    this.throwIfFailed();
    while (this.inflight.size >= this.opts.concurrency) await Promise.race(this.inflight);
    this.throwIfFailed();
    const number = this.nextNumber++;
    if (number > MAX_PARTS) {
      throw new RegistryError('SIZE_INVALID', `blob exceeds ${MAX_PARTS} multipart parts`, {
        status: 413,
        detail: { maxParts: MAX_PARTS, partSize: this.opts.partSize },
      });
    }
    const task = this.upload(number, bytes, record)
      .then(
        (part) => void this.uploaded.push(part),
        (err) => void (this.failure ??= err),
      )
      .finally(done);
    this.inflight.add(task);
    void task.finally(() => this.inflight.delete(task));
  }

  private async upload(number: number, bytes: Uint8Array, recorded: boolean): Promise<Uploaded> {
    const uploadId = await this.ensureMultipart();
    this.ctx.checkpoint?.();
    countRequest(this.store.stats, 'UploadPart');
    const res = await this.store.s3.send(
      new UploadPartCommand({
        Bucket: this.store.bucket,
        Key: this.state.key,
        UploadId: uploadId,
        PartNumber: number,
        Body: bytes,
        ContentLength: bytes.length,
      }),
    );
    const part = { number, etag: res.ETag ?? '', size: bytes.length, recorded };
    if (recorded) this.ctx.ledger.record({ number, etag: part.etag, size: part.size });
    return part;
  }

  private ensureMultipart(): Promise<string> {
    if (this.multipartId) return Promise.resolve(this.multipartId);
    this.creating ??= (async () => {
      countRequest(this.store.stats, 'CreateMultipartUpload');
      const res = await this.store.s3.send(
        new CreateMultipartUploadCommand({ Bucket: this.store.bucket, Key: this.state.key, ContentType: 'application/octet-stream' }),
      );
      this.multipartId = res.UploadId!;
      this.created = true;
      return this.multipartId;
    })();
    return this.creating;
  }

  /** Waits for every part in flight; throws the first failure. Returns this attempt's parts in order. */
  async drain(): Promise<Uploaded[]> {
    while (this.inflight.size) await Promise.race(this.inflight);
    this.throwIfFailed();
    return this.parts();
  }

  parts(): Uploaded[] {
    return [...this.uploaded].sort((a, b) => a.number - b.number);
  }

  /** Returns the buffer being filled to the pool; call when nothing references remainder() any more. */
  dispose(): void {
    if (this.buffer) this.opts.buffers.give(this.buffer);
    this.buffer = undefined;
    this.fill = 0;
  }

  /** After a failure: let uploads in flight settle, and drop a multipart upload this attempt created. */
  async abandon(): Promise<void> {
    while (this.inflight.size) await Promise.race(this.inflight);
    this.dispose();
    if (this.created && this.multipartId) {
      countRequest(this.store.stats, 'AbortMultipartUpload');
      await this.store.s3
        .send(new AbortMultipartUploadCommand({ Bucket: this.store.bucket, Key: this.state.key, UploadId: this.multipartId }))
        .catch(() => undefined); // the bucket's lifecycle rule is the backstop
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}
