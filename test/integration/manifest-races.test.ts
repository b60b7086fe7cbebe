/**
 * Manifest, tag and reference writes under races and lost answers, on the real backends: one
 * side held at the exact DynamoDB call while another request runs, and answers that are lost
 * after DynamoDB applied the write (the SDK resends, or the app sees the timeout).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { call } from '../helpers/http.js';
import { expectError } from '../helpers/oci.js';
import { manifestClient } from '../helpers/manifests.js';
import { DRIVERS, useRegistry } from '../helpers/registry.js';
import { type CallRecord, DYNAMO_WRITES, type FaultKind, holdBefore, injectFaults, nthCall } from '../helpers/faults.js';
import { MediaTypes } from '../../lib/oci/manifest.js';

/** Holds the flow's first write: the reads it decided on are done, nothing is written yet. */
const firstWrite = (command: string) => DYNAMO_WRITES.has(command);
const dynamoWrite = (c: CallRecord) => c.backend === 'dynamodb' && DYNAMO_WRITES.has(c.name);

/** The first send of each transaction (transact() sends one again under the same idempotency token). */
function firstSends(): (c: CallRecord) => boolean {
  const tokens = new Set<string>();
  return (c) => {
    const token = (c.input as { ClientRequestToken?: string }).ClientRequestToken;
    if (c.name !== 'TransactWriteItemsCommand' || !token || tokens.has(token)) return false;
    tokens.add(token);
    return true;
  };
}

for (const driver of DRIVERS) {
  describe(`manifest races (${driver})`, () => {
    const r = useRegistry(driver);
    const { image, put, get } = manifestClient(r, 31000, { configSize: 120, layerSizes: [400] });
    const del = (repo: string, ref: string) => call(`${r.url}/v2/${repo}/manifests/${ref}`, { method: 'DELETE' });

    it('DELETE of a manifest keeps a tag that a push moved to another manifest meanwhile', async () => {
      const a = await image('race/moved');
      const b = await image('race/moved');
      for (const tag of ['latest', 'v1']) assert.equal((await put('race/moved', tag, a.text)).status, 201);
      // Between the delete's reading of the tags on A and its writes, `latest` moves to B.
      const moved = holdBefore(r.db, firstWrite, () => put('race/moved', 'latest', b.text));
      assert.equal((await del('race/moved', a.digest)).status, 202);
      assert.equal((await moved).status, 201, 'the racing push landed');
      const latest = await get('race/moved', 'latest');
      assert.equal(latest.status, 200, 'the moved tag is kept');
      assert.equal(latest.header('docker-content-digest'), b.digest);
      assert.equal((await get('race/moved', 'latest', {}, 'HEAD')).header('docker-content-digest'), b.digest);
      expectError(await get('race/moved', 'v1'), 404, 'MANIFEST_UNKNOWN');
      expectError(await get('race/moved', a.digest), 404, 'MANIFEST_UNKNOWN');
      assert.deepEqual((await call(`${r.url}/v2/race/moved/tags/list`)).json().tags, ['latest']);
    });

    it('refuses a manifest PUT (400 MANIFEST_BLOB_UNKNOWN) when a layer it references is deleted before it is written, storing nothing', async () => {
      const m = await image('race/layer');
      const layer = m.layers[0]!;
      const deleted = holdBefore(r.db, firstWrite, () => call(`${r.url}/v2/race/layer/blobs/${layer.digest}`, { method: 'DELETE' }));
      const res = await put('race/layer', 'v1', m.text);
      assert.equal((await deleted).status, 202, 'the layer was deleted in between');
      expectError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
      assert.equal(res.json().errors[0].detail.digest, layer.digest);
      expectError(await get('race/layer', 'v1'), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('race/layer', 'v1', {}, 'HEAD')).status, 404);
      expectError(await get('race/layer', m.digest), 404, 'MANIFEST_UNKNOWN');
    });

    it('refuses an index PUT (400 MANIFEST_BLOB_UNKNOWN) when a child manifest is deleted before it is written, storing nothing', async () => {
      const child = await image('race/child');
      assert.equal((await put('race/child', child.digest, child.text)).status, 201);
      const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [child.desc] });
      const deleted = holdBefore(r.db, firstWrite, () => del('race/child', child.digest));
      const res = await put('race/child', 'multi', index, MediaTypes.ociIndex);
      assert.equal((await deleted).status, 202, 'the child was deleted in between');
      expectError(res, 400, 'MANIFEST_BLOB_UNKNOWN');
      assert.equal(res.json().errors[0].detail.digest, child.digest);
      expectError(await get('race/child', 'multi'), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('race/child', 'multi', {}, 'HEAD')).status, 404);
    });

    it('deletes a manifest with more tags than one transaction holds, through lost answers on each of its transactions', async () => {
      const faults = injectFaults(r);
      const repo = 'race/many-tags';
      const m = await image(repo);
      assert.equal((await put(repo, 'first', m.text)).status, 201);
      // 120 more tags on it, written directly in the documented layout (a tag and its reverse entry).
      const tags = Array.from({ length: 120 }, (_, i) => `t${i}`);
      const items = tags.flatMap((tag) => [
        { pk: `REPO#${repo}`, sk: `TAG#${tag}#${tag}`, tag, digest: m.digest, mediaType: MediaTypes.ociManifest, size: m.desc.size, updatedAt: 1 },
        { pk: `REPO#${repo}`, sk: `TAGGED#${m.digest}#${tag}`, tag, digest: m.digest },
      ]);
      for (let i = 0; i < items.length; i += 25) {
        await r.db.send(new BatchWriteCommand({ RequestItems: { [r.config.dynamo.table]: items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } })) } }));
      }
      assert.equal((await get(repo, 't119', {}, 'HEAD')).status, 200);
      // Every transaction of the delete (two of tags, then the manifest's) loses the answer to
      // its first send: a transaction is a new one when its idempotency token is.
      faults.arm(firstSends(), 'lose', { times: Infinity });
      const res = await del(repo, m.digest);
      const calls = faults.disarm();
      assert.equal(res.status, 202, res.body.toString());
      const writes = calls.filter(dynamoWrite);
      assert.equal(writes.filter((c) => c.fault).length, 3, 'three transactions lost their answer');
      assert.equal(writes.length, 6, `three transactions, each sent again once: ${writes.map((c) => c.name)}`);
      expectError(await get(repo, m.digest), 404, 'MANIFEST_UNKNOWN');
      for (const tag of ['first', 't0', 't60', 't119']) {
        assert.equal((await get(repo, tag, {}, 'HEAD')).status, 404, tag);
        expectError(await get(repo, tag), 404, 'MANIFEST_UNKNOWN');
      }
      assert.deepEqual((await call(`${r.url}/v2/${repo}/tags/list`)).json().tags, []);
    });

    for (const fault of ['lose-retried', 'lose'] as FaultKind[]) {
      const how = fault === 'lose-retried' ? 'the SDK resends it' : 'the app sees the timeout';
      it(`answers each write whose DynamoDB answer was lost (${how}) as if it had arrived`, async () => {
        const faults = injectFaults(r);
        const repo = `race/lost-${fault}`;
        const m = await image(repo);
        const other = await image(repo);
        const writeLost = async (run: () => Promise<Awaited<ReturnType<typeof call>>>, status: number, what: string) => {
          faults.arm(nthCall(dynamoWrite, 0), fault);
          const res = await run();
          assert.ok(faults.fired, `${what}: the fault acted`);
          faults.disarm();
          assert.equal(res.status, status, `${what}: ${res.body.toString()}`);
        };

        await writeLost(() => put(repo, 'v1', m.text), 201, 'PUT by tag');
        assert.equal((await get(repo, 'v1')).body.toString(), m.text);
        await writeLost(() => put(repo, 'v1', other.text), 201, 'PUT moving the tag');
        assert.equal((await get(repo, 'v1')).header('docker-content-digest'), other.digest);
        assert.equal((await put(repo, 'v2', m.text)).status, 201);

        await writeLost(() => del(repo, 'v1'), 202, 'DELETE of a tag');
        expectError(await get(repo, 'v1'), 404, 'MANIFEST_UNKNOWN');
        assert.equal((await get(repo, other.digest)).status, 200, 'the manifest stays');

        await writeLost(() => del(repo, m.digest), 202, 'DELETE of a manifest');
        expectError(await get(repo, m.digest), 404, 'MANIFEST_UNKNOWN');
        expectError(await get(repo, 'v2'), 404, 'MANIFEST_UNKNOWN');
        assert.equal((await get(repo, 'v2', {}, 'HEAD')).status, 404);
        assert.deepEqual((await call(`${r.url}/v2/${repo}/tags/list`)).json().tags, []);
      });
    }
  });
}
