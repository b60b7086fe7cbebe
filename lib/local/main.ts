/**
 * `npm start`: the registry on one machine. By default blobs go to the local filesystem and
 * metadata to an embedded DynamoDB Local (started here, persistent under SKIFF_DATA_DIR);
 * S3_ENDPOINT / SKIFF_STORAGE=s3 and DYNAMODB_ENDPOINT point the same command at real services.
 */
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../config.js';
import { RegistryApp } from '../http/app.js';
import { ensureTable } from '../metadata/dynamo/table.js';
import { createDynamo, createRegistry } from '../registry/index.js';
import { purgeExpiredUploads } from '../registry/purge.js';
import { S3ObjectStore } from '../storage/s3/objects.js';
import { ensureBucket } from '../storage/s3/bucket.js';
import { type DynamoDbLocal, startDynamoDbLocal } from './dynamodb-local.js';
import { Telemetry } from '../telemetry.js';
import { createLambdaModeServer } from './lambda-mode.js';
import { createRegistryServer } from './server.js';

async function main(): Promise<void> {
  const telemetry = new Telemetry();
  const log = telemetry.logger;
  provideEphemeralKey(process.env);
  let config = loadConfig();
  // The data directory holds password hashes and private layers: ours alone. The umask covers
  // what this process and its DynamoDB Local create; the chmod, directories made before it.
  process.umask(0o077);
  if (config.storage === 'fs' || !config.dynamo.endpoint) {
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    await chmod(config.dataDir, 0o700);
    await chmod(join(config.dataDir, 'storage'), 0o700).catch(() => undefined); // absent until the first blob
  }
  // The upload host alone is a deployed part of a stack (or a second process beside a registry):
  // it uses the registry's table and bucket as they are, never creates them, never starts an
  // embedded DynamoDB (DYNAMODB_ENDPOINT unset means AWS, as in Lambda) and leaves the purge to
  // the registry (its role may not read the whole table).
  const uploadsOnly = config.uploadHost.serve === 'uploads';
  let embedded: DynamoDbLocal | undefined;
  if (!config.dynamo.endpoint && !uploadsOnly) {
    embedded = await startDynamoDbLocal({ port: config.dynamo.localPort, dbPath: join(config.dataDir, 'dynamodb'), region: config.region });
    config = { ...config, dynamo: { ...config.dynamo, endpoint: embedded.endpoint } };
  }
  const stopEmbedded = () => embedded?.stop() ?? Promise.resolve();
  try {
    const db = createDynamo(config, embedded?.credentials);
    if (!uploadsOnly) await ensureTable(db, config.dynamo.table);
    const registry = createRegistry(config, telemetry.integrity, { dynamo: db });
    if (!uploadsOnly && registry.storage.objects instanceof S3ObjectStore) await ensureBucket(registry.storage.objects.s3, config.s3.bucket);

    const servers: Server[] = [];
    const lines: string[] = [];
    const serve = async (server: Server, host: string, port: number) => {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, resolve);
      });
      servers.push(server);
      return `http://${host}:${(server.address() as AddressInfo).port}/`;
    };
    const uploadHost = () => createRegistryServer(new RegistryApp(registry, log, 'uploads'), { stallMs: config.uploadHost.stallSeconds * 1000 });
    const origin = config.uploadHost.origin;
    if (config.uploadHost.serve === 'uploads') {
      lines.push(`Skiff upload host listening on ${await serve(uploadHost(), config.http.host, config.http.port)} (upload sessions only, authorized by their capability)`);
    } else {
      const api = config.http.lambdaMode ? await lambdaModeServer(embedded) : createRegistryServer(new RegistryApp(registry, log), { stallMs: config.uploadHost.stallSeconds * 1000 });
      const access = config.auth.mode === 'open' ? 'open: no authentication' : 'authentication required';
      lines.push(`Skiff registry listening on ${await serve(api, config.http.host, config.http.port)} (${access})`);
      if (origin) {
        const url = new URL(origin);
        // An https origin is a host deployed elsewhere (behind its load balancer): only hand it out.
        const here = url.protocol === 'http:' ? await serve(uploadHost(), url.hostname, Number(url.port || 80)) : undefined;
        lines.push(`  upload host: ${here ? `listening on ${here}` : `${origin} (not served by this process)`}; uploads started here continue there`);
      }
    }
    const where = config.storage === 'fs' ? `filesystem ${join(config.dataDir, 'storage')}` : `S3 bucket ${config.s3.bucket}${config.s3.endpoint ? ` at ${config.s3.endpoint}` : ''}`;
    const meta = embedded ? `embedded DynamoDB Local (${join(config.dataDir, 'dynamodb')})` : `DynamoDB ${config.dynamo.endpoint ?? 'in ' + config.region}, table ${config.dynamo.table}`;
    if (config.http.lambdaMode && config.uploadHost.serve === 'all') lines.push('  mode: Lambda (API Gateway v2 events, 6,291,456-byte payloads, no streaming)');
    process.stdout.write(`${lines[0]}\n  blobs: ${where}\n  metadata: ${meta}\n${lines.slice(1).map((l) => l + '\n').join('')}`);

    // Abandoned uploads: freed an hour after start-up and every hour after (see lib/registry/purge.ts).
    if (!uploadsOnly) {
      const purge = setInterval(() => {
        purgeExpiredUploads(registry.meta, registry.storage).then(
          (r) => r.purged && log.info('purged expired uploads', { ...r }),
          (err: unknown) => log.error('purge failed', { error: err instanceof Error ? err.message : String(err) }),
        );
      }, 3600_000);
      purge.unref();
    }

    const shutdown = () => {
      for (const server of servers) {
        server.close();
        server.closeAllConnections();
      }
      void stopEmbedded().then(() => process.exit(0));
    };
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
  } catch (err) {
    await stopEmbedded();
    throw err;
  }
}

/**
 * Upload capabilities are signed with the token keys. An open local registry that hands out an
 * upload host (SKIFF_UPLOAD_ORIGIN) and has no keys gets one for this process only, in the
 * environment so that the Lambda-mode handler (which reads it at import) signs with the same key
 * the upload host checks. Capabilities it signed die with the process, as do its uploads'
 * Locations; the upload host alone (SKIFF_SERVE=uploads) must be given the registry's keys.
 */
function provideEphemeralKey(env: NodeJS.ProcessEnv): void {
  if (!env.SKIFF_UPLOAD_ORIGIN || env.SKIFF_SERVE === 'uploads' || env.SKIFF_AUTH === 'required') return;
  if (env.SKIFF_TOKEN_KEYS || env.SKIFF_TOKEN_KEYS_PARAMETER) return;
  env.SKIFF_TOKEN_KEYS = `ephemeral=${randomBytes(32).toString('base64url')}`;
}

/**
 * The Lambda handler behind a server that reproduces API Gateway and Lambda's limits. The
 * handler reads its configuration from the environment at import, as in Lambda, so the settings
 * the deployed stack sets (serverless.yml) are applied first unless given explicitly.
 */
async function lambdaModeServer(embedded: DynamoDbLocal | undefined) {
  const env = process.env;
  env.SKIFF_MAX_CHUNK_BYTES ??= '4400000';
  env.SKIFF_HASH_THREAD ??= 'false';
  env.POWERTOOLS_METRICS_DISABLED ??= 'true';
  if ((env.SKIFF_STORAGE ?? 'fs') === 's3') env.SKIFF_REDIRECT ??= 'true';
  if (embedded) {
    env.DYNAMODB_ENDPOINT = embedded.endpoint;
    // The handler signs DynamoDB requests with AWS_*: they must be the store's key. Credentials
    // given for AWS stay S3's.
    if (env.AWS_ACCESS_KEY_ID && !env.S3_ACCESS_KEY_ID) {
      env.S3_ACCESS_KEY_ID = env.AWS_ACCESS_KEY_ID;
      env.S3_SECRET_ACCESS_KEY = env.AWS_SECRET_ACCESS_KEY;
    }
    env.AWS_ACCESS_KEY_ID = embedded.credentials.accessKeyId;
    env.AWS_SECRET_ACCESS_KEY = embedded.credentials.secretAccessKey;
    delete env.AWS_SESSION_TOKEN;
  }
  const { http: handler } = await import('../../functions/handlers.js');
  return createLambdaModeServer(handler);
}

main().catch((err: unknown) => {
  const message = err instanceof ConfigError ? `configuration error: ${err.message}` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`skiff: ${message}\n`);
  process.exit(1);
});
