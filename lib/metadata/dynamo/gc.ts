/**
 * Garbage collection's reads and writes in DynamoDB (the protocol: lib/registry/gc.ts and
 * README, Garbage collection), and the marks writers leave for it.
 *
 * A run reads what may have become garbage, not the table: the marks in the GC#<n> partitions
 * (consistent Queries), one repository's links and manifests (two consistent Queries of its
 * partition), and for a digest its descriptor and the links the `digest` index names (each link
 * then read consistently). Only a full pass (`gc --full`, for data written before the marks
 * existed) Scans the table, a page at a time, resumably. Every delete is conditioned on the
 * records that a concurrent push, mount or finish would have changed. A marked repository left
 * without a manifest leaves the catalog by the shared removal of catalog.ts.
 */
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  type BatchGetCommandOutput,
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  type QueryCommandOutput,
  ScanCommand,
  type ScanCommandOutput,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { randomUUID } from 'node:crypto';
import { Contended, type CollectedDescriptor, type CollectedLink, type CollectedManifest, type CollectorStore, type GcCursor, type GcMark, type MarkedCandidate, type StoreCost, type UnlistOutcome } from '../types.js';
import { unlistIfEmpty } from './catalog.js';
import { GC_SHARDS, type TransactItems, cancellationReasons, isTransactionConflict, key, toDescriptor } from './table.js';

type TransactItem = TransactItems[number];

/**
 * The mark a writer puts in the transaction that may leave garbage: a manifest delete marks its
 * repository, a link write marks the link (due once `at`, its linkedAt, is past the grace
 * period), a link delete marks the digest. Each carries a unique writer id: GC clears a mark
 * only as it read it, so a mark rewritten meanwhile stays for the next run.
 */
export function markRepository(table: string, repo: string, at: number): TransactItem {
  return { Put: { TableName: table, Item: { ...key.repositoryMark(repo), markedAt: at, markedBy: randomUUID() } } };
}

export function markLink(table: string, repo: string, digest: string, at: number): TransactItem {
  return { Put: { TableName: table, Item: { ...key.linkMark(repo, digest), markedAt: at, markedBy: randomUUID() } } };
}

export function markDigest(table: string, digest: string, at: number, by: string = randomUUID()): TransactItem {
  return { Put: { TableName: table, Item: { ...key.digestMark(digest), markedAt: at, markedBy: by } } };
}

/** How many marks one Query page reads. */
const MARKS_PAGE = 100;
/** How many items one page of a full pass reads (a budget stop redoes at most one page). */
const SCAN_PAGE = 200;
const DIGEST_INDEX = 'digest';

export class DynamoCollectorStore implements CollectorStore {
  readonly cost: StoreCost = { calls: {}, capacityUnits: 0, readUnits: 0, writeUnits: 0 };

  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
    private readonly pages: { marks?: number; scan?: number } = {},
  ) {}

  async lease(run: string, until: number, now: number): Promise<{ cursor: GcCursor } | { heldUntil: number }> {
    try {
      const res = await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.gcState(),
          UpdateExpression: 'SET runner = :run, leaseUntil = :until, startedAt = :now',
          ConditionExpression: 'attribute_not_exists(runner) OR leaseUntil < :now',
          ExpressionAttributeValues: { ':run': run, ':until': until, ':now': now },
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('UpdateItem', res.ConsumedCapacity?.CapacityUnits);
      return { cursor: toCursor(res.Attributes) };
    } catch (err) {
      this.count('UpdateItem', undefined);
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      const held = (err as { Item?: Record<string, { N?: string }> }).Item?.leaseUntil?.N;
      return { heldUntil: Number(held ?? until) };
    }
  }

  async cursor(): Promise<GcCursor> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.gcState(), ConsistentRead: true, ReturnConsumedCapacity: 'TOTAL' }));
    this.count('GetItem', res.ConsumedCapacity?.CapacityUnits);
    return toCursor(res.Item);
  }

  async release(run: string, cursor: GcCursor): Promise<boolean> {
    const set = ['finishedAt = :now'];
    const remove = ['runner', 'leaseUntil'];
    const values: Record<string, unknown> = { ':run': run, ':now': Date.now() };
    for (const name of ['marks', 'full'] as const) {
      if (cursor[name] === undefined) remove.push(`${name}Cursor`);
      else {
        set.push(`${name}Cursor = :${name}`);
        values[`:${name}`] = cursor[name];
      }
    }
    try {
      const res = await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.gcState(),
          UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
          ConditionExpression: 'runner = :run',
          ExpressionAttributeValues: values,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('UpdateItem', res.ConsumedCapacity?.CapacityUnits);
      return true;
    } catch (err) {
      this.count('UpdateItem', undefined);
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }

  /**
   * Shard by shard, in key order: a repository's marks are adjacent (its repository mark, then
   * its link marks: `#` sorts before every character of a name), so they come as one candidate
   * even across pages. A position is the shard and the last key of the candidate before it.
   */
  async *marks(position: string | undefined): AsyncIterable<{ candidate: MarkedCandidate; position: string }> {
    const from = position ? (JSON.parse(position) as { shard: number; after?: string }) : { shard: 0 };
    for (let shard = from.shard; shard < GC_SHARDS; shard++) {
      const pk = `GC#${shard}`;
      let start: Record<string, unknown> | undefined = shard === from.shard && from.after !== undefined ? { pk, sk: from.after } : undefined;
      let pending: { candidate: MarkedCandidate; last: string } | undefined;
      do {
        const res: QueryCommandOutput = await this.db.send(
          new QueryCommand({
            TableName: this.table,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': pk },
            ExclusiveStartKey: start,
            Limit: this.pages.marks ?? MARKS_PAGE,
            ConsistentRead: true,
            ReturnConsumedCapacity: 'TOTAL',
          }),
        );
        this.count('Query', res.ConsumedCapacity?.CapacityUnits);
        for (const item of res.Items ?? []) {
          const mark = toMark(item);
          if (!mark) continue;
          const sk = item.sk as string;
          const same = pending && (mark.kind === 'digest' ? pending.candidate.kind === 'digest' && pending.candidate.digest === mark.digest : pending.candidate.kind === 'repository' && pending.candidate.repo === mark.repo);
          if (pending && same) {
            pending.candidate.marks.push(mark);
            pending.last = sk;
            continue;
          }
          if (pending) yield { candidate: pending.candidate, position: JSON.stringify({ shard, after: pending.last }) };
          pending = {
            candidate: mark.kind === 'digest' ? { kind: 'digest', digest: mark.digest!, marks: [mark] } : { kind: 'repository', repo: mark.repo!, marks: [mark] },
            last: sk,
          };
        }
        start = res.LastEvaluatedKey;
      } while (start);
      // The last candidate of a shard: the position after it is the next shard's start.
      if (pending) yield { candidate: pending.candidate, position: JSON.stringify({ shard: shard + 1 }) };
    }
  }

  async scanPage(position: string | undefined): Promise<{ repositories: string[]; digests: string[]; position?: string }> {
    const res: ScanCommandOutput = await this.db.send(
      new ScanCommand({
        TableName: this.table,
        // Links (REPO#, BLOB#) and descriptors (BLOB#, BLOB); the filter saves transfer, not
        // read units (DynamoDB charges for what the page read).
        FilterExpression: '(begins_with(pk, :repo) AND begins_with(sk, :blob)) OR (begins_with(pk, :blob) AND sk = :descriptor)',
        ExpressionAttributeValues: { ':repo': 'REPO#', ':blob': 'BLOB#', ':descriptor': 'BLOB' },
        ProjectionExpression: 'pk, sk',
        ExclusiveStartKey: position ? (JSON.parse(position) as Record<string, unknown>) : undefined,
        Limit: this.pages.scan ?? SCAN_PAGE,
        ReturnConsumedCapacity: 'TOTAL',
      }),
    );
    this.count('Scan', res.ConsumedCapacity?.CapacityUnits);
    const repositories = new Set<string>();
    const digests = new Set<string>();
    for (const item of res.Items ?? []) {
      const pk = item.pk as string;
      if (pk.startsWith('REPO#')) repositories.add(pk.slice('REPO#'.length));
      else digests.add(pk.slice('BLOB#'.length));
    }
    return { repositories: [...repositories], digests: [...digests], position: res.LastEvaluatedKey ? JSON.stringify(res.LastEvaluatedKey) : undefined };
  }

  async repository(repo: string): Promise<{ links: CollectedLink[]; manifests: CollectedManifest[] }> {
    // Links first, manifests after: a push that commits between the two reads is seen as a
    // manifest, one that commits after both changes usedBy (lib/registry/gc.ts).
    const links = (await this.partition(repo, 'BLOB#', ['digest', 'size', 'key', 'mediaType', 'createdAt', 'linkedAt', 'usedBy'])).map((item) => toLink(repo, item));
    const manifests = (await this.partition(repo, 'MANIFEST#', ['sk', 'body', 'key'])).map((item) => ({
      repo,
      digest: (item.sk as string).slice('MANIFEST#'.length),
      body: item.body as Uint8Array | undefined,
      key: item.key as string | undefined,
    }));
    return { links, manifests };
  }

  async digest(digest: string): Promise<{ descriptor?: CollectedDescriptor; linkedBy: string[] }> {
    const candidates: string[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const res: QueryCommandOutput = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          IndexName: DIGEST_INDEX,
          KeyConditionExpression: '#digest = :digest',
          ExpressionAttributeNames: { '#digest': 'digest' },
          ExpressionAttributeValues: { ':digest': digest },
          ExclusiveStartKey: start,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('Query', res.ConsumedCapacity?.CapacityUnits);
      // Manifests carry repo and digest too: only links count.
      for (const item of res.Items ?? []) if ((item.sk as string).startsWith('BLOB#')) candidates.push(item.repo as string);
      start = res.LastEvaluatedKey;
    } while (start);
    // The index may still show a link deleted a moment ago: each is read again, consistently.
    // (One it does not show yet was written after the descriptor's linkedAt cutoff, or the
    // grace period is shorter than the index's lag: README, Garbage collection.)
    const keys = [key.descriptor(digest), ...candidates.map((repo) => key.link(repo, digest))];
    const items = await this.batchGet(keys);
    const found = items.find((i) => i.sk === 'BLOB' && i.pk === key.descriptor(digest).pk);
    const linkedBy = items.filter((i) => (i.sk as string).startsWith('BLOB#')).map((i) => (i.pk as string).slice('REPO#'.length));
    return { descriptor: found ? toCollected(found) : undefined, linkedBy };
  }

  async deleteLink(link: CollectedLink, run: string): Promise<boolean> {
    const values: Record<string, unknown> = { ':createdAt': link.createdAt };
    const conditions = ['#createdAt = :createdAt'];
    for (const name of ['usedBy', 'linkedAt'] as const) {
      if (link[name] === undefined) conditions.push(`attribute_not_exists(${name})`);
      else {
        conditions.push(`${name} = :${name}`);
        values[`:${name}`] = link[name];
      }
    }
    try {
      const res = await this.db.send(
        new TransactWriteCommand({
          TransactItems: [
            { Delete: { TableName: this.table, Key: key.link(link.repo, link.digest), ConditionExpression: conditions.join(' AND '), ExpressionAttributeNames: { '#createdAt': 'createdAt' }, ExpressionAttributeValues: values } },
            // Its link mark goes with it (a link written again after this writes a new one).
            { Delete: { TableName: this.table, Key: key.linkMark(link.repo, link.digest) } },
            // The descriptor may be unlinked now: marked in the same transaction, so a run
            // stopped before it looks at the digest leaves it for the next.
            markDigest(this.table, link.digest, Date.now(), run),
          ],
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('TransactWriteItems', sum(res.ConsumedCapacity));
      return true;
    } catch (err) {
      this.count('TransactWriteItems', undefined);
      if (cancellationReasons(err)?.[0]?.Code === 'ConditionalCheckFailed') return false;
      // Contention past the retries: nothing applied, the link stays for another run.
      if (err instanceof Contended || isTransactionConflict(err)) return false;
      throw err;
    }
  }

  deleteDescriptor(descriptor: CollectedDescriptor, cutoff: number): Promise<boolean> {
    return this.deleteIf(
      key.descriptor(descriptor.digest),
      '#key = :key AND ((attribute_not_exists(linkedAt) AND #createdAt < :cutoff) OR linkedAt < :cutoff)',
      { ':key': descriptor.key, ':cutoff': cutoff },
      { '#key': 'key', '#createdAt': 'createdAt' },
    );
  }

  unlistIfEmpty(repo: string, dryRun: boolean): Promise<UnlistOutcome> {
    return unlistIfEmpty(this.db, this.table, repo, dryRun, (call, units) => this.count(call, units));
  }

  clearMark(mark: GcMark): Promise<boolean> {
    return this.deleteIf(JSON.parse(mark.ref) as Record<string, string>, 'markedBy = :by', { ':by': mark.markedBy });
  }

  ownDigestMark(digest: string, run: string): GcMark {
    return { kind: 'digest', digest, markedAt: 0, markedBy: run, ref: JSON.stringify(key.digestMark(digest)) };
  }

  private async partition(repo: string, prefix: string, attributes: string[]): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const res: QueryCommandOutput = await this.db.send(
        new QueryCommand({
          TableName: this.table,
          KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
          ExpressionAttributeValues: { ':pk': `REPO#${repo}`, ':prefix': prefix },
          // Several are reserved words (size, key): all by name.
          ProjectionExpression: attributes.map((_, i) => `#a${i}`).join(', '),
          ExpressionAttributeNames: Object.fromEntries(attributes.map((name, i) => [`#a${i}`, name])),
          ExclusiveStartKey: start,
          ConsistentRead: true,
          ReturnConsumedCapacity: 'TOTAL',
        }),
      );
      this.count('Query', res.ConsumedCapacity?.CapacityUnits);
      items.push(...(res.Items ?? []));
      start = res.LastEvaluatedKey;
    } while (start);
    return items;
  }

  /** Consistent BatchGetItem, retrying what DynamoDB leaves unprocessed. */
  private async batchGet(keys: Record<string, string>[]): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for (let i = 0; i < keys.length; i += 100) {
      let pending: Record<string, unknown>[] | undefined = keys.slice(i, i + 100);
      for (let attempt = 0; pending?.length; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(1000, 25 * 2 ** attempt)));
        const res: BatchGetCommandOutput = await this.db.send(new BatchGetCommand({ RequestItems: { [this.table]: { Keys: pending, ConsistentRead: true } }, ReturnConsumedCapacity: 'TOTAL' }));
        this.count('BatchGetItem', sum(res.ConsumedCapacity));
        out.push(...(res.Responses?.[this.table] ?? []));
        pending = res.UnprocessedKeys?.[this.table]?.Keys;
      }
    }
    return out;
  }

  private async deleteIf(Key: Record<string, string>, condition: string, values: Record<string, unknown>, names?: Record<string, string>): Promise<boolean> {
    try {
      const res = await this.db.send(
        new DeleteCommand({
          TableName: this.table,
          Key,
          ConditionExpression: condition,
          ...(names ? { ExpressionAttributeNames: names } : {}),
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
    if (['Query', 'Scan', 'GetItem', 'BatchGetItem'].includes(call)) this.cost.readUnits += units ?? 0;
    else this.cost.writeUnits += units ?? 0;
  }
}

const sum = (consumed: { CapacityUnits?: number }[] | undefined) => (consumed ?? []).reduce((n, c) => n + (c.CapacityUnits ?? 0), 0);

function toCursor(item: Record<string, unknown> | undefined): GcCursor {
  return { marks: item?.marksCursor as string | undefined, full: item?.fullCursor as string | undefined };
}

function toMark(item: Record<string, unknown>): GcMark | undefined {
  const sk = item.sk as string;
  const common = { markedAt: item.markedAt as number, markedBy: item.markedBy as string, ref: JSON.stringify({ pk: item.pk, sk }) };
  if (sk.startsWith('DIGEST#')) return { kind: 'digest', digest: sk.slice('DIGEST#'.length), ...common };
  if (!sk.startsWith('REPO#')) return undefined;
  const rest = sk.slice('REPO#'.length);
  const at = rest.indexOf('#BLOB#');
  // Repository names hold no `#`: the first `#BLOB#` ends the name.
  if (at < 0) return { kind: 'repository', repo: rest, ...common };
  return { kind: 'link', repo: rest.slice(0, at), digest: rest.slice(at + '#BLOB#'.length), ...common };
}

function toLink(repo: string, item: Record<string, unknown>): CollectedLink {
  return { repo, ...toCollected(item), usedBy: item.usedBy as string | undefined };
}

/** A descriptor with what GC conditions its delete on. */
function toCollected(item: Record<string, unknown>): CollectedDescriptor {
  return { ...toDescriptor(item), linkedAt: item.linkedAt as number | undefined };
}
