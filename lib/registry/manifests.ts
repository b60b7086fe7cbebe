/**
 * Manifests and what hangs off them: tags, the referrers of a subject, the repository catalog.
 *
 * A manifest is accepted only if the repository holds everything it references (blobs for an
 * image, manifests for an index), and is stored byte for byte. Small manifests live inline in
 * their DynamoDB record, so reading one by tag costs two reads and no storage request; larger
 * ones go to a content-addressed object.
 */
import { createHash, randomUUID } from 'node:crypto';
import { RegistryError, deletionDisabled } from '../oci/errors.js';
import { type Digest, parseDigest } from '../oci/digest.js';
import { type Manifest, parseManifest } from '../oci/manifest.js';
import { isValidName, isValidTag } from '../oci/names.js';
import {
  type IndexedReferrer,
  MAX_MANIFEST_REFERENCES,
  type ManifestPlan,
  type ManifestRecord,
  type MetadataStore,
  type Page,
  ReferenceGone,
  type Referrer,
  type ReferrerDetails,
} from '../metadata/types.js';
import type { StorageDriver } from '../storage/types.js';
import { type Body, readAll } from './body.js';

/** Manifests larger than this are refused (413), as distribution and most registries do. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Manifests up to this size are kept inline in their DynamoDB record (items are capped at 400 KB). */
export const INLINE_MANIFEST_BYTES = 64 * 1024;
/** Default for SKIFF_MAX_PAGE: the most entries one page of tags, repositories or referrers holds. */
export const DEFAULT_MAX_PAGE = 1000;
/** The most repository names one read of the catalog asks for while filling a page. */
export const CATALOG_READ = 1000;
/**
 * A referrers page stops before its JSON passes this size (one referrer always fits). Lambda
 * answers at most 6 MB, and API Gateway's envelope escapes the JSON text once more, which can
 * double it: 2 MiB leaves room for the worst case.
 */
export const REFERRERS_PAGE_BYTES = 2 * 1024 * 1024;

export type Reference = { tag: string; digest?: undefined } | { digest: Digest; tag?: undefined };

export interface ManifestSettings {
  deleteEnabled: boolean;
  /** The most entries a listing page holds, whatever `n` asks for (SKIFF_MAX_PAGE). */
  maxPage?: number;
}

/** A page of referrers; `last` continues it (the digest a next page starts after) when `more`. */
export interface ReferrersPage extends Page<Referrer> {
  last?: string;
}

export interface StoredManifest {
  digest: string;
  mediaType: string;
  size: number;
}

export class ManifestService {
  private readonly maxPage: number;

  constructor(
    private readonly meta: MetadataStore,
    private readonly storage: StorageDriver,
    private readonly settings: ManifestSettings,
  ) {
    this.maxPage = settings.maxPage ?? DEFAULT_MAX_PAGE;
  }

  /** The page size a listing uses: `n` when given, never more than the server's maximum. */
  pageLimit(n: number | undefined): number {
    return n === undefined ? this.maxPage : Math.min(n, this.maxPage);
  }

  async put(repo: string, reference: Reference, contentType: string | undefined, body: Body): Promise<StoredManifest & { subject?: string }> {
    const bytes = await readAll(body, MAX_MANIFEST_BYTES, tooLarge);
    const algorithm = reference.digest?.algorithm ?? 'sha256';
    const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
    if (reference.digest && reference.digest.value !== digest) {
      throw new RegistryError('DIGEST_INVALID', 'manifest digest does not match the reference', { detail: { reference: reference.digest.value, digest } });
    }
    const manifest = parseManifest(bytes, contentType);
    const plan = await this.checkReferences(repo, reference.tag, manifest);

    const record: ManifestRecord = {
      repo,
      digest,
      mediaType: manifest.mediaType,
      size: bytes.length,
      subject: manifest.subject?.digest,
      createdAt: Date.now(),
    };
    const attempt = randomUUID();
    if (bytes.length <= INLINE_MANIFEST_BYTES) record.body = bytes;
    else {
      record.key = manifestKey(digest, attempt);
      await this.storage.objects.put(record.key, bytes);
    }
    // The referrers API's details matter only for a manifest with a subject.
    const details: ReferrerDetails | undefined = manifest.subject ? { artifactType: manifest.artifactType, annotations: manifest.annotations } : undefined;
    try {
      await this.meta.manifests.putManifest(record, plan, attempt, details);
    } catch (err) {
      // Deleted between the check and the write: the check's answer, only later.
      if (err instanceof ReferenceGone) throw plan.blobs.has(err.digest) ? blobUnknown(err.digest) : childUnknown(err.digest);
      throw err;
    }
    return { digest, mediaType: record.mediaType, size: record.size, subject: record.subject };
  }

  /** What a reference points at, without the bytes: one read. */
  async stat(repo: string, reference: Reference): Promise<StoredManifest> {
    if (reference.tag !== undefined) {
      const tag = await this.meta.manifests.getTag(repo, reference.tag);
      if (!tag) throw unknownManifest(reference);
      return tag;
    }
    const record = await this.meta.manifests.getManifest(repo, reference.digest.value);
    if (!record) throw unknownManifest(reference);
    return record;
  }

  async get(repo: string, reference: Reference): Promise<StoredManifest & { bytes: Uint8Array }> {
    const digest = reference.tag !== undefined ? (await this.stat(repo, reference)).digest : reference.digest.value;
    const stored = await this.read(repo, digest);
    // A tag whose manifest was deleted in between: as unknown as the tag itself.
    if (!stored) throw unknownManifest(reference);
    return stored;
  }

  private async read(repo: string, digest: string): Promise<(StoredManifest & { bytes: Uint8Array }) | undefined> {
    const record = await this.meta.manifests.getManifest(repo, digest);
    if (!record) return undefined;
    const bytes = record.body ?? (record.key ? await this.storage.objects.get(record.key) : undefined);
    if (!bytes) throw new Error(`manifest ${record.digest} in ${repo} has no stored bytes`);
    return { digest: record.digest, mediaType: record.mediaType, size: record.size, bytes };
  }

  async delete(repo: string, reference: Reference): Promise<void> {
    if (!this.settings.deleteEnabled) throw deletionDisabled('manifest', 'GET, HEAD, PUT');
    const deleted =
      reference.tag !== undefined
        ? await this.meta.manifests.deleteTag(repo, reference.tag)
        : await this.meta.manifests.deleteManifest(repo, reference.digest.value);
    if (!deleted) throw unknownManifest(reference);
  }

  async tags(repo: string, n: number | undefined, last: string | undefined): Promise<Page<string>> {
    if (last !== undefined && !isValidTag(last)) throw badQuery('last must be a tag');
    if (n === 0) {
      if (!(await this.meta.manifests.hasRepository(repo))) throw unknownRepository(repo);
      return { items: [], more: false };
    }
    const page = await this.meta.manifests.listTags(repo, n, last);
    if (!page.items.length && !(await this.meta.manifests.hasRepository(repo))) throw unknownRepository(repo);
    return page;
  }

  /**
   * Manifests whose subject is `digest`, optionally of one artifact type, after the referrer
   * `last`. Never unknown: empty. A page holds at most the server's page size and stops before
   * its JSON passes REFERRERS_PAGE_BYTES; `more` and `last` then say where the next one starts.
   */
  async referrers(repo: string, digest: Digest, artifactType: string | undefined, last?: string): Promise<ReferrersPage> {
    const items: Referrer[] = [];
    let bytes = 0;
    let after = last;
    for (;;) {
      const page = await this.meta.manifests.referrers(repo, digest.value, Math.min(this.maxPage + 1, 100), after);
      for (const indexed of page.items) {
        const skip = artifactType !== undefined && indexed.artifactType !== undefined && indexed.artifactType !== artifactType;
        const referrer = skip ? undefined : indexed.detached ? await this.detachedReferrer(repo, indexed) : indexed;
        if (referrer && (artifactType === undefined || referrer.artifactType === artifactType)) {
          const size = Buffer.byteLength(JSON.stringify(referrer)) + 1;
          if (items.length >= this.maxPage || (items.length && bytes + size > REFERRERS_PAGE_BYTES)) return { items, more: true, last: after };
          items.push(referrer);
          bytes += size;
        }
        after = indexed.digest;
      }
      if (!page.more) return { items, more: false };
    }
  }

  /** A referrer whose details were too large for the index: read from the manifest (one bounded read). */
  private async detachedReferrer(repo: string, indexed: IndexedReferrer): Promise<Referrer | undefined> {
    const stored = await this.read(repo, indexed.digest);
    if (!stored) return undefined; // deleted since the index was read
    const { artifactType, annotations } = parseManifest(stored.bytes, stored.mediaType);
    const referrer: Referrer = { mediaType: indexed.mediaType, digest: indexed.digest, size: indexed.size };
    if (artifactType !== undefined) referrer.artifactType = artifactType;
    if (annotations !== undefined) referrer.annotations = annotations;
    return referrer;
  }

  /**
   * Repositories in lexical order after `last`, at most `n`, keeping only those `visible`
   * accepts. Hidden ones do not count towards `n`: the catalog is read until `n` are found, in
   * reads that grow (n, then 8 times more each time, up to CATALOG_READ names) so that a caller
   * who sees few of many repositories costs a Query per CATALOG_READ names, not one per name.
   * A Link may then lead to a page with nothing visible on it; it never skips a visible
   * repository, and it never names a hidden one.
   */
  async repositories(n: number | undefined, last: string | undefined, visible: (repo: string) => boolean = () => true): Promise<Page<string>> {
    if (last !== undefined && !isValidName(last)) throw badQuery('last must be a repository name');
    if (n === 0) return { items: [], more: false };
    const items: string[] = [];
    let after = last;
    let read = n === undefined ? undefined : Math.min(n, CATALOG_READ);
    for (;;) {
      const page = await this.meta.manifests.listRepositories(read, after);
      for (const [i, name] of page.items.entries()) {
        if (!visible(name)) continue;
        items.push(name);
        if (items.length === n) return { items, more: page.more || i < page.items.length - 1 };
      }
      if (!page.more) return { items, more: false };
      after = page.items[page.items.length - 1]!;
      read = Math.min((read ?? CATALOG_READ) * 8, CATALOG_READ);
    }
  }

  /**
   * Everything a manifest references must be in the repository, at the size it claims. One read,
   * which also sees what the write depends on (the plan); the write then re-checks it atomically.
   */
  private async checkReferences(repo: string, tag: string | undefined, manifest: Manifest): Promise<ManifestPlan> {
    const blobs = [...new Set(manifest.blobs.map((b) => b.digest))];
    const children = [...new Set(manifest.manifests.map((m) => m.digest))];
    if (blobs.length + children.length > MAX_MANIFEST_REFERENCES) {
      throw new RegistryError('MANIFEST_INVALID', `manifest references more than ${MAX_MANIFEST_REFERENCES} distinct blobs and manifests`, {
        detail: { references: blobs.length + children.length, max: MAX_MANIFEST_REFERENCES },
      });
    }
    const plan = await this.meta.manifests.planPut(repo, tag, blobs, children);
    for (const blob of manifest.blobs) {
      const size = plan.blobs.get(blob.digest);
      if (size === undefined) throw blobUnknown(blob.digest);
      if (size !== blob.size) {
        throw new RegistryError('MANIFEST_INVALID', 'manifest gives a blob a size other than its own', { detail: { digest: blob.digest, size: blob.size, actual: size } });
      }
    }
    for (const child of manifest.manifests) {
      const size = plan.manifests.get(child.digest);
      if (size === undefined) throw childUnknown(child.digest);
      if (size !== child.size) {
        throw new RegistryError('MANIFEST_INVALID', 'index gives a manifest a size other than its own', { detail: { digest: child.digest, size: child.size, actual: size } });
      }
    }
    return plan;
  }
}

function blobUnknown(digest: string): RegistryError {
  return new RegistryError('MANIFEST_BLOB_UNKNOWN', 'manifest references a blob the repository does not have', { detail: { digest } });
}

function childUnknown(digest: string): RegistryError {
  return new RegistryError('MANIFEST_BLOB_UNKNOWN', 'index references a manifest the repository does not have', { detail: { digest } });
}

/** A tag or a digest; anything else is a 400. */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) return { digest: parseDigest(ref, 'reference') };
  if (!isValidTag(ref)) {
    throw new RegistryError('MANIFEST_INVALID', 'reference is neither a digest nor a valid tag', {
      detail: { reference: ref, tag: '[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}' },
    });
  }
  return { tag: ref };
}

/**
 * One object per push: a push never rewrites an object another push's manifest item names, so
 * garbage collection can judge an object by its age and the records that existed before it
 * looked (lib/registry/orphans.ts). Items written before keep their content-addressed keys.
 */
function manifestKey(digest: string, attempt: string): string {
  return `manifests/${digest.replace(':', '/')}/${attempt}`;
}

/** Reads a manifest body, refusing (413) as soon as it passes the limit. */

function tooLarge(): RegistryError {
  return new RegistryError('SIZE_INVALID', `manifest larger than ${MAX_MANIFEST_BYTES} bytes`, { status: 413, detail: { maxBytes: MAX_MANIFEST_BYTES } });
}

function unknownManifest(reference: Reference): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { detail: reference.tag !== undefined ? { tag: reference.tag } : { digest: reference.digest.value } });
}

function unknownRepository(repo: string): RegistryError {
  return new RegistryError('NAME_UNKNOWN', 'repository name not known to registry', { detail: { name: repo } });
}

export function badQuery(message: string): RegistryError {
  return new RegistryError('UNSUPPORTED', message, { status: 400 });
}
