/**
 * The DynamoDB upload store against DynamoDB Local: leases, fencing, expiry and the commit
 * point, driven directly (with a controllable clock) rather than through HTTP.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoUploadStore } from '../../lib/metadata/dynamo/uploads.js';
import { DynamoBlobIndex } from '../../lib/metadata/dynamo/blobs.js';
import { createDocumentClient, ensureTable } from '../../lib/metadata/dynamo/table.js';
import { LeaseLost, OffsetConflict, UploadGone } from '../../lib/metadata/types.js';
import { backends, uniqueName } from '../helpers/backends.js';

describe('DynamoDB upload store', () => {
  let db: DynamoDBDocumentClient;
  let table: string;
  let clock = 1_000_000;
  let store: DynamoUploadStore;
  const write = (size: number) => ({ key: 'blobs/x', size });
  const descriptor = (digest: string, key: string) => ({ digest, size: 1, key, mediaType: 'application/octet-stream', createdAt: 1 });

  before(async () => {
    table = uniqueName('meta');
    db = createDocumentClient({ table, region: 'us-east-1', endpoint: backends().dynamoEndpoint, credentials: { accessKeyId: 'l', secretAccessKey: 'l' } });
    await ensureTable(db, table);
    store = new DynamoUploadStore(db, table, { ttlMs: 60_000, leaseMs: 5_000, now: () => clock, batch: 3 });
  });
  after(() => db.destroy());

  it('grants one lease at an offset; a second request is refused as busy, with the offset', async () => {
    await store.create('u1', 'repo', write(0));
    const lease = await store.acquire('u1', 'repo', 0);
    await assert.rejects(store.acquire('u1', 'repo', 0), (e: unknown) => e instanceof OffsetConflict && e.busy && e.offset === 0);
    await store.commit(lease, write(10));
    await assert.rejects(store.acquire('u1', 'repo', 0), (e: unknown) => e instanceof OffsetConflict && !e.busy && e.offset === 10);
    const next = await store.acquire('u1', 'repo', 10);
    assert.equal(next.upload.offset, 10);
    assert.ok(next.seq > lease.seq);
    await store.release(next);
  });

  it('lets a new writer take over an expired lease, and then refuses everything the old one tries', async () => {
    await store.create('u2', 'repo', write(0));
    const stale = await store.acquire('u2', 'repo');
    clock += 6_000; // past the lease
    const fresh = await store.acquire('u2', 'repo');
    await assert.rejects(store.renew(stale), LeaseLost);
    await assert.rejects(store.commit(stale, write(99)), LeaseLost);
    await assert.rejects(store.finish(stale, descriptor('sha256:u2', 'blobs/u2')), LeaseLost);
    await store.commit(fresh, write(5));
    assert.equal((await store.get('u2', 'repo'))?.offset, 5);
  });

  it('stores part records with the commit, in several transactions when there are many', async () => {
    await store.create('u3', 'repo', write(0));
    const lease = await store.acquire('u3', 'repo');
    const ledger = store.ledger(lease);
    for (let n = 1; n <= 8; n++) ledger.record({ number: n, etag: `"e${n}"`, size: 5 * 1024 * 1024 });
    await store.commit(lease, { ...write(8 * 5 * 1024 * 1024), parts: 8 });
    const next = await store.acquire('u3', 'repo');
    const parts = await store.ledger(next).list(8);
    assert.deepEqual(parts.map((p) => p.etag), [1, 2, 3, 4, 5, 6, 7, 8].map((n) => `"e${n}"`));
    await assert.rejects(store.ledger(next).list(9), /incomplete/);
    await store.release(next);
  });

  it('fences part records: a writer under an older lease cannot overwrite newer records', async () => {
    await store.create('u4', 'repo', write(0));
    const stale = await store.acquire('u4', 'repo');
    clock += 6_000;
    const fresh = await store.acquire('u4', 'repo');
    store.ledger(fresh).record({ number: 1, etag: '"fresh"', size: 1 });
    await store.commit(fresh, { ...write(1), parts: 1 });
    // The stale writer's commit fails as a whole: neither its offset nor its part record lands.
    store.ledger(stale).record({ number: 1, etag: '"stale"', size: 1 });
    await assert.rejects(store.commit(stale, { ...write(2), parts: 1 }), LeaseLost);
    const check = await store.acquire('u4', 'repo');
    assert.equal((await store.ledger(check).list(1))[0]!.etag, '"fresh"');
    assert.equal(check.upload.offset, 1);
    await store.release(check);
  });

  it('hides expired uploads from every operation', async () => {
    await store.create('u5', 'repo', write(0));
    clock += 61_000;
    assert.equal(await store.get('u5', 'repo'), undefined);
    await assert.rejects(store.acquire('u5', 'repo'), UploadGone);
    assert.equal(await store.remove('u5', 'repo'), undefined);
  });

  it('finishes once: descriptor, link and session in one transaction, deduplicating by digest', async () => {
    const blobs = new DynamoBlobIndex(db, table);
    await store.create('u6', 'a', write(1));
    await store.create('u7', 'b', write(1));
    const first = await store.finish(await store.acquire('u6', 'a'), descriptor('sha256:same', 'blobs/u6'));
    assert.equal(first.descriptor.key, 'blobs/u6', 'the first upload stores its own copy');
    const second = await store.finish(await store.acquire('u7', 'b'), descriptor('sha256:same', 'blobs/u7'));
    assert.equal(second.descriptor.key, 'blobs/u6', 'the second upload links the bytes already stored');
    assert.equal((await blobs.getLink('b', 'sha256:same'))?.key, 'blobs/u6');
    assert.equal(await store.get('u6', 'a'), undefined);
    assert.equal(await store.get('u7', 'b'), undefined);
  });
});
