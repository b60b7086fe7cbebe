/**
 * Manifests, tags, referrers and the repository catalog in DynamoDB (key design in table.ts).
 * Every lookup is a GetItem or a Query on one partition: never a Scan, never an S3 listing.
 */
import { TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, type DynamoDBDocumentClient, GetCommand, TransactWriteCommand } from '@aws-sdk/lib-dynamodb';
import type { IndexedReferrer, ManifestIndex, ManifestRecord, Page, ReferrerDetails, TagRecord } from '../types.js';
import { batchGet, deleteExisting, key, queryPrefix, tagSk } from './table.js';

/**
 * A referrer's artifactType and annotations are kept in its index item up to this size (as
 * JSON); larger ones stay only in the manifest and are read from it when listing. With the
 * inline manifest body (64 KiB at most) this keeps every item far below DynamoDB's 400 KB,
 * whatever a manifest's annotations weigh.
 */
export const INLINE_REFERRER_BYTES = 32 * 1024;

export class DynamoManifestIndex implements ManifestIndex {
  constructor(
    private readonly db: DynamoDBDocumentClient,
    private readonly table: string,
  ) {}

  async getManifest(repo: string, digest: string): Promise<ManifestRecord | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.manifest(repo, digest), ConsistentRead: true }));
    return res.Item ? toManifest(res.Item, repo) : undefined;
  }

  async manifestSizes(repo: string, digests: string[]): Promise<Map<string, number>> {
    const items = await batchGet(this.db, this.table, digests.map((d) => key.manifest(repo, d)));
    return new Map(items.map((i) => [i.digest as string, i.size as number]));
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.tag(repo, tag), ConsistentRead: true }));
    return res.Item ? toTag(res.Item, repo) : undefined;
  }

  async putManifest(record: ManifestRecord, tag?: string, referrer: ReferrerDetails = {}): Promise<void> {
    const { repo, digest, mediaType, size } = record;
    const { body, key: objectKey, subject, createdAt } = record;
    const puts: Record<string, unknown>[] = [
      // Only what serving the manifest needs: the referrers API's details live on the referrer item.
      { ...key.manifest(repo, digest), ...withoutUndefined({ repo, digest, mediaType, size, body: body ? Buffer.from(body) : undefined, key: objectKey, subject, createdAt }) },
      { ...key.repository(repo), name: repo, createdAt },
    ];
    if (tag) puts.push({ ...key.tag(repo, tag), tag, digest, mediaType, size, updatedAt: createdAt });
    if (subject) {
      const details = withoutUndefined({ artifactType: referrer.artifactType, annotations: referrer.annotations });
      const inline = Buffer.byteLength(JSON.stringify(details)) <= INLINE_REFERRER_BYTES;
      // Detached, a short artifactType still stays, so filtering by it needs no read of the manifest.
      const kept = inline ? details : withoutUndefined({ artifactType: (referrer.artifactType?.length ?? 0) <= 1024 ? referrer.artifactType : undefined, detached: true });
      puts.push({ ...key.referrer(repo, subject, digest), digest, mediaType, size, ...kept });
    }
    await this.db.send(new TransactWriteCommand({ TransactItems: puts.map((Item) => ({ Put: { TableName: this.table, Item } })) }));
  }

  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const manifest = await this.getManifest(repo, digest);
    if (!manifest) return false;
    const keys = [key.manifest(repo, digest)];
    if (manifest.subject) keys.push(key.referrer(repo, manifest.subject, digest));
    for (const tag of await this.tagsOf(repo, digest)) keys.push(key.tag(repo, tag));
    // A manifest with more than 100 tags is rare; delete in chunks, the manifest itself last.
    const [first, ...rest] = keys;
    for (let i = 0; i < rest.length; i += 100) {
      await this.db.send(new TransactWriteCommand({ TransactItems: rest.slice(i, i + 100).map((Key) => ({ Delete: { TableName: this.table, Key } })) }));
    }
    await this.db.send(new DeleteCommand({ TableName: this.table, Key: first }));
    // A push of this manifest under another tag may have landed between reading the tags and
    // deleting the manifest, leaving that tag pointing at nothing (HEAD by tag, one read of the
    // tag, would answer 200 and GET 404). Sweep once more: such a tag goes, unless the manifest
    // is back (pushed again since, which makes the tag valid).
    for (const tag of await this.tagsOf(repo, digest)) await this.deleteDanglingTag(repo, tag, digest);
    return true;
  }

  /** Deletes `tag` if it still points at `digest` and the repository no longer holds that manifest. */
  private async deleteDanglingTag(repo: string, tag: string, digest: string): Promise<void> {
    try {
      await this.db.send(
        new TransactWriteCommand({
          TransactItems: [
            { ConditionCheck: { TableName: this.table, Key: key.manifest(repo, digest), ConditionExpression: 'attribute_not_exists(pk)' } },
            {
              Delete: {
                TableName: this.table,
                Key: key.tag(repo, tag),
                ConditionExpression: '#digest = :digest',
                ExpressionAttributeNames: { '#digest': 'digest' },
                ExpressionAttributeValues: { ':digest': digest },
              },
            },
          ],
        }),
      );
    } catch (err) {
      // The manifest is back, or the tag moved or went: either way it no longer dangles.
      if (err instanceof TransactionCanceledException && err.CancellationReasons?.some((r) => r.Code === 'ConditionalCheckFailed')) return;
      throw err;
    }
  }

  private async tagsOf(repo: string, digest: string): Promise<string[]> {
    const { items } = await this.page(`REPO#${repo}`, 'TAG#', undefined, undefined);
    return items.filter((i) => i.digest === digest).map((i) => i.tag as string);
  }

  deleteTag(repo: string, tag: string): Promise<boolean> {
    return deleteExisting(this.db, this.table, key.tag(repo, tag));
  }

  async listTags(repo: string, n: number | undefined, last: string | undefined): Promise<Page<string>> {
    const page = await this.page(`REPO#${repo}`, 'TAG#', last === undefined ? undefined : tagSk(last), n);
    return { items: page.items.map((i) => i.tag as string), more: page.more };
  }

  async referrers(repo: string, subject: string, n: number, after: string | undefined): Promise<Page<IndexedReferrer>> {
    const start = after === undefined ? undefined : key.referrer(repo, subject, after).sk;
    const page = await this.page(`REPO#${repo}`, `REFERRER#${subject}#`, start, n);
    const items = page.items.map((i) =>
      withoutUndefined({
        mediaType: i.mediaType as string,
        digest: i.digest as string,
        size: i.size as number,
        artifactType: i.artifactType as string | undefined,
        annotations: i.annotations as Record<string, string> | undefined,
        detached: i.detached === true ? true : undefined,
      }),
    );
    return { items, more: page.more };
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
