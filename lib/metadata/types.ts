/**
 * Metadata: what the registry knows about blobs, repositories and uploads. DynamoDB is the
 * store (lib/metadata/dynamo); these interfaces are what the registry services see.
 */
import type { Grant } from '../auth/access.js';
import type { Part, PartLedger, WriteState } from '../storage/types.js';

/** A committed blob: its digest, size and where its bytes are. Global, one per digest. */
export interface Descriptor {
  digest: string;
  size: number;
  /** Object key holding the bytes. */
  key: string;
  mediaType: string;
  createdAt: number;
}

/** A repository's reference to a blob. A blob is readable in a repository only through one. */
export interface Link {
  repo: string;
  digest: string;
  size: number;
  key: string;
  mediaType: string;
  createdAt: number;
}

/** An upload session: the server-side state behind every Location handed out for it. */
export interface Upload {
  id: string;
  repo: string;
  /** Bytes accepted; the next chunk must start here. */
  offset: number;
  write: WriteState;
  startedAt: number;
  updatedAt: number;
  expiresAt: number;
  /** Incremented by every lease: the fence that orders writers. */
  seq: number;
  /**
   * The attempt (a request's unique id) whose write the record holds: the one that created it
   * or last committed it. Scratch objects of that write (hash state, tail) carry it, and a
   * request whose answer was lost recognises its own write by it. Absent on older records.
   */
  attempt?: string;
}

/** Status of a write in flight (as opposed to Info of a committed blob). */
export interface Status {
  id: string;
  repo: string;
  offset: number;
  startedAt: number;
  updatedAt: number;
}

/** Exclusive right to write an upload at its offset, until `until` unless renewed. */
export interface Lease {
  upload: Upload;
  /** Unique id of this attempt. */
  attempt: string;
  seq: number;
  until: number;
  /**
   * The lease was taken over from a writer that neither committed nor released since the
   * record's write was made (recorded in the item, so it holds until a commit): that writer may
   * still be writing where the record's write is. See AppendContext.contended.
   */
  contended: boolean;
  /** Parts this attempt wrote, stored with its commit. */
  parts: Part[];
}

/** An upload the purge found expired, with the expiry it was seen with. */
export interface ExpiredUpload {
  id: string;
  expiresAt: number;
}

/** What a finish committed: the digest's descriptor now, and how ours came to be (or not be) it. */
export interface Finished {
  descriptor: Descriptor;
  /** The key of the stored copy ours replaced (it was missing or short). */
  replaced?: string;
}

export interface UploadStore {
  /**
   * Records a new upload. Safe to retry: a write that landed although its answer was lost is
   * recognised by its attempt and is success.
   */
  create(id: string, repo: string, write: WriteState): Promise<Upload>;
  /** The upload if it exists, belongs to `repo` and has not expired. */
  get(id: string, repo: string): Promise<Upload | undefined>;
  /**
   * Takes the upload's write lease. With `offset`, only if the upload stands exactly there.
   * Throws UploadGone or OffsetConflict (offset elsewhere, or another writer holds the lease).
   * A lease taken although the answer was lost (found held by this attempt) is success.
   */
  acquire(id: string, repo: string, offset?: number): Promise<Lease>;
  /** Extends the lease; throws LeaseLost if another writer took it. */
  renew(lease: Lease): Promise<void>;
  /**
   * Publishes a new write state (and offset) under the lease's attempt and ends the lease.
   * Throws LeaseLost. A commit that landed although its answer was lost (or whose retry met its
   * own write) is recognised by the attempt in the record and is success.
   */
  commit(lease: Lease, write: WriteState): Promise<Upload>;
  /** Ends the lease without changing anything. */
  release(lease: Lease): Promise<void>;
  ledger(lease: Lease): PartLedger;
  /**
   * The commit point of a finished upload, atomically: record the descriptor, link it into the
   * repository, delete the upload. When the digest is stored already (dedupe), `intact` judges
   * the stored copy first (without it, the stored copy is kept): kept, the transaction links it
   * (the caller then drops ours); not, the transaction points the descriptor at ours, only if
   * it still names the key judged. Either way the object ours leaves is named in the commit
   * that ends the upload, never after: once the upload record is gone, the orphan sweep may
   * free any object no record names. A descriptor that changed meanwhile is judged again, one
   * that went (GC) is created anew. Returns the descriptor now in force, whether ours created
   * it, and the key whose copy ours replaced.
   */
  finish(lease: Lease, descriptor: Descriptor, intact?: (stored: Descriptor) => Promise<boolean>): Promise<Finished>;
  /**
   * Deletes the upload (cancel); returns what it was, or undefined if unknown. With `heldBy`,
   * only while that attempt holds its lease (a request ending the upload it writes).
   */
  remove(id: string, repo: string, heldBy?: string): Promise<Upload | undefined>;
  /**
   * Ids of uploads that expired before `before`, a page at a time (a background job, never on a
   * request's path); pass the returned cursor for the next page, none when there are no more.
   */
  expired(before: number, cursor?: string, limit?: number): Promise<{ uploads: ExpiredUpload[]; cursor?: string }>;
  /**
   * Ends an expired upload for every request, keeping its record (and its place in the expired
   * list) until its storage is freed; returns it, or undefined if it was written to since it
   * was seen, is held, or is gone.
   */
  claimExpired(upload: ExpiredUpload, before: number): Promise<Upload | undefined>;
  /** Deletes the record of a claimed upload whose storage is freed. */
  removeClaimed(id: string): Promise<void>;
}

export interface BlobIndex {
  getLink(repo: string, digest: string): Promise<Link | undefined>;
  /** The repository's links among `digests` (missing ones are absent from the map). */
  getLinks(repo: string, digests: string[]): Promise<Map<string, Link>>;
  /**
   * Links the descriptor's blob into the repository (marking the descriptor as linked now);
   * false, writing nothing, when the descriptor no longer exists (garbage collected).
   */
  putLink(repo: string, descriptor: Descriptor | Link): Promise<boolean>;
  /** Returns false when the repository did not link the digest. */
  deleteLink(repo: string, digest: string): Promise<boolean>;
  getDescriptor(digest: string): Promise<Descriptor | undefined>;
}

/** A manifest stored in a repository. */
export interface ManifestRecord {
  repo: string;
  digest: string;
  mediaType: string;
  size: number;
  /** The bytes, when small enough to keep in the record; otherwise `key` names the object. */
  body?: Uint8Array;
  key?: string;
  /** Digest of the manifest this one refers to (OCI 1.1 `subject`). */
  subject?: string;
  createdAt: number;
  /** The push that wrote the record (absent on records from before attempts were kept). */
  attempt?: string;
  /** The last index push that referenced this manifest as a child (what retention conditions on). */
  usedBy?: string;
}

export interface TagRecord {
  repo: string;
  tag: string;
  digest: string;
  mediaType: string;
  size: number;
  updatedAt: number;
  /** The push that last moved the tag (absent on tags from before attempts were kept). */
  attempt?: string;
}

/** A descriptor in a referrers listing. */
export interface Referrer {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** What the referrers API reports about a manifest beyond its digest, type and size. */
export type ReferrerDetails = Pick<Referrer, 'artifactType' | 'annotations'>;

/**
 * A referrer as the index holds it. `detached`: its details were too large to keep in the index
 * item and must be read from the manifest itself (an artifactType present is still right).
 */
export interface IndexedReferrer extends Referrer {
  detached?: boolean;
}

export interface Page<T> {
  items: T[];
  /** Whether more items follow the last one. */
  more: boolean;
}

/**
 * The most distinct blobs and manifests one manifest may reference: the write that stores it
 * checks each of them in the same DynamoDB transaction (at most 100 items), next to up to seven
 * items of its own. Docker images rarely pass 60 layers; larger manifests are refused (400).
 */
export const MAX_MANIFEST_REFERENCES = 90;

/** What a manifest push read before writing: the state its write is conditioned on. */
export interface ManifestPlan {
  repo: string;
  tag?: string;
  /** Sizes of the referenced blobs the repository links (missing ones are absent). */
  blobs: Map<string, number>;
  /** Sizes of the referenced manifests the repository holds (missing ones are absent). */
  manifests: Map<string, number>;
  /** The digest `tag` pointed at when read. */
  previous?: string;
  /** Whether the repository already has its catalog entry (its marker was read). */
  listed: boolean;
}

/**
 * The removal of an empty repository from the catalog: `removed` (it was listed, held no
 * manifest, and is no longer listed), `kept` (it holds a manifest, or a push touched its marker
 * meanwhile), `absent` (it was not listed: removed already). A dry run says what it would be.
 */
export type UnlistOutcome = 'removed' | 'kept' | 'absent';

export interface ManifestIndex {
  getManifest(repo: string, digest: string): Promise<ManifestRecord | undefined>;
  getTag(repo: string, tag: string): Promise<TagRecord | undefined>;
  /**
   * One read of everything a push of a manifest referencing `blobs` and `manifests` under `tag`
   * depends on; putManifest() writes only if none of it changed in a way that matters.
   */
  planPut(repo: string, tag: string | undefined, blobs: string[], manifests: string[]): Promise<ManifestPlan>;
  /**
   * Stores the manifest, points the plan's tag at it, indexes it as a referrer of its subject
   * (with `referrer`'s details) and lists a new repository: atomically, and only while every
   * reference in the plan is still there (else ReferenceGone, nothing written). `attempt`
   * identifies this push in what it writes. Every item stays far below DynamoDB's 400 KB
   * whatever the details' size: large ones are left in the manifest.
   */
  putManifest(record: ManifestRecord, plan: ManifestPlan, attempt: string, referrer?: ReferrerDetails): Promise<void>;
  /**
   * Deletes the manifest and every tag pointing at it, including one that a concurrent push
   * added meanwhile (unless that push stored the manifest again), and none that moved away;
   * false if the repository does not hold it.
   */
  deleteManifest(repo: string, digest: string): Promise<boolean>;
  /**
   * Deletes the tag wherever it points; false if there is no such tag. With `seen`, only if the
   * tag is still exactly as read then (same digest and the same push): false if it moved or was
   * pushed again meanwhile, which keeps a newer tag.
   */
  deleteTag(repo: string, tag: string, seen?: TagRecord): Promise<boolean>;
  /**
   * Deletes a manifest that retention found unneeded, only while it is exactly as `seen` (not
   * pushed again, not referenced by an index pushed since: attempt and usedBy unchanged) and no
   * tag points at it; its referrer entry goes with it. False, deleting nothing, otherwise.
   */
  expireManifest(seen: ManifestRecord): Promise<boolean>;
  /** Every manifest of the repository (bodies included) and every tag, for retention. */
  contents(repo: string): Promise<{ manifests: ManifestRecord[]; tags: TagRecord[] }>;
  /**
   * Removes a repository that holds no manifest from the catalog (its catalog entry and its
   * marker), race-free against a concurrent push (lib/metadata/dynamo/catalog.ts). With
   * `dryRun`, only says whether it would.
   */
  unlistIfEmpty(repo: string, dryRun?: boolean): Promise<UnlistOutcome>;
  /** Tags in case-insensitive lexical order, after `last`, at most `n` (all when undefined). */
  listTags(repo: string, n: number | undefined, last: string | undefined): Promise<Page<string>>;
  /** Referrers of `subject` in digest order, after the digest `after`, at most `n`. */
  referrers(repo: string, subject: string, n: number, after: string | undefined): Promise<Page<IndexedReferrer>>;
  /** Repositories holding at least one manifest, in lexical order. */
  listRepositories(n: number | undefined, last: string | undefined): Promise<Page<string>>;
  hasRepository(repo: string): Promise<boolean>;
}

export interface User {
  name: string;
  passwordHash: string;
  createdAt: number;
  updatedAt: number;
}

/** Users, their grants, and counts of failed logins. */
export interface UserStore {
  getUser(name: string): Promise<User | undefined>;
  putUser(user: User): Promise<void>;
  /** Deletes the user and every grant; false if there was no such user. */
  deleteUser(name: string): Promise<boolean>;
  listUsers(): Promise<string[]>;
  grants(name: string): Promise<Grant[]>;
  putGrant(name: string, grant: Grant): Promise<void>;
  deleteGrant(name: string, pattern: string): Promise<boolean>;
  /**
   * Counts one login attempt of `user` (`*`: any name) from `source` (an address) if fewer than
   * `limit` are counted in the current window (started by the first); false when it is full.
   * Atomic: concurrent callers never count past `limit`.
   */
  reserveAttempt(user: string, source: string, limit: number, windowMs: number): Promise<boolean>;
  /** Gives one counted attempt back (the login turned out right). */
  releaseAttempt(user: string, source: string): Promise<void>;
  failures(user: string, source: string): Promise<number>;
  /** Clears the counter of one source, or with no source every counter of the user. */
  clearFailures(user: string, source?: string): Promise<void>;
}

export interface MetadataStore {
  uploads: UploadStore;
  blobs: BlobIndex;
  manifests: ManifestIndex;
  users: UserStore;
}

export class UploadGone extends Error {
  constructor(readonly id: string) {
    super(`upload ${id} is unknown or expired`);
    this.name = 'UploadGone';
  }
}

export class OffsetConflict extends Error {
  constructor(
    readonly id: string,
    readonly offset: number,
    readonly busy: boolean,
  ) {
    super(busy ? `upload ${id} is being written by another request` : `upload ${id} is at offset ${offset}`);
    this.name = 'OffsetConflict';
  }
}

export class LeaseLost extends Error {
  constructor(readonly id: string) {
    super(`upload ${id}: another request took over the write`);
    this.name = 'LeaseLost';
  }
}

/** A manifest push whose referenced blob or manifest went away before it could be stored. */
export class ReferenceGone extends Error {
  constructor(readonly digest: string) {
    super(`referenced ${digest} is no longer in the repository`);
    this.name = 'ReferenceGone';
  }
}

/** A write that kept meeting concurrent writes to the same record; nothing of it was applied. */
export class Contended extends Error {
  constructor(options?: { cause?: unknown }) {
    super('concurrent writes to the same record; nothing was written', options);
    this.name = 'Contended';
  }
}

/** A link as garbage collection reads it: with the records its conditional delete compares. */
export interface CollectedLink extends Link {
  /** Attempt of the last manifest push that referenced the link (absent: none since GC existed). */
  usedBy?: string;
  /** When the link was last written (finish, mount); absent on links from before GC. */
  linkedAt?: number;
}

/** A descriptor as garbage collection reads it. */
export interface CollectedDescriptor extends Descriptor {
  /** When a link to it was last written; absent: never since it was created. */
  linkedAt?: number;
}

/** A stored manifest as garbage collection reads it: where its bytes are. */
export interface CollectedManifest {
  repo: string;
  digest: string;
  body?: Uint8Array;
  key?: string;
}

/** A record that something may have become garbage (lib/registry/gc.ts), as GC read it. */
export interface GcMark {
  kind: 'repository' | 'link' | 'digest';
  repo?: string;
  digest?: string;
  /** When it was written (for a link mark: the link's linkedAt, when it comes due). */
  markedAt: number;
  /** The write that made it (a request's or a GC run's unique id): it is cleared only as read. */
  markedBy: string;
  /** Opaque key of the mark, for clearing it. */
  ref: string;
}

/** The marks of one repository (repository and link marks), or of one digest. */
export type MarkedCandidate = { kind: 'repository'; repo: string; marks: GcMark[] } | { kind: 'digest'; digest: string; marks: GcMark[] };

/** Where a run stopped, saved with the GC state for the next run (opaque positions). */
export interface GcCursor {
  /** In the marks (absent: from the start). */
  marks?: string;
  /** In a full pass's scan (absent: no full pass under way). */
  full?: string;
}

/** What a garbage collection run sent to the metadata store, for its report. */
export interface StoreCost {
  calls: Record<string, number>;
  /** Read and write capacity units consumed, as DynamoDB reported them. */
  capacityUnits: number;
  readUnits: number;
  writeUnits: number;
}

/**
 * The metadata side of garbage collection (lib/registry/gc.ts): the marks writers leave, reads
 * of one repository or one digest, and deletes that happen only if nothing changed since read.
 */
export interface CollectorStore {
  /**
   * Takes the collector's lease (one run at a time) until `until`; the cursor the last run
   * saved, or when the lease is another run's, when that run's lease ends.
   */
  lease(run: string, until: number, now: number): Promise<{ cursor: GcCursor } | { heldUntil: number }>;
  /** The saved cursor, without taking the lease (a dry run). */
  cursor(): Promise<GcCursor>;
  /** Saves the cursor and ends the lease, if the run still holds it; false if it did not. */
  release(run: string, cursor: GcCursor): Promise<boolean>;
  /**
   * The marked candidates from `position` to the end of the marks, a repository's or a digest's
   * marks together, each with the position just after it.
   */
  marks(position: string | undefined): AsyncIterable<{ candidate: MarkedCandidate; position: string }>;
  /**
   * One page of a full pass over the table: the repositories whose links it met and the digests
   * of the descriptors it met, and the position after it (absent at the end of the table).
   */
  scanPage(position: string | undefined): Promise<{ repositories: string[]; digests: string[]; position?: string }>;
  /** The repository's links, then (read after them) its manifests: consistent reads. */
  repository(repo: string): Promise<{ links: CollectedLink[]; manifests: CollectedManifest[] }>;
  /**
   * The digest's descriptor and the repositories linking it: the index says which might, and
   * a consistent read of each of those links says which do.
   */
  digest(digest: string): Promise<{ descriptor?: CollectedDescriptor; linkedBy: string[] }>;
  /**
   * Deletes the link only if it is exactly as read (usedBy, linkedAt, createdAt), with its
   * link mark, and marks its digest (`run` as the writer) in the same transaction; false
   * otherwise.
   */
  deleteLink(link: CollectedLink, run: string): Promise<boolean>;
  /**
   * Deletes the descriptor only if it still names the same object and no link to it was
   * written at or after `cutoff` (epoch ms); false otherwise.
   */
  deleteDescriptor(descriptor: CollectedDescriptor, cutoff: number): Promise<boolean>;
  /**
   * Removes a repository that holds no manifest from the catalog, as ManifestIndex.unlistIfEmpty
   * does (the same condition on its marker): GC's handling of a repository mark.
   */
  unlistIfEmpty(repo: string, dryRun: boolean): Promise<UnlistOutcome>;
  /** Deletes the mark only if it is as read (same writer); false otherwise. */
  clearMark(mark: GcMark): Promise<boolean>;
  /** The digest mark a run's deleteLink() wrote (`run` as its writer). */
  ownDigestMark(digest: string, run: string): GcMark;
  readonly cost: StoreCost;
}

/**
 * A retention policy (lib/registry/retention.ts): which manifests and tags of the repositories
 * matching `pattern` expire. The most specific pattern covering a repository applies.
 */
export interface RetentionPolicy {
  /** An exact repository name, `prefix/*` (everything below `prefix/`), or `*`. */
  pattern: string;
  /** Untagged manifests last pushed more than this many days ago expire. */
  untaggedDays?: number;
  /**
   * Tag rules, in order: a tag belongs to the first whose `tags` pattern it matches, and of a
   * rule's tags only the `last` most recently pushed stay.
   */
  keep?: { tags: string; last: number }[];
  /** Tags matching any of these never expire, and neither do the manifests they point at. */
  protect?: string[];
  updatedAt?: number;
}

/**
 * Retention's records: its policies, kept in the table and managed with `npm run admin -- policy`,
 * and the state of its run (one at a time, by a lease; where the last one stopped).
 */
export interface PolicyStore {
  list(): Promise<RetentionPolicy[]>;
  put(policy: RetentionPolicy): Promise<void>;
  /** False if no policy has this pattern. */
  remove(pattern: string): Promise<boolean>;
  /**
   * Takes the run's lease until `until` (or extends it, held by `run` already): the repository
   * after which the last run stopped (undefined: the start of the catalog), or, when another
   * run holds it, when that lease ends.
   */
  lease(run: string, until: number, now: number): Promise<{ cursor?: string } | { heldUntil: number }>;
  /** Saves where the next run starts (undefined: the start) and ends the lease, if `run` still holds it; false if not. */
  release(run: string, cursor: string | undefined): Promise<boolean>;
}

/** An object an orphan sweep found unnamed and noted, as it listed it, for a later run to free. */
export interface OrphanSuspect {
  key: string;
  size: number;
  /** When the object was last written (epoch ms), as the listing said. */
  modified: number;
  /** When the run noted it (epoch ms), after it read the object's upload record and the index. */
  notedAt: number;
}

/**
 * The metadata side of garbage collection's orphan sweep (lib/registry/orphans.ts): which
 * uploads are alive, which object keys a record names, the suspects noted by earlier runs, and
 * where the sweep left off.
 */
export interface OrphanStore {
  /**
   * The ids among `ids` whose upload record exists and expires at or after `cutoff` (epoch ms),
   * read consistently: an upload that ended before this call is not among them.
   */
  liveUploads(ids: string[], cutoff: number): Promise<Set<string>>;
  /**
   * The keys among `keys` that a descriptor, a repository link or a manifest names (its `key`),
   * by an index that is eventually consistent: a record written less than `recheckAfterMs` ago
   * may be missing, never one older. Undefined when it could not read them all by `deadline`
   * (epoch ms).
   */
  namedKeys(keys: string[], deadline: number): Promise<Set<string> | undefined>;
  /**
   * The suspects noted for object keys after `after` up to and including `through` (undefined:
   * from the first, to the last), read consistently.
   */
  suspects(after: string | undefined, through: string | undefined): Promise<OrphanSuspect[]>;
  /** Notes suspects (replacing any noted before for the same key). */
  note(suspects: OrphanSuspect[]): Promise<void>;
  /** Forgets the suspects of these keys. */
  clear(keys: string[]): Promise<void>;
  /** How long (ms) a suspect waits after being noted before a run may free it. */
  readonly recheckAfterMs: number;
  /** The key after which the next sweep lists storage (undefined: from the start). */
  cursor(): Promise<string | undefined>;
  saveCursor(after: string | undefined): Promise<void>;
  readonly cost: StoreCost;
}
