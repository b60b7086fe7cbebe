/**
 * The single DynamoDB table and its key design. The table's definition lives in
 * infra/dynamodb-table.json, which serverless.yml deploys and ensureTable() creates locally,
 * so the code and the deployed stack cannot drift apart.
 *
 *   item                pk                  sk                 attributes
 *   blob descriptor     BLOB#<digest>       BLOB               digest size key mediaType createdAt linkedAt
 *                       (index `key`: key, sparse and keys-only: descriptors, links and large manifests
 *                       are the items carrying `key`, the object holding their bytes; the orphan sweep
 *                       asks it whether anything names an object, lib/registry/orphans.ts)
 *   repository link     REPO#<name>         BLOB#<digest>      digest size key mediaType createdAt linkedAt usedBy
 *                       (linkedAt, usedBy: what garbage collection conditions its deletes on; lib/registry/gc.ts;
 *                       index `digest`: digest, repo, which holds every link (and every manifest, which
 *                       carries both too): the repositories linking a digest, for GC)
 *   upload session      UPLOAD#<id>         UPLOAD             repo offset write attempt seq writer leaseUntil
 *                                                              startedAt updatedAt expiresAt ttl expiryShard
 *                                                              (index `expiry`: expiryShard, expiresAt; sparse)
 *   upload part         UPLOAD#<id>         PART#<00001>       number etag size seq ttl
 *   manifest            REPO#<name>         MANIFEST#<digest>  digest mediaType size body|key subject createdAt attempt
 *                                                              usedBy (the last index push referencing it as a
 *                                                              child: what retention conditions its delete on)
 *   tag                 REPO#<name>         TAG#<lower>#<tag>  tag digest mediaType size updatedAt attempt
 *   tag of a manifest   REPO#<name>         TAGGED#<digest>#<tag>  tag digest (the reverse index: written and
 *                                                              deleted in the transaction that moves the tag)
 *   repository marker   REPO#<name>         REPOSITORY         name createdAt pushedBy (in the repository's own
 *                                                              partition: a push reads it to know the catalog
 *                                                              lists it, and a push to a listed repository sets
 *                                                              pushedBy; the removal of an empty repository from
 *                                                              the catalog deletes marker and entry together,
 *                                                              only while pushedBy is as it read it)
 *   referrer            REPO#<name>         REFERRER#<subject>#<digest>  mediaType digest size artifactType
 *                                                              annotations | detached (details over 32 KiB
 *                                                              are read from the manifest itself)
 *   repository          CATALOG             REPO#<name>        name createdAt
 *   user                USERS               USER#<name>        name passwordHash createdAt updatedAt
 *   grant               USER#<name>         GRANT#<pattern>    pattern actions
 *   failed logins       AUTHFAIL#<user>     SOURCE#<address>   failures windowEnds ttl
 *                       (user `*`: every name tried from the address)
 *   retention policy    POLICIES            POLICY#<pattern>   pattern untaggedDays keep protect updatedAt
 *                                                              (lib/registry/retention.ts; admin: policy set)
 *   GC mark: repository GC#<n>              REPO#<name>        markedAt markedBy (a manifest left it: its links
 *                                                              may be unreferenced now)
 *   GC mark: link       GC#<n>              REPO#<name>#BLOB#<digest>  markedAt markedBy (a link written: due
 *                                                              when markedAt = linkedAt is past the grace period)
 *   GC mark: digest     GC#<n>              DIGEST#<digest>    markedAt markedBy (a link to it went: the
 *                                                              descriptor may be unlinked now)
 *                       (each written in the transaction that creates the possible garbage; n = gcShard()
 *                       of the repository or digest, 0..7, so a repository's marks sit together)
 *   GC state            GC                  STATE              runner leaseUntil marksCursor fullCursor (a run's lease and
 *                                                              where the next run resumes)
 *   retention state     RETENTION           STATE              runner leaseUntil after (the retention run's lease, and
 *                                                              the last repository a run that stopped finished)
 *   orphan sweep        GC                  ORPHANS            after savedAt (where the next sweep lists storage from)
 *   orphan suspect      GC                  SUSPECT#<object key>  size modified notedAt (an object a sweep found
 *                                                              unnamed: a later run frees it after re-checking)
 *
 * HEAD of a blob reads one item (the link carries size and key); HEAD of a tag reads one item
 * (the tag carries digest, type and size); GET of a tag reads two (tag, then manifest, whose body
 * is inline unless it is large). `ttl` (epoch seconds) lets
 * DynamoDB delete abandoned uploads eventually; reads never rely on it and check `expiresAt`.
 */
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  type DynamoDBClientConfig,
  ResourceNotFoundException,
  UpdateTableCommand,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  type BatchGetCommandOutput,
  DeleteCommand,
  DynamoDBDocumentClient,
  QueryCommand,
  type QueryCommandOutput,
  TransactWriteCommand,
} from '@aws-sdk/lib-dynamodb';
import { randomUUID } from 'node:crypto';
import type { InitializeMiddleware, MetadataBearer } from '@smithy/types';
import { Contended, type Descriptor } from '../types.js';
import definition from '../../../infra/dynamodb-table.json' with { type: 'json' };

export const key = {
  descriptor: (digest: string) => ({ pk: `BLOB#${digest}`, sk: 'BLOB' }),
  link: (repo: string, digest: string) => ({ pk: `REPO#${repo}`, sk: `BLOB#${digest}` }),
  upload: (id: string) => ({ pk: `UPLOAD#${id}`, sk: 'UPLOAD' }),
  part: (id: string, n: number) => ({ pk: `UPLOAD#${id}`, sk: partSk(n) }),
  manifest: (repo: string, digest: string) => ({ pk: `REPO#${repo}`, sk: `MANIFEST#${digest}` }),
  tag: (repo: string, tag: string) => ({ pk: `REPO#${repo}`, sk: tagSk(tag) }),
  tagged: (repo: string, digest: string, tag: string) => ({ pk: `REPO#${repo}`, sk: `${taggedPrefix(digest)}${tag}` }),
  marker: (repo: string) => ({ pk: `REPO#${repo}`, sk: 'REPOSITORY' }),
  referrer: (repo: string, subject: string, digest: string) => ({ pk: `REPO#${repo}`, sk: `REFERRER#${subject}#${digest}` }),
  repository: (repo: string) => ({ pk: 'CATALOG', sk: `REPO#${repo}` }),
  user: (name: string) => ({ pk: 'USERS', sk: `USER#${name}` }),
  grant: (name: string, pattern: string) => ({ pk: `USER#${name}`, sk: `GRANT#${pattern}` }),
  failures: (user: string, source: string) => ({ pk: `AUTHFAIL#${user}`, sk: `SOURCE#${source}` }),
  policy: (pattern: string) => ({ pk: 'POLICIES', sk: `POLICY#${pattern}` }),
  repositoryMark: (repo: string) => ({ pk: gcShard(repo), sk: `REPO#${repo}` }),
  linkMark: (repo: string, digest: string) => ({ pk: gcShard(repo), sk: `REPO#${repo}#BLOB#${digest}` }),
  digestMark: (digest: string) => ({ pk: gcShard(digest), sk: `DIGEST#${digest}` }),
  gcState: () => ({ pk: 'GC', sk: 'STATE' }),
  retentionState: () => ({ pk: 'RETENTION', sk: 'STATE' }),
  suspect: (objectKey: string) => ({ pk: 'GC', sk: `SUSPECT#${objectKey}` }),
};

/** Partitions of the GC marks: spread so that no one partition takes every push's mark. */
export const GC_SHARDS = 8;

/** The GC mark partition of a repository (all its marks) or a digest. */
export function gcShard(subject: string): string {
  let h = 0;
  for (let i = 0; i < subject.length; i++) h = (h * 31 + subject.charCodeAt(i)) >>> 0;
  return `GC#${h % GC_SHARDS}`;
}

/**
 * Tags sort case-insensitively (the spec's "lexical order"), ties broken by the exact tag.
 * "#" sorts before every character a tag may contain, so a tag sorts before its extensions.
 */
export function tagSk(tag: string): string {
  return `TAG#${tag.toLowerCase()}#${tag}`;
}

/** Sort-key prefix of the reverse index: the tags pointing at `digest`. */
export function taggedPrefix(digest: string): string {
  return `TAGGED#${digest}#`;
}

export function partSk(n: number): string {
  return `PART#${String(n).padStart(5, '0')}`;
}

export interface DynamoSettings {
  table: string;
  region: string;
  endpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export function createDocumentClient(settings: DynamoSettings): DynamoDBDocumentClient {
  const config: DynamoDBClientConfig = { region: settings.region, maxAttempts: 3 };
  if (settings.endpoint) config.endpoint = settings.endpoint;
  if (settings.credentials) config.credentials = settings.credentials;
  const client = new DynamoDBClient(config);
  client.middlewareStack.add(retryTransactionConflicts(), { step: 'initialize', name: 'skiffRetryTransactionConflicts' });
  return DynamoDBDocumentClient.from(client, {
    marshallOptions: { removeUndefinedValues: true },
  });
}

const CONFLICT_ATTEMPTS = 6;

/**
 * DynamoDB refuses a write that meets a transaction in flight on the same item
 * (TransactionConflictException) and cancels a transaction that meets another write
 * (TransactionCanceledException with reason TransactionConflict). Nothing was written either
 * way, and the SDK's retry strategy does not retry these, so every write would surface them
 * as failures under contention: retry here, with jittered backoff, before a condition decides.
 * A cancellation that also names a failed condition is a real answer and is not retried.
 * Past the last attempt the write fails as Contended, which the API answers with 429.
 */
export function retryTransactionConflicts(attempts = CONFLICT_ATTEMPTS, baseMs = 10): InitializeMiddleware<object, MetadataBearer> {
  return (next) =>
    async (args) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await next(args);
        } catch (err) {
          if (!isTransactionConflict(err)) throw err;
          if (attempt >= attempts) throw new Contended({ cause: err });
          await new Promise((r) => setTimeout(r, baseMs * 2 ** (attempt - 1) * (0.5 + Math.random())));
        }
      }
    };
}

export function isTransactionConflict(err: unknown): boolean {
  const e = err as { name?: string; CancellationReasons?: { Code?: string }[] } | undefined;
  if (e?.name === 'TransactionConflictException') return true;
  if (e?.name !== 'TransactionCanceledException') return false;
  const codes = (e.CancellationReasons ?? []).map((r) => r.Code ?? 'None');
  return codes.includes('TransactionConflict') && codes.every((c) => c === 'None' || c === 'TransactionConflict');
}

/** Creates the table if it does not exist (local servers, tests) and waits until it is active. */
export async function ensureTable(client: DynamoDBDocumentClient, table: string): Promise<void> {
  try {
    const res = await client.send(new DescribeTableCommand({ TableName: table }));
    if (res.Table?.TableStatus === 'ACTIVE') return await ensureIndexes(client, table, res.Table.GlobalSecondaryIndexes ?? []);
  } catch (err) {
    if (!(err instanceof ResourceNotFoundException)) throw err;
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: definition.AttributeDefinitions as CreateTableCommand['input']['AttributeDefinitions'],
        KeySchema: definition.KeySchema as CreateTableCommand['input']['KeySchema'],
        GlobalSecondaryIndexes: definition.GlobalSecondaryIndexes as CreateTableCommand['input']['GlobalSecondaryIndexes'],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  }
  for (let i = 0; i < 600; i++) {
    const res = await client.send(new DescribeTableCommand({ TableName: table }));
    if (res.Table?.TableStatus === 'ACTIVE') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await client.send(
    new UpdateTimeToLiveCommand({ TableName: table, TimeToLiveSpecification: definition.TimeToLiveSpecification }),
  ).catch((err: unknown) => {
    // Already enabled is fine; anything else is worth knowing about.
    if (!String((err as Error).message).includes('already enabled')) throw err;
  });
}

/** A table made before an index was defined (a local data directory) gets it added. */
async function ensureIndexes(client: DynamoDBDocumentClient, table: string, existing: { IndexName?: string }[]): Promise<void> {
  for (const index of definition.GlobalSecondaryIndexes) {
    if (existing.some((e) => e.IndexName === index.IndexName)) continue;
    await client.send(
      new UpdateTableCommand({
        TableName: table,
        AttributeDefinitions: definition.AttributeDefinitions as UpdateTableCommand['input']['AttributeDefinitions'],
        GlobalSecondaryIndexUpdates: [{ Create: index as NonNullable<UpdateTableCommand['input']['GlobalSecondaryIndexUpdates']>[number]['Create'] }],
      }),
    );
  }
}

/**
 * Consistent BatchGetItem of any number of keys, retrying what DynamoDB leaves unprocessed.
 * Duplicate keys are read once (BatchGetItem refuses a request that repeats a key).
 */
export async function batchGet(db: DynamoDBDocumentClient, table: string, wanted: Record<string, string>[]): Promise<Record<string, unknown>[]> {
  const keys = [...new Map(wanted.map((k) => [`${k.pk}\u0000${k.sk}`, k])).values()];
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < keys.length; i += 100) {
    let pending: Record<string, unknown>[] | undefined = keys.slice(i, i + 100);
    for (let attempt = 0; pending?.length; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(1000, 25 * 2 ** attempt)));
      const res: BatchGetCommandOutput = await db.send(new BatchGetCommand({ RequestItems: { [table]: { Keys: pending, ConsistentRead: true } } }));
      out.push(...(res.Responses?.[table] ?? []));
      pending = res.UnprocessedKeys?.[table]?.Keys;
    }
  }
  return out;
}

/** Deletes an item; false if there was none. */
export async function deleteExisting(db: DynamoDBDocumentClient, table: string, Key: Record<string, string>): Promise<boolean> {
  try {
    await db.send(new DeleteCommand({ TableName: table, Key, ConditionExpression: 'attribute_exists(pk)' }));
    return true;
  } catch (err) {
    if (err instanceof ConditionalCheckFailedException) return false;
    throw err;
  }
}

/**
 * Items of partition `pk` whose sort key starts with `prefix`, in order, after the sort key
 * `after`, at most `limit` of them (all when undefined), and whether more follow.
 */
export async function queryPrefix(
  db: DynamoDBDocumentClient,
  table: string,
  pk: string,
  prefix: string,
  opts: { after?: string; limit?: number } = {},
): Promise<{ items: Record<string, unknown>[]; more: boolean }> {
  const items: Record<string, unknown>[] = [];
  let start: Record<string, unknown> | undefined = opts.after === undefined ? undefined : { pk, sk: opts.after };
  const want = opts.limit === undefined ? Infinity : opts.limit + 1; // one extra tells whether there are more
  do {
    const res: QueryCommandOutput = await db.send(
      new QueryCommand({
        TableName: table,
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
        ExpressionAttributeValues: { ':pk': pk, ':prefix': prefix },
        ExclusiveStartKey: start,
        // DynamoDB ends a page at 1 MB whatever the Limit, which bounds what one call holds.
        Limit: Number.isFinite(want) ? want - items.length : undefined,
        ConsistentRead: true,
      }),
    );
    items.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start && items.length < want);
  const more = items.length > (opts.limit ?? Infinity);
  return { items: more ? items.slice(0, opts.limit) : items, more };
}

export type TransactItems = NonNullable<TransactWriteCommand['input']['TransactItems']>;

/** How often a transaction whose outcome is unknown is sent again before the failure is reported. */
const RESENDS = 3;

/**
 * A transaction that is safe to send again: it carries a ClientRequestToken, and DynamoDB
 * answers a token it already applied (for ten minutes) with success, applying nothing twice.
 * The SDK resends the same serialized request, token included, when an answer is lost; a
 * failure that reaches us without being DynamoDB's answer (a timeout, a reset connection, a 5xx
 * after the SDK's own retries) may still have applied, so it is sent again here, identically,
 * until DynamoDB answers. Its answer then decides: success (ours, now or before) or a refusal
 * (a condition, contention, throttling), which applied nothing. Tokens are global to the account
 * and bound to the request's parameters, so every distinct transaction gets a fresh one.
 */
export async function transact(db: DynamoDBDocumentClient, items: TransactItems, token: string = randomUUID()): Promise<void> {
  const command = new TransactWriteCommand({ TransactItems: items, ClientRequestToken: token });
  for (let sent = 1; ; sent++) {
    try {
      await db.send(command);
      return;
    } catch (err) {
      if (isAnswer(err) || sent > RESENDS) throw err;
      // Give a first send still running (TransactionInProgress) time to end, then ask again.
      await new Promise((r) => setTimeout(r, 20 * 2 ** sent));
    }
  }
}

/**
 * Whether an error is DynamoDB's answer to the request (a 4xx it sent: a refused condition,
 * throttling, a bad request; or contention we gave up on), so nothing of the request applied.
 * A transaction still in progress under the same token is no answer yet.
 */
function isAnswer(err: unknown): boolean {
  if (err instanceof Contended) return true;
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  if (e?.name === 'TransactionInProgressException') return false;
  const status = e?.$metadata?.httpStatusCode;
  return status !== undefined && status >= 400 && status < 500;
}

/**
 * The reasons of a cancelled transaction, one per item in order (Code 'None' for items that
 * passed; Item, raw, for a failed condition that asked for ALL_OLD); undefined for any other error.
 */
export function cancellationReasons(err: unknown): { Code?: string; Item?: Record<string, unknown> }[] | undefined {
  if ((err as { name?: string } | undefined)?.name !== 'TransactionCanceledException') return undefined;
  return (err as { CancellationReasons?: { Code?: string; Item?: Record<string, unknown> }[] }).CancellationReasons ?? [];
}

/** Whether `err` is a cancelled transaction with a failed condition (nothing of it applied). */
export function conditionFailed(err: unknown): boolean {
  return cancellationReasons(err)?.some((r) => r.Code === 'ConditionalCheckFailed') ?? false;
}

/** A descriptor (or the descriptor part of a repository link) from its item. */
export function toDescriptor(item: Record<string, unknown>): Descriptor {
  return {
    digest: item.digest as string,
    size: item.size as number,
    key: item.key as string,
    mediaType: item.mediaType as string,
    createdAt: item.createdAt as number,
  };
}
