/**
 * Online garbage collection: frees the links, descriptors and bytes that nothing references,
 * while the registry keeps serving pushes and pulls, reading only what may have become garbage.
 *
 * The protocol (README, Garbage collection, says the same at more length). GC decides by durable
 * records and deletes each item with a condition that fails if anything that could make it
 * needed happened after GC read it; each writer that creates such a need writes the item in the
 * same transaction:
 *
 *   - A manifest push updates every blob link it references (`usedBy = <its attempt>`, only if
 *     the link exists) in the transaction that stores the manifest. GC reads a repository's
 *     links, then its manifests, and deletes a link only if `usedBy` is as it read it. So a push
 *     that committed before GC read the manifests is seen, one that committed after changed
 *     `usedBy` and GC's delete fails (the link stays), and a delete that committed first makes
 *     the push fail (400 MANIFEST_BLOB_UNKNOWN): never a stored manifest whose link is gone.
 *     (Reading the manifests first would be unsafe: a push landing between the two reads would
 *     be missed, and its new `usedBy` read as the condition.)
 *   - Finish and mount write `linkedAt` on the link; GC deletes only links whose `linkedAt`
 *     (else `createdAt`) is older than the grace period and unchanged: a push in progress (its
 *     layers linked, its manifest not yet put) keeps its links for the grace period, and a
 *     re-link after GC's read makes the delete fail. A client that HEADs an old unreferenced
 *     layer and skips it is covered by the first rule: its push lands first or is refused.
 *   - Finish (dedupe: `SET linkedAt`; a new digest: the descriptor's `createdAt`) and mount
 *     (`SET linkedAt`) mark the descriptor, only if it exists, in the transaction that writes
 *     the link. GC deletes a descriptor only if no link to it is found (the `digest` index names
 *     the repositories that may link it; each is read again consistently) and no link was
 *     written to it since the run's start minus the grace period. The index is eventually
 *     consistent: a link it does not show yet is younger than its lag, and its writer set the
 *     descriptor's `linkedAt` past the cutoff as long as the grace period exceeds that lag
 *     (under a second normally; the default grace is a day). A link writer that comes after
 *     the delete fails.
 *   - Bytes go only after their descriptor's conditional delete succeeded. An object is named
 *     by one descriptor only: its key is the upload that wrote it (`blobs/<upload id>`), and a
 *     repointed descriptor moves onto its own upload's object.
 *
 * Bounded cost: writers mark what they may leave as garbage, in the transaction that leaves it
 * (lib/metadata/dynamo/gc.ts): a manifest delete marks its repository, a link write marks the
 * link (due when it is older than the grace period: an abandoned push), a link delete marks the
 * digest. A run walks the marks, reads only the marked repositories and digests, and clears a
 * mark once handled, only as it read it (a mark rewritten meanwhile stays for the next run).
 * Marks are a worklist, never a proof: every decision is taken on the records above, so a
 * missing or stale mark can leave garbage behind, never delete what is needed. A repository
 * mark whose repository holds no manifest any more also removes it from the catalog, under the
 * condition on its marker that keeps a repository a push touched meanwhile listed
 * (lib/metadata/dynamo/catalog.ts). A run stops at its budget between candidates, saves where
 * it stopped in the GC state item (with its lease: one run at a time), and the next run resumes
 * there. Data from before the marks existed is reached by a full pass (`gc --full`: a
 * resumable Scan feeding the same per-repository and per-digest handling).
 */
import { randomUUID } from 'node:crypto';
import type { CollectedDescriptor, CollectedManifest, CollectorStore, GcCursor, GcMark, OrphanStore } from '../metadata/types.js';
import type { StorageDriver } from '../storage/types.js';
import { readReferences } from '../oci/manifest.js';
import { type OrphanReport, sweepOrphans } from './orphans.js';

export interface CollectOptions {
  /** Read and decide, write nothing (no deletes, no lease, no cursor). */
  dryRun: boolean;
  /** Links younger than this (since last written) are kept: a push in progress needs them. */
  graceMs: number;
  /** The run stops between candidates when this much time has passed; the next one resumes. */
  budgetMs: number;
  /** Also walk the whole table (a resumable Scan), for data written before the marks existed. */
  full?: boolean;
  /** Stop after handling this many candidates (a bound by work rather than time; tests). */
  maxCandidates?: number;
  now?: number;
  /** The orphan sweep's records (lib/registry/orphans.ts); without it the run sweeps nothing. */
  orphans?: OrphanStore;
}

export interface Tally {
  links: number;
  descriptors: number;
  objects: number;
  bytes: number;
}

export interface CollectReport {
  dryRun: boolean;
  /** Whether the run reached the end of its work (else it stopped at its budget, or another run held the lease). */
  complete: boolean;
  scanned: { links: number; descriptors: number; manifests: number };
  /** What was unreferenced and old enough: what a dry run would free. */
  found: Tally;
  freed: Tally;
  /** Candidates whose conditional delete found them changed (a concurrent push, mount or finish). */
  raced: { links: number; descriptors: number };
  /** Repositories with a manifest GC could not read: every link of theirs was kept. */
  unreadable: string[];
  /**
   * Repositories removed from the catalog (a dry run: that would be): marked as a manifest left
   * them, they hold none any more.
   */
  unlisted: string[];
  cost: { dynamo: Record<string, number>; capacityUnits: number; readUnits: number; writeUnits: number; storage: Record<string, number> };
  /** `marks`: the marked candidates only; `full`: a full pass over the table first. */
  mode: 'marks' | 'full';
  /** Whether it started where a run stopped at its budget (marks, or a full pass). */
  resumed: boolean;
  /** Repositories and digests it handled (a full pass counts those it met). */
  candidates: { repositories: number; digests: number };
  /** Where it stopped: `budget` (the next run resumes), `busy` (another run held the lease until `busyUntil`). */
  stopped?: 'budget' | 'busy';
  busyUntil?: number;
  /** The orphan sweep, run after the metadata pass in what is left of the budget; its own cost. */
  orphans?: OrphanReport;
}

/** A lease outlives the budget by this much: the run's last candidate and its report. */
const LEASE_MARGIN_MS = 120_000;

const emptyTally = (): Tally => ({ links: 0, descriptors: 0, objects: 0, bytes: 0 });

class Stop extends Error {}

export async function collectGarbage(store: CollectorStore, storage: StorageDriver, options: CollectOptions): Promise<CollectReport> {
  const start = options.now ?? Date.now();
  const deadline = Date.now() + options.budgetMs;
  const run = randomUUID();
  const storageBefore = { ...storage.objects.stats.requests };
  const report: CollectReport = {
    dryRun: options.dryRun,
    complete: false,
    scanned: { links: 0, descriptors: 0, manifests: 0 },
    found: emptyTally(),
    freed: emptyTally(),
    raced: { links: 0, descriptors: 0 },
    unreadable: [],
    unlisted: [],
    cost: { dynamo: {}, capacityUnits: 0, readUnits: 0, writeUnits: 0, storage: {} },
    mode: options.full ? 'full' : 'marks',
    resumed: false,
    candidates: { repositories: 0, digests: 0 },
  };
  let passStorage: Record<string, number> | undefined;
  const finish = () => {
    // The orphan sweep's storage requests are its own report's, not counted here again.
    const storageCost = passStorage ?? since(storageBefore, storage.objects.stats.requests);
    report.cost = { dynamo: { ...store.cost.calls }, capacityUnits: store.cost.capacityUnits, readUnits: store.cost.readUnits, writeUnits: store.cost.writeUnits, storage: storageCost };
    return report;
  };

  let cursor: GcCursor;
  if (options.dryRun) cursor = await store.cursor();
  else {
    const lease = await store.lease(run, deadline + LEASE_MARGIN_MS, Date.now());
    if ('heldUntil' in lease) {
      report.stopped = 'busy';
      report.busyUntil = lease.heldUntil;
      return finish();
    }
    cursor = lease.cursor;
  }
  const run_ = new Run(store, storage, options, run, start - options.graceMs, report, deadline);
  const saved: GcCursor = { ...cursor };
  try {
    if (options.full) {
      report.resumed = cursor.full !== undefined;
      let position = cursor.full;
      do {
        run_.checkBudget();
        const page = await store.scanPage(position);
        for (const repo of page.repositories) await run_.repository(repo, []);
        for (const digest of page.digests) await run_.digest(digest, []);
        position = page.position;
        // A full pass under way is saved as the page to read next ('' once it read them all).
        saved.full = position ?? '';
      } while (position);
      saved.full = undefined;
    }
    report.resumed ||= cursor.marks !== undefined;
    for await (const { candidate, position } of store.marks(cursor.marks)) {
      if (candidate.kind === 'digest') {
        run_.checkBudget();
        await run_.digest(candidate.digest, candidate.marks);
      } else {
        const due = candidate.marks.some((m) => m.kind !== 'link' || m.markedAt < run_.cutoff);
        if (due) {
          run_.checkBudget();
          await run_.repository(candidate.repo, candidate.marks);
        }
      }
      saved.marks = position;
    }
    saved.marks = undefined;
    report.complete = true;
    // Orphan sweep: after the metadata pass (still under the lease) and after its bytes were
    // deleted, so the bytes of descriptors it just freed are counted once, as the pass's.
    if (options.orphans) {
      await run_.flush();
      passStorage = since(storageBefore, storage.objects.stats.requests);
      report.orphans = await sweepOrphans(options.orphans, storage, { dryRun: options.dryRun, graceMs: options.graceMs, deadline, now: options.now });
    }
  } catch (err) {
    if (!(err instanceof Stop)) throw err;
    report.stopped = 'budget';
  } finally {
    await run_.flush();
    if (!options.dryRun) await store.release(run, saved);
  }
  report.unreadable = [...run_.unreadable].sort();
  return finish();
}

/** One run's handling of candidates: repositories (their links) and digests (their descriptors). */
class Run {
  readonly unreadable = new Set<string>();
  /** Links this run deleted (or, dry, would have): the index may still show them. */
  private readonly deleted = new Set<string>();
  private freedKeys: { key: string; size: number }[] = [];
  private handled = 0;

  constructor(
    private readonly store: CollectorStore,
    private readonly storage: StorageDriver,
    private readonly options: CollectOptions,
    private readonly id: string,
    readonly cutoff: number,
    private readonly report: CollectReport,
    private readonly deadline: number,
  ) {}

  /** Stops the run (between candidates) at its budget or its candidate limit. */
  checkBudget(): void {
    if (Date.now() >= this.deadline || this.handled >= (this.options.maxCandidates ?? Infinity)) throw new Stop();
    this.handled++;
  }

  /** Deletes the repository's unreferenced old links, then looks at each digest whose link went. */
  async repository(repo: string, marks: GcMark[]): Promise<void> {
    const { report } = this;
    report.candidates.repositories++;
    const { links, manifests } = await this.store.repository(repo);
    report.scanned.links += links.length;
    report.scanned.manifests += manifests.length;
    const referenced = new Set<string>();
    let unreadable = false;
    for (const manifest of manifests) {
      const digests = await references(this.storage, manifest);
      if (!digests) unreadable = true;
      else for (const d of digests) referenced.add(d);
    }
    if (unreadable) this.unreadable.add(repo);
    const gone: string[] = [];
    const kept = new Map<string, 'referenced' | 'young'>();
    for (const link of links) {
      if (unreadable || referenced.has(link.digest)) {
        kept.set(link.digest, 'referenced');
        continue;
      }
      if ((link.linkedAt ?? link.createdAt) >= this.cutoff) {
        kept.set(link.digest, 'young');
        continue;
      }
      report.found.links++;
      if (this.options.dryRun || (await this.store.deleteLink(link, this.id))) {
        if (!this.options.dryRun) report.freed.links++;
        this.deleted.add(`${repo}\u0000${link.digest}`);
        gone.push(link.digest);
      } else {
        report.raced.links++;
        kept.set(link.digest, 'young');
      }
    }
    // A manifest left the repository (its mark) and none is left: it leaves the catalog now,
    // not at a later walk of the catalog; a push that touched its marker since keeps it listed.
    if (!manifests.length && marks.some((m) => m.kind === 'repository') && (await this.store.unlistIfEmpty(repo, this.options.dryRun)) === 'removed') report.unlisted.push(repo);
    if (!this.options.dryRun) {
      for (const mark of marks) {
        // A repository mark is handled (unless a manifest could not be read: then it stays,
        // and the repository is read again next run); a link mark, once its link is
        // referenced or gone (a deleted link's mark went with it); a young one stays, due later.
        const handled = mark.kind === 'repository' ? !unreadable : !unreadable && kept.get(mark.digest!) !== 'young' && !gone.includes(mark.digest!);
        if (handled) await this.store.clearMark(mark);
      }
    }
    for (const digest of gone) await this.digest(digest, this.options.dryRun ? [] : [this.store.ownDigestMark(digest, this.id)], true);
  }

  /** Deletes the digest's descriptor if no repository links it and none did since the cutoff, then its bytes. */
  async digest(digest: string, marks: GcMark[], inRepository = false): Promise<void> {
    const { report } = this;
    if (!inRepository) report.candidates.digests++;
    const { descriptor, linkedBy } = await this.store.digest(digest);
    if (descriptor) report.scanned.descriptors++;
    const linked = linkedBy.some((repo) => !this.deleted.has(`${repo}\u0000${digest}`));
    let done = true;
    if (descriptor && !linked) {
      // Unlinked, but linked recently (or new): the mark stays until it is old enough.
      if ((descriptor.linkedAt ?? descriptor.createdAt) >= this.cutoff) done = false;
      else done = await this.free(descriptor);
    }
    if (done && !this.options.dryRun) for (const mark of marks) await this.store.clearMark(mark);
  }

  private async free(descriptor: CollectedDescriptor): Promise<boolean> {
    const { report } = this;
    report.found.descriptors++;
    report.found.objects++;
    report.found.bytes += descriptor.size;
    if (this.options.dryRun) return true;
    if (!(await this.store.deleteDescriptor(descriptor, this.cutoff))) {
      // Linked since the index was read: it stays, and so does its mark (the next run sees the link).
      report.raced.descriptors++;
      return false;
    }
    report.freed.descriptors++;
    this.freedKeys.push({ key: descriptor.key, size: descriptor.size });
    if (this.freedKeys.length >= 1000) await this.flush();
    return true;
  }

  /** Deletes the bytes of the descriptors freed so far (a batch of up to 1000 objects a request). */
  async flush(): Promise<void> {
    const batch = this.freedKeys;
    this.freedKeys = [];
    if (!batch.length) return;
    await this.storage.objects.delete(batch.map((b) => b.key));
    this.report.freed.objects += batch.length;
    this.report.freed.bytes += batch.reduce((n, b) => n + b.size, 0);
  }
}

/**
 * The digests a manifest references (config, layers, blobs, children, subject), read leniently:
 * undefined when its bytes are missing or are not JSON, and the caller then keeps every link of
 * its repository rather than guess.
 */
async function references(storage: StorageDriver, manifest: CollectedManifest): Promise<string[] | undefined> {
  const r = readReferences(manifest.body ?? (manifest.key ? await storage.objects.get(manifest.key) : undefined));
  return r && [...[r.config, r.subject].flatMap((d) => d ?? []), ...r.layers, ...r.blobs, ...r.manifests];
}

function since(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).flatMap(([k, v]) => (v !== (before[k] ?? 0) ? [[k, v - (before[k] ?? 0)]] : [])));
}
