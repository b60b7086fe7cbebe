/**
 * Retention's records in DynamoDB (key design in table.ts): one item per repository pattern in
 * the POLICIES partition, read whole by the retention run (a handful of items), and the run's
 * state item: its lease (one run at a time, so that two runs never save different positions)
 * and the repository after which the next run starts.
 */
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { type DynamoDBDocumentClient, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import type { PolicyStore, RetentionPolicy } from '../types.js';
import { deleteExisting, key, queryPrefix } from './table.js';

export class DynamoPolicyStore implements PolicyStore {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async list(): Promise<RetentionPolicy[]> {
    const { items } = await queryPrefix(this.db, this.table, key.policy('').pk, 'POLICY#');
    return items.map((i) => {
      const policy: RetentionPolicy = { pattern: i.pattern as string };
      if (i.untaggedDays !== undefined) policy.untaggedDays = i.untaggedDays as number;
      if (i.keep !== undefined) policy.keep = i.keep as RetentionPolicy['keep'];
      if (i.protect !== undefined) policy.protect = i.protect as string[];
      if (i.updatedAt !== undefined) policy.updatedAt = i.updatedAt as number;
      return policy;
    });
  }

  async put(policy: RetentionPolicy): Promise<void> {
    await this.db.send(new PutCommand({ TableName: this.table, Item: { ...key.policy(policy.pattern), ...policy } }));
  }

  remove(pattern: string): Promise<boolean> {
    return deleteExisting(this.db, this.table, key.policy(pattern));
  }

  async lease(run: string, until: number, now: number): Promise<{ cursor?: string } | { heldUntil: number }> {
    try {
      const res = await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.retentionState(),
          UpdateExpression: 'SET runner = :run, leaseUntil = :until',
          // Free, lapsed, or ours (a renewal; or our own first write, its answer lost and resent).
          ConditionExpression: 'attribute_not_exists(runner) OR leaseUntil < :now OR runner = :run',
          ExpressionAttributeValues: { ':run': run, ':until': until, ':now': now },
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return { cursor: res.Attributes?.after as string | undefined };
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
      const held = (err as { Item?: Record<string, { N?: string }> }).Item?.leaseUntil?.N;
      return { heldUntil: Number(held ?? until) };
    }
  }

  async release(run: string, cursor: string | undefined): Promise<boolean> {
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.retentionState(),
          UpdateExpression: cursor === undefined ? 'SET finishedAt = :now REMOVE runner, leaseUntil, #after' : 'SET finishedAt = :now, #after = :after REMOVE runner, leaseUntil',
          ConditionExpression: 'runner = :run',
          ExpressionAttributeNames: { '#after': 'after' },
          ExpressionAttributeValues: { ':run': run, ':now': Date.now(), ...(cursor === undefined ? {} : { ':after': cursor }) },
        }),
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException) return false;
      throw err;
    }
  }
}
