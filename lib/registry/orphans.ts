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
 * Whether a record names an object is read from the table's `key` index (lib/metadata/dynamo),
 * one keys-only read per object, never a Scan of the table: a run reads what it listed. The
 * index is eventually consistent, so an object it shows unnamed is not freed by the run that
 * sees it: that run notes it as a *suspect* (its key, size and date as listed, and when it was
 * noted), and a later run, at least `recheckAfterMs` after the noting, judges it again and only
 * then frees it. What needs no naming record is freed in one run: the scratch under
 * `uploads/<id>/` and the multipart uploads of a dead upload, and tmp files.
 *
 * Each run, in this order:
 *   1. lists storage from the cursor, keeping only objects last written before the cut-off;
 *   2. reads the upload records of those objects, consistently;
 *   3. only then reads the suspects noted for the keys it listed and, for each object of a dead
 *      upload (or of none) that a record could name, the index: is its key named?
 *   4. deletes the dead uploads' scratch, tmp files and multipart uploads; of the objects that
 *      could be named, frees each one the index shows unnamed whose suspect was noted at least
 *      `recheckAfterMs` before the index reads began and is as listed (same size and date),
 *      notes the others the index shows unnamed, and forgets the suspects that are named now,
 *      held by a live upload, rewritten or gone.
 *
 * Why this never frees what a record names or a live upload holds.
 *
 * Garbage stays garbage. A record naming an object is created in two ways only: by the finish of
 * the object's own upload, in one transaction conditioned on its lease (so on its upload record,
 * which it deletes); or by copying the key of a record that names it, a mount or a deduplicating
 * finish, in a transaction conditioned on the digest's descriptor existing, which also sets the
 * descriptor's `linkedAt`. (A large manifest's object is named by its own push only, below.) So
 * once the upload is dead and no record names the object, none ever will.
 *
 * The upload. If step 2 of the freeing run finds the record live, the object is kept. If the
 * noting run's step 2 found it dead, it was dead before the noting, and a dead upload stays dead.
 *
 * The index. It shows every record written more than its lag ago that still exists. Say the
 * freeing run reads it at time Q, and no record shows, and yet a record R names the object at Q.
 * R was not written by the upload's finish: that committed before the noting run's step 2 (which
 * found the upload dead), so at least `recheckAfterMs`, more than the lag, before Q, and R would
 * show. So R is a copy, written less than the lag before Q, in a transaction that found the
 * descriptor D naming the object and set D's `linkedAt`. D was written by the finish, long
 * enough before Q to show; it does not, so it was deleted after the copy, within the lag. Only
 * GC deletes descriptors, and only if no link was written to them since its run began minus the
 * grace period: D's new `linkedAt` forbids that as long as the grace period exceeds the index's
 * lag, which GC's own descriptor deletes already require (lib/registry/gc.ts). So no such R.
 * (One copy does not check that D still names the object: a mount copies the key of the link it
 * read, conditioned on the digest's descriptor existing. A link read before GC deleted it and its
 * descriptor, copied once a new push has stored the digest again under another key, names an
 * object GC had already judged garbage; freeing it loses nothing, as reads of a link whose
 * object is gone fall back to the descriptor.)
 * This is why one run cannot both see and free: a finish that committed just before step 2 (its
 * record gone) may have written a descriptor the index does not show yet; the object is only
 * noted, and the later run sees the descriptor and forgets the suspect.
 *
 * The object's age alone would not do: an upload can finish days after it started, and its
 * object may carry the date its bytes were first written (a renamed scratch file's mtime; on S3,
 * possibly the multipart upload's start). For everything else, the grace period covers a writer
 * between writing an object and the record that names it: a manifest push puts its object (a key
 * of its own per push, see ManifestService) just before the transaction that stores the manifest
 * item, and a hash state or tail is written just before the lease commit that names it. An
 * object older than the grace period was therefore named before the noting run began, so long
 * enough before the freeing run's read to show in the index, or never will be; as everywhere in
 * GC, the grace period must exceed that delay and the clock skew. A suspect whose object changed
 * since its noting (another size or date) is noted again instead of freed: the judgement was of
 * the object as listed. A deduplicating finish that finds the stored copy lost points the
 * descriptor at its own object in the transaction that deletes its upload record
 * (lib/registry/uploads.ts), so it is the finish case above: no object is named after its
 * upload's record is gone (gc-dedupe-race.test.ts).
 *
 * The listing resumes across runs from a cursor stored in the table, and stops at half the
 * time budget (the index reads need the rest) or at `maxCandidates`; a suspect is judged again
 * when the listing comes back to it. A run whose index reads cannot finish by the deadline
 * deletes, notes and forgets only what needs no index read (scratch of dead uploads, tmp files,
 * incomplete multipart uploads) and lists the same objects again next time.
 */
import type { OrphanStore, OrphanSuspect } from '../metadata/types.js';
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
  /**
   * What this run frees (a dry run: would free): dead uploads' scratch, tmp files and multipart
   * uploads, and the suspects that are still unnamed and unchanged after the wait.
   */
  found: OrphanTally;
  freed: OrphanTally;
  /** Unnamed objects noted as suspects (a dry run: that would be), for a later run to free. */
  noted: { objects: number; bytes: number };
  /** Suspects met again before their wait was over: kept, judged again by a later run. */
  waiting: number;
  /** Suspects forgotten (a dry run: that would be): named again, a live upload's, rewritten or gone. */
  cleared: number;
  /** The listing reached the end of storage (the next run starts from the beginning). */
  complete: boolean;
  /** The index reads ran out of time: objects needing them were kept this run. */
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
    noted: { objects: 0, bytes: 0 },
    waiting: 0,
    cleared: 0,
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
  // What this run listed: the keys after `from` up to `after`, or to the end if it completed.
  const listedAny = complete || after !== from;
  const through = complete ? undefined : after;
  // Incomplete multipart uploads are few (live uploads and leftovers): all of them, every run.
  const writes = complete ? (await storage.inventory.incompleteWrites('blobs/')).filter((w) => w.started < cutoff) : [];

  // 2. Upload records, after the listing.
  // blobs/<id>, or blobs/<id>.r for an S3 repair's (lib/storage/s3/repair.ts).
  const uploadOf = (w: IncompleteWrite) => w.key.slice('blobs/'.length).split('.')[0]!;
  const ids = [...new Set([...candidates.flatMap((c) => (c.upload ? [c.upload] : [])), ...writes.map(uploadOf)])];
  const live = ids.length ? await store.liveUploads(ids, cutoff) : new Set<string>();
  const dead = candidates.filter((c) => !c.upload || !live.has(c.upload));
  const deadWrites = writes.filter((w) => !live.has(uploadOf(w)));
  // Scratch of dead uploads and tmp files: nothing names them, they go now.
  const free: Candidate[] = dead.filter((c) => !c.nameable);

  // 3. Suspects and the index, after the upload records.
  const suspects = new Map((listedAny ? await store.suspects(from, through) : []).map((s) => [s.key, s]));
  // Every index read starts after this: a suspect noted `recheckAfterMs` before it is due.
  const judgedAt = Date.now();
  const asListed = (c: Candidate, s: OrphanSuspect | undefined): s is OrphanSuspect => s !== undefined && s.size === c.size && s.modified === c.modified;
  const toNote: Candidate[] = [];
  const keep = new Set<string>(); // suspects that stay as they are
  let unjudged = false;
  const nameable = dead.filter((c) => {
    if (!c.nameable) return false;
    const s = suspects.get(c.key);
    // Noted too recently to be judged again: no read, kept as it is.
    if (asListed(c, s) && s.notedAt > judgedAt - store.recheckAfterMs) {
      keep.add(c.key);
      report.waiting++;
      return false;
    }
    return true;
  });
  if (nameable.length) {
    const named = await store.namedKeys(nameable.map((c) => c.key), options.deadline);
    if (named) {
      for (const c of nameable) {
        if (named.has(c.key)) continue;
        const s = suspects.get(c.key);
        if (asListed(c, s)) {
          free.push(c);
          keep.add(c.key); // forgotten once its object is deleted
        } else toNote.push(c);
      }
    } else {
      // Unproven: nothing that needs the index is freed, noted or forgotten, and the next run
      // lists the same objects again from the same place.
      unjudged = true;
      report.unjudged = nameable.length;
      after = from;
      complete = false;
    }
  }
  const freedSuspects = free.filter((c) => c.nameable).map((c) => c.key);
  // Noting again replaces the item; every other suspect in the listed range is forgotten.
  for (const c of toNote) keep.add(c.key);
  const cleared = unjudged ? [] : [...suspects.keys()].filter((k) => !keep.has(k));

  // 4. Delete, then forget what was freed or no longer suspect, then note.
  report.found = { objects: free.length, bytes: free.reduce((n, c) => n + c.size, 0), writes: deadWrites.length };
  report.noted = { objects: toNote.length, bytes: toNote.reduce((n, c) => n + c.size, 0) };
  report.cleared = cleared.length;
  if (!options.dryRun) {
    for (let i = 0; i < free.length; i += 1000) {
      const batch = free.slice(i, i + 1000);
      await storage.objects.delete(batch.map((c) => c.key));
      report.freed.objects += batch.length;
      report.freed.bytes += batch.reduce((n, c) => n + c.size, 0);
    }
    for (const w of deadWrites) {
      await storage.inventory.abortWrite(w);
      report.freed.writes++;
    }
    await store.clear([...freedSuspects, ...cleared]);
    // Noted after the index reads, so after step 2 found the upload dead: the wait starts here.
    const notedAt = Date.now();
    await store.note(toNote.map((c) => ({ key: c.key, size: c.size, modified: c.modified, notedAt })));
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
