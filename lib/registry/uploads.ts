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
import type { Descriptor, Lease, MetadataStore, Status, Upload } from '../metadata/types.js';
import { Contended, LeaseLost, OffsetConflict, UploadGone } from '../metadata/types.js';
import { type AppendContext, type Committed, type StorageDriver, keys } from '../storage/types.js';
import { type ResumableHash, type StreamHash, oneShotSha256, resumeSha256 } from '../hash/hashes.js';
import { type Body, type ByteSpan, checkDeclared, checked } from './body.js';
import { HashStates, freeUpload } from './hash-states.js';

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
      const hash = resumeSha256(await this.states.resume(id, before.write), expected, this.settings.hashThread);
      try {
        const stream = checked(body.stream, expected, this.settings.maxChunkBytes, (chunk) => hash.update(chunk));
        const write = await this.storage.ingester.append(before.write, stream, ctx);
        if (write.size === before.offset) {
          await this.meta.uploads.release(lease);
          return statusOf(before);
        }
        await this.states.save(id, write.size, await hash.marshal());
        let after: Upload;
        try {
          after = await this.meta.uploads.commit(lease, write);
        } catch (err) {
          await Promise.allSettled([this.storage.ingester.release(write, before.write), this.states.drop(id, write.size)]);
          throw err;
        }
        // What the old offset needed and the new one does not: best effort, the lifecycle rule
        // and the purge are the backstop.
        await Promise.allSettled([this.storage.ingester.release(before.write, write), this.states.drop(id, before.offset)]);
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
        hash = before.offset === 0 && final ? oneShotSha256() : resumeSha256(await this.states.resume(id, before.write), final ? expected : 0, this.settings.hashThread);
        // With no final chunk the digest is known now: refuse before assembling anything.
        if (!final && !sameDigest(await hash.digest(), digest)) return this.reject(before, digest, undefined);
      }
      if (final) stream = checked(final.stream, expected, this.settings.maxChunkBytes, hash ? (c) => hash!.update(c) : undefined);

      let committed: Committed;
      let verified: boolean;
      try {
        committed = await this.storage.ingester.commit(before.write, stream, ctx);
        verified = hash ? sameDigest(await hash.digest(), digest) : await this.rehash(committed.key, digest);
      } finally {
        if (hash && 'close' in hash) hash.close();
      }
      if (!verified) return this.reject(before, digest, committed.key);

      const result = await this.meta.uploads
        .finish(lease, { digest: digest.value, size: committed.size, key: committed.key, mediaType: 'application/octet-stream', createdAt: Date.now() })
        .catch((err) => this.afterFailedLink(err, before, digest, committed.key));
      const cleanup: Promise<unknown>[] = [this.storage.ingester.release(before.write, undefined), this.states.drop(id, before.offset)];
      // Same digest already stored: keep one copy of the bytes.
      if (!result.created && result.descriptor.key !== committed.key) cleanup.push(this.storage.objects.delete([committed.key]));
      await Promise.allSettled(cleanup);
      return result.descriptor;
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
    await freeUpload(this.storage, upload);
  }

  /**
   * A digest mismatch ends the upload (as distribution does): the client sent bytes that are
   * not what it claims, and nothing of them may become linkable.
   */
  private async reject(upload: Upload, digest: Digest, assembled: string | undefined): Promise<never> {
    await this.meta.uploads.remove(upload.id, upload.repo);
    await Promise.allSettled([freeUpload(this.storage, upload), assembled ? this.storage.objects.delete([assembled]) : undefined]);
    throw new RegistryError('DIGEST_INVALID', 'provided digest did not match uploaded content', { detail: { digest: digest.value } });
  }

  /**
   * The link transaction failed after the bytes were assembled. Its answer may have been lost
   * while it landed (a timeout), so look before deleting anything: deleting bytes a committed
   * link points at would lose a blob, while an orphan object only costs storage.
   *   linked                -> it landed, or a concurrent upload linked the same digest:
   *                            success either way (finish drops these bytes if they are not
   *                            the linked ones);
   *   not linked            -> it did not land: free the bytes and end the upload (its
   *                            multipart upload is completed, so a retried finish could never
   *                            work);
   *   cannot tell           -> keep everything and report the failure.
   */
  private async afterFailedLink(err: unknown, upload: Upload, digest: Digest, assembled: string): Promise<{ descriptor: Descriptor; created: boolean }> {
    let link: Descriptor | undefined;
    try {
      link = await this.meta.blobs.getLink(upload.repo, digest.value);
    } catch {
      throw err;
    }
    if (link) {
      await this.meta.uploads.remove(upload.id, upload.repo).catch(() => undefined);
      return { descriptor: link, created: link.key === assembled };
    }
    await Promise.allSettled([this.storage.objects.delete([assembled]), this.meta.uploads.remove(upload.id, upload.repo)]);
    throw err;
  }

  /** Digests other than the canonical sha256 are verified by reading the assembled blob back. */
  private async rehash(key: string, digest: Digest): Promise<boolean> {
    const hash = createHash(digest.algorithm);
    for await (const chunk of await this.storage.objects.open(key)) hash.update(chunk);
    return hash.digest('hex') === digest.encoded;
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
      // A lost lease means another request took the upload over; had it finished the upload,
      // the write is now a blob (on the filesystem the very same file), so only scratch goes.
      await this.discard(id, err instanceof LeaseLost ? undefined : lease.upload.write);
      return unknownUpload(id);
    }
    return upload && err instanceof LeaseLost ? rangeConflict(upload.offset, err.message) : err;
  }

  /** What a dead upload may still hold: hash states and tails under its prefix, and its write. */
  private async discard(id: string, write: Upload['write'] | undefined): Promise<void> {
    const leftovers = await this.storage.objects.list(keys.uploadPrefix(id)).catch(() => [] as string[]);
    await Promise.allSettled([write ? this.storage.ingester.abort(write) : undefined, this.storage.objects.delete(leftovers)]);
  }
}

export function statusOf(upload: Upload): Status {
  return { id: upload.id, repo: upload.repo, offset: upload.offset, startedAt: upload.startedAt, updatedAt: upload.updatedAt };
}

/** The spec's Range for an upload: `0-<last byte>`, and `0-0` when empty. */
export function uploadRange(offset: number): string {
  return `0-${Math.max(offset - 1, 0)}`;
}

function sameDigest(hash: Uint8Array, digest: Digest): boolean {
  return Buffer.from(hash).toString('hex') === digest.encoded;
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
