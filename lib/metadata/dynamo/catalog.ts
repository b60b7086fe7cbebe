/**
 * The removal of an empty repository from the catalog (key design in table.ts), shared by its
 * two callers: garbage collection, when it handles the repository mark a manifest delete or a
 * retention expiry left (lib/registry/gc.ts), and the retention run, for a repository it read
 * and found (or left) without a manifest (lib/registry/retention.ts).
 *
 * Race-free against a push by the repository marker: the marker is read first, then the
 * manifests; the removal deletes marker and catalog entry together, only while the marker is as
 * read. A push that lands after the marker read changed it (pushedBy, or a new marker), so the
 * removal fails and the repository stays listed; one that landed before it is seen by the
 * manifest read. A push whose plan read the marker before the removal finds it gone at its
 * write and lists the repository again, as a first push (manifests.ts, putManifest).
 */
import { type DynamoDBDocumentClient, GetCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { Contended, type UnlistOutcome } from '../types.js';
import { cancellationReasons, isTransactionConflict, key, transact } from './table.js';

/** Counts a DynamoDB call and the capacity it reported (undefined: not reported), for a caller's cost report. */
export type CallCounter = (call: string, units: number | undefined) => void;

export async function unlistIfEmpty(db: DynamoDBDocumentClient, table: string, repo: string, dryRun = false, count: CallCounter = () => undefined): Promise<UnlistOutcome> {
  const read = await db.send(new GetCommand({ TableName: table, Key: key.marker(repo), ConsistentRead: true, ReturnConsumedCapacity: 'TOTAL' }));
  count('GetItem', read.ConsumedCapacity?.CapacityUnits);
  const marker = read.Item;
  const manifests = await db.send(
    new QueryCommand({
      TableName: table,
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': `REPO#${repo}`, ':prefix': 'MANIFEST#' },
      Limit: 1,
      ConsistentRead: true,
      ReturnConsumedCapacity: 'TOTAL',
    }),
  );
  count('Query', manifests.ConsumedCapacity?.CapacityUnits);
  if (manifests.Items?.length) return 'kept';
  if (dryRun) {
    // Marker and entry are written and deleted together; only repositories listed before
    // markers existed have an entry without one.
    if (marker) return 'removed';
    const entry = await db.send(new GetCommand({ TableName: table, Key: key.repository(repo), ConsistentRead: true, ReturnConsumedCapacity: 'TOTAL' }));
    count('GetItem', entry.ConsumedCapacity?.CapacityUnits);
    return entry.Item ? 'removed' : 'absent';
  }
  const condition = !marker
    ? { ConditionExpression: 'attribute_not_exists(pk)' }
    : marker.pushedBy === undefined
      ? { ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(pushedBy)' }
      : { ConditionExpression: 'pushedBy = :pushedBy', ExpressionAttributeValues: { ':pushedBy': marker.pushedBy } };
  try {
    await transact(db, [
      { Delete: { TableName: table, Key: key.marker(repo), ...condition } },
      // Only an entry that is there: a repository removed already is reported as such, not again.
      { Delete: { TableName: table, Key: key.repository(repo), ConditionExpression: 'attribute_exists(pk)' } },
    ]);
    // transact() does not return the transaction's consumed capacity: the call is counted without it.
    count('TransactWriteItems', undefined);
    return 'removed';
  } catch (err) {
    count('TransactWriteItems', undefined);
    const reasons = cancellationReasons(err);
    // A push touched the marker meanwhile (it holds a manifest now): that decides first.
    if (reasons?.[0]?.Code === 'ConditionalCheckFailed') return 'kept';
    if (reasons?.[1]?.Code === 'ConditionalCheckFailed') return 'absent';
    // Contention past the retries: a push is writing the marker; nothing applied, it stays listed.
    if (err instanceof Contended || isTransactionConflict(err)) return 'kept';
    throw err;
  }
}
