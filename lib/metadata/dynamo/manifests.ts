/**
 * Manifests, tags, referrers and the repository catalog in DynamoDB (key design in table.ts).
 * Every lookup is a GetItem or a Query on one partition: never a Scan, never an S3 listing.
 */
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import type { ManifestIndex, ManifestRecord, Page, Referrer, TagRecord } from '../types.js';
import { batchGet, deleteExisting, key, queryPrefix, tagSk } from './table.js';

export class DynamoManifestIndex implements ManifestIndex {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async getManifest(repo: string, digest: string): Promise<ManifestRecord | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.manifest(repo, digest), ConsistentRead: true }));
    return res.Item ? toManifest(res.Item, repo) : undefined;
  }

  async haveManifests(repo: string, digests: string[]): Promise<Set<string>> {
    const items = await batchGet(this.db, this.table, [...new Set(digests)].map((d) => key.manifest(repo, d)));
    return new Set(items.map((i) => i.digest as string));
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.tag(repo, tag), ConsistentRead: true }));
    return res.Item ? toTag(res.Item, repo) : undefined;
  }

  async putManifest(record: ManifestRecord, tag?: string): Promise<void> {
    const { repo, digest, mediaType, size } = record;
    const puts: Record<string, unknown>[] = [
      { ...key.manifest(repo, digest), ...withoutUndefined({ ...record, body: record.body ? Buffer.from(record.body) : undefined }) },
      { ...key.repository(repo), name: repo, createdAt: record.createdAt },
    ];
    if (tag) puts.push({ ...key.tag(repo, tag), tag, digest, mediaType, size, updatedAt: record.createdAt });
    if (record.subject) {
      puts.push({
        ...key.referrer(repo, record.subject, digest),
        ...withoutUndefined({ digest, mediaType, size, artifactType: record.artifactType, annotations: record.annotations }),
      });
    }
    await this.db.send(new TransactWriteCommand({ TransactItems: puts.map((Item) => ({ Put: { TableName: this.table, Item } })) }));
  }

  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const manifest = await this.getManifest(repo, digest);
    if (!manifest) return false;
    const keys = [key.manifest(repo, digest)];
    if (manifest.subject) keys.push(key.referrer(repo, manifest.subject, digest));
    for (const item of await this.queryAll(repo, 'TAG#')) {
      if (item.digest === digest) keys.push(key.tag(repo, item.tag as string));
    }
    // A manifest with more than 100 tags is rare; delete in chunks, the manifest itself last.
    const [first, ...rest] = keys;
    for (let i = 0; i < rest.length; i += 100) {
      await this.db.send(new TransactWriteCommand({ TransactItems: rest.slice(i, i + 100).map((Key) => ({ Delete: { TableName: this.table, Key } })) }));
    }
    await this.db.send(new DeleteCommand({ TableName: this.table, Key: first }));
    return true;
  }

  deleteTag(repo: string, tag: string): Promise<boolean> {
    return deleteExisting(this.db, this.table, key.tag(repo, tag));
  }

  async listTags(repo: string, n: number | undefined, last: string | undefined): Promise<Page<string>> {
    const page = await this.page(`REPO#${repo}`, 'TAG#', last === undefined ? undefined : tagSk(last), n);
    return { items: page.items.map((i) => i.tag as string), more: page.more };
  }

  async referrers(repo: string, subject: string): Promise<Referrer[]> {
    return (await this.queryAll(repo, `REFERRER#${subject}#`)).map((i) =>
      withoutUndefined({
        mediaType: i.mediaType as string,
        digest: i.digest as string,
        size: i.size as number,
        artifactType: i.artifactType as string | undefined,
        annotations: i.annotations as Record<string, string> | undefined,
      }),
    );
  }

  async listRepositories(n: number | undefined, last: string | undefined): Promise<Page<string>> {
    const page = await this.page('CATALOG', 'REPO#', last === undefined ? undefined : `REPO#${last}`, n);
    return { items: page.items.map((i) => i.name as string), more: page.more };
  }

  async hasRepository(repo: string): Promise<boolean> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.repository(repo), ConsistentRead: true }));
    return Boolean(res.Item);
  }

  private page(pk: string, prefix: string, after: string | undefined, n: number | undefined): Promise<Page<Record<string, unknown>>> {
    return queryPrefix(this.db, this.table, pk, prefix, { after, limit: n });
  }

  private async queryAll(repo: string, prefix: string): Promise<Record<string, unknown>[]> {
    return (await this.page(`REPO#${repo}`, prefix, undefined, undefined)).items;
  }
}

function toManifest(item: Record<string, unknown>, repo: string): ManifestRecord {
  return withoutUndefined({
    repo,
    digest: item.digest as string,
    mediaType: item.mediaType as string,
    size: item.size as number,
    body: item.body as Uint8Array | undefined,
    key: item.key as string | undefined,
    subject: item.subject as string | undefined,
    artifactType: item.artifactType as string | undefined,
    annotations: item.annotations as Record<string, string> | undefined,
    createdAt: item.createdAt as number,
  });
}

function toTag(item: Record<string, unknown>, repo: string): TagRecord {
  return {
    repo,
    tag: item.tag as string,
    digest: item.digest as string,
    mediaType: item.mediaType as string,
    size: item.size as number,
    updatedAt: item.updatedAt as number,
  };
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
