/**
 * Transaction conflicts: DynamoDB refuses writes that meet a transaction in flight on the same
 * item. DynamoDB Local serialises requests and never answers this way, so a small HTTP server
 * speaking DynamoDB's JSON protocol scripts the answers; the client under test is the one the
 * registry builds (createDocumentClient), over real HTTP.
 */
import assert from 'node:assert/strict';
import { type Server, createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { PutCommand, TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import { RegistryApp } from '../../lib/http/app.js';
import { createDocumentClient } from '../../lib/metadata/dynamo/table.js';
import { Contended } from '../../lib/metadata/types.js';

type Answer = { status: number; body: unknown };
const conflict: Answer = { status: 400, body: { __type: 'com.amazonaws.dynamodb.v20120810#TransactionConflictException', message: 'Transaction is ongoing for the item' } };
const cancelled = (...codes: string[]): Answer => ({
  status: 400,
  body: {
    __type: 'com.amazonaws.dynamodb.v20120810#TransactionCanceledException',
    message: `Transaction cancelled, please refer cancellation reasons for specific reasons [${codes.join(', ')}]`,
    CancellationReasons: codes.map((Code) => ({ Code })),
  },
});
const ok: Answer = { status: 200, body: {} };

describe('DynamoDB transaction conflicts', () => {
  let server: Server;
  let script: Answer[] = [];
  let seen: string[] = [];
  let endpoint = '';

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        seen.push(String(req.headers['x-amz-target']).split('.').pop()!);
        const a = script.shift() ?? ok;
        res.writeHead(a.status, { 'Content-Type': 'application/x-amz-json-1.0' }).end(JSON.stringify(a.body));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const client = () => createDocumentClient({ table: 't', region: 'us-east-1', endpoint, credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
  const put = () => new PutCommand({ TableName: 't', Item: { pk: 'a', sk: 'b' } });
  const transact = () => new TransactWriteCommand({ TransactItems: [{ Put: { TableName: 't', Item: { pk: 'a', sk: 'b' } } }, { Put: { TableName: 't', Item: { pk: 'c', sk: 'd' } } }] });

  it('retries a single-item write that met a transaction until it goes through', async () => {
    script = [conflict, conflict, conflict];
    seen = [];
    await client().send(put());
    assert.deepEqual(seen, ['PutItem', 'PutItem', 'PutItem', 'PutItem']);
  });

  it('retries a transaction cancelled only by conflicts', async () => {
    script = [cancelled('None', 'TransactionConflict'), cancelled('TransactionConflict', 'TransactionConflict')];
    seen = [];
    await client().send(transact());
    assert.equal(seen.length, 3);
  });

  it('does not retry a cancellation that names a failed condition: that is an answer', async () => {
    script = [cancelled('ConditionalCheckFailed', 'TransactionConflict')];
    seen = [];
    await assert.rejects(client().send(transact()), (e: Error) => e.name === 'TransactionCanceledException');
    assert.equal(seen.length, 1);
  });

  it('gives up as Contended after a bounded number of attempts', async () => {
    script = Array.from({ length: 20 }, () => conflict);
    seen = [];
    await assert.rejects(client().send(put()), (e: unknown) => e instanceof Contended && (e.cause as Error).name === 'TransactionConflictException');
    assert.equal(seen.length, 6);
    script = [];
  });

  it('reach the client as 429 TOOMANYREQUESTS with Retry-After, never a 500', async () => {
    const registry = { config: { uploadHost: {} }, blobs: { stat: async () => Promise.reject(new Contended()) } };
    const quiet = { info() {}, warn() {}, error() {} };
    const app = new RegistryApp(registry as never, quiet);
    const res = await app.handle({ method: 'GET', path: `/v2/a/blobs/sha256:${'a'.repeat(64)}`, query: new URLSearchParams(), headers: {} } as never);
    assert.equal(res.status, 429);
    assert.equal(res.headers['Retry-After'], '1');
    assert.equal(JSON.parse(String(res.body)).errors[0].code, 'TOOMANYREQUESTS');
  });
});
