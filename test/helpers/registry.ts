/**
 * A registry for a test: the real app and server in this process, on the real backends, with a
 * table and a bucket (or data directory) of its own, and counters on the clients so tests can
 * measure what a request cost.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { after, before } from 'node:test';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AddressInfo, createServer } from 'node:net';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { type DynamoDBDocumentClient, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { type Config, loadConfig } from '../../lib/config.js';
import { RegistryApp, type Log } from '../../lib/http/app.js';
import { createRegistryServer } from '../../lib/local/server.js';
import { createDocumentClient, ensureTable } from '../../lib/metadata/dynamo/table.js';
import { createRegistry, type Registry } from '../../lib/registry/index.js';
import { createS3Client } from '../../lib/storage/s3/client.js';
import { ensureBucket } from '../../lib/storage/s3/bucket.js';
import type { IntegrityFailure } from '../../lib/telemetry.js';
import { backends, removeBucket, uniqueName } from './backends.js';

export type DriverKind = 'fs' | 's3';
export const DRIVERS: DriverKind[] = ['fs', 's3'];

export interface TestRegistry {
  url: string;
  /** With `uploadHost`: the upload host's base URL (on 127.0.0.2), serving the same registry. */
  uploadUrl?: string;
  config: Config;
  registry: Registry;
  s3: S3Client;
  db: DynamoDBDocumentClient;
  /** DynamoDB commands sent, by name. */
  dynamoCalls: Record<string, number>;
  /** S3 commands sent, by name (the driver's own counters are in registry.storage.objects.stats). */
  s3Calls: Record<string, number>;
  /** Errors the app logged (server faults); a clean test leaves this empty. */
  serverErrors: unknown[];
  /** Integrity failures the registry reported (Telemetry.integrity in production), apart from server faults. */
  integrityErrors: IntegrityFailure[];
  close(): Promise<void>;
}

export interface RegistryOptions {
  /** Extra environment, as the real process would read it. */
  env?: Record<string, string>;
  /** Reuse the table / bucket / data directory of another test registry (a restart). */
  sameStoreAs?: TestRegistry;
  /** Also serve the upload host (SKIFF_UPLOAD_ORIGIN set to it) on 127.0.0.2, sharing the registry. */
  uploadHost?: boolean;
}

export async function startRegistry(storage: DriverKind, opts: RegistryOptions = {}): Promise<TestRegistry> {
  const b = backends();
  const prev = opts.sameStoreAs?.config;
  const dataDir = prev?.dataDir ?? (await mkdtemp(join(tmpdir(), 'skiff-test-')));
  const uploadPort = opts.uploadHost ? await freePort(UPLOAD_HOST) : undefined;
  const config = loadConfig({
    SKIFF_STORAGE: storage,
    SKIFF_DATA_DIR: dataDir,
    S3_ENDPOINT: b.s3Endpoint,
    S3_BUCKET: prev?.s3.bucket ?? uniqueName('skiff'),
    S3_ACCESS_KEY_ID: b.s3Credentials.accessKeyId,
    S3_SECRET_ACCESS_KEY: b.s3Credentials.secretAccessKey,
    DYNAMODB_ENDPOINT: b.dynamoEndpoint,
    DYNAMODB_TABLE: prev?.dynamo.table ?? uniqueName('skiff'),
    ...(uploadPort ? { SKIFF_UPLOAD_ORIGIN: `http://${UPLOAD_HOST}:${uploadPort}` } : {}),
    ...opts.env,
  });
  const dynamoCalls: Record<string, number> = {};
  const s3Calls: Record<string, number> = {};
  const db = createDocumentClient({ table: config.dynamo.table, region: config.region, endpoint: config.dynamo.endpoint, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
  db.middlewareStack.add(
    (next, ctx) => (args) => {
      dynamoCalls[ctx.commandName!] = (dynamoCalls[ctx.commandName!] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'countCalls' },
  );
  const s3 = createS3Client({ bucket: config.s3.bucket, region: config.region, endpoint: config.s3.endpoint, forcePathStyle: true, checksums: 'WHEN_REQUIRED', credentials: b.s3Credentials });
  s3.middlewareStack.add(
    (next, ctx) => (args) => {
      s3Calls[ctx.commandName!] = (s3Calls[ctx.commandName!] ?? 0) + 1;
      return next(args);
    },
    { step: 'initialize', name: 'countCalls' },
  );
  await ensureTable(db, config.dynamo.table);
  if (storage === 's3') await ensureBucket(s3, config.s3.bucket);

  const integrityErrors: IntegrityFailure[] = [];
  const registry = createRegistry(config, (failure) => void integrityErrors.push(failure), { dynamo: db, s3 });
  const serverErrors: unknown[] = [];
  const log: Log = {
    info: () => undefined,
    warn: () => undefined,
    error: (message, ...extra) => void serverErrors.push({ message, extra }),
  };
  const stallMs = config.uploadHost.stallSeconds * 1000;
  const server = createRegistryServer(new RegistryApp(registry, log), { stallMs });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const servers = [server];
  if (uploadPort) {
    const host = createRegistryServer(new RegistryApp(registry, log, 'uploads'), { stallMs });
    await new Promise<void>((resolve) => host.listen(uploadPort, UPLOAD_HOST, resolve));
    servers.push(host);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    uploadUrl: uploadPort ? `http://${UPLOAD_HOST}:${uploadPort}` : undefined,
    config,
    registry,
    s3,
    db,
    dynamoCalls,
    s3Calls,
    serverErrors,
    integrityErrors,
    async close() {
      for (const s of servers) {
        await new Promise<void>((resolve) => {
          s.close(() => resolve());
          s.closeAllConnections();
        });
      }
      if (!opts.sameStoreAs && storage === 'fs') await rm(dataDir, { recursive: true, force: true });
      if (!opts.sameStoreAs && storage === 's3') await removeBucket(s3, config.s3.bucket);
    },
  };
}

/** The loopback address the upload host listens on in tests, as in the README's local shape. */
export const UPLOAD_HOST = '127.0.0.2';

/** A port free on `host` right now (for a server whose address must be known before it starts). */
export async function freePort(host: string): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, host, resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/**
 * Starts a registry for the enclosing describe() and stops it afterwards, checking that no
 * request of the suite ended in a server fault. The returned object is filled in before the
 * first test runs.
 */
export function useRegistry(storage: DriverKind, opts: RegistryOptions = {}): TestRegistry {
  const holder = {} as TestRegistry;
  before(async () => {
    Object.assign(holder, await startRegistry(storage, opts));
  });
  after(async () => {
    if (!holder.close) return;
    try {
      assert.deepEqual(holder.serverErrors, [], 'no request may end in a server fault');
    } finally {
      await holder.close();
    }
  });
  return holder;
}

/** Objects holding blob bytes: S3 keys, or files, under blobs/. */
export async function blobObjects(r: TestRegistry): Promise<string[]> {
  if (r.config.storage === 's3') {
    const res = await r.s3.send(new ListObjectsV2Command({ Bucket: r.config.s3.bucket, Prefix: 'blobs/' }));
    return (res.Contents ?? []).map((o) => o.Key!);
  }
  return readdir(join(r.config.dataDir, 'storage', 'blobs')).catch(() => []);
}

/** Every item of the registry's table, as sorted JSON lines (binary as base64): a snapshot to compare. */
export async function tableItems(r: TestRegistry): Promise<string[]> {
  const items: string[] = [];
  let start: Record<string, unknown> | undefined;
  do {
    const res = await r.db.send(new ScanCommand({ TableName: r.config.dynamo.table, ExclusiveStartKey: start, ConsistentRead: true }));
    for (const item of res.Items ?? []) items.push(JSON.stringify(item, (_, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)));
    start = res.LastEvaluatedKey;
  } while (start);
  return items.sort();
}

/** Snapshot-and-diff of a counter map. */
export function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v !== (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
}
