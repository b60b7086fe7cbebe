/**
 * Upload sessions in DynamoDB. Every transition is a conditional write on the session item:
 *
 *   acquire  offset matches (if asked) and no live lease  -> writer, leaseUntil, seq+1
 *   commit   writer is us                                 -> offset, write; lease removed
 *   finish   writer is us (transaction with descriptor and link) -> session deleted
 *
 * so two requests at one offset cannot both win, and a writer that lost its lease cannot
 * publish anything. Part records carry the lease sequence and refuse to be overwritten by an
 * older one (the fence for a writer that stalled past its lease).
 */
import { ConditionalCheckFailedException, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  type QueryCommandOutput,
  TransactWriteCommand,
  UpdateCommand,
} from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { randomUUID } from 'node:crypto';
import type { Part, PartLedger, WriteState } from '../../storage/types.js';
import {
  Contended,
  type Descriptor,
  type ExpiredUpload,
  type Finished,
  type Lease,
  LeaseLost,
  OffsetConflict,
  type Upload,
  UploadGone,
  type UploadStore,
} from '../types.js';
import { key, queryPrefix, toDescriptor } from './table.js';
import { markLink } from './gc.js';

export interface UploadTimings {
  /** How long an upload lives after its last write. */
  ttlMs: number;
  /** How long a write lease lasts without renewal. */
  leaseMs: number;
  now?: () => number;
  /** Part records per transaction (DynamoDB allows 100 items; one is the session). */
  batch?: number;
}

const NAMES = {
  '#repo': 'repo',
  '#offset': 'offset',
  '#write': 'write',
  '#writer': 'writer',
  '#attempt': 'attempt',
  '#leaseUntil': 'leaseUntil',
  '#seq': 'seq',
  '#expiresAt': 'expiresAt',
  '#updatedAt': 'updatedAt',
  '#ttl': 'ttl',
  '#staleWriter': 'staleWriter',
};

export class DynamoUploadStore implements UploadStore {
  private readonly now: () => number;

  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
    private readonly timings: UploadTimings,
  ) {
    this.now = timings.now ?? Date.now;
  }

  async create(id: string, repo: string, write: WriteState): Promise<Upload> {
    const now = this.now();
    const upload: Upload = {
      id,
      repo,
      offset: write.size,
      write,
      startedAt: now,
      updatedAt: now,
      expiresAt: now + this.timings.ttlMs,
      seq: 0,
      attempt: randomUUID(),
    };
    try {
      await this.db.send(
        new PutCommand({
          TableName: this.table,
          Item: { ...key.upload(id), ...upload, ttl: ttlOf(upload.expiresAt), expiryShard: expiryShard(id) },
          ConditionExpression: 'attribute_not_exists(pk)',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
    } catch (err) {
      // A retry (the SDK's) that meets the item its first try created: that is our upload.
      const found = err instanceof ConditionalCheckFailedException && err.Item ? unmarshall(err.Item) : await this.lookAfter(id, err);
      if (found?.attempt !== upload.attempt) throw err;
    }
    return upload;
  }

  /**
   * After a write to the session whose outcome is unknown (its answer was lost): the item as it
   * stands now, so the writer can look for its attempt in it. Unreadable: the original failure.
   */
  private async lookAfter(id: string, failure: unknown): Promise<Record<string, unknown> | undefined> {
    try {
      const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.upload(id), ConsistentRead: true }));
      return res.Item;
    } catch {
      throw failure;
    }
  }

  async get(id: string, repo: string): Promise<Upload | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.upload(id), ConsistentRead: true }));
    return this.live(res.Item, repo);
  }

  private live(item: Record<string, unknown> | undefined, repo: string): Upload | undefined {
    if (!item || item.repo !== repo || (item.expiresAt as number) <= this.now()) return undefined;
    return toUpload(item);
  }

  async acquire(id: string, repo: string, offset?: number): Promise<Lease> {
    const now = this.now();
    const attempt = randomUUID();
    const until = now + this.timings.leaseMs;
    let condition = 'attribute_exists(pk) AND #repo = :repo AND #expiresAt > :now AND (attribute_not_exists(#writer) OR #leaseUntil < :now)';
    const values: Record<string, unknown> = { ':repo': repo, ':now': now, ':w': attempt, ':until': until, ':one': 1, ':none': '' };
    if (offset !== undefined) {
      condition += ' AND #offset = :offset';
      values[':offset'] = offset;
    }
    try {
      const res = await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.upload(id),
          // A lease taken over from a writer that is still named (its lease ran out) leaves that
          // writer in `staleWriter` until the next commit: it may still be writing, so nobody
          // may continue the record's write in place (AppendContext.contended).
          UpdateExpression: 'SET #writer = :w, #leaseUntil = :until, #seq = #seq + :one, #staleWriter = if_not_exists(#writer, if_not_exists(#staleWriter, :none))',
          ConditionExpression: condition,
          ExpressionAttributeNames: pick(NAMES, '#repo', '#expiresAt', '#writer', '#leaseUntil', '#seq', '#staleWriter', ...(offset !== undefined ? ['#offset'] : [])),
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      const upload = toUpload(res.Attributes!);
      return { upload, attempt, seq: upload.seq, until, contended: Boolean(res.Attributes!.staleWriter), parts: [] };
    } catch (err) {
      const refused = err instanceof ConditionalCheckFailedException;
      const old = refused ? (err.Item ? unmarshall(err.Item) : undefined) : await this.lookAfter(id, err);
      // Our own lease, taken by a try whose answer was lost: we hold it.
      if (old?.writer === attempt) {
        const upload = toUpload(old);
        return { upload, attempt, seq: upload.seq, until: old.leaseUntil as number, contended: Boolean(old.staleWriter), parts: [] };
      }
      if (!refused) throw err;
      const current = this.live(old, repo);
      if (!current) throw new UploadGone(id);
      const busy = old!.writer !== undefined && (old!.leaseUntil as number) >= now;
      throw new OffsetConflict(id, current.offset, busy);
    }
  }

  async renew(lease: Lease): Promise<void> {
    const until = this.now() + this.timings.leaseMs;
    await this.fenced(lease, {
      UpdateExpression: 'SET #leaseUntil = :until',
      ExpressionAttributeNames: pick(NAMES, '#writer', '#leaseUntil'),
      ExpressionAttributeValues: { ':me': lease.attempt, ':until': until },
    });
    lease.until = until;
  }

  /**
   * Publishes the new offset. The parts the attempt wrote are stored in the same transaction
   * (in batches before it when there are more than a transaction holds), each refusing to
   * replace a record written under a newer lease.
   */
  async commit(lease: Lease, write: WriteState): Promise<Upload> {
    const now = this.now();
    const expiresAt = now + this.timings.ttlMs;
    const update = {
      TableName: this.table,
      Key: key.upload(lease.upload.id),
      ConditionExpression: '#writer = :me',
      // The write committed is this attempt's own (in place only when no stale writer was
      // recorded): no earlier writer can touch it, so the record of one goes.
      UpdateExpression: 'SET #offset = :offset, #write = :write, #attempt = :me, #updatedAt = :now, #expiresAt = :exp, #ttl = :ttl REMOVE #leaseUntil, #writer, #staleWriter',
      ExpressionAttributeNames: pick(NAMES, '#writer', '#offset', '#write', '#attempt', '#updatedAt', '#expiresAt', '#ttl', '#leaseUntil', '#staleWriter'),
      ExpressionAttributeValues: { ':me': lease.attempt, ':offset': write.size, ':write': write, ':now': now, ':exp': expiresAt, ':ttl': ttlOf(expiresAt) },
    };
    const puts = lease.parts.map((part) => ({
      Put: {
        TableName: this.table,
        Item: { ...key.part(lease.upload.id, part.number), ...part, seq: lease.seq, ttl: ttlOf(expiresAt) },
        ConditionExpression: 'attribute_not_exists(pk) OR #seq <= :seq',
        ExpressionAttributeNames: { '#seq': 'seq' },
        ExpressionAttributeValues: { ':seq': lease.seq },
      },
    }));
    const committed: Upload = { ...lease.upload, offset: write.size, write, updatedAt: now, expiresAt, attempt: lease.attempt };
    try {
      await this.commitItems(lease, update, puts);
    } catch (err) {
      // The answer may have been lost while the commit landed (and a retry then met our own
      // write as a refused condition): the record names the attempt whose write it holds.
      const found = await this.lookAfter(lease.upload.id, err);
      if (found?.attempt === lease.attempt && found.offset === write.size) return toUpload(found);
      throw err;
    }
    lease.parts = [];
    return committed;
  }

  private async commitItems(
    lease: Lease,
    update: NonNullable<NonNullable<TransactWriteCommand['input']['TransactItems']>[number]['Update']> & { TableName: string },
    puts: NonNullable<TransactWriteCommand['input']['TransactItems']>,
  ): Promise<void> {
    if (!puts.length) return this.fenced(lease, update);
    const holding = {
      ConditionCheck: { TableName: this.table, Key: key.upload(lease.upload.id), ConditionExpression: '#writer = :me', ExpressionAttributeNames: { '#writer': 'writer' }, ExpressionAttributeValues: { ':me': lease.attempt } },
    };
    const size = this.timings.batch ?? 99;
    for (let i = 0; i < puts.length; i += size) {
      const batch = puts.slice(i, i + size);
      const last = i + size >= puts.length;
      await this.transact(lease, [last ? { Update: update } : holding, ...batch]);
    }
  }

  private async transact(lease: Lease, items: NonNullable<TransactWriteCommand['input']['TransactItems']>): Promise<void> {
    try {
      await this.db.send(new TransactWriteCommand({ TransactItems: items }));
    } catch (err) {
      if (err instanceof TransactionCanceledException && err.CancellationReasons?.some((r) => r.Code === 'ConditionalCheckFailed')) {
        throw new LeaseLost(lease.upload.id);
      }
      throw err;
    }
  }

  async release(lease: Lease): Promise<void> {
    await this.fenced(lease, {
      UpdateExpression: 'REMOVE #leaseUntil, #writer',
      ExpressionAttributeNames: pick(NAMES, '#writer', '#leaseUntil'),
      ExpressionAttributeValues: { ':me': lease.attempt },
    }).catch((err) => {
      if (!(err instanceof LeaseLost)) throw err;
    });
  }

  /** An update of the session that only the lease holder may make. */
  private async fenced(
    lease: Lease,
    update: Pick<UpdateCommand['input'], 'UpdateExpression' | 'ExpressionAttributeNames' | 'ExpressionAttributeValues'>,
  ): Promise<void> {
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.upload(lease.upload.id),
          ConditionExpression: '#writer = :me',
          ...update,
        }),
      );
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) throw new LeaseLost(lease.upload.id);
      throw err;
    }
  }

  ledger(lease: Lease): PartLedger {
    const store = this;
    const id = lease.upload.id;
    return {
      record(part: Part) {
        lease.parts.push(part);
      },
      async list(count: number) {
        // Part numbers are zero-padded in the sort key, so the first `count` items are parts 1..count.
        const { items } = count > 0 ? await queryPrefix(store.db, store.table, key.upload(id).pk, 'PART#', { limit: count }) : { items: [] };
        const parts: Part[] = items.map((item) => ({ number: item.number as number, etag: item.etag as string, size: item.size as number }));
        if (parts.length !== count || parts.some((p, i) => p.number !== i + 1)) {
          throw new Error(`upload ${id}: part records are incomplete (${parts.length} of ${count})`);
        }
        return parts;
      },
    };
  }

  /**
   * One transaction ends the upload and names the object it leaves: with no descriptor for the
   * digest, ours (created); with one whose copy `intact` keeps, that one (linked, its linkedAt
   * set for GC, only while it still names the key judged); with one whose copy is gone or short,
   * ours in its place (only while it still names the dead key). The stored descriptor comes
   * back with a refused condition (ALL_OLD), so each round costs no read: a changed descriptor
   * is judged again, one GC deleted meanwhile makes ours the new one.
   */
  async finish(lease: Lease, descriptor: Descriptor, intact?: (stored: Descriptor) => Promise<boolean>): Promise<Finished> {
    const repo = lease.upload.repo;
    const digest = descriptor.digest;
    const linkedAt = descriptor.createdAt;
    const removeUpload = {
      Delete: {
        TableName: this.table,
        Key: key.upload(lease.upload.id),
        ConditionExpression: '#writer = :me',
        ExpressionAttributeNames: { '#writer': 'writer' },
        ExpressionAttributeValues: { ':me': lease.attempt },
      },
    };
    const link = (d: Descriptor) => ({ Put: { TableName: this.table, Item: { ...key.link(repo, digest), ...d, repo, linkedAt } } });
    // For garbage collection: a link no manifest comes to reference (lib/registry/gc.ts).
    const mark = markLink(this.table, repo, digest, linkedAt);
    /** The digest's descriptor as this round found it; undefined: none (ours creates it). */
    let stored: Descriptor | undefined;
    for (let round = 0; round < FINISH_ROUNDS; round++) {
      const keep = stored !== undefined && (!intact || (await intact(stored)));
      const write = !stored
        ? { Put: { TableName: this.table, Item: { ...key.descriptor(digest), ...descriptor }, ConditionExpression: 'attribute_not_exists(pk)', ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const } }
        : keep
          ? {
              // Marks the descriptor as linked now: a garbage collection running since then
              // cannot delete it (README, Garbage collection); if one deleted it first, this fails.
              Update: {
                TableName: this.table,
                Key: key.descriptor(digest),
                UpdateExpression: 'SET linkedAt = :now',
                ConditionExpression: '#key = :kept',
                ExpressionAttributeNames: { '#key': 'key' },
                ExpressionAttributeValues: { ':now': linkedAt, ':kept': stored.key },
                ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
              },
            }
          : {
              // The repair: ours replaces a copy found gone or short, only if it is still the one named.
              Put: {
                TableName: this.table,
                Item: { ...key.descriptor(digest), ...descriptor },
                ConditionExpression: '#key = :from',
                ExpressionAttributeNames: { '#key': 'key' },
                ExpressionAttributeValues: { ':from': stored.key },
                ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
              },
            };
      try {
        await this.db.send(new TransactWriteCommand({ TransactItems: [write, link(keep ? stored! : descriptor), removeUpload, mark] }));
        if (!stored) return { descriptor };
        return keep ? { descriptor: stored } : { descriptor, replaced: stored.key };
      } catch (err) {
        if (!(err instanceof TransactionCanceledException)) throw err;
        const reasons = err.CancellationReasons ?? [];
        if (reasons[2]?.Code === 'ConditionalCheckFailed') throw new LeaseLost(lease.upload.id);
        if (reasons[0]?.Code !== 'ConditionalCheckFailed') throw err;
        const found = reasons[0].Item ? toDescriptor(unmarshall(reasons[0].Item)) : undefined;
        // Refused for want of a descriptor that a create would not have found: nothing to learn.
        if (!stored && !found) throw err;
        stored = found;
      }
    }
    throw new Contended();
  }

  /**
   * Expired uploads from the sparse `expiry` index (only session items carry its key, so the
   * purge never reads anything else), one page at a time: `cursor` continues where the last
   * page stopped. Shards spread the index's writes over several partitions.
   */
  async expired(before: number, cursor?: string, limit = 100): Promise<{ uploads: ExpiredUpload[]; cursor?: string }> {
    let { shard, start } = cursor ? (JSON.parse(cursor) as { shard: number; start?: Record<string, unknown> }) : { shard: 0, start: undefined };
    const res: QueryCommandOutput = await this.db.send(
      new QueryCommand({
        TableName: this.table,
        IndexName: EXPIRY_INDEX,
        KeyConditionExpression: '#shard = :shard AND #expiresAt < :before',
        ExpressionAttributeNames: { '#shard': 'expiryShard', '#expiresAt': 'expiresAt' },
        ExpressionAttributeValues: { ':shard': shardName(shard), ':before': before },
        ExclusiveStartKey: start,
        Limit: limit,
      }),
    );
    const uploads = (res.Items ?? []).map((item) => ({ id: (item.pk as string).slice('UPLOAD#'.length), expiresAt: item.expiresAt as number }));
    start = res.LastEvaluatedKey;
    if (!start) shard++;
    return { uploads, cursor: shard < EXPIRY_SHARDS ? JSON.stringify({ shard, start }) : undefined };
  }

  /**
   * Takes an expired upload for the purge: ends it for every request (its expiry becomes 0, a
   * stale writer loses its lease) without deleting the record, which keeps it in the index
   * until its storage is freed. Conditioned on the expiry the index showed: a commit since
   * moved it, and the upload lives on.
   */
  async claimExpired(upload: ExpiredUpload, before: number): Promise<Upload | undefined> {
    if (upload.expiresAt >= before) return undefined;
    try {
      const res = await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.upload(upload.id),
          UpdateExpression: 'SET #expiresAt = :zero REMOVE #writer, #leaseUntil',
          // The index is eventually consistent; this condition is not.
          ConditionExpression: '#expiresAt = :seen AND (attribute_not_exists(#writer) OR #leaseUntil < :before)',
          ExpressionAttributeNames: { '#expiresAt': 'expiresAt', '#writer': 'writer', '#leaseUntil': 'leaseUntil' },
          ExpressionAttributeValues: { ':seen': upload.expiresAt, ':before': before, ':zero': 0 },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return toUpload(res.Attributes!);
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return undefined;
      throw err;
    }
  }

  async removeClaimed(id: string): Promise<void> {
    await this.db.send(
      new DeleteCommand({
        TableName: this.table,
        Key: key.upload(id),
        ConditionExpression: '#expiresAt = :zero',
        ExpressionAttributeNames: { '#expiresAt': 'expiresAt' },
        ExpressionAttributeValues: { ':zero': 0 },
      }),
    ).catch((err) => {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    });
  }

  async remove(id: string, repo: string, heldBy?: string): Promise<Upload | undefined> {
    try {
      const res = await this.db.send(
        new DeleteCommand({
          TableName: this.table,
          Key: key.upload(id),
          ConditionExpression: `#repo = :repo AND #expiresAt > :now${heldBy ? ' AND #writer = :me' : ''}`,
          ExpressionAttributeNames: { '#repo': 'repo', '#expiresAt': 'expiresAt', ...(heldBy ? { '#writer': 'writer' } : {}) },
          ExpressionAttributeValues: { ':repo': repo, ':now': this.now(), ...(heldBy ? { ':me': heldBy } : {}) },
          ReturnValues: 'ALL_OLD',
        }),
      );
      return res.Attributes ? toUpload(res.Attributes) : undefined;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return undefined;
      throw err;
    }
  }
}

function toUpload(item: Record<string, unknown>): Upload {
  return {
    id: (item.pk as string).slice('UPLOAD#'.length),
    repo: item.repo as string,
    offset: item.offset as number,
    write: item.write as WriteState,
    startedAt: item.startedAt as number,
    updatedAt: item.updatedAt as number,
    expiresAt: item.expiresAt as number,
    seq: (item.seq as number) ?? 0,
    attempt: item.attempt as string | undefined,
  };
}

/** Rounds of a finish meeting a descriptor that keeps changing (each one a repair or GC) before it gives up (429). */
const FINISH_ROUNDS = 4;

/** The sparse index of live upload sessions by expiry (infra/dynamodb-table.json). */
const EXPIRY_INDEX = 'expiry';
const EXPIRY_SHARDS = 8;

function shardName(n: number): string {
  return `UPLOADS#${n}`;
}

/** An upload's shard of the expiry index, from its id (any string: ids are UUIDs in practice). */
export function expiryShard(id: string): string {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return shardName(h % EXPIRY_SHARDS);
}

/**
 * DynamoDB TTL is the backstop, a few days after expiry: the purge should find an expired
 * upload first, while the record still says which storage to free.
 */
const TTL_GRACE_MS = 3 * 24 * 3600 * 1000;

function ttlOf(ms: number): number {
  return Math.ceil((ms + TTL_GRACE_MS) / 1000);
}

function pick(names: Record<string, string>, ...wanted: string[]): Record<string, string> {
  return Object.fromEntries(wanted.map((n) => [n, names[n]!]));
}
