/**
 * Garbage collection's reads and deletes in DynamoDB (the protocol: lib/registry/gc.ts and
 * README, Garbage collection). The table has no index from a digest to the repositories linking
 * it, so the read is one consistent, paged Scan; every delete is conditioned on the records that
 * a concurrent push, mount or finish would have changed.
 */
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, type DynamoDBDocumentClient, ScanCommand, type ScanCommandOutput } from '@aws-sdk/lib-dynamodb';
import type { CollectedDescriptor, CollectedItem, CollectedLink, CollectorStore, StoreCost } from '../types.js';
import { key } from './table.js';

/** Attribute names the scan reads (several are DynamoDB reserved words, hence all by name). */
const READ = ['pk', 'sk', 'digest', 'size', 'key', 'mediaType', 'createdAt', 'linkedAt', 'usedBy', 'body'];

export class DynamoCollectorStore implements CollectorStore {
  readonly cost: StoreCost = { calls: {}, capacityUnits: 0 };

  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async scan(visit: (item: CollectedItem) => Promise<void>, deadline: number): Promise<boolean> {
    let start: Record<string, unknown> | undefined;
    do {
      if (Date.now() >= deadline) return false;
      const res: ScanCommandOutput = await this.db.send(
        new ScanCommand({
          TableName: this.table,
          // Links and manifests live in REPO# partitions, descriptors in BLOB# ones; the filter
          // saves transfer, not read units (DynamoDB charges for what the page read).
          FilterExpression: '(begins_with(pk, :repo) AND (begins_with(sk, :blob) OR begins_with(sk, :manifest))) OR (begins_with(pk, :blob) AND sk = :descriptor)',
          ExpressionAttributeValues: { ':repo': 'REPO#', ':blob': 'BLOB#', ':manifest': 'MANIFEST#', ':descriptor': 'BLOB' },
          ProjectionExpression: READ.map((_, i) => `#a${i}`).join(', '),
          ExpressionAttributeNames: Object.fromEntries(READ.map((name, i) => [`#a${i}`, name])),
          ExclusiveStartKey: start,
          ConsistentRead: true,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('Scan', res.ConsumedCapacity?.CapacityUnits);
      for (const item of res.Items ?? []) {
        const collected = toItem(item);
        if (collected) await visit(collected);
      }
      start = res.LastEvaluatedKey;
    } while (start);
    return true;
  }

  deleteLink(link: CollectedLink): Promise<boolean> {
    const values: Record<string, unknown> = { ':createdAt': link.createdAt };
    const conditions = ['#createdAt = :createdAt'];
    for (const name of ['usedBy', 'linkedAt'] as const) {
      if (link[name] === undefined) conditions.push(`attribute_not_exists(${name})`);
      else {
        conditions.push(`${name} = :${name}`);
        values[`:${name}`] = link[name];
      }
    }
    return this.deleteIf(key.link(link.repo, link.digest), conditions.join(' AND '), values);
  }

  deleteDescriptor(descriptor: CollectedDescriptor, cutoff: number): Promise<boolean> {
    return this.deleteIf(
      key.descriptor(descriptor.digest),
      '#key = :key AND ((attribute_not_exists(linkedAt) AND #createdAt < :cutoff) OR linkedAt < :cutoff)',
      { ':key': descriptor.key, ':cutoff': cutoff },
      { '#key': 'key' },
    );
  }

  private async deleteIf(Key: Record<string, string>, condition: string, values: Record<string, unknown>, names: Record<string, string> = {}): Promise<boolean> {
    try {
      const res = await this.db.send(
        new DeleteCommand({
          TableName: this.table,
          Key,
          ConditionExpression: condition,
          ExpressionAttributeNames: { '#createdAt': 'createdAt', ...names },
          ExpressionAttributeValues: values,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('DeleteItem', res.ConsumedCapacity?.CapacityUnits);
      return true;
    } catch (err) {
      this.count('DeleteItem', undefined);
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  private count(call: string, units: number | undefined): void {
    this.cost.calls[call] = (this.cost.calls[call] ?? 0) + 1;
    this.cost.capacityUnits += units ?? 0;
  }
}

function toItem(item: Record<string, unknown>): CollectedItem | undefined {
  const pk = item.pk as string;
  const sk = item.sk as string;
  const common = { digest: item.digest as string, createdAt: item.createdAt as number };
  if (pk.startsWith('BLOB#')) {
    return { kind: 'descriptor', ...common, size: item.size as number, key: item.key as string, mediaType: item.mediaType as string, linkedAt: item.linkedAt as number | undefined };
  }
  const repo = pk.slice('REPO#'.length);
  if (sk.startsWith('BLOB#')) {
    return {
      kind: 'link',
      repo,
      ...common,
      size: item.size as number,
      key: item.key as string,
      mediaType: item.mediaType as string,
      usedBy: item.usedBy as string | undefined,
      linkedAt: item.linkedAt as number | undefined,
    };
  }
  if (sk.startsWith('MANIFEST#')) return { kind: 'manifest', repo, digest: sk.slice('MANIFEST#'.length), body: item.body as Uint8Array | undefined, key: item.key as string | undefined };
  return undefined;
}
