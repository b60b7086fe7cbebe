/**
 * Blob uploads: start, append a chunk, finish, status, cancel.
 *
 * Each request that writes takes the upload's lease first (a conditional write on the upload's
 * offset), streams its body through the hash into the ingester, saves the hash state for the
 * new offset, and only then commits the new offset. A request that fails anywhere before the
 * commit leaves the upload exactly as it was: nothing it sent is kept.
 */
import { createHash, randomUUID } from 'node:crypto';
import { RegistryError } from '../oci/errors.js';
import type { Digest } from '../oci/digest.js';
import type { Descriptor, Finished, Lease, MetadataStore, Status, Upload } from '../metadata/types.js';
import { Contended, LeaseLost, OffsetConflict, UploadGone } from '../metadata/types.js';
import { type AppendContext, type Committed, type StorageDriver, WriteGone } from '../storage/types.js';
import { type ResumableHash, type StreamHash, oneShotSha256, resumeSha256 } from '../hash/hashes.js';
import { type Body, type ByteSpan, checkDeclared, checked } from './body.js';
import { HashStates, freeUpload } from './hash-states.js';
import type { IntegrityReporter } from '../telemetry.js';

export interface UploadSettings {
  /** Largest chunk accepted in one request; 0 for no limit. */
  maxChunkBytes: number;
  /** Lease duration; the lease is renewed every third of it while body bytes keep arriving. */
  leaseMs: number;
  /** Whether large streamed bodies may hash on a worker thread. */
  hashThread: boolean;
}

export class UploadService {
  private readonly states: HashStates;

  constructor(
    private readonly meta: MetadataStore,
    private readonly storage: StorageDriver,
    private readonly settings: UploadSettings,
    private readonly integrity: IntegrityReporter,
  ) {
    this.states = new HashStates(storage);
  }

  async start(repo: string): Promise<Status> {
    const id = randomUUID();
    return statusOf(await this.meta.uploads.create(id, repo, this.storage.ingester.create(id)));
  }

  async status(repo: string, id: string): Promise<Status> {
    const upload = await this.meta.uploads.get(id, repo);
    if (!upload) throw unknownUpload(id);
    return statusOf(upload);
  }

  /** PATCH: appends a chunk at the upload's offset (or exactly at `range.start`). */
  async append(repo: string, id: string, body: Body, range?: ByteSpan): Promise<Status> {
    const expected = checkDeclared(body, range, this.settings.maxChunkBytes);
    return this.withLease(repo, id, range?.start, async (lease, ctx) => {
      const before = lease.upload;
      const hash = resumeSha256(await this.states.resume(before), expected, this.settings.hashThread);
      try {
        const stream = checked(body.stream, expected, this.settings.maxChunkBytes, (chunk) => hash.update(chunk));
        const write = await this.storage.ingester.append(before.write, stream, ctx);
        if (write.size === before.offset) {
          await this.meta.uploads.release(lease);
          return statusOf(before);
        }
        await this.states.save(id, write.size, lease.attempt, await hash.marshal());
        let after: Upload;
        try {
          after = await this.meta.uploads.commit(lease, write);
        } catch (err) {
          await this.freeUncommitted(lease, write);
          throw err;
        }
        // What the old offset needed and the new one does not: best effort, the lifecycle rule
        // and the purge are the backstop.
        await Promise.allSettled([this.storage.ingester.release(before.write, write), this.states.drop(id, before.offset, before.attempt)]);
        return statusOf(after);
      } finally {
        hash.close();
      }
    });
  }

  /** PUT ?digest=: appends an optional final chunk, verifies the digest and commits the blob. */
  async finish(repo: string, id: string, digest: Digest, body?: Body, range?: ByteSpan): Promise<Descriptor> {
    const expected = body ? checkDeclared(body, range, this.settings.maxChunkBytes) : undefined;
    return this.withLease(repo, id, range?.start, async (lease, ctx) => {
      const before = lease.upload;
      const final = body && expected !== 0 ? body : undefined;
      let hash: StreamHash | ResumableHash | undefined;
      let stream: AsyncIterable<Uint8Array> | undefined;
      if (digest.algorithm === 'sha256') {
        // A blob sent whole in this request needs no resumable state: nothing will continue it.
        hash = before.offset === 0 && final ? oneShotSha256() : resumeSha256(await this.states.resume(before), final ? expected : 0, this.settings.hashThread);
        // With no final chunk the digest is known now: refuse before assembling anything.
        if (!final && sha256Digest(await hash.digest()) !== digest.value) return this.reject(lease, digest);
      }
      if (final) stream = checked(final.stream, expected, this.settings.maxChunkBytes, hash ? (c) => hash!.update(c) : undefined);

      let committed: Committed;
      let actual: string;
      try {
        committed = await this.storage.ingester.commit(before.write, stream, ctx);
        actual = hash ? sha256Digest(await hash.digest()) : await this.rehash(committed.key, digest);
      } finally {
        if (hash && 'close' in hash) hash.close();
      }
      if (actual !== digest.value) return this.reject(lease, digest, { key: committed.key, digest: actual });

      // From here the bytes are a blob: only the descriptor can prove them a spare copy.
      const ours: Descriptor = { digest: digest.value, size: committed.size, key: committed.key, mediaType: 'application/octet-stream', createdAt: Date.now() };
      let result: Linked;
      try {
        result = { ...(await this.meta.uploads.finish(lease, ours, (stored) => this.holdsBytes(stored))), linked: true };
      } catch (err) {
        result = await this.afterFailedLink(err, lease, ours);
      }
      const kept = await this.keepOneCopy(before.repo, result, ours);
      await Promise.allSettled([this.storage.ingester.release(before.write, undefined), this.states.drop(id, before.offset, before.attempt)]);
      return kept;
    });
  }

  /** POST ?digest= with a body: a whole blob in one request. */
  async monolithic(repo: string, digest: Digest, body: Body): Promise<Descriptor> {
    // A declared size over the limit is refused before anything is recorded or stored.
    checkDeclared(body, undefined, this.settings.maxChunkBytes);
    const { id } = await this.start(repo);
    try {
      return await this.finish(repo, id, digest, body);
    } catch (err) {
      // Nobody holds a Location for this upload: leave nothing of it behind.
      await this.cancel(repo, id).catch(() => undefined);
      throw err;
    }
  }

  async cancel(repo: string, id: string): Promise<void> {
    const upload = await this.meta.uploads.remove(id, repo);
    if (!upload) throw unknownUpload(id);
    await freeUpload(this.storage, upload.id, upload.write);
  }

  /**
   * A digest mismatch ends the upload (as distribution does): the client sent bytes that are
   * not what it claims, and nothing of them may become linkable. Assembled bytes are deleted
   * unless a descriptor names them: a request that lost its lease may have finished the same
   * write (one file, one key) under the right digest.
   */
  private async reject(lease: Lease, digest: Digest, assembled?: { key: string; digest: string }): Promise<never> {
    const upload = lease.upload;
    const refused = new RegistryError('DIGEST_INVALID', 'provided digest did not match uploaded content', { detail: { digest: digest.value } });
    // Only while this request still holds the upload: one whose lease was taken over ends
    // nothing of the request that took it (its scratch and record); spare bytes of ours, on a key
    // of this attempt's own, are the orphan sweep's.
    if (!(await this.meta.uploads.remove(upload.id, upload.repo, lease.attempt))) throw refused;
    const spare = assembled && this.meta.blobs.getDescriptor(assembled.digest).then((d) => (d?.key === assembled.key ? undefined : this.storage.objects.delete([assembled.key])));
    await Promise.allSettled([freeUpload(this.storage, upload.id, upload.write), spare]);
    throw refused;
  }

  /**
   * The link transaction failed after the bytes were assembled, or its answer was lost while
   * it landed (a timeout). The descriptor, the durable record of which key holds a digest's
   * bytes, decides; a repository link cannot (a concurrent blob DELETE removes it):
   *   names our bytes    -> it landed: success;
   *   names other bytes  -> the digest is stored already. If that copy holds the bytes, ours is
   *                         a spare: the upload ends and the caller links the kept one
   *                         (keepOneCopy). If not, ours must replace it, and only in the
   *                         commit that ends the upload (the finish transaction, sent once more:
   *                         conditioned on our lease, it refuses if the first one landed or the
   *                         upload was taken over); ending the upload first would leave our
   *                         object named by nothing and held by no upload, which the orphan
   *                         sweep may free before the descriptor names it. Refused, the failure
   *                         stands and nothing is removed or deleted;
   *   absent             -> it has not landed; deleting the upload record fences off a
   *                         transaction still in flight (it is conditional on the record),
   *                         then a second look decides: still absent, our bytes are nobody's
   *                         and go, and the upload ends (on S3 its multipart upload is
   *                         completed: a retried finish could never work);
   *   cannot tell        -> keep everything and report the failure.
   * A transaction refused because another request took the upload over (LeaseLost) changed
   * nothing, and the upload is that request's now: unless the descriptor shows ours landed, the
   * refusal stands and nothing is removed or deleted (the orphan sweep frees our spare bytes).
   */
  private async afterFailedLink(err: unknown, lease: Lease, ours: Descriptor): Promise<Linked> {
    const upload = lease.upload;
    let descriptor: Descriptor | undefined;
    if (err instanceof LeaseLost) {
      descriptor = await this.meta.blobs.getDescriptor(ours.digest).catch(() => undefined);
      if (descriptor?.key === ours.key) return { descriptor, linked: true };
      throw err;
    }
    let whole: boolean;
    try {
      descriptor = await this.meta.blobs.getDescriptor(ours.digest);
      if (!descriptor) {
        await this.meta.uploads.remove(upload.id, upload.repo);
        descriptor = await this.meta.blobs.getDescriptor(ours.digest);
      }
      if (descriptor?.key === ours.key) return { descriptor, linked: true };
      whole = descriptor !== undefined && (await this.holdsBytes(descriptor));
    } catch {
      throw err;
    }
    if (descriptor && whole) {
      await this.meta.uploads.remove(upload.id, upload.repo).catch(() => undefined);
      return { descriptor, linked: false };
    }
    if (descriptor) {
      const dead = descriptor.key;
      try {
        // The copy just judged dead needs no second look; one named since does.
        return { ...(await this.meta.uploads.finish(lease, ours, (stored) => (stored.key === dead ? Promise.resolve(false) : this.holdsBytes(stored)))), linked: true };
      } catch {
        const now = await this.meta.blobs.getDescriptor(ours.digest).catch(() => undefined);
        if (now?.key === ours.key) return { descriptor: now, linked: true };
        throw err;
      }
    }
    await this.storage.objects.delete([ours.key]).catch(() => undefined);
    throw err;
  }

  /**
   * A commit failed: free what this attempt wrote (its tail, its hash state, a multipart upload
   * it started), except what the durable record holds, which it does if the commit landed after
   * all and a later request built on it. Nothing is freed when the record cannot be read. When
   * the record is gone (cancelled, or finished by a request that built on a commit of ours that
   * landed, whose multipart upload is then completed and cannot be aborted) this attempt's
   * scratch and multipart upload go.
   */
  private async freeUncommitted(lease: Lease, write: Upload['write']): Promise<void> {
    const { id, repo } = lease.upload;
    let record: Upload | undefined;
    try {
      record = await this.meta.uploads.get(id, repo);
    } catch {
      return;
    }
    await Promise.allSettled([
      this.storage.ingester.release(write, record?.write ?? lease.upload.write),
      record?.attempt === lease.attempt ? undefined : this.states.drop(id, write.size, lease.attempt),
    ]);
  }

  /**
   * Whether a stored copy of a digest holds its bytes: its object is there at the recorded
   * size. Asked only when a finish meets a stored descriptor (a dedupe), before the transaction
   * that ends the upload, which then keeps that copy or replaces it with ours (a copy gone or
   * short is reported here).
   */
  private async holdsBytes(stored: Descriptor): Promise<boolean> {
    const size = await this.storage.objects.stat(stored.key);
    if (size === stored.size) return true;
    this.integrity({
      kind: size === undefined ? 'object-missing' : 'object-truncated',
      message: `descriptor of ${stored.digest} names ${stored.key}, which holds ${size ?? 'no'} bytes of ${stored.size}`,
      digest: stored.digest,
      key: stored.key,
      size: stored.size,
      actual: size,
    });
    return false;
  }

  /**
   * After the commit: one copy of the digest stays. A stored copy that was judged whole and
   * kept leaves ours a spare, deleted here (the orphan sweep frees it if this fails); one that
   * was gone was replaced by ours in the same commit, and a push of the digest thereby heals
   * it for every repository (reads fall back to the descriptor). `linked`: whether the
   * repository's link to the kept copy is written already.
   */
  private async keepOneCopy(repo: string, result: Linked, ours: Descriptor): Promise<Descriptor> {
    if (result.replaced) {
      this.integrity({ kind: 'descriptor-repaired', message: `descriptor of ${ours.digest} now names ${ours.key} instead of ${result.replaced}`, digest: ours.digest, key: ours.key, replaced: result.replaced });
    }
    const kept = result.descriptor;
    if (kept.key === ours.key) return kept;
    await this.storage.objects.delete([ours.key]).catch(() => undefined);
    // A descriptor collected since (GC, racing this push) links nothing: the client pushes again.
    if (!result.linked && !(await this.meta.blobs.putLink(repo, kept))) throw new Contended();
    return kept;
  }

  /** Digests other than the canonical sha256 are verified by reading the assembled blob back. */
  private async rehash(key: string, digest: Digest): Promise<string> {
    const hash = createHash(digest.algorithm);
    for await (const chunk of await this.storage.objects.open(key)) hash.update(chunk);
    return `${digest.algorithm}:${hash.digest('hex')}`;
  }

  /**
   * Runs `work` holding the upload's write lease, renewing it as the body makes progress: the
   * storage drivers call `checkpoint` between chunks of data, and a third of the lease after the
   * last renewal the next checkpoint renews it (in the background; the body keeps flowing). A
   * body that stops arriving therefore stops renewing, and its lease runs out rather than
   * blocking the upload for as long as the connection stays open. A renewal that fails for a
   * passing reason (a throttle, a timeout) is tried again at a later checkpoint; only losing
   * the lease to another writer, or the lease running out, stops the work.
   */
  private async withLease<T>(repo: string, id: string, offset: number | undefined, work: (lease: Lease, ctx: AppendContext) => Promise<T>): Promise<T> {
    const lease = await this.meta.uploads.acquire(id, repo, offset).catch((err) => {
      throw this.translate(err, id);
    });
    let lost: unknown;
    const leaseMs = this.settings.leaseMs;
    const margin = Math.min(1000, leaseMs / 10);
    let renewedAt = Date.now();
    let renewing = false;
    /** After a failed renewal, the next attempt waits this long (no storm of retries per chunk). */
    let retryAt = 0;
    const renew = () => {
      renewing = true;
      const sent = Date.now();
      this.meta.uploads
        .renew(lease)
        .then(
          () => void (renewedAt = sent),
          (err: unknown) => {
            if (err instanceof LeaseLost || err instanceof UploadGone) lost ??= err;
            else retryAt = Date.now() + Math.min(1000, leaseMs / 12);
          },
        )
        .finally(() => (renewing = false));
    };
    const ctx: AppendContext = {
      uploadId: id,
      attempt: lease.attempt,
      contended: lease.contended,
      report: this.integrity,
      ledger: this.meta.uploads.ledger(lease),
      checkpoint: () => {
        if (lost !== undefined) throw lost;
        const now = Date.now();
        if (now > lease.until - margin) throw new LeaseLost(id);
        if (!renewing && now - renewedAt >= leaseMs / 3 && now >= retryAt) renew();
      },
    };
    try {
      return await work(lease, ctx);
    } catch (err) {
      await this.meta.uploads.release(lease).catch(() => undefined);
      throw await this.translateAsync(err, lease);
    }
  }

  private translate(err: unknown, id: string): unknown {
    if (err instanceof UploadGone) return unknownUpload(id);
    if (err instanceof OffsetConflict) return rangeConflict(err.offset, err.message);
    return err;
  }

  /**
   * A request that failed while holding the lease: a lost lease or a storage failure may mean
   * the upload was cancelled (or purged) under it, which storage reports in its own words
   * (NoSuchUpload, a vanished file). The record decides: gone is 404 for the client, and what
   * this request wrote after the cancel freed its leftovers is freed here.
   */
  private async translateAsync(err: unknown, lease: Lease): Promise<unknown> {
    const { id, repo } = lease.upload;
    // Answers that already say what happened: a client error, or metadata contention (429).
    if (err instanceof RegistryError || err instanceof Contended) return err;
    const known = this.translate(err, id);
    if (known !== err) return known;
    const upload = await this.meta.uploads.get(id, repo).catch(() => null);
    if (upload === undefined) {
      // Gone: cancelled, purged, or finished (by this request, its answer lost, or by another
      // that took the lease over). Aborting a write frees only what is not yet a blob (the
      // scratch file, the multipart upload and tail), never the object a finish made, so it is
      // safe whichever it was; the descriptor alone decides about a blob's bytes.
      await freeUpload(this.storage, id, lease.upload.write);
      return unknownUpload(id);
    }
    if (upload && err instanceof LeaseLost) return rangeConflict(upload.offset, err.message);
    // The record stands but storage lost its write (a finish completed it, its answer lost):
    // nothing can continue it, and the client must start over.
    if (upload && err instanceof WriteGone) return new RegistryError('BLOB_UPLOAD_INVALID', 'the upload\'s stored data is gone; restart the upload', { cause: err });
    return err;
  }
}

/** What a finish committed, and whether the repository's link to its descriptor is written. */
type Linked = Finished & { linked: boolean };

export function statusOf(upload: Upload): Status {
  return { id: upload.id, repo: upload.repo, offset: upload.offset, startedAt: upload.startedAt, updatedAt: upload.updatedAt };
}

/** The spec's Range for an upload: `0-<last byte>`, and `0-0` when empty. */
export function uploadRange(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

/** A sha256 digest string (`sha256:<hex>`) for a hash's output, as clients name blobs. */
function sha256Digest(hash: Uint8Array): string {
  return `sha256:${Buffer.from(hash).toString('hex')}`;
}

function unknownUpload(id: string): RegistryError {
  return new RegistryError('BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry', { detail: { uuid: id } });
}

function rangeConflict(offset: number, reason: string): RegistryError {
  return new RegistryError('BLOB_UPLOAD_INVALID', `chunk does not start at the upload's offset: ${reason}`, {
    status: 416,
    detail: { offset },
    headers: { Range: uploadRange(offset) },
  });
}
