/**
 * Blob descriptors and repository links in DynamoDB. Reads are strongly consistent: a client
 * that just finished an upload and checks for it (every client does) must see it.
 */
import { type DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import type { BlobIndex, Descriptor, Link } from '../types.js';
import { batchGet, conditionFailed, key, toDescriptor, transact } from './table.js';
import { markDigest, markLink } from './gc.js';

export class DynamoBlobIndex implements BlobIndex {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async getLink(repo: string, digest: string): Promise<Link | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.link(repo, digest), ConsistentRead: true }));
    return res.Item ? { ...toDescriptor(res.Item), repo } : undefined;
  }

  async getLinks(repo: string, digests: string[]): Promise<Map<string, Link>> {
    const items = await batchGet(this.db, this.table, digests.map((d) => key.link(repo, d)));
    return new Map(items.map((item) => [item.digest as string, { ...toDescriptor(item), repo }]));
  }

  async putLink(repo: string, descriptor: Descriptor | Link): Promise<boolean> {
    const { digest, size, key: objectKey, mediaType, createdAt } = descriptor;
    const linkedAt = Date.now();
    try {
      // The link and the descriptor's linkedAt in one transaction, only while the descriptor
      // exists: a garbage collection either deleted it first (no link is written) or sees the
      // new linkedAt and keeps it (README, Garbage collection).
      await transact(this.db, [
        { Update: { TableName: this.table, Key: key.descriptor(digest), UpdateExpression: 'SET linkedAt = :now', ConditionExpression: 'attribute_exists(pk)', ExpressionAttributeValues: { ':now': linkedAt } } },
        { Put: { TableName: this.table, Item: { ...key.link(repo, digest), repo, digest, size, key: objectKey, mediaType, createdAt, linkedAt } } },
        markLink(this.table, repo, digest, linkedAt),
      ]);
      return true;
    } catch (err) {
      if (conditionFailed(err)) return false;
      throw err;
    }
  }

  /**
   * A transaction rather than a DeleteItem: its idempotency token makes a resend after a lost
   * answer (the SDK's, or transact()'s) succeed, where a conditional DeleteItem would find its
   * own delete done and answer the client 404 for a blob it just deleted. The digest is marked
   * for garbage collection in the same transaction: its descriptor may be linked nowhere now
   * (lib/registry/gc.ts).
   */
  async deleteLink(repo: string, digest: string): Promise<boolean> {
    try {
      await transact(this.db, [
        { Delete: { TableName: this.table, Key: key.link(repo, digest), ConditionExpression: 'attribute_exists(pk)' } },
        markDigest(this.table, digest, Date.now()),
      ]);
      return true;
    } catch (err) {
      if (conditionFailed(err)) return false;
      throw err;
    }
  }

  async getDescriptor(digest: string): Promise<Descriptor | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.descriptor(digest), ConsistentRead: true }));
    return res.Item ? toDescriptor(res.Item) : undefined;
  }
}
