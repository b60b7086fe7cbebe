/**
 * Online garbage collection: frees the links, descriptors and bytes that nothing references,
 * while the registry keeps serving pushes and pulls.
 *
 * The protocol (README, Garbage collection, says the same at more length). GC decides by durable
 * records and deletes each item with a condition that fails if anything that could make it
 * needed happened after GC read it; each writer that creates such a need writes the item in the
 * same transaction:
 *
 *   - A manifest push updates every blob link it references (`usedBy = <its attempt>`, only if
 *     the link exists) in the transaction that stores the manifest. GC deletes a link only if
 *     `usedBy` is as it read it. So a push that committed after GC read the repository makes
 *     GC's delete fail (the link stays), and a delete that committed first makes the push fail
 *     (400 MANIFEST_BLOB_UNKNOWN): never a stored manifest whose link is gone.
 *   - Finish and mount write `linkedAt` on the link; GC deletes only links whose `linkedAt`
 *     (else `createdAt`) is older than the grace period and unchanged: a push in progress (its
 *     layers linked, its manifest not yet put) keeps its links for the grace period, and a
 *     re-link after GC's read makes the delete fail. A client that HEADs an old unreferenced
 *     layer and skips it is covered by the first rule: its push lands first or is refused.
 *   - Finish (dedupe: `SET linkedAt`; a new digest: the descriptor's `createdAt`) and mount
 *     (`SET linkedAt`) mark the descriptor, only if it exists, in the transaction that writes
 *     the link. GC deletes a descriptor only if it saw no surviving link to it and no link was
 *     written to it since the run's start minus the grace period (links written before the run
 *     started are in its consistent scan). A link writer that comes after the delete fails.
 *   - Bytes go only after their descriptor's conditional delete succeeded, and only when no
 *     other descriptor and no surviving link names the object.
 *
 * GC reads the table with one consistent, paged Scan (no index maps a digest to the
 * repositories linking it). A run that cannot finish the scan within its budget deletes
 * nothing: a partial read cannot prove that nothing links a descriptor.
 */
import type { CollectedDescriptor, CollectedLink, CollectedManifest, CollectorStore } from '../metadata/types.js';
import type { OrphanStore } from '../metadata/types.js';
import type { StorageDriver } from '../storage/types.js';
import { type OrphanReport, sweepOrphans } from './orphans.js';

export interface CollectOptions {
  /** Read and decide, write nothing. */
  dryRun: boolean;
  /** Links younger than this (since last written) are kept: a push in progress needs them. */
  graceMs: number;
  /** The scan stops when this much time has passed; such a run deletes nothing. */
  budgetMs: number;
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
  /** Whether the scan read the whole table within the budget (otherwise nothing was deleted). */
  complete: boolean;
  scanned: { links: number; descriptors: number; manifests: number };
  /** What was unreferenced and old enough: what a dry run would free. */
  found: Tally;
  freed: Tally;
  /** Candidates whose conditional delete found them changed (a concurrent push, mount or finish). */
  raced: { links: number; descriptors: number };
  /** Repositories with a manifest GC could not read: every link of theirs was kept. */
  unreadable: string[];
  cost: { dynamo: Record<string, number>; capacityUnits: number; storage: Record<string, number> };
  /** The orphan sweep, run after the metadata pass in what is left of the budget; its own cost. */
  orphans?: OrphanReport;
}

const emptyTally = (): Tally => ({ links: 0, descriptors: 0, objects: 0, bytes: 0 });

export async function collectGarbage(store: CollectorStore, storage: StorageDriver, options: CollectOptions): Promise<CollectReport> {
  const start = options.now ?? Date.now();
  const cutoff = start - options.graceMs;
  const storageBefore = { ...storage.objects.stats.requests };
  const links: CollectedLink[] = [];
  const descriptors: CollectedDescriptor[] = [];
  const referenced = new Map<string, Set<string>>();
  const unreadable = new Set<string>();
  let manifests = 0;

  const complete = await store.scan(async (item) => {
    if (item.kind === 'link') links.push(item);
    else if (item.kind === 'descriptor') descriptors.push(item);
    else {
      manifests++;
      const digests = await references(storage, item);
      if (!digests) unreadable.add(item.repo);
      else {
        const set = referenced.get(item.repo) ?? new Set<string>();
        for (const d of digests) set.add(d);
        referenced.set(item.repo, set);
      }
    }
  }, start + options.budgetMs);

  const report: CollectReport = {
    dryRun: options.dryRun,
    complete,
    scanned: { links: links.length, descriptors: descriptors.length, manifests },
    found: emptyTally(),
    freed: emptyTally(),
    raced: { links: 0, descriptors: 0 },
    unreadable: [...unreadable].sort(),
    cost: { dynamo: {}, capacityUnits: 0, storage: {} },
  };
  if (complete) {
    const surviving = await collectLinks(store, links, referenced, unreadable, cutoff, report);
    await collectDescriptors(store, storage, descriptors, surviving, cutoff, report);
  }
  report.cost = { dynamo: { ...store.cost.calls }, capacityUnits: store.cost.capacityUnits, storage: since(storageBefore, storage.objects.stats.requests) };
  // Orphan sweep: after the metadata pass, so the bytes of descriptors it just freed are not
  // judged twice and the descriptors it deleted no longer name anything.
  if (options.orphans) {
    report.orphans = await sweepOrphans(options.orphans, storage, { dryRun: options.dryRun, graceMs: options.graceMs, deadline: start + options.budgetMs, now: options.now });
  }
  return report;
}

/** Deletes unreferenced old links; returns the links that remain (or would remain, dry). */
async function collectLinks(store: CollectorStore, links: CollectedLink[], referenced: Map<string, Set<string>>, unreadable: Set<string>, cutoff: number, report: CollectReport): Promise<CollectedLink[]> {
  const surviving: CollectedLink[] = [];
  for (const link of links) {
    const needed = unreadable.has(link.repo) || referenced.get(link.repo)?.has(link.digest) || (link.linkedAt ?? link.createdAt) >= cutoff;
    if (needed) {
      surviving.push(link);
      continue;
    }
    report.found.links++;
    if (report.dryRun) continue;
    if (await store.deleteLink(link)) report.freed.links++;
    else {
      report.raced.links++;
      surviving.push(link);
    }
  }
  return surviving;
}

/** Deletes descriptors no surviving link names, then their bytes. */
async function collectDescriptors(store: CollectorStore, storage: StorageDriver, descriptors: CollectedDescriptor[], surviving: CollectedLink[], cutoff: number, report: CollectReport): Promise<void> {
  const linked = new Set(surviving.map((l) => l.digest));
  const namedKeys = new Map<string, number>();
  for (const key of [...descriptors.map((d) => d.key), ...surviving.map((l) => l.key)]) namedKeys.set(key, (namedKeys.get(key) ?? 0) + 1);
  const freedKeys: string[] = [];
  let freedBytes = 0;
  for (const d of descriptors) {
    if (linked.has(d.digest) || (d.linkedAt ?? d.createdAt) >= cutoff) continue;
    report.found.descriptors++;
    // Ours is the only name of the object: a surviving link or another descriptor keeps it.
    const sole = namedKeys.get(d.key) === 1;
    if (sole) {
      report.found.objects++;
      report.found.bytes += d.size;
    }
    if (report.dryRun) continue;
    if (!(await store.deleteDescriptor(d, cutoff))) {
      report.raced.descriptors++;
      continue;
    }
    report.freed.descriptors++;
    if (sole) {
      freedKeys.push(d.key);
      freedBytes += d.size;
    }
  }
  for (let i = 0; i < freedKeys.length; i += 1000) await storage.objects.delete(freedKeys.slice(i, i + 1000));
  report.freed.objects = freedKeys.length;
  report.freed.bytes = freedBytes;
}

/**
 * The digests a manifest references (config, layers, blobs, children, subject), read leniently:
 * undefined when its bytes are missing or are not JSON, and the caller then keeps every link of
 * its repository rather than guess.
 */
async function references(storage: StorageDriver, manifest: CollectedManifest): Promise<string[] | undefined> {
  const bytes = manifest.body ?? (manifest.key ? await storage.objects.get(manifest.key) : undefined);
  if (!bytes) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const m = doc as Record<string, unknown>;
  const descriptors = [m.config, m.subject, ...[m.layers, m.blobs, m.manifests].flatMap((list) => (Array.isArray(list) ? list : []))];
  return descriptors.flatMap((d) => (typeof d === 'object' && d !== null && typeof (d as { digest?: unknown }).digest === 'string' ? [(d as { digest: string }).digest] : []));
}

function since(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).flatMap(([k, v]) => (v !== (before[k] ?? 0) ? [[k, v - (before[k] ?? 0)]] : [])));
}
