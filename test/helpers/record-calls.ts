/**
 * Test-only, loaded into a registry process with `--import` (after tsx): records every AWS SDK
 * call the process makes as the IAM actions it needs, with the HTTP request that caused it, one
 * JSON line per call in $SKIFF_RECORD_CALLS. The IAM coverage test checks them against each
 * function's role in the packaged template (DynamoDB Local and Ceph RGW ignore IAM).
 *
 * The request is found through AsyncLocalStorage entered around the server's 'request' event,
 * so work a request leaves running after its answer is still its own. Calls outside any request
 * (start-up: table and bucket creation) are recorded with origin $SKIFF_RECORD_ORIGIN or
 * "process".
 *
 * One call can be held to make a race happen on purpose: SIGUSR1 arms the hold for the next call
 * matching $SKIFF_RECORD_HOLD (`<action> <sort key prefix>`); that call writes a `held` line and
 * waits for SIGUSR2.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { appendFileSync } from 'node:fs';
import { Server } from 'node:http';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

/** One IAM authorization a call needs: the action, and what its conditions look at. */
export interface Needed {
  action: string;
  /** DynamoDB: the partition key values (dynamodb:LeadingKeys); sort keys, for the hold only. */
  leadingKeys?: string[];
  sortKeys?: string[];
  /** DynamoDB: the index a Query reads (its own ARN, `<table>/index/<name>`). */
  index?: string;
  /** S3: an object (bucket/*) or the bucket itself, and the s3:prefix of a listing. */
  on?: 'object' | 'bucket';
  prefix?: string;
}

export interface RecordedCall {
  /** The request (method, path, and the address:port it came in on), or why there was none. */
  origin: { method: string; path: string; local: string } | string;
  command: string;
  needs: Needed[];
}

const file = process.env.SKIFF_RECORD_CALLS;
if (!file) throw new Error('record-calls: SKIFF_RECORD_CALLS (the output file) is not set');
const request = new AsyncLocalStorage<{ method: string; path: string; local: string }>();

const emit = Server.prototype.emit as (this: Server, event: string | symbol, ...args: unknown[]) => boolean;
Server.prototype.emit = function (this: Server, event: string | symbol, ...args: unknown[]) {
  if (event !== 'request') return emit.call(this, event, ...args);
  const req = args[0] as { method: string; url: string; socket: { localAddress?: string; localPort?: number } };
  const local = `${req.socket.localAddress}:${req.socket.localPort}`;
  return request.run({ method: req.method, path: req.url, local }, () => emit.call(this, event, ...args));
};

const write = (line: object) => appendFileSync(file, `${JSON.stringify(line)}\n`);

let armed = false;
let release: (() => void) | undefined;
process.on('SIGUSR1', () => (armed = true));
process.on('SIGUSR2', () => release?.());
const [holdAction, holdSortKey] = (process.env.SKIFF_RECORD_HOLD ?? '').split(' ');

function patchSend(client: { prototype: { send: (...a: any[]) => any } }, needs: (name: string, input: any) => Needed[]) {
  const send = client.prototype.send;
  client.prototype.send = function (this: unknown, command: { constructor: { name: string }; input: any }, ...rest: unknown[]) {
    const name = command.constructor.name.replace(/Command$/, '');
    const call: RecordedCall = { origin: request.getStore() ?? process.env.SKIFF_RECORD_ORIGIN ?? 'process', command: name, needs: needs(name, command.input) };
    write(call);
    const held = armed && call.needs.some((n) => n.action === holdAction && n.sortKeys?.some((k) => k.startsWith(holdSortKey!)));
    if (!held) return send.call(this, command, ...rest);
    armed = false;
    write({ held: call });
    return new Promise<void>((resolve) => (release = resolve)).then(() => send.call(this, command, ...rest));
  };
}

// --- DynamoDB: the document client's commands and the low-level ones, as IAM item actions ---

const text = (v: unknown) => (typeof v === 'object' && v !== null && 'S' in v ? String((v as { S: unknown }).S) : String(v));
const keyOf = (k: any) => ({ leadingKeys: [text(k?.pk)], sortKeys: [text(k?.sk)] });
const ITEM_ACTION: Record<string, string> = { Get: 'GetItem', Put: 'PutItem', Update: 'UpdateItem', Delete: 'DeleteItem', ConditionCheck: 'ConditionCheckItem' };

function dynamoNeeds(name: string, input: any): Needed[] {
  const op = name.replace(/Item$/, '');
  if (op in ITEM_ACTION) return [{ action: `dynamodb:${ITEM_ACTION[op]}`, ...keyOf(op === 'Put' ? input.Item : input.Key) }];
  if (op === 'TransactWrite' || op === 'TransactGet' || op === 'TransactWriteItems' || op === 'TransactGetItems') {
    return input.TransactItems.map((t: Record<string, any>) => {
      const [kind, body] = Object.entries(t)[0]!;
      return { action: `dynamodb:${ITEM_ACTION[kind]}`, ...keyOf(kind === 'Put' ? body.Item : body.Key) };
    });
  }
  if (op === 'BatchGet') {
    const keys = Object.values(input.RequestItems as Record<string, { Keys: any[] }>).flatMap((r) => r.Keys);
    return [{ action: 'dynamodb:BatchGetItem', leadingKeys: keys.map((k) => text(k.pk)), sortKeys: keys.map((k) => text(k.sk)) }];
  }
  if (op === 'BatchWrite') {
    const keys = Object.values(input.RequestItems as Record<string, { PutRequest?: { Item: any }; DeleteRequest?: { Key: any } }[]>)
      .flat()
      .map((r) => r.PutRequest?.Item ?? r.DeleteRequest?.Key);
    return [{ action: 'dynamodb:BatchWriteItem', leadingKeys: keys.map((k) => text(k?.pk)), sortKeys: keys.map((k) => text(k?.sk)) }];
  }
  if (op === 'Query') {
    // The partition key's value in `pk = :v` (or `#alias = :v`).
    const names: Record<string, string> = input.ExpressionAttributeNames ?? {};
    const eq = [...String(input.KeyConditionExpression).matchAll(/(#?\w+)\s*=\s*(:\w+)/g)].find(([, n]) => (names[n!] ?? n) === 'pk');
    return [{ action: 'dynamodb:Query', leadingKeys: eq ? [text(input.ExpressionAttributeValues[eq[2]!])] : [], ...(input.IndexName ? { index: String(input.IndexName) } : {}) }];
  }
  return [{ action: `dynamodb:${name}` }];
}

// --- S3: API calls as IAM actions, on an object or on the bucket ---

const S3_OBJECT_ACTION: Record<string, string[]> = {
  GetObject: ['s3:GetObject'],
  HeadObject: ['s3:GetObject'],
  PutObject: ['s3:PutObject'],
  CreateMultipartUpload: ['s3:PutObject'],
  UploadPart: ['s3:PutObject'],
  CompleteMultipartUpload: ['s3:PutObject'],
  UploadPartCopy: ['s3:PutObject', 's3:GetObject'],
  CopyObject: ['s3:PutObject', 's3:GetObject'],
  DeleteObject: ['s3:DeleteObject'],
  DeleteObjects: ['s3:DeleteObject'],
  AbortMultipartUpload: ['s3:AbortMultipartUpload'],
  ListParts: ['s3:ListMultipartUploadParts'],
};
const S3_BUCKET_ACTION: Record<string, string> = {
  ListObjectsV2: 's3:ListBucket',
  ListObjects: 's3:ListBucket',
  HeadBucket: 's3:ListBucket',
  ListMultipartUploads: 's3:ListBucketMultipartUploads',
};

/**
 * A read of a key that may be missing: S3 answers 404 for a missing key only to a caller that may
 * list the bucket, 403 to any other, and the code tells "missing" by the 404 (isS3NotFound). The
 * implicit check carries no s3:prefix, so only a ListBucket without a prefix condition gives it.
 */
const S3_READS = new Set(['GetObject', 'HeadObject']);

function s3Needs(name: string, input: any): Needed[] {
  if (name in S3_OBJECT_ACTION) {
    const needs: Needed[] = S3_OBJECT_ACTION[name]!.map((action) => ({ action, on: 'object' as const }));
    return S3_READS.has(name) ? [...needs, { action: 's3:ListBucket', on: 'bucket' }] : needs;
  }
  if (name in S3_BUCKET_ACTION) return [{ action: S3_BUCKET_ACTION[name]!, on: 'bucket', ...(input.Prefix !== undefined ? { prefix: String(input.Prefix) } : {}) }];
  return [{ action: `s3:${name}`, on: 'bucket' }];
}

patchSend(DynamoDBDocumentClient, dynamoNeeds);
patchSend(DynamoDBClient, dynamoNeeds);
patchSend(S3Client, s3Needs);
