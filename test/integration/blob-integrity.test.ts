/**
 * A digest can never be poisoned: whatever happens around a finish (a lost DynamoDB answer, a
 * concurrent blob DELETE, bytes lost from storage), the descriptor names bytes that exist, or
 * the next push of the digest repairs it. Reads of missing or short objects say so (404 and an
 * integrity report), never a 500 or a body shorter than its Content-Length.
 *
 * Faults are injected at the exact DynamoDB call by the fault layer (test/helpers/faults.ts),
 * which can apply a call and then lose its answer, with another request run in between.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { MiB, bytes, chunked, sha256 } from '../helpers/data.js';
import { injectFaults, holdBefore, nth } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { errorCode, expectError, patch, pushChunked, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, blobObjects, useRegistry } from '../helpers/registry.js';
import type { IntegrityKind } from '../../lib/telemetry.js';

function kinds(r: TestRegistry, digest: string): IntegrityKind[] {
  return r.integrityErrors.filter((f) => f.digest === digest).map((f) => f.kind);
}

/** The blob reads back in every repository, byte for byte. */
async function readsBack(r: TestRegistry, repos: string[], data: Buffer): Promise<void> {
  for (const repo of repos) {
    const got = await call(`${r.url}/v2/${repo}/blobs/${sha256(data)}`);
    assert.equal(got.status, 200, `${repo}: ${got.body.toString().slice(0, 300)}`);
    assert.ok(got.body.equals(data), `${repo}: the bytes read back`);
  }
}

/** The descriptor names an object that exists at the recorded size. */
async function descriptorHolds(r: TestRegistry, data: Buffer): Promise<string> {
  const descriptor = await r.registry.meta.blobs.getDescriptor(sha256(data));
  assert.ok(descriptor, 'the digest has a descriptor');
  assert.equal(await r.registry.storage.objects.stat(descriptor.key), data.length, `${descriptor.key} holds the bytes`);
  return descriptor.key;
}

for (const driver of DRIVERS) {
  describe(`blob integrity (${driver})`, () => {
    const r = useRegistry(driver);
    const faults = () => injectFaults(r);

    it('keeps the blob when the finish transaction landed, its answer was lost and the look afterwards failed too', async () => {
      const data = bytes(2 * MiB + 7, 80);
      const location = await startUpload(r.url, 'lost/answer');
      assert.equal((await patch(location, data, 0)).status, 202);
      const layer = faults();
      // The transaction lands, its answer is lost, and the next read (the look at what landed) fails too.
      layer.arm(nth('TransactWriteItemsCommand', 0), 'lose', { after: async () => layer.add(nth('GetItemCommand', 0), 'fail') });
      const res = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      const hit = layer.disarm().filter((c) => c.fault);
      assert.deepEqual(hit.map((c) => `${c.name} ${c.fault}`), ['TransactWriteItemsCommand lose', 'GetItemCommand fail'], 'both faults fired');
      // The upload is over (its record went with the transaction): the client cannot tell, and
      // hears so; what matters is that the blob it pushed is stored and readable.
      expectError(res, 404, 'BLOB_UPLOAD_UNKNOWN');
      assert.equal((await call(`${r.url}/v2/lost/answer/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 200);
      await readsBack(r, ['lost/answer'], data);
      await descriptorHolds(r, data);
      // Not poisoned: the next push of the digest elsewhere links live bytes.
      await pushChunked(r.url, 'lost/again', data, [MiB]);
      await readsBack(r, ['lost/answer', 'lost/again'], data);
      assert.deepEqual(kinds(r, sha256(data)), []);
    });

    it('keeps the bytes the descriptor names when a blob DELETE removes the link between the transaction and the look', async () => {
      const data = bytes(2 * MiB + 9, 81);
      const digest = sha256(data);
      const location = await startUpload(r.url, 'deleted/meanwhile');
      assert.equal((await patch(location, data, 0)).status, 202);
      const layer = faults();
      let deleted: number | undefined;
      // Held at the exact point: the transaction landed, its answer has not come back.
      layer.arm(nth('TransactWriteItemsCommand', 0), 'lose', {
        after: async () => (deleted = (await call(`${r.url}/v2/deleted/meanwhile/blobs/${digest}`, { method: 'DELETE' })).status),
      });
      const res = await call(withDigest(location, digest), { method: 'PUT' });
      assert.ok(layer.fired);
      layer.disarm();
      assert.equal(deleted, 202, 'the DELETE ran in between');
      assert.equal(res.status, 201, res.body.toString());
      assert.equal((await call(`${r.url}/v2/deleted/meanwhile/blobs/${digest}`, { method: 'HEAD' })).status, 404, 'the DELETE came after');
      const kept = await descriptorHolds(r, data);
      const stored = await blobObjects(r);

      await pushChunked(r.url, 'deleted/other', data, [MiB]);
      await readsBack(r, ['deleted/other'], data);
      assert.equal(await descriptorHolds(r, data), kept, 'the live copy stays the kept one');
      assert.deepEqual((await blobObjects(r)).filter((k) => !stored.includes(k)), [], 'the second push left no copy behind');
      assert.deepEqual(kinds(r, digest), []);
    });

    it('says a blob whose bytes are gone is missing, reports it, and heals the digest on the next push', async () => {
      const data = bytes(MiB + 3, 82);
      const digest = sha256(data);
      await pushChunked(r.url, 'heal/first', data, [MiB]);
      const lost = await descriptorHolds(r, data);
      await r.registry.storage.objects.delete([lost]);

      const res = await call(`${r.url}/v2/heal/first/blobs/${digest}`);
      expectError(res, 404, 'BLOB_UNKNOWN');
      assert.match(res.json().errors[0].message, /missing from storage/);
      assert.deepEqual(kinds(r, digest), ['object-missing']);

      await pushChunked(r.url, 'heal/second', data, [MiB]);
      const fresh = await descriptorHolds(r, data);
      assert.notEqual(fresh, lost);
      assert.deepEqual(kinds(r, digest), ['object-missing', 'object-missing', 'descriptor-repaired']);
      // Both repositories read it: the first one's link still names the dead key and the read
      // falls back to the descriptor.
      await readsBack(r, ['heal/second', 'heal/first'], data);
    });

    it('two pushes repairing one dead descriptor at once: one repoints it, the other keeps that copy and drops its own', async () => {
      const data = bytes(MiB + 13, 87);
      const digest = sha256(data);
      await pushChunked(r.url, 'repair/race-a', data, [MiB]);
      const dead = await descriptorHolds(r, data);
      await r.registry.storage.objects.delete([dead]);
      const stored = await blobObjects(r);

      const location = await startUpload(r.url, 'repair/race-b');
      assert.equal((await patch(location, data, 0)).status, 202);
      // Held at its conditional repoint of the descriptor (in the transaction that ends its
      // upload) while another push repairs it first.
      const repaired = holdBefore(
        r.db,
        (command, input) => command === 'TransactWriteItemsCommand' && JSON.stringify(input).includes(digest) && JSON.stringify(input).includes(':from'),
        () => pushChunked(r.url, 'repair/race-c', data, [MiB]),
      );
      const res = await call(withDigest(location, digest), { method: 'PUT' });
      assert.equal(res.status, 201, res.body.toString());
      await repaired;

      const kept = await descriptorHolds(r, data);
      // (blobObjects names S3 keys in full, files by their name in blobs/)
      const added = (await blobObjects(r)).filter((k) => !stored.includes(k)).map((k) => k.replace(/^blobs\//, ''));
      assert.deepEqual(added, [kept.replace(/^blobs\//, '')], 'one copy: the first repair');
      assert.equal(kinds(r, digest).filter((k) => k === 'descriptor-repaired').length, 1);
      await readsBack(r, ['repair/race-a', 'repair/race-b', 'repair/race-c'], data);
    });

    it('treats a short object as missing: 404 instead of a body shorter than its Content-Length, then heals', async () => {
      const data = bytes(MiB + 5, 83);
      const digest = sha256(data);
      await pushChunked(r.url, 'short/first', data, [MiB]);
      const key = await descriptorHolds(r, data);
      // An object cut short (a crash before the data reached the disk): empty.
      if (driver === 'fs') await r.registry.storage.objects.put(key, new Uint8Array(0));
      else await r.s3.send(new PutObjectCommand({ Bucket: r.config.s3.bucket, Key: key, Body: data.subarray(0, 1000) }));

      expectError(await call(`${r.url}/v2/short/first/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
      expectError(await call(`${r.url}/v2/short/first/blobs/${digest}`, { headers: { Range: 'bytes=2000-2999' } }), 404, 'BLOB_UNKNOWN');
      assert.deepEqual(kinds(r, digest), ['object-truncated', 'object-truncated']);

      await pushChunked(r.url, 'short/second', data, [MiB]);
      assert.notEqual(await descriptorHolds(r, data), key);
      assert.ok(kinds(r, digest).includes('descriptor-repaired'));
      await readsBack(r, ['short/second', 'short/first'], data);
    });

    it('frees the bytes of a finish whose transaction did not land, and ends the upload', async () => {
      const data = bytes(2 * MiB + 11, 84);
      const location = await startUpload(r.url, 'not/landed');
      const id = new URL(location).pathname.split('/').pop()!;
      assert.equal((await patch(location, data, 0)).status, 202);
      const layer = faults();
      layer.arm(nth('TransactWriteItemsCommand', 0), 'fail');
      // The upload is over (a retried finish could not complete it): the client starts again.
      expectError(await call(withDigest(location, sha256(data)), { method: 'PUT' }), 404, 'BLOB_UPLOAD_UNKNOWN');
      assert.ok(layer.fired);
      layer.disarm();
      assert.equal((await call(`${r.url}/v2/not/landed/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 404);
      assert.equal(await r.registry.meta.blobs.getDescriptor(sha256(data)), undefined);
      assert.equal(errorCode(await call(location)), 'BLOB_UPLOAD_UNKNOWN');
      assert.deepEqual((await blobObjects(r)).filter((k) => k.includes(id)), [], 'no orphaned bytes');
      await pushChunked(r.url, 'not/landed', data, [MiB]);
      await readsBack(r, ['not/landed'], data);
    });
  });
}

describe('S3 multipart repair is reported', () => {
  const r = useRegistry('s3');

  it('reports the repair of a multipart upload a failed request wrote into', async () => {
    const head = bytes(3 * MiB, 85);
    const location = await startUpload(r.url, 'repair/reported');
    assert.equal((await patch(location, head, 0)).status, 202);
    // 3 MiB of tail + 8 MiB sent: part 1 is overwritten with other bytes, then the body ends short.
    const cut = await call(location, { method: 'PATCH', body: chunked(bytes(8 * MiB, 86), MiB), headers: { 'Content-Range': `${3 * MiB}-${13 * MiB - 1}` } });
    assert.equal(cut.status, 400);
    const put = await call(withDigest(location, sha256(head)), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
    assert.deepEqual(r.integrityErrors.map((f) => f.kind), ['multipart-repaired']);
    assert.match(r.integrityErrors[0]!.message, /putting back/);
    await readsBack(r, ['repair/reported'], head);
  });
});
