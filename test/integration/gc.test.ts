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
import { ScanCommand } from '@aws-sdk/lib-dynamodb';
import { run } from '../../lib/admin/cli.js';
import { DynamoCollectorStore } from '../../lib/metadata/dynamo/gc.js';
import { type CollectOptions, type CollectReport, collectGarbage } from '../../lib/registry/gc.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { bytes } from '../helpers/data.js';
import { holdBefore } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { CONFIG_TYPE, LAYER_TYPE, type Blob } from '../helpers/manifests.js';
import { expectError, pushInPut } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, blobObjects, useRegistry } from '../helpers/registry.js';
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
    async function table(): Promise<string[]> {
      const items: string[] = [];
      let start: Record<string, unknown> | undefined;
      do {
        const res = await r.db.send(new ScanCommand({ TableName: r.config.dynamo.table, ExclusiveStartKey: start, ConsistentRead: true }));
        for (const item of res.Items ?? []) items.push(JSON.stringify(item, (_, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)));
        start = res.LastEvaluatedKey;
      } while (start);
      return items.sort();
    }

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
      assert.ok(out.some((l) => l.startsWith(`would free: ${dry!.found.links} links, ${dry!.found.descriptors} descriptors, ${dry!.found.objects} objects, ${dry!.found.bytes} bytes`)), out.join('\n'));
      assert.ok(out.some((l) => /^cost: DynamoDB Scan \d+/.test(l)), out.join('\n'));
      const real = await collect();
      assert.deepEqual(real.freed, dry!.found, 'the run frees what the dry run found');
    });

    it('refuses bad gc options with a usage error, running nothing', async () => {
      for (const args of [['--grace'], ['--grace', '-1'], ['--budget', '0'], ['--frobnicate']]) {
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
    });

    it('a run whose scan does not finish within its budget deletes nothing and says so', async () => {
      const repo = fresh('budget');
      await blob(repo, 500); // garbage at grace 0
      const before = [await table(), await objects()];
      const report = await collect({ budgetMs: 0 });
      assert.equal(report.complete, false);
      assert.deepEqual(report.found, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
      assert.deepEqual([await table(), await objects()], before);
      // A scan that read everything but reports it stopped (its budget ran out at the last
      // page): what it read proves nothing, so nothing goes.
      const store = new DynamoCollectorStore(r.db, r.config.dynamo.table);
      const cut = { cost: store.cost, scan: (visit: Parameters<typeof store.scan>[0], deadline: number) => store.scan(visit, deadline).then(() => false), deleteLink: store.deleteLink.bind(store), deleteDescriptor: store.deleteDescriptor.bind(store) };
      const partial = await collectGarbage(cut, r.registry.storage, { dryRun: false, graceMs: 0, budgetMs: 60_000 });
      assert.ok(partial.scanned.links > 0, 'it read the links');
      assert.deepEqual(partial.freed, { links: 0, descriptors: 0, objects: 0, bytes: 0 });
      assert.equal(partial.cost.dynamo.DeleteItem, undefined);
      assert.deepEqual([await table(), await objects()], before);
      const out: string[] = [];
      const code = await run(['gc', '--grace', '0'], () => assert.fail('no user store'), { out: (l) => void out.push(l), err: (l) => void out.push(l), readSecret: async () => '' }, () => collect({ budgetMs: 0 }));
      assert.equal(code, 1, 'the admin command fails');
      assert.ok(out.some((l) => l.includes('(incomplete: budget reached)')) && out.some((l) => l.includes('nothing was deleted')), out.join('\n'));
      assert.equal((await collect()).freed.links, 1, 'a run with time enough frees it');
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
        return { log: lines.find((l) => l.message === 'gc'), metrics: lines.find((l) => l._aws) };
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
      const linkDeleteIn = (repo: string) => (command: string, input: Record<string, unknown>) =>
        command === 'DeleteItemCommand' && (input.Key as { pk?: string }).pk === `REPO#${repo}`;
      const linkDelete = (digest: string) => (command: string, input: Record<string, unknown>) =>
        command === 'DeleteItemCommand' && (input.Key as { sk?: string }).sk === `BLOB#${digest}`;

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

      // GC held at its delete of the only link: it has read the table and judged the
      // descriptor garbage. A mount (or a dedupe at finish) then links the descriptor elsewhere.
      for (const how of ['mount', 'dedupe at finish'] as const) {
        it(`a ${how} that lands between GC reading the table and deleting the descriptor keeps the descriptor and its bytes`, async () => {
          const source = fresh('source');
          const target = fresh('target');
          const b = await blob(source, 1500);
          const linked = holdBefore(r.db, linkDelete(b.digest), async () => {
            if (how === 'mount') return call(`${r.url}/v2/${target}/blobs/uploads/?mount=${b.digest}&from=${source}`, { method: 'POST' });
            return (await pushInPut(r.url, target, b.data)).finish;
          });
          const report = await collect();
          assert.equal((await linked).status, 201);
          assert.equal(report.freed.links, 1, "the source's link, unchanged, went");
          assert.equal(report.raced.descriptors, 1, JSON.stringify(report));
          assert.equal(report.freed.objects, 0);
          assert.equal((await headBlob(source, b.digest)).status, 404);
          const config = await blob(target, 240, CONFIG_TYPE);
          await putImage(target, 'v1', config, [b]);
          await assertIntact(r, target, 'v1', [b.digest]);
        });
      }

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
