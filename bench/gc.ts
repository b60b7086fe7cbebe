/**
 * `npm run bench`, garbage collection: one GC run (the admin command's code path: lib/admin/cli.ts
 * wired as lib/admin/main.ts wires it, metadata pass then orphan sweep) over a table of 10,000
 * manifests and 50,000 repository links with 10 % garbage, on a table and bucket of its own:
 *
 *   1,000 repositories, each with 10 manifests (inline, a config and 4 layers each) that
 *   reference 45 of its 50 links; the other 5 links (10 %) are referenced by nothing. Every link
 *   has a descriptor of its own, so the garbage is 5,000 links, 5,000 descriptors and their
 *   5,000 objects; and 1,000 orphaned objects (blobs no record names, as failed finishes leave).
 *
 * GC reads what the writers marked: the garbage links carry the mark their finish wrote (an
 * abandoned push), the referenced links' marks are gone (an earlier run handled them), which is
 * a daily run's steady state. `gc --full` would read the whole table instead.
 *
 * The table is seeded directly (BatchWriteItem, items as the registry writes them) and only the
 * garbage has objects in the bucket (the sweep lists what is there, so its listing cost here is
 * the garbage's, not a full bucket's). The run uses grace 0: the seeded objects are minutes old.
 * The orphan sweep notes the 1,000 orphans (one key-index read each) and frees nothing of them;
 * a second run, once the suspects' wait is over (short here: DynamoDB Local's index has no lag),
 * judges them again and frees them. Prints time, DynamoDB calls and capacity units (as DynamoDB
 * Local reports them) and S3 requests of both runs, next to what was deleted.
 */
import { randomUUID } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { BatchWriteCommand, type DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { run as admin } from '../lib/admin/cli.js';
import { loadConfig } from '../lib/config.js';
import { DynamoCollectorStore } from '../lib/metadata/dynamo/gc.js';
import { DynamoOrphanStore } from '../lib/metadata/dynamo/orphans.js';
import { ensureTable, key } from '../lib/metadata/dynamo/table.js';
import { MediaTypes } from '../lib/oci/manifest.js';
import { type CollectReport, collectGarbage } from '../lib/registry/gc.js';
import { createDynamo, createStorage } from '../lib/registry/index.js';
import { ensureBucket } from '../lib/storage/s3/bucket.js';
import type { S3ObjectStore } from '../lib/storage/s3/objects.js';
import { removeBucket } from '../test/helpers/backends.js';
import { processEnv } from '../test/helpers/process.js';

const REPOS = 1000;
const MANIFESTS_PER_REPO = 10;
const REFERENCED_PER_REPO = 45; // 10 configs + 35 layers
const GARBAGE_PER_REPO = 5;
const ORPHANS = 1000;
const OBJECT_BYTES = 1024;
/** The suspects' wait in the bench: DynamoDB Local updates its indexes synchronously. */
const RECHECK_AFTER_MS = 200;

export async function measureGc(log: (msg: string) => void, scale = 1): Promise<[string, string, string][]> {
  const repos = Math.max(1, Math.round(REPOS * scale));
  const orphans = Math.max(1, Math.round(ORPHANS * scale));
  const env = processEnv('s3', { SKIFF_LOG_LEVEL: 'ERROR' });
  const config = loadConfig(env);
  const credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! };
  const db = createDynamo(config, credentials);
  const storage = createStorage(config);
  const s3 = (storage.objects as S3ObjectStore).s3;
  await ensureTable(db, config.dynamo.table);
  await ensureBucket(s3, config.s3.bucket);
  try {
    const seeded = await seed(db, config.dynamo.table, repos, (k) => s3.send(new PutObjectCommand({ Bucket: config.s3.bucket, Key: k, Body: Buffer.alloc(OBJECT_BYTES, 7) })), orphans, log);
    log(`gc: seeded ${seeded.items} items (${repos * MANIFESTS_PER_REPO} manifests, ${repos * (REFERENCED_PER_REPO + GARBAGE_PER_REPO)} links) and ${seeded.objects} objects in ${(seeded.ms / 1000).toFixed(1)} s`);

    const gc = async (): Promise<{ report: CollectReport; ms: number }> => {
      let report: CollectReport | undefined;
      const out: string[] = [];
      const io = { out: (l: string) => void out.push(l), err: (l: string) => void out.push(l), readSecret: async () => '' };
      const t0 = performance.now();
      const code = await admin(['gc', '--grace', '0', '--budget', '840'], () => {
        throw new Error('no user store');
      }, io, async (options) => {
        // As lib/admin/main.ts wires it, but with a short wait for the suspects (no index lag here).
        const orphans = new DynamoOrphanStore(db, config.dynamo.table, { recheckAfterMs: RECHECK_AFTER_MS });
        report = await collectGarbage(new DynamoCollectorStore(db, config.dynamo.table), storage, { ...options, orphans });
        return report;
      });
      const ms = performance.now() - t0;
      for (const line of out) log(`gc: ${line}`);
      if (code !== 0 || !report) throw new Error(`gc failed (${code}): ${out.join('\n')}`);
      return { report, ms };
    };
    const first = await gc();
    await new Promise((r) => setTimeout(r, RECHECK_AFTER_MS));
    const second = await gc();
    const { report, ms } = first;
    const o = report.orphans!;
    const o2 = second.report.orphans!;
    const calls = (c: Record<string, number>) => Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ');
    const s3Total = (c: Record<string, number>) => Object.values(c).reduce((n, v) => n + v, 0);
    return [
      [
        `GC run: ${repos * MANIFESTS_PER_REPO} manifests, ${repos * (REFERENCED_PER_REPO + GARBAGE_PER_REPO)} links, 10 % garbage`,
        `${(ms / 1000).toFixed(1)} s`,
        `deleted ${report.freed.links} links, ${report.freed.descriptors} descriptors, ${report.freed.objects} objects; noted ${o.noted.objects} orphaned objects (${o.listed} listed), freed ${o.freed.objects}`,
      ],
      ['  metadata pass: DynamoDB', `${report.cost.capacityUnits.toFixed(0)} units`, `${calls(report.cost.dynamo)}; S3 ${calls(report.cost.storage) || 'none'}`],
      ['  orphan sweep (notes): DynamoDB', `${o.cost.capacityUnits.toFixed(0)} units`, `${calls(o.cost.dynamo)}; S3 ${calls(o.cost.storage)}`],
      ['  S3 requests, whole run', String(s3Total(report.cost.storage) + s3Total(o.cost.storage)), ''],
      [
        'GC run after the suspects\' wait',
        `${(second.ms / 1000).toFixed(1)} s`,
        `deleted ${second.report.freed.links} links, ${second.report.freed.descriptors} descriptors; freed ${o2.freed.objects} orphaned objects (${o2.listed} listed), ${o2.cleared} suspects forgotten`,
      ],
      ['  orphan sweep (frees): DynamoDB', `${o2.cost.capacityUnits.toFixed(0)} units`, `${calls(o2.cost.dynamo)}; S3 ${calls(o2.cost.storage)}`],
    ];
  } finally {
    await db.send(new DeleteTableCommand({ TableName: config.dynamo.table })).catch(() => undefined);
    await removeBucket(s3, config.s3.bucket).catch(() => undefined);
  }
}

/** Items as the registry writes them (lib/metadata/dynamo), the garbage's objects, the orphans. */
async function seed(db: DynamoDBDocumentClient, table: string, repos: number, put: (key: string) => Promise<unknown>, orphans: number, log: (msg: string) => void): Promise<{ items: number; objects: number; ms: number }> {
  const t0 = performance.now();
  const old = Date.now() - 2 * 86_400_000;
  const items: Record<string, unknown>[] = [];
  const objects: string[] = [];
  const digestOf = (r: number, b: number) => `sha256:${(r * 100 + b).toString(16).padStart(64, '0')}`;
  for (let r = 0; r < repos; r++) {
    const repo = `bench/gc-${r}`;
    for (let b = 0; b < REFERENCED_PER_REPO + GARBAGE_PER_REPO; b++) {
      const digest = digestOf(r, b);
      const blob = { digest, size: OBJECT_BYTES, key: `blobs/${randomUUID()}`, mediaType: 'application/octet-stream', createdAt: old };
      items.push({ ...key.descriptor(digest), ...blob });
      items.push({ ...key.link(repo, digest), repo, ...blob, linkedAt: old });
      if (b >= REFERENCED_PER_REPO) {
        objects.push(blob.key);
        // The mark its finish wrote (lib/metadata/dynamo/gc.ts): an abandoned push's link.
        items.push({ ...key.linkMark(repo, digest), markedAt: old, markedBy: randomUUID() });
      }
    }
    for (let m = 0; m < MANIFESTS_PER_REPO; m++) {
      const desc = (b: number, mediaType: string) => ({ mediaType, digest: digestOf(r, b), size: OBJECT_BYTES });
      const layers = [0, 1, 2, 3].map((j) => desc(MANIFESTS_PER_REPO + ((m * 4 + j) % (REFERENCED_PER_REPO - MANIFESTS_PER_REPO)), 'application/vnd.oci.image.layer.v1.tar+gzip'));
      const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: desc(m, 'application/vnd.oci.image.config.v1+json'), layers }));
      const digest = `sha256:${(r * 100 + m).toString(16).padStart(63, '0')}f`;
      items.push({ ...key.manifest(repo, digest), repo, digest, mediaType: MediaTypes.ociManifest, size: body.length, body, createdAt: old, attempt: randomUUID() });
    }
  }
  for (let i = 0; i < orphans; i++) objects.push(`blobs/${randomUUID()}`);
  await inParallel(Math.ceil(items.length / 25), 8, async (i) => {
    let pending: Record<string, unknown>[] | undefined = items.slice(i * 25, i * 25 + 25).map((Item) => ({ PutRequest: { Item } }));
    while (pending?.length) {
      const res = await db.send(new BatchWriteCommand({ RequestItems: { [table]: pending as never } }));
      pending = res.UnprocessedItems?.[table] as Record<string, unknown>[] | undefined;
    }
  });
  log(`gc: ${items.length} items written; putting ${objects.length} objects`);
  await inParallel(objects.length, 16, (i) => put(objects[i]!));
  return { items: items.length, objects: objects.length, ms: performance.now() - t0 };
}

async function inParallel(count: number, width: number, work: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) await work(next++);
    }),
  );
}
