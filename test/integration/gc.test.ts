/**
 * Online garbage collection on the real backends: what it frees and keeps, the dry run, the
 * grace period, and each race of the protocol (README, Garbage collection) as a deterministic
 * interleaving: one side held at its exact DynamoDB call while the other runs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { basename } from 'node:path';
import { describe, it } from 'node:test';
import { BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { run } from '../../lib/admin/cli.js';
import { DynamoCollectorStore } from '../../lib/metadata/dynamo/gc.js';
import { type CollectOptions, type CollectReport, collectGarbage } from '../../lib/registry/gc.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { bytes, sha256 } from '../helpers/data.js';
import { holdBefore } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { CONFIG_TYPE, LAYER_TYPE, type Blob } from '../helpers/manifests.js';
import { expectError, pushInPut } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, blobObjects, useRegistry, tableItems } from '../helpers/registry.js';
import { processEnv } from '../helpers/process.js';
import { root } from '../deploy/package.js';

for (const driver of DRIVERS) {
  describe(`garbage collection (${driver})`, () => {
    const r = useRegistry(driver);
    let seed = 71000;
    let repoCount = 0;

    /** A repository name of its own per test: each test's garbage is told apart by repository. */
    const fresh = (name: string) => `gc${repoCount++}/${name}`;

    async function blob(repo: string, size: number, mediaType = LAYER_TYPE, data = bytes(size, seed++)): Promise<Blob & { data: Buffer }> {
      const { digest } = await pushInPut(r.url, repo, data);
      return { mediaType, digest, size, data };
    }

    async function putImage(repo: string, tag: string, config: Blob, layers: Blob[]): Promise<string> {
      const desc = (b: Blob) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size });
      const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc(config), layers: layers.map(desc) });
      const res = await putManifest(repo, tag, text);
      assert.equal(res.status, 201, res.body.toString());
      return res.header('docker-content-digest')!;
    }

    const putManifest = (repo: string, tag: string, text: string) =>
      call(`${r.url}/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: Buffer.from(text), headers: { 'Content-Type': MediaTypes.ociManifest } });
    const headBlob = (repo: string, digest: string) => call(`${r.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
    const objectKey = async (digest: string) => (await r.registry.meta.blobs.getDescriptor(digest))?.key;
    const objects = async () => new Set((await blobObjects(r)).map((k) => basename(k)));

    function collect(options: Partial<CollectOptions> = {}): Promise<CollectReport> {
      return collectGarbage(new DynamoCollectorStore(r.db, r.config.dynamo.table), r.registry.storage, { dryRun: false, graceMs: 0, budgetMs: 60_000, ...options });
    }

    /** Every item of the table, for "changes nothing". */
    const table = () => tableItems(r);

    /**
     * Two repositories: `one` holds M1 (config c1; layers s, k, x) and M2 (config c2; layer k);
     * `two` holds M3 (config c3; layer s). Deleting M1 leaves c1 and x unreferenced anywhere,
     * s unreferenced in `one` only, k referenced by M2.
     */
    async function scene() {
      const one = fresh('one');
      const two = fresh('two');
      const c1 = await blob(one, 300, CONFIG_TYPE);
      const s = await blob(one, 1000);
      const k = await blob(one, 700);
      const x = await blob(one, 1900);
      const m1 = await putImage(one, 'v1', c1, [s, k, x]);
      const c2 = await blob(one, 310, CONFIG_TYPE);
      await putImage(one, 'v2', c2, [k]);
      const c3 = await blob(two, 320, CONFIG_TYPE);
      await blob(two, 1000, LAYER_TYPE, s.data); // the same bytes: a dedupe, one object
      await putImage(two, 'v1', c3, [s]);
      return { one, two, c1, s, k, x, c2, c3, m1 };
    }

    it('after a manifest DELETE, frees exactly the unreferenced links, descriptors, objects and bytes, keeping blobs shared with another manifest or repository', async () => {
      const { one, two, c1, s, k, x, c2, c3, m1 } = await scene();
      // Garbage of nothing yet: the first run frees nothing.
      const idle = await collect();
      assert.deepEqual(idle.freed, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
      assert.equal((await call(`${r.url}/v2/${one}/manifests/${m1}`, { method: 'DELETE' })).status, 202);
      const gone = [c1, x];
      const goneKeys = await Promise.all(gone.map((b) => objectKey(b.digest)));
      const before = await objects();
      const report = await collect();
      assert.ok(report.complete);
      assert.deepEqual(report.freed, { links: 3, descriptors: 2, objects: 2, bytes: c1.size + x.size }, 'links c1, s, x of `one`; descriptors and objects of c1 and x');
      assert.deepEqual(report.found, report.freed);
      assert.deepEqual(report.raced, { links: 0, descriptors: 0 });
      const after = await objects();
      assert.deepEqual([...before].filter((o) => !after.has(o)).sort(), goneKeys.map((k) => basename(k!)).sort(), 'exactly the objects of c1 and x are deleted');
      for (const b of gone) {
        assert.equal(await objectKey(b.digest), undefined);
        assert.equal((await headBlob(one, b.digest)).status, 404);
      }
      assert.equal((await headBlob(one, s.digest)).status, 404, "s is no longer linked in `one`: no manifest there references it");
      for (const [repo, b] of [[two, s], [two, c3], [one, k], [one, c2]] as const) {
        assert.equal((await headBlob(repo, b.digest)).status, 200, `${repo} keeps ${b.digest}`);
        assert.ok(after.has(basename((await objectKey(b.digest))!)), `the bytes of ${b.digest} stay`);
      }
      for (const [repo, tag] of [[one, 'v2'], [two, 'v1']]) assert.equal((await call(`${r.url}/v2/${repo}/manifests/${tag}`)).status, 200);
      // A second run finds nothing left.
      assert.deepEqual((await collect()).found, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
    });

    it('a dry run reports what a run frees and changes nothing, in the table or in storage; the admin command prints it and its cost', async () => {
      const { one, m1 } = await scene();
      assert.equal((await call(`${r.url}/v2/${one}/manifests/${m1}`, { method: 'DELETE' })).status, 202);
      const [items, stored] = [await table(), await objects()];
      const out: string[] = [];
      const io = { out: (l: string) => void out.push(l), err: (l: string) => void out.push(`ERR ${l}`), readSecret: async () => '' };
      let dry: CollectReport | undefined;
      const code = await run(['gc', '--dry-run', '--grace', '0'], () => assert.fail('no user store'), io, async (o) => (dry = await collect(o)));
      assert.equal(code, 0, out.join('\n'));
      assert.ok(dry!.dryRun);
      assert.deepEqual(await table(), items, 'the table is unchanged');
      assert.deepEqual(await objects(), stored, 'storage is unchanged');
      assert.deepEqual(dry!.freed, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
      assert.equal(dry!.cost.dynamo.DeleteItem, undefined, 'no delete was sent');
      assert.equal(dry!.cost.dynamo.TransactWriteItems, undefined, 'no transaction was sent');
      assert.equal(dry!.cost.dynamo.UpdateItem, undefined, 'no lease was taken');
      assert.ok(out.some((l) => l.startsWith(`would free: ${dry!.found.links} links, ${dry!.found.descriptors} descriptors, ${dry!.found.objects} objects, ${dry!.found.bytes} bytes`)), out.join('\n'));
      assert.ok(out.some((l) => /^cost: DynamoDB .*Query \d+.*capacity units: [\d.]+ read, 0 write\)/.test(l)), out.join('\n'));
      assert.equal(dry!.cost.dynamo.Scan, undefined, 'marks, not a scan');
      const real = await collect();
      assert.deepEqual(real.freed, dry!.found, 'the run frees what the dry run found');
    });

    it('refuses bad gc options with a usage error, running nothing', async () => {
      for (const args of [['--grace'], ['--grace', '-1'], ['--budget', '0'], ['--frobnicate'], ['--full', 'yes']]) {
        const err: string[] = [];
        const code = await run(['gc', ...args], () => assert.fail('no user store'), { out: () => undefined, err: (l) => void err.push(l), readSecret: async () => '' }, () => assert.fail('must not run'));
        assert.equal(code, 2, args.join(' '));
      }
    });

    it('keeps a pushed blob whose manifest is not yet pushed while it is inside the grace period, including a deduplicated or mounted link to an old descriptor', async () => {
      const first = fresh('first');
      const old = await blob(first, 800);
      const oldAt = (await r.registry.meta.blobs.getDescriptor(old.digest))!.createdAt;
      assert.equal((await call(`${r.url}/v2/${first}/blobs/${old.digest}`, { method: 'DELETE' })).status, 202);
      await new Promise((res) => setTimeout(res, 20)); // the new links' times must differ from oldAt
      const fresh1 = fresh('pushing');
      const pending = await blob(fresh1, 900);
      await blob(fresh1, 800, LAYER_TYPE, old.data); // dedupe: links the old descriptor
      const mountFrom = fresh('source');
      const other = fresh('mounted');
      await blob(mountFrom, 800, LAYER_TYPE, old.data);
      assert.equal((await call(`${r.url}/v2/${other}/blobs/uploads/?mount=${old.digest}&from=${mountFrom}`, { method: 'POST' })).status, 201);
      assert.equal((await call(`${r.url}/v2/${mountFrom}/blobs/${old.digest}`, { method: 'DELETE' })).status, 202);
      // Grace: everything since just after the old descriptor was created is young.
      const graceMs = Date.now() - oldAt - 10;
      const report = await collect({ graceMs });
      assert.deepEqual(report.found, { links: 0, descriptors: 0, objects: 0, bytes: 0 }, JSON.stringify(report));
      for (const [repo, b] of [[fresh1, pending], [fresh1, old], [other, old]] as const) assert.equal((await headBlob(repo, b.digest)).status, 200);
      const config = await blob(fresh1, 200, CONFIG_TYPE);
      await putImage(fresh1, 'v1', config, [pending, old]);
      // Without the grace period the unreferenced mounted link is garbage: the test can fail.
      const late = await collect();
      assert.equal(late.freed.links, 1, 'the mounted link nothing references');
      assert.equal((await headBlob(other, old.digest)).status, 404);
      assert.equal((await headBlob(fresh1, old.digest)).status, 200);
    });

    it('reads a manifest kept in storage (over 64 KiB) to keep what it references; one it cannot read keeps every link of its repository', async () => {
      const repo = fresh('large');
      const config = await blob(repo, 260, CONFIG_TYPE);
      const layer = await blob(repo, 900);
      const desc = (b: Blob) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size });
      const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc(config), layers: [desc(layer)], annotations: { pad: 'x'.repeat(70_000) } });
      assert.equal((await putManifest(repo, 'v1', text)).status, 201);
      const tagged = (await r.registry.meta.manifests.getTag(repo, 'v1'))!;
      const manifestKey = (await r.registry.meta.manifests.getManifest(repo, tagged.digest))?.key;
      assert.ok(manifestKey, 'the manifest is kept in storage, not inline');
      const stray = await blob(repo, 400); // linked, referenced by nothing
      const read = await collect();
      assert.deepEqual(read.unreadable, []);
      assert.deepEqual(read.freed, { links: 1, descriptors: 1, objects: 1, bytes: stray.size }, 'only the stray blob');
      await assertIntact(r, repo, 'v1', [config.digest, layer.digest]);
      // Its object lost: GC cannot know what it references, so the repository keeps every link.
      const other = await blob(repo, 410);
      await r.registry.storage.objects.delete([manifestKey!]);
      const blind = await collect();
      assert.deepEqual(blind.unreadable, [repo]);
      assert.deepEqual(blind.found, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
      for (const b of [config, layer, other]) assert.equal((await headBlob(repo, b.digest)).status, 200);
      // Its mark stays while it cannot be read; once the manifest goes, its links are collected.
      assert.deepEqual((await collect()).unreadable, [repo], 'read again by the next run');
      assert.equal((await call(`${r.url}/v2/${repo}/manifests/${tagged.digest}`, { method: 'DELETE' })).status, 202);
      const readable = await collect();
      assert.deepEqual(readable.unreadable, []);
      assert.equal(readable.freed.links, 3, JSON.stringify(readable));
    });

    it('stops at its budget between candidates, saves where it stopped, and the next run resumes there; one run at a time', async () => {
      await collect(); // earlier tests' marks handled: only this test's remain
      const repos = [fresh('resume-a'), fresh('resume-b'), fresh('resume-c'), fresh('resume-d')];
      const strays = [];
      for (const [i, repo] of repos.entries()) strays.push(await blob(repo, 300 + i)); // linked, never referenced
      // A budget of nothing: stopped before the first candidate, nothing done, the cursor kept.
      const none = await collect({ budgetMs: 0 });
      assert.equal(none.complete, false);
      assert.equal(none.stopped, 'budget');
      assert.deepEqual(none.found, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
      // Stopped after one candidate (deterministically, by count): one repository's garbage went.
      const first = await collect({ maxCandidates: 1 });
      assert.equal(first.complete, false);
      assert.equal(first.stopped, 'budget');
      assert.equal(first.resumed, false);
      assert.deepEqual(first.candidates, { repositories: 1, digests: 0 });
      assert.deepEqual({ links: first.freed.links, descriptors: first.freed.descriptors }, { links: 1, descriptors: 1 });
      const second = await collect({ maxCandidates: 2 });
      assert.equal(second.resumed, true, 'it started where the first stopped');
      assert.equal(second.freed.links, 2, JSON.stringify(second));
      const out: string[] = [];
      const code = await run(['gc', '--grace', '0'], () => assert.fail('no user store'), { out: (l) => void out.push(l), err: (l) => void out.push(l), readSecret: async () => '' }, (o) => collect({ ...o, maxCandidates: 10 }));
      assert.equal(code, 0, out.join('\n'));
      assert.ok(out.some((l) => l.startsWith('marked candidates (resumed): 1 repositories')), out.join('\n'));
      assert.ok(out.some((l) => l.startsWith('freed: 1 links, 1 descriptors, 1 objects')), out.join('\n'));
      for (const [i, repo] of repos.entries()) assert.equal((await headBlob(repo, strays[i]!.digest)).status, 404);
      const after = await collect();
      assert.equal(after.resumed, false, 'the last run reached the end: the next starts over');
      assert.deepEqual(after.found, { links: 0, descriptors: 0, objects: 0, bytes: 0 });

      // While one run holds the lease, another does nothing and says so (the admin command fails).
      const garbage = fresh('busy');
      const stray = await blob(garbage, 333);
      const holder = new DynamoCollectorStore(r.db, r.config.dynamo.table);
      const lease = await holder.lease('another-run', Date.now() + 60_000, Date.now());
      assert.ok('cursor' in lease);
      const busy = await collect();
      assert.equal(busy.stopped, 'busy');
      assert.equal(busy.complete, false);
      assert.deepEqual(busy.cost.dynamo, { UpdateItem: 1 }, 'only the refused lease');
      const err: string[] = [];
      assert.equal(await run(['gc', '--grace', '0'], () => assert.fail('no user store'), { out: () => undefined, err: (l) => void err.push(l), readSecret: async () => '' }, (o) => collect(o)), 1);
      assert.ok(err.some((l) => l.includes('another collection holds the lease')), err.join('\n'));
      assert.ok(await holder.release('another-run', lease.cursor));
      assert.equal((await collect()).freed.links, 1);
      assert.equal((await headBlob(garbage, stray.digest)).status, 404);
    });

    it('reads only what was marked: its cost does not grow with the table; a full pass (--full) reads the table, resumably, and finds garbage from before the marks', async () => {
      await collect();
      // A larger table written as an older version did (no marks): 140 repositories, each with
      // a manifest referencing one linked blob, and 10 with a link nothing references.
      const now = Date.now() - 3600_000;
      const items: Record<string, unknown>[] = [];
      const tag = fresh('bulk');
      const legacyGarbage: { key: string; repo: string; digest: string }[] = [];
      for (let i = 0; i < 150; i++) {
        const repo = `${tag}/r${i}`;
        const digest = sha256(Buffer.from(`${tag} blob ${i}`));
        const key = `blobs/${tag.replace('/', '-')}-${i}`;
        const common = { digest, size: 10, key, mediaType: LAYER_TYPE, createdAt: now };
        items.push({ pk: `BLOB#${digest}`, sk: 'BLOB', ...common }, { pk: `REPO#${repo}`, sk: `BLOB#${digest}`, repo, ...common });
        if (i >= 140) {
          legacyGarbage.push({ key, repo, digest });
          await r.registry.storage.objects.put(key, Buffer.from('0123456789'));
          continue;
        }
        const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: CONFIG_TYPE, digest, size: 10 }, layers: [] }));
        const m = sha256(body);
        items.push({ pk: `REPO#${repo}`, sk: `MANIFEST#${m}`, repo, digest: m, mediaType: MediaTypes.ociManifest, size: body.length, body, createdAt: now });
      }
      for (let i = 0; i < items.length; i += 25) {
        let pending: Record<string, unknown>[] | undefined = items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } }));
        while (pending?.length) pending = (await r.db.send(new BatchWriteCommand({ RequestItems: { [r.config.dynamo.table]: pending as never } }))).UnprocessedItems?.[r.config.dynamo.table] as never;
      }
      // Garbage made through the API: one blob linked and never referenced.
      const repo = fresh('small');
      const stray = await blob(repo, 444);
      const marked = await collect();
      assert.deepEqual(marked.freed, { links: 1, descriptors: 1, objects: 1, bytes: stray.size });
      assert.equal(marked.cost.dynamo.Scan, undefined, 'no scan');
      // The marks' shards, the repository (links, manifests), the digest index: a dozen Queries.
      assert.ok(marked.cost.dynamo.Query! <= 12, JSON.stringify(marked.cost));
      assert.ok(marked.cost.readUnits <= 16, `read units: ${JSON.stringify(marked.cost)}`);
      assert.equal(marked.candidates.repositories, 1);
      for (const g of legacyGarbage) assert.equal((await headBlob(g.repo, g.digest)).status, 200, 'unmarked garbage is not seen');

      // The full pass, stopped after two pages and resumed: it reads every item of the table.
      const store = () => new DynamoCollectorStore(r.db, r.config.dynamo.table, { scan: 100 });
      const full1 = await collectGarbage(store(), r.registry.storage, { dryRun: false, graceMs: 0, budgetMs: 60_000, full: true, maxCandidates: 2 });
      assert.equal(full1.stopped, 'budget');
      assert.equal(full1.cost.dynamo.Scan, 2);
      const full2 = await collectGarbage(store(), r.registry.storage, { dryRun: false, graceMs: 0, budgetMs: 60_000, full: true });
      assert.ok(full2.complete && full2.resumed, JSON.stringify(full2));
      const freed = full1.freed.links + full2.freed.links;
      assert.equal(freed, legacyGarbage.length, `${full1.freed.links} + ${full2.freed.links}`);
      assert.equal(full1.freed.descriptors + full2.freed.descriptors, legacyGarbage.length);
      assert.ok(full1.cost.dynamo.Scan! + full2.cost.dynamo.Scan! >= items.length / 100, 'it read the whole table');
      assert.ok(full1.cost.readUnits + full2.cost.readUnits > 20 * marked.cost.readUnits, `full ${full1.cost.readUnits + full2.cost.readUnits} vs marked ${marked.cost.readUnits} read units`);
      const stored = new Set(await blobObjects(r));
      for (const g of legacyGarbage) {
        assert.equal((await headBlob(g.repo, g.digest)).status, 404);
        assert.ok(![...stored].some((k) => k.endsWith(basename(g.key))), `${g.key} deleted`);
      }
      assert.equal((await headBlob(`${tag}/r0`, sha256(Buffer.from(`${tag} blob 0`)))).status, 200, 'referenced legacy blobs stay');
      assert.equal((await collect({ full: true })).found.links, 0);
    });

    it('the scheduled function (the gc handler, in a process of its own) collects with the grace period of its input, logs the report and emits it as metrics', async () => {
      const repo = fresh('scheduled');
      const stray = await blob(repo, 640);
      // The registry's own table and storage, as the scheduled function would see them.
      const env = { ...processEnv(driver), PATH: process.env.PATH!, NODE_NO_WARNINGS: '1', SKIFF_DATA_DIR: r.config.dataDir, S3_BUCKET: r.config.s3.bucket, DYNAMODB_TABLE: r.config.dynamo.table, SKIFF_AUTH: 'open', SKIFF_LOG_LEVEL: 'INFO' };
      const handler = async (input: string) => {
        const script = `const { gc } = await import('./functions/handlers.ts'); await gc(${input}, { getRemainingTimeInMillis: () => 900_000 });`;
        const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env });
        const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
        return { log: lines.find((l) => l.message === 'gc'), metrics: lines.find((l) => l._aws && 'GcFreedObjects' in l) };
      };
      const young = await handler('{ graceSeconds: 3600 }');
      assert.deepEqual(young.log.found, { links: 0, descriptors: 0, objects: 0, bytes: 0 }, 'inside the grace period');
      const run1 = await handler(`{ graceSeconds: '0' }`);
      assert.deepEqual(run1.log.freed, { links: 1, descriptors: 1, objects: 1, bytes: stray.size });
      assert.equal(run1.metrics.GcFreedObjects, 1);
      assert.equal(run1.metrics.GcFreedBytes, stray.size);
      assert.equal(run1.metrics.GcIncompleteRuns, 0);
      assert.equal((await headBlob(repo, stray.digest)).status, 404);
      await assert.rejects(handler(`{ graceSeconds: 'soon' }`), /graceSeconds must be a number/);
    });

    describe('races, held at the exact DynamoDB call', () => {
      /** The keys a transaction deletes (GC deletes a link in a transaction that marks its digest). */
      const deletes = (input: Record<string, unknown>) => ((input.TransactItems as { Delete?: { Key: { pk: string; sk: string } } }[] | undefined) ?? []).flatMap((t) => (t.Delete ? [t.Delete.Key] : []));
      const linkDeleteIn = (repo: string) => (command: string, input: Record<string, unknown>) =>
        command === 'TransactWriteItemsCommand' && deletes(input).some((k) => k.pk === `REPO#${repo}` && k.sk.startsWith('BLOB#'));
      const linkDelete = (digest: string) => (command: string, input: Record<string, unknown>) =>
        command === 'TransactWriteItemsCommand' && deletes(input).some((k) => k.pk.startsWith('REPO#') && k.sk === `BLOB#${digest}`);
      const descriptorDelete = (digest: string) => (command: string, input: Record<string, unknown>) =>
        command === 'DeleteItemCommand' && (input.Key as { pk?: string }).pk === `BLOB#${digest}` && (input.Key as { sk?: string }).sk === 'BLOB';

      /** A repository with a config and a layer linked, no manifest yet: garbage at grace 0. */
      async function pushing(name: string) {
        const repo = fresh(name);
        const config = await blob(repo, 250, CONFIG_TYPE);
        const layer = await blob(repo, 1200);
        const desc = (b: Blob) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size });
        const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc(config), layers: [desc(layer)] });
        return { repo, config, layer, text };
      }

      it('a manifest PUT that lands between GC reading the repository and deleting the layer\'s link keeps the link (GC\'s delete is refused)', async () => {
        const { repo, config, layer, text } = await pushing('put-first');
        // Held at GC's first delete of a link of the repository (config or layer): it has read
        // the repository, found no manifest and judged both links garbage.
        const pushed = holdBefore(r.db, linkDeleteIn(repo), () => putManifest(repo, 'v1', text));
        const report = await collect();
        assert.equal((await pushed).status, 201, 'the push landed while GC was held');
        assert.equal(report.found.links, 2);
        assert.equal(report.raced.links, 2, JSON.stringify(report));
        assert.equal(report.freed.links, 0);
        await assertIntact(r, repo, 'v1', [config.digest, layer.digest]);
      });

      // GC reads a repository's links, then its manifests: a push landing before or between the
      // two reads is seen as a manifest (read the other way round, one landing between would be
      // missed and its new usedBy taken as the delete's condition).
      for (const read of ['links', 'manifests'] as const) {
        it(`a manifest PUT that lands just before GC reads the repository's ${read} keeps its links`, async () => {
          const { repo, config, layer, text } = await pushing(`before-${read}`);
          const prefix = read === 'links' ? 'BLOB#' : 'MANIFEST#';
          const query = (command: string, input: Record<string, unknown>) =>
            command === 'QueryCommand' && (input.ExpressionAttributeValues as Record<string, unknown>)[':pk'] === `REPO#${repo}` && (input.ExpressionAttributeValues as Record<string, unknown>)[':prefix'] === prefix;
          const pushed = holdBefore(r.db, query, () => putManifest(repo, 'v1', text));
          const report = await collect();
          assert.equal((await pushed).status, 201);
          assert.equal(report.freed.links, 0, JSON.stringify(report));
          await assertIntact(r, repo, 'v1', [config.digest, layer.digest]);
        });
      }

      it('GC deleting a layer\'s link between a manifest PUT\'s reads and its write makes the PUT fail with 400 MANIFEST_BLOB_UNKNOWN, storing nothing', async () => {
        const { repo, layer, config, text } = await pushing('gc-first');
        const collected = holdBefore(r.db, (command) => command === 'TransactWriteItemsCommand', () => collect());
        const res = await putManifest(repo, 'v1', text);
        const report = await collected;
        assert.ok(report.freed.links >= 2, JSON.stringify(report));
        expectError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
        assert.ok([layer.digest, config.digest].includes(res.json().errors[0].detail.digest));
        expectError(await call(`${r.url}/v2/${repo}/manifests/v1`), 404, 'MANIFEST_UNKNOWN');
      });

      // GC held at its delete of the only link (it has judged the link garbage; the index then
      // shows the new link), or at its delete of the descriptor (it has read the index and found
      // no link: as when the index lags behind a link written after the cutoff). A mount (or a
      // dedupe at finish) then links the descriptor elsewhere.
      // (A mount cannot land at the descriptor's delete: its source link is gone by then.)
      for (const [how, at] of [['mount', 'link'], ['dedupe at finish', 'link'], ['dedupe at finish', 'descriptor']] as const) {
        it(`a ${how} that lands between GC reading the repository and deleting the ${at} keeps the descriptor and its bytes`, async () => {
          const source = fresh('source');
          const target = fresh('target');
          const b = await blob(source, 1500);
          const linked = holdBefore(r.db, at === 'link' ? linkDelete(b.digest) : descriptorDelete(b.digest), async () => {
            if (how === 'mount') return call(`${r.url}/v2/${target}/blobs/uploads/?mount=${b.digest}&from=${source}`, { method: 'POST' });
            return (await pushInPut(r.url, target, b.data)).finish;
          });
          const report = await collect();
          assert.equal((await linked).status, 201);
          assert.equal(report.freed.links, 1, "the source's link, unchanged, went");
          // Held at the descriptor, GC found no link and its conditional delete failed (linkedAt).
          assert.equal(report.raced.descriptors, at === 'descriptor' ? 1 : 0, JSON.stringify(report));
          assert.equal(report.freed.descriptors, 0);
          assert.equal(report.freed.objects, 0);
          assert.equal((await headBlob(source, b.digest)).status, 404);
          const config = await blob(target, 240, CONFIG_TYPE);
          await putImage(target, 'v1', config, [b]);
          await assertIntact(r, target, 'v1', [b.digest]);
        });
      }

      it('a manifest DELETE that lands after GC read its repository leaves the repository marked (GC clears only the mark it read): the next run frees what it unreferenced', async () => {
        const repo = fresh('delete-during');
        const c0 = await blob(repo, 210, CONFIG_TYPE);
        const c = await blob(repo, 220, CONFIG_TYPE);
        const layer = await blob(repo, 900);
        const m0 = await putImage(repo, 'old', c0, [layer]);
        const m = await putImage(repo, 'new', c, [layer]);
        await collect();
        assert.equal((await call(`${r.url}/v2/${repo}/manifests/${m0}`, { method: 'DELETE' })).status, 202); // marks the repository
        // GC has read the repository (m still references c and the layer) and clears its mark.
        const markClear = (command: string, input: Record<string, unknown>) =>
          command === 'DeleteItemCommand' && (input.Key as { pk: string }).pk.startsWith('GC#') && (input.Key as { sk: string }).sk === `REPO#${repo}`;
        const deleted = holdBefore(r.db, markClear, () => call(`${r.url}/v2/${repo}/manifests/${m}`, { method: 'DELETE' }));
        const first = await collect();
        assert.equal((await deleted).status, 202);
        assert.equal(first.freed.links, 1, 'c0, which m0 alone referenced');
        assert.equal((await headBlob(repo, layer.digest)).status, 200, 'm referenced it when GC read the repository');
        const second = await collect();
        assert.deepEqual(second.freed, { links: 2, descriptors: 2, objects: 2, bytes: c.size + layer.size }, JSON.stringify(second));
        for (const b of [c, layer]) assert.equal((await headBlob(repo, b.digest)).status, 404);
      });

      it('a mount whose write comes after GC deleted the descriptor mounts nothing (202, a new upload) and links nothing', async () => {
        const source = fresh('late-source');
        const target = fresh('late-target');
        const b = await blob(source, 1300);
        // The mount has read the source link; GC runs before the mount's transaction.
        const collected = holdBefore(r.db, (command) => command === 'TransactWriteItemsCommand', () => collect());
        const res = await call(`${r.url}/v2/${target}/blobs/uploads/?mount=${b.digest}&from=${source}`, { method: 'POST' });
        const report = await collected;
        assert.ok(report.freed.descriptors >= 1, JSON.stringify(report));
        assert.equal(res.status, 202, 'no mount: the client uploads the blob instead');
        assert.equal((await headBlob(target, b.digest)).status, 404);
        assert.equal(await objectKey(b.digest), undefined);
      });
    });
  });
}

/** The manifest and every blob it references are there, bytes included. */
async function assertIntact(r: TestRegistry, repo: string, tag: string, digests: string[]): Promise<void> {
  assert.equal((await call(`${r.url}/v2/${repo}/manifests/${tag}`)).status, 200);
  const stored = new Set((await blobObjects(r)).map((k) => basename(k)));
  for (const digest of digests) {
    assert.equal((await call(`${r.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' })).status, 200, digest);
    const key = (await r.registry.meta.blobs.getDescriptor(digest))?.key;
    assert.ok(key && stored.has(basename(key)), `the bytes of ${digest} are stored`);
  }
}
