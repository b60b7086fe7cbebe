/**
 * Garbage collection's orphan sweep: frees objects that no record names and no live upload
 * holds, older than the grace period. They are what failed finishes leave (an assembled
 * `blobs/<upload id>` whose descriptor was never written, or a deduplicated upload's own copy
 * that could not be deleted), stray hash states and tails under `uploads/<id>/`, S3 multipart
 * uploads nobody completed or aborted, filesystem `tmp/*.tmp` files a crash left, large
 * manifests' objects whose manifest item is gone, and the bytes of a GC run that stopped between
 * deleting descriptors and deleting their objects.
 *
 * Who may still need an object, by where it is:
 *
 *   blobs/<id>[.<attempt>]  the upload <id> (its finish commits the object, then writes the
 *                     descriptor naming it), and any descriptor, link or manifest naming it
 *   uploads/<id>/...  the upload <id> only (the record names its write; attempts it does not
 *                     name may belong to a writer in flight, so all of the prefix is kept)
 *   manifests/...     the manifest item naming it
 *   tmp/*.tmp (fs)    nobody: an object is renamed out of tmp/ once complete
 *   S3 multipart upload at blobs/<id>: the upload <id>
 *
 * An upload is live while its record exists and has not expired before the cut-off (now minus
 * the grace period); an expired or claimed upload can take no lease, so nothing writes or
 * finishes it any more (the purge frees what its record names; anything it misses is ours).
 *
 * The protocol. Each run, in this order:
 *   1. lists storage from the cursor, keeping only objects last written before the cut-off;
 *   2. reads the upload records of those objects, consistently;
 *   3. only then reads, with one consistent Scan, every record that names an object;
 *   4. deletes what no live upload holds and no record names.
 * Why a finish racing the sweep keeps its blob: a finish commits its object first and then, in
 * one transaction conditioned on its lease (so on its upload record existing), deletes the
 * record and writes the descriptor naming the object. If step 2 found the record, the object
 * is kept. If not, that transaction committed before step 2 or never will; if it committed, the
 * descriptor existed before step 3 began and the Scan sees it. The object's age alone would not
 * do: an upload can finish days after it started, and its object may carry the date its bytes
 * were first written (a renamed scratch file's mtime; on S3, possibly the multipart upload's
 * start). Mounts and deduplicating finishes copy a key from a descriptor, in a transaction
 * conditioned on it existing: one that existed when step 3 began is seen by the Scan (only GC
 * deletes descriptors, and a descriptor it deleted meanwhile makes such a copy fail).
 * For everything else, the grace period covers a writer between writing an object and the
 * record that names it: a manifest push puts its object (a key of its own per push, see
 * ManifestService) just before the transaction that stores the manifest item, and a hash state
 * or tail is written just before the lease commit that names it. An object older than the grace
 * period was therefore either named before the sweep began, and step 3 sees the record, or never
 * will be; as everywhere in GC, the grace period must exceed that delay and the clock skew.
 *
 * The listing resumes across runs from a cursor stored in the table, and stops at half the
 * time budget (the Scan needs the rest) or at `maxCandidates`. A run whose Scan cannot finish
 * by the deadline deletes only what needs no Scan (scratch of dead uploads, tmp files,
 * incomplete multipart uploads) and lists the same objects again next time.
 */
import type { OrphanStore } from '../metadata/types.js';
import type { IncompleteWrite, ListedObject, StorageDriver } from '../storage/types.js';

export interface SweepOptions {
  dryRun: boolean;
  /** Objects written less than this long ago are kept (a writer between object and record). */
  graceMs: number;
  /** Epoch ms by which the sweep must be done. */
  deadline: number;
  now?: number;
  /** Most objects judged per run (memory: a candidate is its key and size). */
  maxCandidates?: number;
  /** Objects per listing call. */
  pageSize?: number;
}

export interface OrphanTally {
  objects: number;
  bytes: number;
  /** S3 multipart uploads left incomplete. */
  writes: number;
}

export interface OrphanReport {
  /** Objects the listing returned this run. */
  listed: number;
  /** What was unreferenced and old enough (what a dry run would free). */
  found: OrphanTally;
  freed: OrphanTally;
  /** The listing reached the end of storage (the next run starts from the beginning). */
  complete: boolean;
  /** The Scan of naming records ran out of time: objects needing it were kept this run. */
  unjudged: number;
  /** Where the next run's listing starts (undefined: from the beginning). */
  cursor?: string;
  cost: { dynamo: Record<string, number>; capacityUnits: number; storage: Record<string, number> };
}

/** The areas of storage the sweep judges, in key order (a cursor is a key in one of them). */
const AREAS = { fs: ['blobs/', 'manifests/', 'tmp/', 'uploads/'], s3: ['blobs/', 'manifests/', 'uploads/'] };

interface Candidate extends ListedObject {
  /** The upload whose record, while live, keeps the object. */
  upload?: string;
  /** A descriptor, link or manifest naming the key keeps it. */
  nameable: boolean;
}

/** What keeps an object, from its key; undefined for keys the sweep does not know (never touched). */
function classify(object: ListedObject): Candidate | undefined {
  const [area, id, ...rest] = object.key.split('/');
  // A blob's key is its upload's id, on fs with `.<attempt>` after it (lib/storage/fs/ingester.ts).
  if (area === 'blobs' && id) return { ...object, upload: rest.length ? undefined : id.split('.')[0], nameable: true };
  if (area === 'manifests') return { ...object, nameable: true };
  if (area === 'uploads' && id && rest.length) return { ...object, upload: id, nameable: false };
  if (area === 'tmp' && object.key.endsWith('.tmp') && !rest.length) return { ...object, nameable: false };
  return undefined;
}

export async function sweepOrphans(store: OrphanStore, storage: StorageDriver, options: SweepOptions): Promise<OrphanReport> {
  const started = Date.now();
  const cutoff = (options.now ?? started) - options.graceMs;
  const listUntil = started + (options.deadline - started) / 2;
  const maxCandidates = options.maxCandidates ?? 100_000;
  const pageSize = options.pageSize ?? 1000;
  const storageBefore = { ...storage.objects.stats.requests };
  const report: OrphanReport = {
    listed: 0,
    found: { objects: 0, bytes: 0, writes: 0 },
    freed: { objects: 0, bytes: 0, writes: 0 },
    complete: false,
    unjudged: 0,
    cost: { dynamo: {}, capacityUnits: 0, storage: {} },
  };

  // 1. Storage, from where the last run stopped.
  const from = await store.cursor();
  const candidates: Candidate[] = [];
  let after = from;
  let complete = true;
  list: for (const area of AREAS[storage.kind]) {
    if (after !== undefined && after >= area && !after.startsWith(area)) continue; // an area done before
    let start = after?.startsWith(area) ? after : undefined;
    for (;;) {
      if (Date.now() >= listUntil || candidates.length >= maxCandidates) {
        complete = false;
        break list;
      }
      const page = await storage.inventory.list(area, start, pageSize);
      report.listed += page.objects.length;
      for (const object of page.objects) {
        const candidate = object.modified < cutoff ? classify(object) : undefined;
        if (candidate) candidates.push(candidate);
      }
      if (page.objects.length) after = start = page.objects[page.objects.length - 1]!.key;
      if (!page.more) break;
    }
  }
  // Incomplete multipart uploads are few (live uploads and leftovers): all of them, every run.
  const writes = complete ? (await storage.inventory.incompleteWrites('blobs/')).filter((w) => w.started < cutoff) : [];

  // 2. Upload records, after the listing.
  // blobs/<id>, or blobs/<id>.r for an S3 repair's (lib/storage/s3/repair.ts).
  const uploadOf = (w: IncompleteWrite) => w.key.slice('blobs/'.length).split('.')[0]!;
  const ids = [...new Set([...candidates.flatMap((c) => (c.upload ? [c.upload] : [])), ...writes.map(uploadOf)])];
  const live = ids.length ? await store.liveUploads(ids, cutoff) : new Set<string>();
  let orphans = candidates.filter((c) => !c.upload || !live.has(c.upload));
  const deadWrites = writes.filter((w) => !live.has(uploadOf(w)));

  // 3. Records naming objects, after the upload records.
  const nameable = new Set(orphans.filter((c) => c.nameable).map((c) => c.key));
  if (nameable.size) {
    const named = await store.namedKeys(nameable, options.deadline);
    if (named) orphans = orphans.filter((c) => !named.has(c.key));
    else {
      // Unproven: kept, and listed again next run from the same place.
      report.unjudged = nameable.size;
      orphans = orphans.filter((c) => !c.nameable);
      after = from;
      complete = false;
    }
  }

  // 4. Delete.
  report.found = { objects: orphans.length, bytes: orphans.reduce((n, c) => n + c.size, 0), writes: deadWrites.length };
  if (!options.dryRun) {
    for (let i = 0; i < orphans.length; i += 1000) {
      const batch = orphans.slice(i, i + 1000);
      await storage.objects.delete(batch.map((c) => c.key));
      report.freed.objects += batch.length;
      report.freed.bytes += batch.reduce((n, c) => n + c.size, 0);
    }
    for (const w of deadWrites) {
      await storage.inventory.abortWrite(w);
      report.freed.writes++;
    }
    await store.saveCursor(complete ? undefined : after);
  }
  report.complete = complete;
  report.cursor = complete ? undefined : after;
  report.cost = { dynamo: { ...store.cost.calls }, capacityUnits: store.cost.capacityUnits, storage: since(storageBefore, storage.objects.stats.requests) };
  return report;
}

function since(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).flatMap(([k, v]) => (v !== (before[k] ?? 0) ? [[k, v - (before[k] ?? 0)]] : [])));
}
