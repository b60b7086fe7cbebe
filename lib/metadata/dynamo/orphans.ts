/**
 * Garbage collection's orphan sweep in DynamoDB (the protocol: lib/registry/orphans.ts and
 * README, Garbage collection): upload records read by key, consistently; whether a record names
 * an object key read from the sparse, keys-only `key` index (descriptors, links and large
 * manifests carry `key`; nothing else does), one Query of at most one item per key; the
 * suspects a run noted, in the `GC` partition under `SUSPECT#<object key>` (so that the keys a
 * run listed are one range of it); and the sweep's cursor in one item (`GC` / `ORPHANS`).
 * Never a Scan: a run reads what it listed, not the table.
 */
import {
  BatchGetCommand,
  type BatchGetCommandOutput,
  BatchWriteCommand,
  type BatchWriteCommandOutput,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  type QueryCommandOutput,
} from '@aws-sdk/lib-dynamodb';
import type { OrphanStore, OrphanSuspect, StoreCost } from '../types.js';
import { key } from './table.js';

const CURSOR = { pk: 'GC', sk: 'ORPHANS' };
const SUSPECT = 'SUSPECT#';
/** The first sort key after every `SUSPECT#...` one ('$' follows '#'). */
const AFTER_SUSPECTS = 'SUSPECT$';

/**
 * How long a noted suspect waits before a run may free it (README, Garbage collection). It must
 * exceed the `key` index's propagation lag (normally well under a second) and the clock skew
 * between runs; fifteen minutes is a wide margin. (No writer names an upload's object after its
 * upload record is gone: a repairing dedupe repoints the descriptor in the finish transaction.)
 */
export const RECHECK_AFTER_MS = 15 * 60_000;

/** Index reads in flight at once: the sweep's reads, not a burst that starves the registry's. */
const INDEX_CONCURRENCY = 16;

export class DynamoOrphanStore implements OrphanStore {
  readonly cost: StoreCost = { calls: {}, capacityUnits: 0, readUnits: 0, writeUnits: 0 };
  readonly recheckAfterMs: number;

  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
    /** `recheckAfterMs`: shorter only where the index has no lag (DynamoDB Local, tests, benches). */
    options: { recheckAfterMs?: number } = {},
  ) {
    this.recheckAfterMs = options.recheckAfterMs ?? RECHECK_AFTER_MS;
  }

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

  async namedKeys(keys: string[], deadline: number): Promise<Set<string> | undefined> {
    const named = new Set<string>();
    let next = 0;
    let late = false;
    await Promise.all(
      Array.from({ length: Math.min(INDEX_CONCURRENCY, keys.length) }, async () => {
        while (next < keys.length && !late) {
          if (Date.now() >= deadline) {
            late = true;
            return;
          }
          const objectKey = keys[next++]!;
          // One item is enough to know the key is named; keys only, so a read is half a unit.
          const res: QueryCommandOutput = await this.db.send(
            new QueryCommand({
              TableName: this.table,
              IndexName: 'key',
              KeyConditionExpression: '#key = :key',
              ExpressionAttributeNames: { '#key': 'key' },
              ExpressionAttributeValues: { ':key': objectKey },
              Limit: 1,
              ReturnConsumedCapacity: 'TOTAL',
            }),
          );
          this.count('Query', res.ConsumedCapacity?.CapacityUnits);
          if (res.Items?.length) named.add(objectKey);
        }
      }),
    );
    return late ? undefined : named;
  }

  async suspects(after: string | undefined, through: string | undefined): Promise<OrphanSuspect[]> {
    const out: OrphanSuspect[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const res: QueryCommandOutput = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :through',
          ExpressionAttributeValues: { ':pk': CURSOR.pk, ':from': `${SUSPECT}${after ?? ''}`, ':through': through === undefined ? AFTER_SUSPECTS : `${SUSPECT}${through}` },
          ExclusiveStartKey: start,
          ConsistentRead: true,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('Query', res.ConsumedCapacity?.CapacityUnits);
      for (const item of res.Items ?? []) {
        const objectKey = (item.sk as string).slice(SUSPECT.length);
        // BETWEEN includes its lower end: the key `after` was judged by the run before.
        if (after !== undefined && objectKey <= after) continue;
        out.push({ key: objectKey, size: item.size as number, modified: item.modified as number, notedAt: item.notedAt as number });
      }
      start = res.LastEvaluatedKey;
    } while (start);
    return out;
  }

  async note(suspects: OrphanSuspect[]): Promise<void> {
    await this.batchWrite(suspects.map((s) => ({ PutRequest: { Item: { ...key.suspect(s.key), size: s.size, modified: s.modified, notedAt: s.notedAt } } })));
  }

  async clear(keys: string[]): Promise<void> {
    await this.batchWrite(keys.map((k) => ({ DeleteRequest: { Key: key.suspect(k) } })));
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

  /**
   * Suspect items, 25 a call, retrying what DynamoDB leaves unprocessed. Unconditional: only the
   * sweep writes them, one run at a time (GC's lease), and a suspect rewritten is only noted later.
   */
  private async batchWrite(requests: Record<string, unknown>[]): Promise<void> {
    for (let i = 0; i < requests.length; i += 25) {
      let pending: Record<string, unknown>[] | undefined = requests.slice(i, i + 25);
      for (let round = 0; pending?.length; round++) {
        if (round) await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** round)));
        const res: BatchWriteCommandOutput = await this.db.send(new BatchWriteCommand({ RequestItems: { [this.table]: pending as never }, ReturnConsumedCapacity: 'TOTAL' }));
        this.count('BatchWriteItem', res.ConsumedCapacity?.reduce((n, c) => n + (c.CapacityUnits ?? 0), 0));
        pending = res.UnprocessedItems?.[this.table] as Record<string, unknown>[] | undefined;
      }
    }
  }

  private count(call: string, units: number | undefined): void {
    this.cost.calls[call] = (this.cost.calls[call] ?? 0) + 1;
    this.cost.capacityUnits += units ?? 0;
    if (call === 'PutItem' || call === 'BatchWriteItem') this.cost.writeUnits += units ?? 0;
    else this.cost.readUnits += units ?? 0;
  }
}
