/**
 * The record of a stale writer in the DynamoDB upload store, driven directly with a
 * controllable clock: a lease taken over from a writer whose lease ran out marks the upload
 * `contended` for every later lease, until a commit; a lease given back or never taken over
 * leaves it uncontended. (The filesystem driver starts a scratch file of its own when
 * contended: test/integration/upload-retries.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoUploadStore } from '../../lib/metadata/dynamo/uploads.js';
import { createDocumentClient, ensureTable } from '../../lib/metadata/dynamo/table.js';
import { backends, uniqueName } from '../helpers/backends.js';

describe('DynamoDB upload store: stale writers', () => {
  let db: DynamoDBDocumentClient;
  let table: string;
  let clock = 1_000_000;
  let store: DynamoUploadStore;
  const write = (size: number) => ({ key: 'blobs/x', size });

  before(async () => {
    table = uniqueName('stale');
    db = createDocumentClient({ table, region: 'us-east-1', endpoint: backends().dynamoEndpoint, credentials: { accessKeyId: 'l', secretAccessKey: 'l' } });
    await ensureTable(db, table);
    store = new DynamoUploadStore(db, table, { ttlMs: 60_000, leaseMs: 5_000, now: () => clock });
  });
  after(() => db.destroy());

  it('marks the upload contended from a takeover until the next commit', async () => {
    await store.create('s1', 'repo', write(0));
    const first = await store.acquire('s1', 'repo');
    assert.equal(first.contended, false, 'a fresh upload');
    await store.commit(first, write(10));
    const second = await store.acquire('s1', 'repo');
    assert.equal(second.contended, false, 'after a commit');
    clock += 6_000; // `second` stalls past its lease
    const third = await store.acquire('s1', 'repo');
    assert.equal(third.contended, true, 'taken over from a writer that may still write');
    await store.release(third);
    const fourth = await store.acquire('s1', 'repo');
    assert.equal(fourth.contended, true, 'still: the stale writer may still write, whoever took over gave up');
    await store.commit(fourth, write(20));
    const fifth = await store.acquire('s1', 'repo');
    assert.equal(fifth.contended, false, 'a commit made the record name a write of its own');
    await store.release(fifth);
  });

  it('a lease given back leaves the upload uncontended', async () => {
    await store.create('s2', 'repo', write(0));
    await store.release(await store.acquire('s2', 'repo'));
    clock += 6_000;
    assert.equal((await store.acquire('s2', 'repo')).contended, false);
  });
});
