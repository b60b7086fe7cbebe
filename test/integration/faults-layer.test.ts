/**
 * Self-test of the fault layer (test/helpers/faults.ts) on the real backends: each fault does
 * what it says to the call it targets, and only to that call.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { GetCommand, PutCommand, TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import { Contended } from '../../lib/metadata/types.js';
import { faultsFor, holdBefore, injectFaults, nth } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { patch, startUpload } from '../helpers/oci.js';
import { useRegistry } from '../helpers/registry.js';

describe('fault layer: SDK clients', () => {
  const r = useRegistry('s3');
  const table = () => r.config.dynamo.table;
  const bucket = () => r.config.s3.bucket;
  const exists = async (Key: string) =>
    r.s3.send(new GetObjectCommand({ Bucket: bucket(), Key })).then(
      () => true,
      () => false,
    );
  const item = async (pk: string) => (await r.db.send(new GetCommand({ TableName: table(), Key: { pk, sk: 'X' }, ConsistentRead: true }))).Item;

  it('counts one call per command sent, in order, only while recording', async () => {
    const faults = injectFaults(r);
    await r.s3.send(new PutObjectCommand({ Bucket: bucket(), Key: 'self/0', Body: 'a' }));
    faults.record();
    await r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-count', sk: 'X' } }));
    await r.s3.send(new PutObjectCommand({ Bucket: bucket(), Key: 'self/1', Body: 'b' }));
    const calls = faults.disarm();
    assert.deepEqual(
      calls.map((c) => [c.index, c.backend, c.name]),
      [
        [0, 'dynamodb', 'PutItemCommand'],
        [1, 's3', 'PutObjectCommand'],
      ],
    );
  });

  it('fail: the call does not apply and the caller gets an error', async () => {
    const faults = injectFaults(r);
    faults.arm(0, 'fail');
    await assert.rejects(r.s3.send(new PutObjectCommand({ Bucket: bucket(), Key: 'self/fail', Body: 'x' })), /failed before it applied/);
    assert.equal(faults.fired, true);
    faults.disarm();
    assert.equal(await exists('self/fail'), false);
  });

  it('lose: the call applies and the caller gets a timeout', async () => {
    const faults = injectFaults(r);
    faults.arm(0, 'lose');
    await assert.rejects(r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-lose', sk: 'X' } })), { name: 'TimeoutError' });
    faults.disarm();
    assert.ok(await item('self-lose'));
  });

  it('lose-retried: the retry of a conditional write meets the write it already made', async () => {
    const faults = injectFaults(r);
    faults.arm(0, 'lose-retried');
    const put = new PutCommand({ TableName: table(), Item: { pk: 'self-retried', sk: 'X' }, ConditionExpression: 'attribute_not_exists(pk)' });
    await assert.rejects(r.db.send(put), ConditionalCheckFailedException);
    faults.disarm();
    assert.ok(await item('self-retried'));
  });

  it('delay: the call applies only after the delay', async () => {
    const faults = injectFaults(r, { delayMs: 400 });
    faults.arm(0, 'delay');
    const pending = r.s3.send(new PutObjectCommand({ Bucket: bucket(), Key: 'self/delay', Body: 'x' }));
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(await exists('self/delay'), false, 'not applied while delayed');
    await pending;
    faults.disarm();
    assert.equal(await exists('self/delay'), true);
  });

  it('throttle: S3 answers 503 SlowDown, DynamoDB throughput exceeded (a transaction too); nothing applies', async () => {
    const faults = injectFaults(r);
    faults.arm(0, 'throttle');
    await assert.rejects(r.s3.send(new PutObjectCommand({ Bucket: bucket(), Key: 'self/slow', Body: 'x' })), (e: any) => e.name === 'SlowDown' && e.$metadata.httpStatusCode === 503);
    faults.arm(0, 'throttle');
    await assert.rejects(r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-thr', sk: 'X' } })), { name: 'ProvisionedThroughputExceededException' });
    faults.arm(0, 'throttle');
    const tx = new TransactWriteCommand({ TransactItems: [{ Put: { TableName: table(), Item: { pk: 'self-thr-tx', sk: 'X' } } }] });
    await assert.rejects(r.db.send(tx), { name: 'ProvisionedThroughputExceededException' });
    faults.disarm();
    assert.equal(await exists('self/slow'), false);
    assert.equal(await item('self-thr'), undefined);
    assert.equal(await item('self-thr-tx'), undefined);
  });

  it('conflict: a write meets a transaction on every attempt, the registry\'s conflict retries give up (Contended); nothing applies', async () => {
    const faults = injectFaults(r);
    faults.arm(0, 'conflict');
    const tx = new TransactWriteCommand({ TransactItems: [{ Put: { TableName: table(), Item: { pk: 'self-tx', sk: 'X' } } }] });
    await assert.rejects(r.db.send(tx), Contended);
    assert.equal(faults.disarm().length, 1, 'the conflict retries are one call');
    faults.arm(0, 'conflict');
    await assert.rejects(r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-conflict', sk: 'X' } })), Contended);
    faults.disarm();
    assert.equal(await item('self-tx'), undefined);
    assert.equal(await item('self-conflict'), undefined);
    assert.deepEqual(faultsFor({ backend: 'dynamodb', name: 'GetItemCommand' }).includes('conflict'), false, 'reads do not conflict');
  });

  it('hooks and several faults: another call runs between a write and its lost answer, then a second fault is armed', async () => {
    const faults = injectFaults(r);
    const order: string[] = [];
    faults.arm(nth('PutItemCommand', 0), 'lose', {
      before: async () => void order.push('before'),
      after: async () => {
        order.push(`after: applied ${Boolean(await item('self-hook'))}`);
        faults.add(nth('GetItemCommand', 0), 'fail');
      },
    });
    await assert.rejects(r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-hook', sk: 'X' } })), { name: 'TimeoutError' });
    await assert.rejects(r.db.send(new GetCommand({ TableName: table(), Key: { pk: 'self-hook', sk: 'X' } })), /failed before it applied/);
    const calls = faults.disarm();
    assert.deepEqual(order, ['before', 'after: applied true']);
    assert.deepEqual(
      calls.filter((c) => c.fault).map((c) => `${c.name} ${c.fault}`),
      ['PutItemCommand lose', 'GetItemCommand fail'],
    );
    // `times`: one plan, several calls.
    faults.arm((c) => c.name === 'PutItemCommand', 'fail', { times: 2 });
    for (const pk of ['self-t1', 'self-t2']) await assert.rejects(r.db.send(new PutCommand({ TableName: table(), Item: { pk, sk: 'X' } })), /failed before/);
    await r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-t3', sk: 'X' } }));
    faults.disarm();
    assert.ok(await item('self-t3'));
  });

  it('holdBefore: another request runs before the matching call goes on', async () => {
    const order: string[] = [];
    const held = holdBefore(r.db, (command, input) => command === 'PutItemCommand' && (input.Item as { pk?: string }).pk === 'self-held', async () => {
      order.push(`held: applied ${Boolean(await item('self-held'))}`);
      return 7;
    });
    await r.db.send(new PutCommand({ TableName: table(), Item: { pk: 'self-held', sk: 'X' } }));
    assert.equal(await held, 7);
    assert.deepEqual(order, ['held: applied false']);
    assert.ok(await item('self-held'));
  });

  it('through HTTP: a throttled call of a request is answered 429 with Retry-After, and only the armed call is hit', async () => {
    const location = await startUpload(r.url, 'faults/self');
    const faults = injectFaults(r);
    faults.arm(0, 'throttle'); // the PATCH's first call: taking the lease
    const res = await patch(location, Buffer.from('hello'), 0);
    const calls = faults.disarm();
    assert.equal(res.status, 429, res.body.toString());
    assert.equal(res.header('retry-after'), '1');
    assert.equal(calls.filter((c) => c.fault).length, 1);
    assert.equal((await patch(location, Buffer.from('hello'), 0)).status, 202, 'nothing was applied: the retry works');
    assert.equal((await call(location)).header('range'), '0-4');
  });
});

describe('fault layer: filesystem driver', () => {
  const r = useRegistry('fs');

  it('wraps the object store and the ingester: fail before, lose after applying', async () => {
    const faults = injectFaults(r);
    const objects = r.registry.storage.objects;
    faults.arm(0, 'fail');
    await assert.rejects(objects.put('uploads/self/a', Buffer.from('a')), { code: 'EIO' });
    faults.arm(0, 'lose');
    await assert.rejects(objects.put('uploads/self/b', Buffer.from('b')), { name: 'TimeoutError' });
    faults.record();
    assert.equal(await objects.get('uploads/self/a'), undefined, 'a failed call did not apply');
    assert.deepEqual(await objects.get('uploads/self/b'), Buffer.from('b'), 'a lost answer applied');
    assert.deepEqual(
      faults.disarm().map((c) => `${c.backend}:${c.name}`),
      ['fs:objects.get', 'fs:objects.get'],
    );
  });

  it('counts the ingester calls of a PATCH', async () => {
    const location = await startUpload(r.url, 'faults/fs');
    const faults = injectFaults(r);
    faults.record();
    assert.equal((await patch(location, Buffer.from('hello'), 0)).status, 202);
    const names = faults.disarm().map((c) => `${c.backend}:${c.name}`);
    assert.ok(names.includes('fs:ingester.append'), names.join(' '));
    assert.ok(names.includes('dynamodb:UpdateItemCommand'), names.join(' '));
  });
});
