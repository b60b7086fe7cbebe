/**
 * `npm start`: the registry on one machine. By default blobs go to the local filesystem and
 * metadata to an embedded DynamoDB Local (started here, persistent under SKIFF_DATA_DIR);
 * S3_ENDPOINT / SKIFF_STORAGE=s3 and DYNAMODB_ENDPOINT point the same command at real services.
 */
import type { AddressInfo } from 'node:net';
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

const LOCAL_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

async function main(): Promise<void> {
  const telemetry = new Telemetry();
  const log = telemetry.logger;
  let config = loadConfig();
  let embedded: DynamoDbLocal | undefined;
  if (!config.dynamo.endpoint) {
    embedded = await startDynamoDbLocal({ port: config.dynamo.localPort, dbPath: join(config.dataDir, 'dynamodb') });
    config = { ...config, dynamo: { ...config.dynamo, endpoint: embedded.endpoint } };
  }
  const stopEmbedded = () => embedded?.stop() ?? Promise.resolve();
  try {
    const db = createDynamo(config, embedded ? LOCAL_CREDENTIALS : undefined);
    await ensureTable(db, config.dynamo.table);
    const registry = createRegistry(config, telemetry.integrity, { dynamo: db });
    if (registry.storage.objects instanceof S3ObjectStore) await ensureBucket(registry.storage.objects.s3, config.s3.bucket);

    const server = config.http.lambdaMode ? await lambdaModeServer(embedded) : createRegistryServer(new RegistryApp(registry, log));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.http.port, config.http.host, resolve);
    });
    const { port } = server.address() as AddressInfo;
    const where = config.storage === 'fs' ? `filesystem ${join(config.dataDir, 'storage')}` : `S3 bucket ${config.s3.bucket}${config.s3.endpoint ? ` at ${config.s3.endpoint}` : ''}`;
    const meta = embedded ? `embedded DynamoDB Local (${join(config.dataDir, 'dynamodb')})` : `DynamoDB ${config.dynamo.endpoint ?? 'in ' + config.region}, table ${config.dynamo.table}`;
    const mode = config.http.lambdaMode ? '\n  mode: Lambda (API Gateway v2 events, 6,291,456-byte payloads, no streaming)' : '';
    const access = config.auth.mode === 'open' ? 'open: no authentication' : 'authentication required';
    process.stdout.write(`Skiff registry listening on http://${config.http.host}:${port}/ (${access})\n  blobs: ${where}\n  metadata: ${meta}${mode}\n`);

    // Abandoned uploads: freed an hour after start-up and every hour after (see lib/registry/purge.ts).
    const purge = setInterval(() => {
      purgeExpiredUploads(registry.meta, registry.storage).then(
        (r) => r.purged && log.info('purged expired uploads', { ...r }),
        (err: unknown) => log.error('purge failed', { error: err instanceof Error ? err.message : String(err) }),
      );
    }, 3600_000);
    purge.unref();

    const shutdown = () => {
      server.close();
      server.closeAllConnections();
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
    env.AWS_ACCESS_KEY_ID ??= LOCAL_CREDENTIALS.accessKeyId;
    env.AWS_SECRET_ACCESS_KEY ??= LOCAL_CREDENTIALS.secretAccessKey;
  }
  const { http: handler } = await import('../../functions/handlers.js');
  return createLambdaModeServer(handler);
}

main().catch((err: unknown) => {
  const message = err instanceof ConfigError ? `configuration error: ${err.message}` : err instanceof Error ? err.message : String(err);
  process.stderr.write(`skiff: ${message}\n`);
  process.exit(1);
});
