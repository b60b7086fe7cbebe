/**
 * Bucket creation for local servers and tests. A deployed stack's bucket comes from
 * CloudFormation; the registry never creates one there.
 */
import { CreateBucketCommand, HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { s3ErrorName } from './client.js';

export async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return;
  } catch (err) {
    const name = s3ErrorName(err);
    if (name !== 'NotFound' && name !== 'NoSuchBucket') throw err;
  }
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    const name = s3ErrorName(err);
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
  }
}
