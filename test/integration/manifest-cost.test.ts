/**
 * What manifest, tag and catalog requests cost in DynamoDB on a large table (thousands of
 * repositories, 10,000 tags in one repository), counted on the registry's own client: calls by
 * command, items the Queries read (ScannedCount), and items written to the catalog's partition.
 * The table is seeded directly with BatchWriteItem, in the layout lib/metadata/dynamo/table.ts
 * documents.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { BatchWriteCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { run as admin } from '../../lib/admin/cli.js';
import { sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { expectError } from '../helpers/oci.js';
import { manifestClient } from '../helpers/manifests.js';
import { type TestRegistry, delta, useRegistry } from '../helpers/registry.js';

const TAGS = 10_000;
const REPOSITORIES = 3_000;

/** Writes `items` with BatchWriteItem, 25 a call, several calls at once, retrying what is left. */
async function seed(db: DynamoDBDocumentClient, table: string, items: Record<string, unknown>[]): Promise<void> {
  const batches: Record<string, unknown>[][] = [];
  for (let i = 0; i < items.length; i += 25) batches.push(items.slice(i, i + 25));
  const worker = async () => {
    for (let batch = batches.pop(); batch; batch = batches.pop()) {
      let pending = batch.map((Item) => ({ PutRequest: { Item } }));
      while (pending.length) {
        const res = await db.send(new BatchWriteCommand({ RequestItems: { [table]: pending } }));
        pending = (res.UnprocessedItems?.[table] ?? []) as typeof pending;
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/**
 * Counts, from now until the returned function is called, the items DynamoDB Queries read, the
 * Queries of the catalog's partition (pk CATALOG) and the items written there, alongside the
 * calls by command.
 */
function meter(r: TestRegistry) {
  const name = `meter-${randomBytes(4).toString('hex')}`;
  const counted = { queried: 0, catalogWrites: 0, catalogQueries: 0 };
  r.db.middlewareStack.add(
    (next, ctx) => async (args) => {
      const input = args.input as { TransactItems?: Record<string, { Item?: { pk?: string }; Key?: { pk?: string } }>[]; Item?: { pk?: string }; Key?: { pk?: string } };
      const touched = [...(input.TransactItems ?? []).flatMap((t) => Object.values(t)), input];
      if (ctx.commandName === 'QueryCommand' && (args.input as { ExpressionAttributeValues?: Record<string, unknown> }).ExpressionAttributeValues?.[':pk'] === 'CATALOG') counted.catalogQueries++;
      if (ctx.commandName !== 'GetItemCommand' && ctx.commandName !== 'QueryCommand') {
        counted.catalogWrites += touched.filter((t) => (t.Item ?? t.Key)?.pk === 'CATALOG').length;
      }
      const out = await next(args);
      counted.queried += (out.output as { ScannedCount?: number }).ScannedCount ?? 0;
      return out;
    },
    { step: 'initialize', name },
  );
  const calls = { ...r.dynamoCalls };
  return () => {
    r.db.middlewareStack.remove(name);
    return { ...counted, calls: delta(calls, r.dynamoCalls) };
  };
}

describe('manifest cost on a large table', () => {
  const r = useRegistry('fs');
  const { image, put, get } = manifestClient(r, 52000, { configSize: 100, layerSizes: [200] });
  const repo = 'big/tags';
  const elsewhere = sha256(Buffer.from('a manifest the seeded tags point at'));

  before(async () => {
    const started = Date.now();
    // 10,000 tags on another manifest of the repository, each with its reverse-index entry, in a
    // repository that is listed (its marker and catalog entry).
    const items: Record<string, unknown>[] = [
      { pk: `REPO#${repo}`, sk: 'REPOSITORY', name: repo, createdAt: 1 },
      { pk: 'CATALOG', sk: `REPO#${repo}`, name: repo, createdAt: 1 },
    ];
    for (let i = 0; i < TAGS; i++) {
      const tag = `t${String(i).padStart(5, '0')}`;
      items.push({ pk: `REPO#${repo}`, sk: `TAG#${tag}#${tag}`, tag, digest: elsewhere, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100, updatedAt: 1 });
      items.push({ pk: `REPO#${repo}`, sk: `TAGGED#${elsewhere}#${tag}`, tag, digest: elsewhere });
    }
    await seed(r.db, r.config.dynamo.table, items);
    console.log(`seeded ${items.length} items in ${Date.now() - started} ms`);
  });

  it('DELETE of a manifest reads only the tags on its digest, not the 10,000 others', async () => {
    const m = await image(repo);
    for (const tag of ['keep-a', 'keep-b']) assert.equal((await put(repo, tag, m.text)).status, 201);
    const done = meter(r);
    assert.equal((await call(`${r.url}/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
    const cost = done();
    assert.ok(cost.queried <= 2, `items read by Queries: ${cost.queried} (${JSON.stringify(cost.calls)})`);
    assert.ok((cost.calls.QueryCommand ?? 0) <= 1, JSON.stringify(cost.calls));
    expectError(await get(repo, 'keep-a'), 404, 'MANIFEST_UNKNOWN');
    assert.equal((await get(repo, 'keep-b', {}, 'HEAD')).status, 404);
    assert.equal((await get(repo, 't09999', {}, 'HEAD')).status, 200, 'the other tags stay');
  });

  it('a push to a known repository reads one batch and writes one transaction, and writes the catalog only on the first push', async () => {
    const first = await image('cost/new');
    let done = meter(r);
    assert.equal((await put('cost/new', 'v1', first.text)).status, 201);
    assert.equal(done().catalogWrites, 1, 'a new repository is listed');
    for (const [target, tag] of [['cost/new', 'v2'], [repo, 't00042']] as const) {
      const m = await image(target);
      done = meter(r);
      assert.equal((await put(target, tag, m.text)).status, 201);
      const cost = done();
      assert.equal(cost.catalogWrites, 0, `${target}: nothing written to the catalog's partition`);
      assert.deepEqual(cost.calls, { BatchGetItemCommand: 1, TransactWriteItemsCommand: 1 }, target);
    }
    const listed = (await call(`${r.url}/v2/_catalog`)).json().repositories;
    assert.ok(listed.includes('cost/new') && listed.includes(repo), 'both listed');
  });
});

describe('catalog cost on a large table, filtered by grants', () => {
  const keys = `k1=${randomBytes(32).toString('base64url')}`;
  const r = useRegistry('fs', { env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: keys, SKIFF_AUTH_CACHE_SECONDS: '0' } });
  const password = 'carol-password-1';
  const auth = { Authorization: `Basic ${Buffer.from(`carol:${password}`).toString('base64')}` };

  before(async () => {
    const io = { out: () => undefined, err: () => undefined, readSecret: async () => password };
    assert.equal(await admin(['user', 'add', 'carol'], () => r.registry.meta.users, io), 0);
    assert.equal(await admin(['grant', 'carol', 'team/*', 'pull'], () => r.registry.meta.users, io), 0);
    // Thousands of repositories carol may not see, sorted before the two she may.
    const names = [...Array.from({ length: REPOSITORIES }, (_, i) => `hidden/r${String(i).padStart(5, '0')}`), 'team/a', 'team/b'];
    await seed(r.db, r.config.dynamo.table, names.map((name) => ({ pk: 'CATALOG', sk: `REPO#${name}`, name, createdAt: 1 })));
  });

  it('fills a small page for a caller who sees few repositories in a Query per thousand names, not one per name', async () => {
    for (const n of [1, 2]) {
      const done = meter(r);
      const res = await call(`${r.url}/v2/_catalog?n=${n}`, { headers: auth });
      const cost = done();
      assert.equal(res.status, 200, res.body.toString());
      assert.deepEqual(res.json().repositories, ['team/a', 'team/b'].slice(0, n));
      const queries = cost.catalogQueries;
      assert.ok(queries <= Math.ceil(REPOSITORIES / 1000) + 4, `n=${n}: ${queries} Queries of the catalog for ${REPOSITORIES} hidden repositories`);
      if (n === 1) assert.match(res.header('link') ?? '', /last=team%2Fa/, 'the Link names only what the caller sees');
    }
  });
});
