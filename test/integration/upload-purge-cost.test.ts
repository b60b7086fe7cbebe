/**
 * What the purge costs on a large table: it reads upload sessions only (a sparse index on
 * expiry), never the rest of the table, acts as it reads, and stops at its time budget so that
 * the next run takes up where it stopped.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchWriteCommand } from '@aws-sdk/lib-dynamodb';
import { purgeExpiredUploads } from '../../lib/registry/purge.js';
import { call } from '../helpers/http.js';
import { startUpload } from '../helpers/oci.js';
import { delta, useRegistry } from '../helpers/registry.js';

const TTL = 60;
const OTHER_ITEMS = 3000;

describe('purge cost on a table with thousands of other items', () => {
  const r = useRegistry('fs', { env: { SKIFF_UPLOAD_TTL_SECONDS: String(TTL) } });
  /** Items DynamoDB evaluated for Query and Scan calls (what they are billed by). */
  let itemsRead = 0;

  async function fill(): Promise<void> {
    r.db.middlewareStack.add(
      (next) => async (args) => {
        const out = await next(args);
        const o = out.output as { ScannedCount?: number };
        itemsRead += o.ScannedCount ?? 0;
        return out;
      },
      { step: 'initialize', name: 'countItemsRead' },
    );
    const items = Array.from({ length: OTHER_ITEMS }, (_, i) => ({ pk: `REPO#bulk/${i % 300}`, sk: `TAG#t${i}#t${i}`, digest: 'sha256:x' }));
    for (let i = 0; i < items.length; i += 25) {
      const batch = items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } }));
      await r.db.send(new BatchWriteCommand({ RequestItems: { [r.config.dynamo.table]: batch } }));
    }
  }

  async function abandon(n: number, repo: string): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(await startUpload(r.url, repo));
    return out;
  }

  it('reads only expired sessions: no scan, items read bounded by the uploads it purges', async () => {
    await fill();
    const locations = await abandon(20, 'purge/cost');
    const later = Date.now() + (TTL + 5) * 1000;
    const calls = { ...r.dynamoCalls };
    const read = itemsRead;
    const result = await purgeExpiredUploads(r.registry.meta, r.registry.storage, { now: later });
    const cost = delta(calls, r.dynamoCalls);
    assert.equal(cost.ScanCommand, undefined, `no scan (calls: ${JSON.stringify(cost)})`);
    assert.ok(itemsRead - read <= 20, `items read ${itemsRead - read}, for 20 expired uploads among ${OTHER_ITEMS} other items`);
    assert.deepEqual(result, { purged: 20, skipped: 0, failed: 0, more: false });
    assert.equal(cost.UpdateItemCommand, 20, JSON.stringify(cost));
    assert.equal(cost.DeleteItemCommand, 20, JSON.stringify(cost));
    assert.ok((cost.QueryCommand ?? 0) <= 8 + 1, `queries: ${cost.QueryCommand} (one per index shard)`);
    for (const location of locations) assert.equal((await call(location)).status, 404);
  });

  it('stops at its time budget having acted on what it read, and the next run resumes', async () => {
    const locations = await abandon(12, 'purge/resume');
    const later = Date.now() + (TTL + 5) * 1000;
    let purged = 0;
    let runs = 0;
    for (let more = true; more; runs++) {
      assert.ok(runs < 20, 'the purge makes progress');
      // No time at all: every run still acts on the first upload it reads, then stops.
      const result = await purgeExpiredUploads(r.registry.meta, r.registry.storage, { now: later, budgetMs: 0, pageSize: 5 });
      assert.equal(result.skipped, 0);
      purged += result.purged;
      more = result.more;
      if (more) assert.equal(result.purged, 1);
    }
    assert.equal(purged, 12);
    assert.ok(runs > 1, 'it stopped and resumed');
    for (const location of locations) assert.equal((await call(location)).status, 404);
  });
});
