/**
 * Retention policies in DynamoDB (key design in table.ts): one item per repository pattern in
 * the POLICIES partition, read whole by the retention run (a handful of items).
 */
import { type DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
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
}
