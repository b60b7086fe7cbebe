/**
 * Ingester on S3: each upload assembles its blob in one multipart upload at `blobs/<upload id>`,
 * and that object becomes the blob. Finishing completes the multipart upload in place: no copy
 * to a content-addressed key, no read-back.
 *
 * Layout of a write in flight (see WriteState):
 *   [0, partBytes)     full parts 1..parts, each >= 5 MiB, recorded in the PartLedger
 *   [partBytes, size)  the tail, < 5 MiB: a scratch object, and also provisional part parts+1
 *
 * Chunks smaller than the 5 MiB minimum (every chunk that fits through API Gateway) land in
 * the tail; the next chunk is appended to it and, once there are 5 MiB, it is cut into a full
 * part. Because the tail is always also uploaded as the provisional last part, a finish without
 * more data is a single CompleteMultipartUpload, whatever the blob's size.
 */
import { AbortMultipartUploadCommand } from '@aws-sdk/client-s3';
import { RegistryError } from '../../oci/errors.js';
import {
  type AppendContext,
  type Committed,
  type Ingester,
  NotReadable,
  type Part,
  type WriteState,
  WriteGone,
  countRequest,
  keys,
} from '../types.js';
import { s3ErrorName } from './client.js';
import type { S3ObjectStore } from './objects.js';
import { MIN_PART, type PartOptions, PartWriter } from './parts.js';
import { putRecognised } from './lost-answers.js';
import { complete, repairAndComplete } from './repair.js';

export class S3Ingester implements Ingester {
  constructor(
    private readonly store: S3ObjectStore,
    private readonly opts: PartOptions,
  ) {
    if (opts.partSize < MIN_PART) throw new Error(`S3 part size must be at least ${MIN_PART} bytes`);
  }

  create(uploadId: string): WriteState {
    return { key: keys.blob(uploadId), size: 0, parts: 0, partBytes: 0 };
  }

  async append(state: WriteState, body: AsyncIterable<Uint8Array>, ctx: AppendContext): Promise<WriteState> {
    const writer = new PartWriter(this.store, state, ctx, this.opts);
    let tailKey: string | undefined;
    try {
      if (!(await writer.write(body, () => this.readTail(state)))) return state;
      const rest = writer.remainder();
      if (rest.length >= MIN_PART) {
        await writer.enqueue(rest, true);
      } else if (rest.length > 0) {
        tailKey = keys.tail(ctx.uploadId, ctx.attempt);
        await writer.enqueue(rest, false);
        await putRecognised(this.store, tailKey, rest);
      }
      const parts = await writer.drain();
      const full = parts.filter((p) => p.recorded);
      const provisional = parts.find((p) => !p.recorded);
      const next: WriteState = {
        key: state.key,
        size: state.size + writer.bytesIn,
        multipartId: writer.multipartId,
        parts: (state.parts ?? 0) + full.length,
        partBytes: (state.partBytes ?? 0) + full.reduce((n, p) => n + p.size, 0),
      };
      if (provisional && tailKey) {
        next.tailKey = tailKey;
        next.tailEtag = provisional.etag;
      }
      writer.dispose();
      return next;
    } catch (err) {
      if (tailKey) await this.store.delete([tailKey]).catch(() => undefined);
      await writer.abandon();
      if (s3ErrorName(err) === 'NoSuchUpload') throw new WriteGone(`multipart upload of ${state.key} is gone`, { cause: err });
      throw err;
    }
  }

  async commit(state: WriteState, body: AsyncIterable<Uint8Array> | undefined, ctx: AppendContext): Promise<Committed> {
    const committedParts = state.parts ?? 0;
    let parts: Part[];
    let size = state.size;
    let lastBytes: Uint8Array | undefined;
    const writer = new PartWriter(this.store, state, ctx, this.opts);
    try {
      const wrote = body ? await writer.write(body, () => this.readTail(state)) : false;
      if (wrote) {
        size += writer.bytesIn;
        const rest = writer.remainder();
        if (!writer.multipartId && !writer.started) {
          // The whole blob fit in one part buffer and nothing was written before: one PUT, to a
          // key of this attempt's own: a stale attempt's delayed PUT never lands on a blob
          // another attempt finished (and a failed finish deletes only its own).
          const own = `${state.key}.${ctx.attempt}`;
          await putRecognised(this.store, own, rest);
          writer.dispose();
          return { key: own, size };
        }
        if (rest.length > 0) {
          lastBytes = rest;
          await writer.enqueue(rest, false);
        }
        parts = [...(await ctx.ledger.list(committedParts)), ...(await writer.drain())];
      } else if (state.size === 0) {
        const own = `${state.key}.${ctx.attempt}`;
        await putRecognised(this.store, own, new Uint8Array(0));
        return { key: own, size: 0 };
      } else {
        parts = await ctx.ledger.list(committedParts);
        if (state.tailKey) parts.push({ number: committedParts + 1, etag: state.tailEtag ?? '', size: state.size - (state.partBytes ?? 0) });
      }
      const multipartId = writer.multipartId!;
      let key = state.key;
      try {
        await complete(this.store, state.key, multipartId, parts);
      } catch (err) {
        if (s3ErrorName(err) !== 'InvalidPart') throw err;
        // The last part's bytes, should a failed request have overwritten it: the remainder of
        // this request's body, or else the committed tail (the provisional part).
        const last = lastBytes;
        const tail = last ? async () => last : !wrote && state.tailKey ? () => this.readTail(state) : undefined;
        key = await repairAndComplete(this.store, { key: state.key, multipartId, parts, tail, report: ctx.report });
      }
      writer.dispose();
      return { key, size };
    } catch (err) {
      await writer.abandon();
      throw mismatchError(err);
    }
  }

  private async readTail(state: WriteState): Promise<Uint8Array | undefined> {
    if (!state.tailKey) return undefined;
    const tail = await this.store.get(state.tailKey);
    if (!tail) throw new RegistryError('BLOB_UPLOAD_INVALID', 'upload tail is missing; restart the upload');
    return tail;
  }

  async readWritten(state: WriteState, from: number, to: number): Promise<AsyncIterable<Uint8Array>> {
    const partBytes = state.partBytes ?? 0;
    if (to <= from) return (async function* () {})();
    if (from < partBytes || !state.tailKey) {
      throw new NotReadable(`bytes ${from}-${to - 1} are in multipart parts, which S3 cannot read before completion`);
    }
    return this.store.open(state.tailKey, { start: from - partBytes, end: to - 1 - partBytes });
  }

  async release(previous: WriteState, current: WriteState | undefined): Promise<void> {
    const work: Promise<unknown>[] = [];
    if (previous.tailKey && previous.tailKey !== current?.tailKey) work.push(this.store.delete([previous.tailKey]));
    if (current && previous.multipartId && previous.multipartId !== current.multipartId) work.push(this.abortMultipart(previous));
    await Promise.all(work);
  }

  async abort(state: WriteState): Promise<void> {
    await Promise.all([this.release(state, undefined), state.multipartId ? this.abortMultipart(state) : undefined]);
  }

  private async abortMultipart(state: WriteState): Promise<void> {
    countRequest(this.store.stats, 'AbortMultipartUpload');
    await this.store.s3.send(new AbortMultipartUploadCommand({ Bucket: this.store.bucket, Key: state.key, UploadId: state.multipartId })).catch((err) => {
      // Already aborted (a retried purge or cancel) or completed: nothing left to free.
      if (s3ErrorName(err) !== 'NoSuchUpload') throw err;
    });
  }

}

/** S3's refusals to complete, as the client's upload problem rather than a server fault. */
function mismatchError(err: unknown): unknown {
  const name = s3ErrorName(err);
  if (name === 'InvalidPart' || name === 'InvalidPartOrder' || name === 'EntityTooSmall' || name === 'NoSuchUpload') {
    return new RegistryError('BLOB_UPLOAD_INVALID', `stored parts do not match the upload record (${name}); restart the upload`, { cause: err });
  }
  return err;
}
