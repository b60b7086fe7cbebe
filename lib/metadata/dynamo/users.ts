/**
 * Users, grants and failed-login counters in DynamoDB (key design in table.ts).
 *
 * Login attempts are counted per user and source address, one item each (pk `AUTHFAIL#<user>`,
 * sk `SOURCE#<address>`; user `*` counts every name tried from the source) with a TTL at the end
 * of its window. An attempt is reserved (a conditional increment) before its password is
 * checked and given back if the password was right, so concurrent guesses cannot overrun the
 * limit. Clearing every counter of a user is a Query: the admin tool's job, not the functions'
 * (their IAM allows no Query there).
 */
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, PutCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { Action, Grant } from '../../auth/access.js';
import type { User, UserStore } from '../types.js';
import { deleteExisting, key, queryPrefix } from './table.js';

export class DynamoUserStore implements UserStore {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
    private readonly now: () => number = Date.now,
  ) {}

  async getUser(name: string): Promise<User | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.user(name), ConsistentRead: true }));
    if (!res.Item) return undefined;
    const { passwordHash, createdAt, updatedAt } = res.Item;
    return { name, passwordHash, createdAt, updatedAt };
  }

  async putUser(user: User): Promise<void> {
    await this.db.send(new PutCommand({ TableName: this.table, Item: { ...key.user(user.name), ...user } }));
  }

  async deleteUser(name: string): Promise<boolean> {
    for (const grant of await this.grants(name)) await this.deleteGrant(name, grant.pattern);
    await this.clearFailures(name);
    return deleteExisting(this.db, this.table, key.user(name));
  }

  async listUsers(): Promise<string[]> {
    return (await this.query('USERS', 'USER#')).map((i) => i.name as string);
  }

  async grants(name: string): Promise<Grant[]> {
    return (await this.query(`USER#${name}`, 'GRANT#')).map((i) => ({ pattern: i.pattern as string, actions: i.actions as Action[] }));
  }

  async putGrant(name: string, grant: Grant): Promise<void> {
    await this.db.send(new PutCommand({ TableName: this.table, Item: { ...key.grant(name, grant.pattern), ...grant } }));
  }

  deleteGrant(name: string, pattern: string): Promise<boolean> {
    return deleteExisting(this.db, this.table, key.grant(name, pattern));
  }

  async reserveAttempt(user: string, source: string, limit: number, windowMs: number): Promise<boolean> {
    const Key = key.failures(user, source);
    // Two racers may both find the window over and both try to start one: the loser counts
    // in the winner's window (the loop), so no attempt goes uncounted.
    for (let round = 0; round < 4; round++) {
      const now = this.now();
      try {
        // Within the current window and under the limit: count this attempt.
        await this.db.send(
          new UpdateCommand({
            TableName: this.table,
            Key,
            UpdateExpression: 'ADD failures :one',
            ConditionExpression: 'windowEnds > :now AND failures < :limit',
            ExpressionAttributeValues: { ':one': 1, ':now': now, ':limit': limit },
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
        return true;
      } catch (err) {
        if (!(err instanceof ConditionalCheckFailedException)) throw err;
        const old = err.Item ? unmarshall(err.Item) : undefined;
        if (old && (old.windowEnds as number) > now) return false; // the window is full
      }
      // No window, or an expired one: start a new one with this attempt, unless a racer just did.
      const windowEnds = now + windowMs;
      try {
        await this.db.send(
          new PutCommand({
            TableName: this.table,
            Item: { ...Key, failures: 1, windowEnds, ttl: Math.ceil(windowEnds / 1000) },
            ConditionExpression: 'attribute_not_exists(pk) OR windowEnds <= :now',
            ExpressionAttributeValues: { ':now': now },
          }),
        );
        return true;
      } catch (err) {
        if (!(err instanceof ConditionalCheckFailedException)) throw err;
      }
    }
    return false;
  }

  async releaseAttempt(user: string, source: string): Promise<void> {
    try {
      await this.db.send(
        new UpdateCommand({
          TableName: this.table,
          Key: key.failures(user, source),
          UpdateExpression: 'ADD failures :minus',
          ConditionExpression: 'failures > :zero',
          ExpressionAttributeValues: { ':minus': -1, ':zero': 0 },
        }),
      );
    } catch (err) {
      // Gone or already at zero (the window ended, or an unlock cleared it): nothing to give back.
      if (!(err instanceof ConditionalCheckFailedException)) throw err;
    }
  }

  async failures(user: string, source: string): Promise<number> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.failures(user, source), ConsistentRead: true }));
    return res.Item && (res.Item.windowEnds as number) > this.now() ? (res.Item.failures as number) : 0;
  }

  async clearFailures(user: string, source?: string): Promise<void> {
    const { pk } = key.failures(user, '');
    const keys = source !== undefined ? [key.failures(user, source)] : (await this.query(pk, 'SOURCE#')).map((i) => ({ pk, sk: i.sk as string }));
    for (const Key of keys) await this.db.send(new DeleteCommand({ TableName: this.table, Key }));
  }

  private async query(pk: string, prefix: string): Promise<Record<string, unknown>[]> {
    return (await queryPrefix(this.db, this.table, pk, prefix)).items;
  }
}
