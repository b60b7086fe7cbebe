/**
 * Committed blobs as a repository sees them. Every read goes through the repository's link:
 * a digest stored for one repository is invisible in another until it is mounted there.
 */
import { RegistryError, deletionDisabled } from '../oci/errors.js';
import { assertName } from '../oci/names.js';
import type { MetadataStore, Link } from '../metadata/types.js';
import { ObjectNotFound, ObjectTruncated, type ByteRange, type StorageDriver } from '../storage/types.js';
import type { IntegrityReporter } from '../telemetry.js';

export interface BlobSettings {
  deleteEnabled: boolean;
  /** Seconds a presigned redirect stays valid; 0 serves bytes through the registry. */
  redirectSeconds: number;
}

export class BlobService {
  constructor(
    private readonly meta: MetadataStore,
    private readonly storage: StorageDriver,
    private readonly settings: BlobSettings,
    private readonly integrity: IntegrityReporter,
  ) {}

  /** HEAD: one metadata read. */
  async stat(repo: string, digest: string): Promise<Link> {
    const link = await this.meta.blobs.getLink(repo, digest);
    if (!link) throw unknownBlob(digest);
    return link;
  }

  /** A presigned URL for the blob's bytes, when redirects are on and the backend can sign. */
  async redirect(link: Link): Promise<string | undefined> {
    if (this.settings.redirectSeconds <= 0 || !this.storage.objects.presign) return undefined;
    return this.storage.objects.presign(link.key, this.settings.redirectSeconds);
  }

  /**
   * The blob's bytes; the recorded size is checked, so a short object is never served under a
   * Content-Length it cannot fill. A link whose object is gone falls back to the descriptor
   * (the durable record of where a digest's bytes are), which a later push of the same digest
   * repoints at its fresh copy; with no copy anywhere the blob is missing, said so and reported.
   */
  async open(link: Link, range?: ByteRange): Promise<AsyncIterable<Uint8Array>> {
    let missing: ObjectNotFound;
    try {
      return await this.storage.objects.open(link.key, range, link.size);
    } catch (err) {
      if (!(err instanceof ObjectNotFound)) throw err;
      missing = err;
    }
    const descriptor = await this.meta.blobs.getDescriptor(link.digest);
    if (descriptor && descriptor.key !== link.key && descriptor.size === link.size) {
      try {
        return await this.storage.objects.open(descriptor.key, range, descriptor.size);
      } catch (err) {
        if (!(err instanceof ObjectNotFound)) throw err;
        missing = err;
      }
    }
    this.integrity({
      kind: missing instanceof ObjectTruncated ? 'object-truncated' : 'object-missing',
      message: `blob ${link.digest} of ${link.repo}: ${missing.message}`,
      digest: link.digest,
      key: missing.key,
      repo: link.repo,
      size: link.size,
    });
    throw new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry: its bytes are missing from storage; push it again', {
      detail: { digest: link.digest, reason: 'stored bytes missing' },
    });
  }

  /** Removes the repository's link; the bytes stay for other repositories (and a later GC). */
  async unlink(repo: string, digest: string): Promise<void> {
    if (!this.settings.deleteEnabled) throw deletionDisabled('blob', 'GET, HEAD');
    if (!(await this.meta.blobs.deleteLink(repo, digest))) throw unknownBlob(digest);
  }

  /** Links a blob from `from` into `repo`, only if `from` links it. */
  async mount(repo: string, from: string, digest: string): Promise<Link | undefined> {
    assertName(from);
    const source = await this.meta.blobs.getLink(from, digest);
    if (!source) return undefined;
    // Collected since we read the source link: mount nothing (the client uploads instead).
    if (!(await this.meta.blobs.putLink(repo, source))) return undefined;
    return { ...source, repo };
  }
}

function unknownBlob(digest: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { detail: { digest } });
}
