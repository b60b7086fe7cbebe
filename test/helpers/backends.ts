/**
 * The backends test/run.ts started for this run. Integration tests need them; run them
 * through `npm test` (or set SKIFF_TEST_S3_ENDPOINT and SKIFF_TEST_DYNAMODB_ENDPOINT).
 */
import { randomBytes } from 'node:crypto';

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
