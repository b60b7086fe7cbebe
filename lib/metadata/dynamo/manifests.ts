/**
 * Manifests, tags, referrers and the repository catalog in DynamoDB (key design in table.ts).
 * Every lookup is a GetItem or a Query on one partition: never a Scan, never an S3 listing.
 *
 * Every write is a transaction conditioned on what it read (a tag moves only from the digest it
 * was seen on, with its reverse-index entries; a manifest is deleted only as it was read; a push
 * re-checks each reference), sent through transact() so that a lost answer is resent and
 * recognised. A condition that fails means someone else changed it: read again and decide again.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { type DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { Contended, type IndexedReferrer, type ManifestIndex, type ManifestPlan, type ManifestRecord, type Page, ReferenceGone, type ReferrerDetails, type TagRecord, type UnlistOutcome } from '../types.js';
import { unlistIfEmpty } from './catalog.js';
import { markRepository } from './gc.js';
import { type TransactItems, batchGet, cancellationReasons, conditionFailed, key, queryPrefix, tagSk, taggedPrefix, transact } from './table.js';

/**
 * How often a write that found a tag or manifest changed since it read it reads again and
 * retries, before it gives up as contended (429).
 */
const MOVES = 8;

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

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.tag(repo, tag), ConsistentRead: true }));
    return res.Item ? toTag(res.Item, repo) : undefined;
  }

  async planPut(repo: string, tag: string | undefined, blobs: string[], manifests: string[]): Promise<ManifestPlan> {
    const keys = [...blobs.map((d) => key.link(repo, d)), ...manifests.map((d) => key.manifest(repo, d)), key.marker(repo)];
    if (tag !== undefined) keys.push(key.tag(repo, tag));
    const plan: ManifestPlan = { repo, tag, blobs: new Map(), manifests: new Map(), listed: false };
    for (const item of await batchGet(this.db, this.table, keys)) {
      const sk = item.sk as string;
      if (sk.startsWith('BLOB#')) plan.blobs.set(item.digest as string, item.size as number);
      else if (sk.startsWith('MANIFEST#')) plan.manifests.set(item.digest as string, item.size as number);
      else if (sk === key.marker(repo).sk) plan.listed = true;
      else if (tag !== undefined && sk === tagSk(tag)) plan.previous = item.digest as string;
    }
    return plan;
  }

  async putManifest(record: ManifestRecord, plan: ManifestPlan, attempt: string, referrer: ReferrerDetails = {}): Promise<void> {
    const { repo, digest, mediaType, size } = record;
    const { body, key: objectKey, subject, createdAt } = record;
    // What the service checked stays checked: the write fails if a referenced blob link or
    // child manifest went meanwhile (a concurrent DELETE), instead of storing a broken image.
    const references = [...[...plan.blobs.keys()].map((d) => ({ digest: d, Key: key.link(repo, d) })), ...[...plan.manifests.keys()].map((d) => ({ digest: d, Key: key.manifest(repo, d) }))];
    // Each reference is not only checked but marked with this push (usedBy): a garbage
    // collection (links) or a retention run (child manifests) that read the repository before
    // this push deletes the item only if usedBy is unchanged (README, Garbage collection and
    // Retention policies), so it cannot take something this push relies on.
    const mark = (Key: Record<string, string>) => ({
      Update: { TableName: this.table, Key, UpdateExpression: 'SET usedBy = :attempt', ConditionExpression: 'attribute_exists(pk)', ExpressionAttributeValues: { ':attempt': attempt } },
    });
    const own: TransactItems = references.map((r) => mark(r.Key));
    const put = (Item: Record<string, unknown>) => ({ Put: { TableName: this.table, Item } });
    // Only what serving the manifest needs: the referrers API's details live on the referrer item.
    own.push(put({ ...key.manifest(repo, digest), ...withoutUndefined({ repo, digest, mediaType, size, body: body ? Buffer.from(body) : undefined, key: objectKey, subject, createdAt, attempt }) }));
    if (subject) {
      const details = withoutUndefined({ artifactType: referrer.artifactType, annotations: referrer.annotations });
      const inline = Buffer.byteLength(JSON.stringify(details)) <= INLINE_REFERRER_BYTES;
      // Detached, a short artifactType still stays, so filtering by it needs no read of the manifest.
      const kept = inline ? details : withoutUndefined({ artifactType: (referrer.artifactType?.length ?? 0) <= 1024 ? referrer.artifactType : undefined, detached: true });
      own.push(put({ ...key.referrer(repo, subject, digest), digest, mediaType, size, ...kept }));
    }
    // The catalog's partition is shared by every repository: only a repository's first push
    // writes there, so pushes to known repositories never meet there. A known repository's push
    // touches the marker it read instead (pushedBy): the removal of an empty repository from the
    // catalog deletes marker and entry only if the marker is unchanged, so either this push
    // lands first and the removal keeps the repository, or the removal lands first and this
    // push finds the marker gone and lists the repository again, as a first push.
    let listed = plan.listed;
    const listing = (): TransactItems =>
      listed
        ? [{ Update: { TableName: this.table, Key: key.marker(repo), UpdateExpression: 'SET pushedBy = :attempt', ConditionExpression: 'attribute_exists(pk)', ExpressionAttributeValues: { ':attempt': attempt } } }]
        : [put({ ...key.marker(repo), name: repo, createdAt, pushedBy: attempt }), put({ ...key.repository(repo), name: repo, createdAt })];

    if (!listed) await this.indexTags(repo);
    let previous = plan.previous;
    for (let tries = 0; tries < MOVES; tries++) {
      const fixed = [...own, ...listing()];
      const marker = own.length;
      const items = [...fixed];
      const tag = plan.tag;
      if (tag !== undefined) {
        // The tag and its reverse-index entries move together, and only from where we saw it.
        items.push({
          Put: {
            TableName: this.table,
            Item: { ...key.tag(repo, tag), tag, digest, mediaType, size, updatedAt: createdAt, attempt },
            ...(previous === undefined
              ? { ConditionExpression: 'attribute_not_exists(pk)' }
              : { ConditionExpression: '#digest = :previous', ExpressionAttributeNames: { '#digest': 'digest' }, ExpressionAttributeValues: { ':previous': previous } }),
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          },
        });
        items.push(put({ ...key.tagged(repo, digest, tag), tag, digest }));
        if (previous !== undefined && previous !== digest) items.push({ Delete: { TableName: this.table, Key: key.tagged(repo, previous, tag) } });
      }
      try {
        await transact(this.db, items);
        return;
      } catch (err) {
        const reasons = cancellationReasons(err);
        if (!reasons) throw err;
        const gone = references.find((_, i) => reasons[i]?.Code === 'ConditionalCheckFailed');
        if (gone) throw new ReferenceGone(gone.digest);
        const moved = reasons[fixed.length];
        const movedNow = tag !== undefined && moved?.Code === 'ConditionalCheckFailed';
        const unlisted = listed && reasons[marker]?.Code === 'ConditionalCheckFailed';
        if (!movedNow && !unlisted) throw err;
        if (movedNow) {
          const now = moved.Item ? unmarshall(moved.Item as Record<string, AttributeValue>) : undefined;
          // Our own write, applied although its answer was lost: done.
          if (now?.attempt === attempt) return;
          previous = now?.digest as string | undefined;
        }
        if (unlisted) {
          // Removed from the catalog since the plan read the marker (it held no manifest then).
          listed = false;
          await this.indexTags(repo);
        }
      }
    }
    throw new Contended();
  }

  async deleteManifest(repo: string, digest: string): Promise<boolean> {
    for (let tries = 0; tries < MOVES; tries++) {
      const res = await this.db.send(new GetCommand({ TableName: this.table, Key: key.manifest(repo, digest), ConsistentRead: true }));
      const manifest = res.Item;
      if (!manifest) return false;
      const tags = await this.tagsOf(repo, digest, manifest.attempt === undefined);
      // The manifest goes only as it was read: a push of it meanwhile (maybe under a new tag)
      // changes its attempt, and the delete starts over with that tag in view.
      const last: TransactItems = [
        {
          Delete: {
            TableName: this.table,
            Key: key.manifest(repo, digest),
            ...(manifest.attempt === undefined
              ? { ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(attempt)' }
              : { ConditionExpression: 'attempt = :attempt', ExpressionAttributeValues: { ':attempt': manifest.attempt } }),
          },
        },
      ];
      if (manifest.subject) last.push({ Delete: { TableName: this.table, Key: key.referrer(repo, manifest.subject as string, digest) } });
      // The repository's links may be referenced by nothing now: garbage collection looks.
      last.push(markRepository(this.table, repo, Date.now()));
      // Tags in transactions of at most 100 items, the manifest with the last of them.
      const groups: TransactItems[] = [];
      let current = last;
      for (const tag of tags.reverse()) {
        if (current.length + 2 > 100) groups.push((current = []));
        current.push(...this.untag(repo, tag, digest));
      }
      try {
        for (const group of [...groups.reverse(), last]) await transact(this.db, group);
        return true;
      } catch (err) {
        // A tag moved away (it stays: its reverse entry moved with it), or the manifest was
        // pushed again or deleted: read again and start over.
        if (!conditionFailed(err)) throw err;
      }
    }
    throw new Contended();
  }

  /**
   * The tags on `digest`: from the reverse index, never every tag of the repository, except for
   * a manifest stored before the index existed (`legacy`: it carries no attempt), whose tags
   * may have no entry: then from all the repository's tags, once, as that manifest goes.
   */
  private async tagsOf(repo: string, digest: string, legacy: boolean): Promise<string[]> {
    const { items } = await queryPrefix(this.db, this.table, `REPO#${repo}`, taggedPrefix(digest));
    const tags = new Set(items.map((i) => i.tag as string));
    if (legacy) {
      for (const item of (await queryPrefix(this.db, this.table, `REPO#${repo}`, 'TAG#')).items) if (item.digest === digest) tags.add(item.tag as string);
    }
    return [...tags];
  }

  /**
   * Writes the reverse-index entry of every tag of a repository whose first push this is since
   * the index existed (it has no marker yet), each only while its tag still points where it was
   * read; the marker that push writes then means that every tag of it is indexed. A new
   * repository has no tags: one empty Query.
   */
  private async indexTags(repo: string): Promise<void> {
    const { items } = await queryPrefix(this.db, this.table, `REPO#${repo}`, 'TAG#');
    const index = (tags: Record<string, unknown>[]): TransactItems =>
      tags.flatMap((t) => [
        {
          ConditionCheck: {
            TableName: this.table,
            Key: key.tag(repo, t.tag as string),
            ConditionExpression: '#digest = :digest',
            ExpressionAttributeNames: { '#digest': 'digest' },
            ExpressionAttributeValues: { ':digest': t.digest },
          },
        },
        { Put: { TableName: this.table, Item: { ...key.tagged(repo, t.digest as string, t.tag as string), tag: t.tag, digest: t.digest } } },
      ]);
    for (let i = 0; i < items.length; i += 50) {
      const group = items.slice(i, i + 50);
      try {
        await transact(this.db, index(group));
      } catch (err) {
        if (!conditionFailed(err)) throw err;
        // A tag of the group moved meanwhile (its mover indexed it): the others one by one.
        for (const tag of group) {
          await transact(this.db, index([tag])).catch((e: unknown) => {
            if (!conditionFailed(e)) throw e;
          });
        }
      }
    }
  }

  async deleteTag(repo: string, tag: string, seen?: TagRecord): Promise<boolean> {
    if (seen) {
      try {
        await transact(this.db, this.untag(repo, tag, seen.digest, seen));
        return true;
      } catch (err) {
        // Moved, pushed again or deleted since it was read: it stays as it is now.
        if (!conditionFailed(err)) throw err;
        return false;
      }
    }
    for (let tries = 0; tries < MOVES; tries++) {
      const current = await this.getTag(repo, tag);
      if (!current) return false;
      try {
        await transact(this.db, this.untag(repo, tag, current.digest));
        return true;
      } catch (err) {
        // Moved or deleted since it was read: look again.
        if (!conditionFailed(err)) throw err;
      }
    }
    throw new Contended();
  }

  /**
   * Deletes `tag` and its reverse-index entry, only while it points at `digest` and, with
   * `seen`, only while it is the same push's tag (a push of the same digest under the same tag
   * meanwhile is a newer tag, and stays).
   */
  private untag(repo: string, tag: string, digest: string, seen?: TagRecord): TransactItems {
    const same =
      seen === undefined
        ? { condition: '', values: {} }
        : seen.attempt !== undefined
          ? { condition: ' AND attempt = :attempt', values: { ':attempt': seen.attempt } }
          : { condition: ' AND attribute_not_exists(attempt) AND updatedAt = :updatedAt', values: { ':updatedAt': seen.updatedAt } };
    return [
      {
        Delete: {
          TableName: this.table,
          Key: key.tag(repo, tag),
          ConditionExpression: `#digest = :digest${same.condition}`,
          ExpressionAttributeNames: { '#digest': 'digest' },
          ExpressionAttributeValues: { ':digest': digest, ...same.values },
        },
      },
      { Delete: { TableName: this.table, Key: key.tagged(repo, digest, tag) } },
    ];
  }

  async expireManifest(seen: ManifestRecord): Promise<boolean> {
    const { repo, digest } = seen;
    // A tag on it now (pushed since it was read) keeps it; one pushed after this read stored
    // the manifest again (a new attempt), which fails the delete's condition below.
    if ((await this.tagsOf(repo, digest, seen.attempt === undefined)).length) return false;
    const values: Record<string, unknown> = {};
    const conditions: string[] = [];
    if (seen.attempt === undefined) conditions.push('attribute_exists(pk) AND attribute_not_exists(attempt)');
    else {
      conditions.push('attempt = :attempt');
      values[':attempt'] = seen.attempt;
    }
    // An index pushed since the read that references it marked it (usedBy): it stays.
    if (seen.usedBy === undefined) conditions.push('attribute_not_exists(usedBy)');
    else {
      conditions.push('usedBy = :usedBy');
      values[':usedBy'] = seen.usedBy;
    }
    const items: TransactItems = [
      {
        Delete: {
          TableName: this.table,
          Key: key.manifest(repo, digest),
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeValues: values,
        },
      },
    ];
    if (seen.subject) items.push({ Delete: { TableName: this.table, Key: key.referrer(repo, seen.subject, digest) } });
    // As deleteManifest: the repository's links may be unreferenced now (lib/registry/gc.ts).
    items.push(markRepository(this.table, repo, Date.now()));
    try {
      await transact(this.db, items);
      return true;
    } catch (err) {
      if (!conditionFailed(err)) throw err;
      return false;
    }
  }

  async contents(repo: string): Promise<{ manifests: ManifestRecord[]; tags: TagRecord[] }> {
    const manifests = (await queryPrefix(this.db, this.table, `REPO#${repo}`, 'MANIFEST#')).items.map((i) => toManifest(i, repo));
    const tags = (await queryPrefix(this.db, this.table, `REPO#${repo}`, 'TAG#')).items.map((i) => toTag(i, repo));
    return { manifests, tags };
  }

  unlistIfEmpty(repo: string, dryRun = false): Promise<UnlistOutcome> {
    return unlistIfEmpty(this.db, this.table, repo, dryRun);
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
    attempt: item.attempt as string | undefined,
    usedBy: item.usedBy as string | undefined,
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
    ...(item.attempt !== undefined ? { attempt: item.attempt as string } : {}),
  };
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
