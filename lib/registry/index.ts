/**
 * Wiring: configuration in, a Registry (the services every route calls) out.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import type { Config } from '../config.js';
import type { MetadataStore } from '../metadata/types.js';
import { DynamoBlobIndex } from '../metadata/dynamo/blobs.js';
import { DynamoManifestIndex } from '../metadata/dynamo/manifests.js';
import { DynamoUserStore } from '../metadata/dynamo/users.js';
import { createDocumentClient } from '../metadata/dynamo/table.js';
import { DynamoUploadStore } from '../metadata/dynamo/uploads.js';
import { FsIngester } from '../storage/fs/ingester.js';
import { FsObjectStore } from '../storage/fs/objects.js';
import { FsInventory } from '../storage/fs/inventory.js';
import { createS3Client } from '../storage/s3/client.js';
import { BufferPool } from '../storage/s3/buffers.js';
import { S3Ingester } from '../storage/s3/ingester.js';
import { S3ObjectStore } from '../storage/s3/objects.js';
import { S3Inventory } from '../storage/s3/inventory.js';
import type { StorageDriver } from '../storage/types.js';
import { Authorizer, authSettings } from '../auth/authorizer.js';
import { tokenServiceProvider } from '../auth/keys.js';
import { UploadCapabilities } from '../auth/capability.js';
import { BlobService } from './blobs.js';
import { ManifestService } from './manifests.js';
import { UploadService } from './uploads.js';
import type { IntegrityReporter } from '../telemetry.js';

export interface Registry {
  config: Config;
  /** Undefined when the registry is open (SKIFF_AUTH=open). */
  auth?: Authorizer;
  /** Signs and checks upload-host capabilities; undefined without token keys. */
  capabilities?: UploadCapabilities;
  storage: StorageDriver;
  meta: MetadataStore;
  uploads: UploadService;
  blobs: BlobService;
  manifests: ManifestService;
  /** Where storage found disagreeing with metadata is reported (Telemetry.integrity). */
  integrity: IntegrityReporter;
}

export interface Clients {
  s3?: S3Client;
  dynamo?: DynamoDBDocumentClient;
}

export function createStorage(config: Config, s3?: S3Client): StorageDriver {
  if (config.storage === 'fs') {
    const objects = new FsObjectStore(config.dataDir + '/storage');
    return { kind: 'fs', objects, ingester: new FsIngester(objects), inventory: new FsInventory(objects) };
  }
  const client =
    s3 ??
    createS3Client({
      bucket: config.s3.bucket,
      region: config.region,
      endpoint: config.s3.endpoint,
      forcePathStyle: config.s3.forcePathStyle,
      checksums: config.s3.checksums,
      credentials: config.s3.credentials,
    });
  const objects = new S3ObjectStore(client, config.s3.bucket);
  const { partSize, concurrency } = config.s3;
  const buffers = new BufferPool(partSize, concurrency + 1);
  return { kind: 's3', objects, ingester: new S3Ingester(objects, { partSize, concurrency, buffers }), inventory: new S3Inventory(objects) };
}

export function createDynamo(config: Config, credentials?: { accessKeyId: string; secretAccessKey: string }): DynamoDBDocumentClient {
  return createDocumentClient({ table: config.dynamo.table, region: config.region, endpoint: config.dynamo.endpoint, credentials });
}

export function createMetadata(config: Config, db: DynamoDBDocumentClient): MetadataStore {
  return {
    uploads: new DynamoUploadStore(db, config.dynamo.table, {
      ttlMs: config.uploads.ttlSeconds * 1000,
      leaseMs: config.uploads.leaseSeconds * 1000,
    }),
    blobs: new DynamoBlobIndex(db, config.dynamo.table),
    manifests: new DynamoManifestIndex(db, config.dynamo.table),
    users: new DynamoUserStore(db, config.dynamo.table),
  };
}

export function createRegistry(config: Config, integrity: IntegrityReporter, clients: Clients = {}): Registry {
  const storage = createStorage(config, clients.s3);
  const meta = createMetadata(config, clients.dynamo ?? createDynamo(config));
  // One key provider for tokens and upload capabilities (one SSM read serves both).
  const tokens =
    config.auth.tokenKeys || config.auth.tokenKeysParameter
      ? tokenServiceProvider(
          { keys: config.auth.tokenKeys, parameter: config.auth.tokenKeysParameter, region: config.region },
          { issuer: 'skiff', service: config.auth.service, ttlSeconds: config.auth.tokenSeconds },
        )
      : undefined;
  const auth =
    config.auth.mode === 'required'
      ? new Authorizer(meta.users, tokens!, authSettings(config.auth))
      : undefined;
  const capabilities = tokens && new UploadCapabilities(tokens, { service: config.auth.service, ttlSeconds: config.uploads.ttlSeconds });
  return {
    config,
    auth,
    capabilities,
    storage,
    meta,
    uploads: new UploadService(meta, storage, {
      maxChunkBytes: config.uploads.maxChunkBytes,
      leaseMs: config.uploads.leaseSeconds * 1000,
      hashThread: config.uploads.hashThread,
    }, integrity),
    blobs: new BlobService(meta, storage, {
      deleteEnabled: config.blobs.deleteEnabled,
      redirectSeconds: config.blobs.redirect ? config.blobs.redirectSeconds : 0,
    }, integrity),
    manifests: new ManifestService(meta, storage, { deleteEnabled: config.blobs.deleteEnabled, maxPage: config.listings.maxPage }),
    integrity,
  };
}
