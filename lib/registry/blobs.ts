/**
 * Committed blobs as a repository sees them. Every read goes through the repository's link:
 * a digest stored for one repository is invisible in another until it is mounted there.
 */
import { RegistryError, deletionDisabled } from '../oci/errors.js';
import { assertName } from '../oci/names.js';
import type { MetadataStore, Link } from '../metadata/types.js';
import { ObjectNotFound, type ByteRange, type StorageDriver } from '../storage/types.js';

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

  async open(link: Link, range?: ByteRange): Promise<AsyncIterable<Uint8Array>> {
    try {
      return await this.storage.objects.open(link.key, range);
    } catch (err) {
      // Linked but gone from storage: report it as unknown rather than failing the request.
      if (err instanceof ObjectNotFound) throw unknownBlob(link.digest);
      throw err;
    }
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
