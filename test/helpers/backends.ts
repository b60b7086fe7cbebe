/**
 * The backends test/run.ts started for this run. Integration tests need them; run them
 * through `npm test` (or set SKIFF_TEST_S3_ENDPOINT and SKIFF_TEST_DYNAMODB_ENDPOINT).
 */
import { randomBytes } from 'node:crypto';
import { AbortMultipartUploadCommand, DeleteBucketCommand, DeleteObjectsCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';

export interface Backends {
  s3Endpoint: string;
  s3Credentials: { accessKeyId: string; secretAccessKey: string };
  dynamoEndpoint: string;
}

export function backends(): Backends {
  const s3Endpoint = process.env.SKIFF_TEST_S3_ENDPOINT;
  const dynamoEndpoint = process.env.SKIFF_TEST_DYNAMODB_ENDPOINT;
  if (!s3Endpoint || !dynamoEndpoint) {
    throw new Error('integration tests need the backends that `npm test` starts (SKIFF_TEST_S3_ENDPOINT, SKIFF_TEST_DYNAMODB_ENDPOINT)');
  }
  return {
    s3Endpoint,
    dynamoEndpoint,
    s3Credentials: { accessKeyId: process.env.SKIFF_TEST_S3_ACCESS_KEY ?? 'test', secretAccessKey: process.env.SKIFF_TEST_S3_SECRET_KEY ?? 'testsecret' },
  };
}

/** A name unique to this test run and file, for buckets and tables. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/**
 * Empties and removes a test's bucket (objects, then unfinished multipart uploads), so a run's
 * S3 server holds only what its live tests wrote: a run pushes several GiB of layers, and Ceph
 * stops taking writes when its device fills.
 */
export async function removeBucket(s3: S3Client, bucket: string): Promise<void> {
  const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket })).catch(() => undefined);
  for (const u of uploads?.Uploads ?? []) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })).catch(() => undefined);
  for (let token: string | undefined, more = true; more; ) {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token })).catch(() => undefined);
    if (!page) return; // no such bucket
    const objects = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
    if (objects.length) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects, Quiet: true } }));
    token = page.NextContinuationToken;
    more = !!page.IsTruncated;
  }
  await s3.send(new DeleteBucketCommand({ Bucket: bucket })).catch(() => undefined);
}
