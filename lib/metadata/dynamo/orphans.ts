/**
 * Garbage collection's orphan sweep in DynamoDB (the protocol: lib/registry/orphans.ts and
 * README, Garbage collection): upload records read by key, the records that name objects read
 * by one consistent Scan, and the sweep's cursor in one item (`GC` / `ORPHANS`).
 */
import { BatchGetCommand, type BatchGetCommandOutput, type DynamoDBDocumentClient, GetCommand, PutCommand, ScanCommand, type ScanCommandOutput } from '@aws-sdk/lib-dynamodb';
import type { OrphanStore, StoreCost } from '../types.js';
import { key } from './table.js';

const CURSOR = { pk: 'GC', sk: 'ORPHANS' };

export class DynamoOrphanStore implements OrphanStore {
  readonly cost: StoreCost = { calls: {}, capacityUnits: 0, readUnits: 0, writeUnits: 0 };

  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async liveUploads(ids: string[], cutoff: number): Promise<Set<string>> {
    const live = new Set<string>();
    for (let i = 0; i < ids.length; i += 100) {
      let keys: Record<string, unknown>[] | undefined = ids.slice(i, i + 100).map((id) => key.upload(id));
      for (let round = 0; keys?.length; round++) {
        if (round) await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** round)));
        const res: BatchGetCommandOutput = await this.db.send(
          new BatchGetCommand({
            RequestItems: { [this.table]: { Keys: keys, ConsistentRead: true, ProjectionExpression: 'pk, expiresAt' } },
            ReturnConsumedCapacity: 'TOTAL',
          }),
        );
        this.count('BatchGetItem', res.ConsumedCapacity?.reduce((n, c) => n + (c.CapacityUnits ?? 0), 0));
        for (const item of res.Responses?.[this.table] ?? []) {
          // A claimed upload (the purge set expiresAt to 0) is as dead as an expired one.
          if (typeof item.expiresAt !== 'number' || item.expiresAt >= cutoff) live.add((item.pk as string).slice('UPLOAD#'.length));
        }
        keys = res.UnprocessedKeys?.[this.table]?.Keys;
      }
    }
    return live;
  }

  async namedKeys(keys: Set<string>, deadline: number): Promise<Set<string> | undefined> {
    const named = new Set<string>();
    let start: Record<string, unknown> | undefined;
    do {
      if (Date.now() >= deadline) return undefined;
      const res: ScanCommandOutput = await this.db.send(
        new ScanCommand({
          TableName: this.table,
          // Descriptors, links and large manifests carry `key`; the filter saves transfer, not
          // read units.
          FilterExpression: 'attribute_exists(#key)',
          ProjectionExpression: '#key',
          ExpressionAttributeNames: { '#key': 'key' },
          ExclusiveStartKey: start,
          ConsistentRead: true,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('Scan', res.ConsumedCapacity?.CapacityUnits);
      for (const item of res.Items ?? []) if (typeof item.key === 'string' && keys.has(item.key)) named.add(item.key);
      start = res.LastEvaluatedKey;
    } while (start);
    return named;
  }

  async cursor(): Promise<string | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: CURSOR, ConsistentRead: true, ReturnConsumedCapacity: 'TOTAL' }));
    this.count('GetItem', res.ConsumedCapacity?.CapacityUnits);
    return typeof res.Item?.after === 'string' ? res.Item.after : undefined;
  }

  async saveCursor(after: string | undefined): Promise<void> {
    // Written every run, also when the listing completed (no `after`): it says when the sweep ran.
    const item = { ...CURSOR, savedAt: Date.now(), ...(after !== undefined ? { after } : {}) };
    const res = await this.db.send(new PutCommand({ TableName: this.table, Item: item, ReturnConsumedCapacity: 'TOTAL' }));
    this.count('PutItem', res.ConsumedCapacity?.CapacityUnits);
  }

  private count(call: string, units: number | undefined): void {
    this.cost.calls[call] = (this.cost.calls[call] ?? 0) + 1;
    this.cost.capacityUnits += units ?? 0;
    if (call === 'PutItem') this.cost.writeUnits += units ?? 0;
    else this.cost.readUnits += units ?? 0;
  }
}
