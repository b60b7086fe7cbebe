/**
 * Garbage collection's orphan sweep (lib/registry/orphans.ts) on the real backends: objects no
 * record names and no live upload holds are freed (counted): a dead upload's scratch at once, an
 * object a record could name noted by one run and freed by a later one after the wait; young ones
 * and live uploads' are kept, a large manifest's object lives as long as its manifest, a suspect
 * that a record names by the second run (the index lagging at the first) is forgotten and kept, the dry run changes nothing, no run scans the table,
 * the listing resumes where a bounded run stopped, and a finish racing the sweep keeps its blob
 * (held at the exact DynamoDB calls). DynamoDB Local updates its indexes synchronously, so the
 * tests wait a short `recheckAfterMs`, and the index's lag is played by a store whose index reads
 * answer "nothing names it" for one run.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { DeleteCommand, GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { run } from '../../lib/admin/cli.js';
import { DynamoCollectorStore } from '../../lib/metadata/dynamo/gc.js';
import { DynamoOrphanStore } from '../../lib/metadata/dynamo/orphans.js';
import { key } from '../../lib/metadata/dynamo/table.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { type CollectReport, collectGarbage } from '../../lib/registry/gc.js';
import { purgeExpiredUploads } from '../../lib/registry/purge.js';
import { type OrphanReport, type SweepOptions, sweepOrphans } from '../../lib/registry/orphans.js';
import { bytes, sha256 } from '../helpers/data.js';
import { holdBefore } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { CONFIG_TYPE, LAYER_TYPE, type Blob } from '../helpers/manifests.js';
import { patch, pushInPut, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, useRegistry, tableItems } from '../helpers/registry.js';

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

for (const driver of DRIVERS) {
  describe(`garbage collection of orphaned objects (${driver})`, () => {
    const r = useRegistry(driver);
    let seed = 91000;
    let repoCount = 0;
    const fresh = (name: string) => `orphans${repoCount++}/${name}`;

    /** The wait between noting a suspect and freeing it: short, DynamoDB Local's index has no lag. */
    const GAP = 150;
    const store = () => new DynamoOrphanStore(r.db, r.config.dynamo.table, { recheckAfterMs: GAP });
    const sweep = (options: Partial<SweepOptions> = {}, orphans = store()): Promise<OrphanReport> =>
      sweepOrphans(orphans, r.registry.storage, { dryRun: false, graceMs: 0, deadline: Date.now() + 60_000, ...options });
    /** Two runs, the second once the first's suspects may be judged again. */
    async function twice(options: Partial<SweepOptions> = {}): Promise<[OrphanReport, OrphanReport]> {
      const first = await sweep(options);
      await sleep(GAP + 5);
      return [first, await sweep(options)];
    }
    /** A store whose index shows no record naming anything: the index lagging behind the table. */
    const lagging = () => Object.assign(Object.create(store()) as DynamoOrphanStore, { namedKeys: async () => new Set<string>() });
    const suspectItem = async (objectKey: string) => (await r.db.send(new GetCommand({ TableName: r.config.dynamo.table, Key: key.suspect(objectKey), ConsistentRead: true }))).Item;

    /** Every key in storage (the sweep's own listing, so fs tmp files are included). */
    async function stored(): Promise<Map<string, number>> {
      const out = new Map<string, number>();
      for (const prefix of ['blobs/', 'manifests/', 'tmp/', 'uploads/']) {
        let after: string | undefined;
        for (;;) {
          const page = await r.registry.storage.inventory.list(prefix, after, 1000);
          for (const o of page.objects) out.set(o.key, o.size);
          if (!page.more) break;
          after = page.objects.at(-1)!.key;
        }
      }
      return out;
    }
    const multipartUploads = async () =>
      driver === 's3' ? ((await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket }))).Uploads ?? []).map((u) => `${u.Key} ${u.UploadId}`).sort() : [];

    const table = () => tableItems(r);

    /** Leftovers of earlier tests go first (noted, then freed), so each test counts only its own orphans. */
    async function settle(): Promise<void> {
      await sleep(5);
      for (let i = 0; i < 10 && !(await sweep()).complete; i++);
      await sleep(GAP + 5);
      for (let i = 0; i < 10 && !(await sweep()).complete; i++);
    }

    /** An upload with `size` bytes written; its id and Location. */
    async function writing(repo: string, size: number): Promise<{ id: string; location: string; data: Buffer }> {
      const location = await startUpload(r.url, repo);
      const data = bytes(size, seed++);
      const res = await patch(location, data, 0);
      assert.equal(res.status, 202, res.body.toString());
      return { id: new URL(location).pathname.split('/').at(-1)!, location: new URL(res.header('location')!, r.url).href, data };
    }

    /**
     * The orphans every kind of failure leaves: the blob object of a finish that crashed after
     * assembling it (no record names it; `CRASHED` bytes, the one a record could name), an upload
     * whose record is gone with its scratch (hash state; the tail and the multipart upload on S3,
     * the partial file on fs), and on fs a crash's tmp file. Returns the orphaned keys with their
     * sizes.
     */
    const CRASHED = 1500;
    async function orphans(repo: string): Promise<Map<string, number>> {
      const before = await stored();
      const crashed = bytes(CRASHED, seed++);
      await r.registry.storage.objects.put(`blobs/${randomUUID()}`, crashed);
      const dropped = await writing(repo, 2000);
      await r.db.send(new DeleteCommand({ TableName: r.config.dynamo.table, Key: key.upload(dropped.id) }));
      if (driver === 'fs') {
        const tmp = join(r.config.dataDir, 'storage', 'tmp');
        await mkdir(tmp, { recursive: true });
        await writeFile(join(tmp, `uploads_x_hashstates_sha256_1.${randomUUID()}.tmp`), bytes(108, seed++));
      }
      await sleep(5); // older than a grace period of 0
      const after = await stored();
      return new Map([...after].filter(([k]) => !before.has(k)));
    }

    const sum = (m: Map<string, number>) => [...m.values()].reduce((n, s) => n + s, 0);
    /** What the noting run frees at once: everything but the crashed finish's blob. */
    const scratchOf = (m: Map<string, number>) => new Map([...m].filter(([k]) => !k.startsWith('blobs/')));
    /** DynamoDB commands sent on the registry's client while `work` runs. */
    async function commandsDuring<T>(work: () => Promise<T>): Promise<{ result: T; commands: { name: string; input: Record<string, unknown> }[] }> {
      const commands: { name: string; input: Record<string, unknown> }[] = [];
      const name = `count-${randomUUID()}`;
      r.db.middlewareStack.add((next, ctx) => async (args) => {
        commands.push({ name: ctx.commandName!, input: args.input as Record<string, unknown> });
        return next(args);
      }, { step: 'initialize', name });
      try {
        return { result: await work(), commands };
      } finally {
        r.db.middlewareStack.remove(name);
      }
    }

    it('frees the objects of a crashed finish, a dropped upload (and its multipart upload) and a crash’s tmp file, counting objects and bytes; keeps live uploads, blobs and their bytes', async () => {
      await settle();
      const repo = fresh('failed');
      const kept = await pushInPut(r.url, repo, bytes(900, seed++)); // a descriptor names its object
      const live = await writing(repo, 1200);
      const liveKeys = [...(await stored()).keys()].filter((k) => k.startsWith(`uploads/${live.id}/`));
      assert.ok(liveKeys.length > 0, 'the live upload holds scratch objects');
      const garbage = await orphans(repo);
      assert.ok(garbage.size >= (driver === 'fs' ? 4 : 3), [...garbage.keys()].join(' '));
      const liveUploads = await multipartUploads();
      assert.equal(liveUploads.length, driver === 's3' ? 2 : 0, 'the live and the dropped upload hold a multipart upload each');

      // The first run frees the dead upload's scratch (nothing could name it) and notes the
      // crashed finish's blob; the second, after the wait, frees the blob. Neither scans.
      const crashed = [...garbage.keys()].find((k) => k.startsWith('blobs/'))!;
      const { result: first, commands } = await commandsDuring(() => sweep());
      assert.ok(first.complete);
      const scratch = scratchOf(garbage);
      assert.deepEqual(first.freed, { objects: scratch.size, bytes: sum(scratch), writes: driver === 's3' ? 1 : 0 }, JSON.stringify(first));
      assert.deepEqual(first.found, first.freed);
      assert.deepEqual(first.noted, { objects: 1, bytes: CRASHED }, JSON.stringify(first));
      assert.ok((await stored()).has(crashed), 'a noted object stays until a later run');
      assert.equal((await suspectItem(crashed))?.size, CRASHED, 'its suspect item says what was listed');
      await sleep(GAP + 5);
      const { result: second, commands: more } = await commandsDuring(() => sweep());
      commands.push(...more);
      assert.deepEqual(second.freed, { objects: 1, bytes: CRASHED, writes: 0 }, JSON.stringify(second));
      assert.deepEqual(second.noted, { objects: 0, bytes: 0 });
      assert.equal(await suspectItem(crashed), undefined, 'the suspect item goes with its object');
      const now = await stored();
      for (const k of garbage.keys()) assert.ok(!now.has(k), `${k} is freed`);
      // Whether a record names an object is read from the key index, one key at a time: no Scan.
      assert.deepEqual(commands.filter((c) => c.name === 'ScanCommand'), [], 'no run scans the table');
      assert.equal(first.cost.dynamo.Scan, undefined);
      assert.ok(commands.some((c) => c.name === 'QueryCommand' && c.input.IndexName === 'key' && c.input.Limit === 1), 'the key index, one item a key');
      assert.ok(first.cost.dynamo.Query! >= 2 && first.cost.capacityUnits > 0, JSON.stringify(first.cost));
      for (const k of liveKeys) assert.ok(now.has(k), `${k} of the live upload stays`);
      assert.equal((await multipartUploads()).length, driver === 's3' ? 1 : 0, "only the live upload's multipart upload is left");
      // The live upload carries on and finishes; the blob stays readable.
      const finish = await call(withDigest(live.location, sha256(live.data)), { method: 'PUT' });
      assert.equal(finish.status, 201, finish.body.toString());
      for (const digest of [kept.digest, sha256(live.data)]) assert.equal((await call(`${r.url}/v2/${repo}/blobs/${digest}`)).status, 200);
      const after = await sweep();
      assert.deepEqual([after.found, after.noted], [{ objects: 0, bytes: 0, writes: 0 }, { objects: 0, bytes: 0 }], 'a third run finds nothing');
    });

    it('frees the objects of an upload whose record has expired (no request can take it up again), and the purge still removes the record', async () => {
      await settle();
      const expired = await writing(fresh('expired'), 1700);
      const held = [...(await stored())].filter(([k]) => k.startsWith(`uploads/${expired.id}/`));
      assert.ok(held.length > 0);
      await r.db.send(new UpdateCommand({ TableName: r.config.dynamo.table, Key: key.upload(expired.id), UpdateExpression: 'SET expiresAt = :past', ExpressionAttributeValues: { ':past': Date.now() - 1000 } }));
      await sleep(5);
      const report = await sweep();
      assert.deepEqual(report.freed, { objects: held.length, bytes: held.reduce((n, [, s]) => n + s, 0), writes: driver === 's3' ? 1 : 0 });
      assert.deepEqual(await multipartUploads(), []);
      assert.equal((await patch(expired.location, bytes(10, 1), 1700)).status, 404, 'the upload is gone for its client');
      const purged = await purgeExpiredUploads(r.registry.meta, r.registry.storage);
      assert.equal(purged.purged, 1, JSON.stringify(purged));
    });

    it('keeps orphans younger than the grace period', async () => {
      await settle();
      const garbage = await orphans(fresh('young'));
      const young = await sweep({ graceMs: 3_600_000 });
      assert.deepEqual([young.found, young.noted], [{ objects: 0, bytes: 0, writes: 0 }, { objects: 0, bytes: 0 }]);
      const now = await stored();
      for (const k of garbage.keys()) assert.ok(now.has(k), `${k} stays`);
      const [first, second] = await twice();
      assert.equal(first.freed.objects + second.freed.objects, garbage.size, 'without the grace period they go');
    });

    it("keeps a large manifest's object while its manifest exists and frees it after the manifest is deleted", async () => {
      await settle();
      const repo = fresh('large');
      const config = await pushInPut(r.url, repo, bytes(250, seed++));
      const layer = await pushInPut(r.url, repo, bytes(800, seed++));
      const desc = (p: { digest: string }, mediaType: string, size: number): Blob => ({ mediaType, digest: p.digest, size });
      const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc(config, CONFIG_TYPE, 250), layers: [desc(layer, LAYER_TYPE, 800)], annotations: { pad: 'x'.repeat(70_000) } });
      const put = await call(`${r.url}/v2/${repo}/manifests/v1`, { method: 'PUT', body: Buffer.from(text), headers: { 'Content-Type': MediaTypes.ociManifest } });
      assert.equal(put.status, 201, put.body.toString());
      const digest = put.header('docker-content-digest')!;
      const object = (await r.registry.meta.manifests.getManifest(repo, digest))!.key!;
      assert.ok(object.startsWith('manifests/'), object);
      await sleep(5);
      for (const kept of await twice()) assert.deepEqual([kept.found, kept.noted], [{ objects: 0, bytes: 0, writes: 0 }, { objects: 0, bytes: 0 }], 'its manifest names it');
      assert.equal((await call(`${r.url}/v2/${repo}/manifests/v1`)).status, 200);
      assert.equal((await call(`${r.url}/v2/${repo}/manifests/${digest}`, { method: 'DELETE' })).status, 202);
      const [noted, freed] = await twice();
      assert.deepEqual(noted.noted, { objects: 1, bytes: Buffer.byteLength(text) });
      assert.deepEqual(freed.freed, { objects: 1, bytes: Buffer.byteLength(text), writes: 0 });
      assert.ok(!(await stored()).has(object));
    });

    it('a push of a large manifest whose earlier copy the sweep is judging keeps its bytes: each push writes an object of its own', async () => {
      await settle();
      const [first, second] = [fresh('first'), fresh('second')];
      const desc = (p: { digest: string }, mediaType: string, size: number): Blob => ({ mediaType, digest: p.digest, size });
      const blobsOf = async (repo: string) => [await pushInPut(r.url, repo, bytes(250, 7)), await pushInPut(r.url, repo, bytes(800, 8))];
      const [c1, l1] = await blobsOf(first);
      const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc(c1!, CONFIG_TYPE, 250), layers: [desc(l1!, LAYER_TYPE, 800)], annotations: { pad: 'y'.repeat(70_000) } });
      const putIn = (repo: string) => call(`${r.url}/v2/${repo}/manifests/v1`, { method: 'PUT', body: Buffer.from(text), headers: { 'Content-Type': MediaTypes.ociManifest } });
      const put = await putIn(first);
      assert.equal(put.status, 201);
      assert.equal((await call(`${r.url}/v2/${first}/manifests/${put.header('docker-content-digest')}`, { method: 'DELETE' })).status, 202);
      await blobsOf(second);
      await sleep(1100); // the first push's object is now older than the grace period
      // The sweep has listed the old object; the same manifest is pushed again, its bytes put
      // before the sweep reads the index and its manifest item written after the sweep ends.
      let sweeping: Promise<OrphanReport> | undefined;
      let pushing: Promise<Awaited<ReturnType<typeof call>>> | undefined;
      let putDone!: () => void;
      const bytesPut = new Promise<void>((res) => (putDone = res));
      const atIndex = holdBefore(r.db, (command, input) => command === 'QueryCommand' && input.IndexName === 'key', async () => {
        void holdBefore(r.db, (command) => command === 'TransactWriteItemsCommand', async () => {
          putDone();
          await sweeping;
        });
        pushing = putIn(second);
        await bytesPut;
      });
      sweeping = sweep({ graceMs: 1000 });
      await atIndex;
      const report = await sweeping;
      const pushed = await pushing!;
      assert.equal(pushed.status, 201, pushed.body.toString());
      assert.equal(report.noted.objects, 1, 'the first push’s object is noted');
      await sleep(GAP + 5);
      assert.equal((await sweep({ graceMs: 1000 })).freed.objects, 1, 'the first push’s object goes');
      const got = await call(`${r.url}/v2/${second}/manifests/v1`);
      assert.equal(got.status, 200, 'the second push’s bytes are kept');
      assert.equal(got.body.toString(), text);
    });

    it('a dry run reports what it would free and changes nothing, in storage, in the table (its cursor included) or in multipart uploads', async () => {
      await settle();
      const garbage = await orphans(fresh('dry'));
      const before = [await stored(), await table(), await multipartUploads()];
      const dry = await sweep({ dryRun: true, maxCandidates: 1, pageSize: 1 });
      assert.ok(!dry.complete && dry.cursor, JSON.stringify(dry));
      assert.deepEqual(dry.freed, { objects: 0, bytes: 0, writes: 0 });
      assert.deepEqual([await stored(), await table(), await multipartUploads()], before);
      const full = await sweep({ dryRun: true });
      const scratch = scratchOf(garbage);
      assert.deepEqual(full.found, { objects: scratch.size, bytes: sum(scratch), writes: driver === 's3' ? 1 : 0 });
      assert.deepEqual(full.noted, { objects: 1, bytes: CRASHED }, 'it would note the crashed finish’s blob');
      assert.deepEqual([await stored(), await table(), await multipartUploads()], before);
      const noting = await sweep();
      assert.deepEqual([noting.freed, noting.noted], [full.found, full.noted], 'a real run frees and notes what the dry run found');
      // With a suspect due: the dry run says it would free it, and frees nothing, suspect item included.
      await sleep(GAP + 5);
      const noted = [await stored(), await table()];
      const due = await sweep({ dryRun: true });
      assert.deepEqual(due.found, { objects: 1, bytes: CRASHED, writes: 0 });
      assert.deepEqual([await stored(), await table()], noted);
      assert.deepEqual((await sweep()).freed, due.found, 'a real run frees what the dry run found');
    });

    it('resumes where a bounded run stopped, and a run whose scan runs out of time keeps what it could not judge', async () => {
      await settle();
      for (let i = 0; i < 5; i++) await r.registry.storage.objects.put(`blobs/${randomUUID()}`, bytes(100 + i, seed++));
      await sleep(5);
      const everything = await stored();
      const all = [...everything.keys()].filter((k) => k.startsWith('blobs/'));
      // Out of time before the index reads finished: nothing that needs them is freed or noted,
      // and the cursor stays.
      const late = Object.assign(Object.create(store()) as DynamoOrphanStore, { namedKeys: async () => undefined });
      const before = await table();
      const cut = await sweep({ maxCandidates: 2, pageSize: 2 }, late);
      assert.equal(cut.freed.objects, 0);
      assert.deepEqual(cut.noted, { objects: 0, bytes: 0 });
      assert.equal(cut.unjudged, 2);
      assert.equal(cut.cursor, undefined, 'the next run starts where this one did');
      assert.deepEqual([...(await stored()).keys()].filter((k) => k.startsWith('blobs/')), all);
      assert.deepEqual((await table()).filter((i) => i.includes('SUSPECT#')), before.filter((i) => i.includes('SUSPECT#')), 'no suspect noted');
      // Two objects a run: each run carries on after the last key the previous one judged; a
      // first pass over storage notes them, a second (after the wait) frees them.
      const pass = async () => {
        const runs: OrphanReport[] = [];
        for (let i = 0; i < 100; i++) {
          const report = await sweep({ maxCandidates: 2, pageSize: 2 });
          runs.push(report);
          if (report.complete) break;
        }
        assert.ok(runs.length >= 3, 'at most two objects a run');
        assert.ok(runs.slice(0, -1).every((x) => !x.complete && x.cursor), 'every run but the last left a cursor');
        const listed = runs.reduce((n, x) => n + x.listed, 0);
        assert.ok(listed <= everything.size + 2, `no run listed from the start again (${listed} listed in ${runs.length} runs, ${everything.size} objects)`);
        assert.equal(runs.at(-1)!.cursor, undefined);
        return runs;
      };
      const noting = await pass();
      assert.equal(noting.reduce((n, x) => n + x.noted.objects, 0), 5, JSON.stringify(noting));
      assert.equal(noting.reduce((n, x) => n + x.freed.objects, 0), 0);
      await sleep(GAP + 5);
      const freeing = await pass();
      assert.equal(freeing.reduce((n, x) => n + x.freed.objects, 0), 5, JSON.stringify(freeing));
      assert.deepEqual((await table()).filter((i) => i.includes('SUSPECT#')), [], 'every suspect item went with its object');
      // A zero budget lists nothing and moves no cursor.
      const none = await sweep({ deadline: Date.now() });
      assert.equal(none.listed, 0);
    });

    it('keeps the blob of a finish that assembled it but has not yet written its descriptor, and of one that commits between the listing and the upload check', async () => {
      await settle();
      const repo = fresh('race');
      const isFinish = (command: string) => command === 'TransactWriteItemsCommand';
      // 1. The sweep runs entirely while the finish is held before its transaction.
      const held = bytes(1300, seed++);
      let during: OrphanReport | undefined;
      const finished = holdBefore(r.db, isFinish, async () => {
        await sleep(5);
        during = await sweep();
      });
      const pushed = await pushInPut(r.url, repo, held);
      await finished;
      assert.deepEqual([during!.found, during!.noted], [{ objects: 0, bytes: 0, writes: 0 }, { objects: 0, bytes: 0 }], 'the upload record keeps the assembled blob');
      assert.equal((await call(`${r.url}/v2/${repo}/blobs/${pushed.digest}`)).status, 200);

      // 2. The finish commits after the sweep listed its blob and before it reads the upload
      // record: the record is gone, so the descriptor decides, read after.
      const racing = bytes(1400, seed++);
      let sweeping: Promise<OrphanReport> | undefined;
      let finishing: Promise<unknown> | undefined;
      let reachedUploadCheck!: () => void;
      const atUploadCheck = new Promise<void>((res) => (reachedUploadCheck = res));
      const finishHeld = holdBefore(r.db, isFinish, async () => {
        await sleep(5);
        const checked = holdBefore(r.db, (command) => command === 'BatchGetItemCommand', async () => {
          reachedUploadCheck();
          await finishing; // the finish's transaction lands here
        });
        sweeping = sweep();
        await atUploadCheck;
        void checked;
      });
      finishing = pushInPut(r.url, repo, racing);
      await finishHeld;
      const report = await sweeping!;
      await finishing;
      assert.deepEqual([report.found, report.noted], [{ objects: 0, bytes: 0, writes: 0 }, { objects: 0, bytes: 0 }], JSON.stringify(report));
      const got = await call(`${r.url}/v2/${repo}/blobs/${sha256(racing)}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(racing));
    });

    it('runs after the metadata pass of a GC run, in its report and in the admin command’s output', async () => {
      await settle();
      const garbage = await orphans(fresh('run'));
      const gc = async () => {
        const out: string[] = [];
        const io = { out: (l: string) => void out.push(l), err: (l: string) => void out.push(`ERR ${l}`), readSecret: async () => '' };
        let report: CollectReport | undefined;
        const code = await run(['gc', '--grace', '0'], () => assert.fail('no user store'), io, async (o) =>
          (report = await collectGarbage(new DynamoCollectorStore(r.db, r.config.dynamo.table), r.registry.storage, { ...o, orphans: store() })),
        );
        assert.equal(code, 0, out.join('\n'));
        return { orphans: report!.orphans!, out };
      };
      const scratch = scratchOf(garbage);
      const first = await gc();
      assert.equal(first.orphans.freed.objects, scratch.size, JSON.stringify(first.orphans));
      assert.ok(first.out.some((l) => l.startsWith(`orphans freed: ${scratch.size} objects, ${sum(scratch)} bytes`)), first.out.join('\n'));
      assert.ok(first.out.some((l) => l.startsWith(`orphan suspects noted: 1 objects, ${CRASHED} bytes`)), first.out.join('\n'));
      await sleep(GAP + 5);
      const second = await gc();
      assert.equal(second.orphans.freed.objects, 1, JSON.stringify(second.orphans));
      assert.ok(second.out.some((l) => l.startsWith(`orphans freed: 1 objects, ${CRASHED} bytes`)), second.out.join('\n'));
    });

    it('keeps a blob whose finish committed just before the noting run read its upload, the index not showing the descriptor yet: the next run sees it and forgets the suspect', async () => {
      await settle();
      const repo = fresh('lag');
      const data = bytes(1100, seed++);
      const before = new Set((await stored()).keys());
      const pushed = await pushInPut(r.url, repo, data);
      const object = [...(await stored()).keys()].find((k) => !before.has(k) && k.startsWith('blobs/'))!;
      assert.ok(object, 'the finish left its object');
      await sleep(5);
      // The upload record is gone (the finish removed it) and the index lags: noted, not freed.
      // (It notes every blob in storage: for this index, nothing names any.)
      const noting = await sweep({}, lagging());
      assert.ok(noting.noted.objects >= 1, JSON.stringify(noting));
      assert.equal(noting.freed.objects, 0);
      assert.equal((await suspectItem(object))?.size, data.length);
      await sleep(GAP + 5);
      const judging = await sweep();
      assert.deepEqual([judging.freed, judging.noted, judging.cleared], [{ objects: 0, bytes: 0, writes: 0 }, { objects: 0, bytes: 0 }, noting.noted.objects], JSON.stringify(judging));
      assert.equal(await suspectItem(object), undefined, 'the suspect is forgotten');
      const got = await call(`${r.url}/v2/${repo}/blobs/${pushed.digest}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(data));
    });

    it('forgets a suspect whose object is gone, and notes again (does not free) one whose object was rewritten since', async () => {
      await settle();
      const [gone, rewritten, sameSize] = [`blobs/${randomUUID()}`, `blobs/${randomUUID()}`, `blobs/${randomUUID()}`];
      await r.registry.storage.objects.put(gone, bytes(300, seed++));
      await r.registry.storage.objects.put(rewritten, bytes(400, seed++));
      await r.registry.storage.objects.put(sameSize, bytes(500, seed++));
      await sleep(5);
      assert.deepEqual((await sweep()).noted, { objects: 3, bytes: 1200 });
      const noted = (await suspectItem(sameSize))!.modified;
      // S3 dates objects to the second: the rewrite at the same size must carry another date.
      await sleep(1100);
      await r.registry.storage.objects.delete([gone]);
      await r.registry.storage.objects.put(rewritten, bytes(450, seed++));
      await r.registry.storage.objects.put(sameSize, bytes(500, seed++));
      await sleep(GAP + 5);
      const judging = await sweep();
      assert.deepEqual([judging.freed.objects, judging.noted, judging.cleared], [0, { objects: 2, bytes: 950 }, 1], JSON.stringify(judging));
      assert.equal(await suspectItem(gone), undefined);
      assert.equal((await suspectItem(rewritten))?.size, 450);
      assert.notEqual((await suspectItem(sameSize))?.modified, noted, 'the same size, noted again by its new date');
      await sleep(GAP + 5);
      assert.deepEqual((await sweep()).freed, { objects: 2, bytes: 950, writes: 0 });
    });
  });
}
