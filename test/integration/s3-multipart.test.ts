/**
 * S3 multipart edge cases on Ceph RGW (which enforces the 5 MiB minimum and refuses to complete
 * while parts exist that the list omits): cleanup after finish, and repair after a request
 * failed half-way through writing parts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { MiB, bytes, chunked, sha256 } from '../helpers/data.js';
import { call, type Received } from '../helpers/http.js';
import { errorCode, patch, startUpload, withDigest } from '../helpers/oci.js';
import { delta, useRegistry } from '../helpers/registry.js';

describe('S3 multipart uploads', () => {
  const r = useRegistry('s3');

  /** A PATCH whose streamed body stops short of its Content-Range: 400, nothing committed. */
  async function failedPatch(location: string, start: number, declared: number, data: Buffer): Promise<Received> {
    const res = await call(location, { method: 'PATCH', body: chunked(data, MiB), headers: { 'Content-Range': `${start}-${start + declared - 1}` } });
    assert.equal(res.status, 400);
    assert.equal(errorCode(res), 'BLOB_UPLOAD_INVALID');
    return res;
  }

  it('leaves no multipart upload and no scratch object behind after a finish', async () => {
    const data = bytes(21 * MiB + 5, 1);
    const location = await startUpload(r.url, 'clean/up');
    for (let o = 0; o < data.length; o += 3 * MiB) assert.equal((await patch(location, data.subarray(o, o + 3 * MiB), o)).status, 202);
    const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
    assert.equal(put.status, 201);
    const bucket = r.config.s3.bucket;
    const mpus = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.deepEqual(mpus.Uploads ?? [], []);
    const scratch = await r.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'uploads/' }));
    assert.deepEqual((scratch.Contents ?? []).map((o) => o.Key), []);
    const link = await r.registry.meta.blobs.getLink('clean/up', sha256(data));
    const head = await r.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: link!.key }));
    assert.equal(head.ContentLength, data.length);
  });

  it('puts the tail back when a failed request overwrote the provisional last part', async () => {
    const head = bytes(3 * MiB, 2);
    const location = await startUpload(r.url, 'repair/tail');
    assert.equal((await patch(location, head, 0)).status, 202);
    // 3 MiB of tail + 8 MiB sent = a full 8 MiB part 1 uploaded, then the body ends short.
    await failedPatch(location, 3 * MiB, 10 * MiB, bytes(8 * MiB, 3));
    assert.equal((await call(location)).header('range'), `0-${3 * MiB - 1}`);
    const before = { ...r.s3Calls };
    const put = await call(withDigest(location, sha256(head)), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
    const used = delta(before, r.s3Calls);
    assert.equal(used.ListPartsCommand, 1, 'the repair ran');
    assert.equal(used.UploadPartCommand, 1, 'the tail went back into part 1');
    assert.ok((await call(`${r.url}/v2/repair/tail/blobs/${sha256(head)}`)).body.equals(head));
  });

  it('rebuilds the blob when a failed request left parts past the end', async () => {
    const head = bytes(1 * MiB, 4);
    const location = await startUpload(r.url, 'repair/strays');
    assert.equal((await patch(location, head, 0)).status, 202);
    // 1 MiB of tail + 20 MiB sent: parts 1 and 2 (8 MiB each) reach S3, then the body ends short.
    await failedPatch(location, 1 * MiB, 30 * MiB, bytes(20 * MiB, 5));
    const rest = bytes(6 * MiB + 11, 6);
    assert.equal((await patch(location, rest, 1 * MiB)).status, 202);
    const data = Buffer.concat([head, rest]);
    const before = { ...r.s3Calls };
    const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
    const used = delta(before, r.s3Calls);
    assert.ok(used.UploadPartCopyCommand, 'the blob was rebuilt from the completed scratch object');
    const got = await call(`${r.url}/v2/repair/strays/blobs/${sha256(data)}`);
    assert.equal(got.body.length, data.length);
    assert.ok(got.body.equals(data));
    const mpus = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket }));
    assert.deepEqual(mpus.Uploads ?? [], []);
  });

  it('rebuilds when the finishing PUT carries the last bytes and strays are present', async () => {
    const head = bytes(2 * MiB, 9);
    const location = await startUpload(r.url, 'repair/put');
    assert.equal((await patch(location, head, 0)).status, 202);
    await failedPatch(location, 2 * MiB, 40 * MiB, bytes(25 * MiB, 7));
    const last = bytes(9 * MiB + 1, 8);
    const data = Buffer.concat([head, last]);
    const before = { ...r.s3Calls };
    const put = await call(withDigest(location, sha256(data)), {
      method: 'PUT',
      body: last,
      headers: { 'Content-Range': `${2 * MiB}-${data.length - 1}` },
    });
    assert.equal(put.status, 201, put.body.toString());
    assert.ok(delta(before, r.s3Calls).UploadPartCopyCommand, 'the blob was rebuilt');
    assert.ok((await call(`${r.url}/v2/repair/put/blobs/${sha256(data)}`)).body.equals(data));
  });

  it('abandons the multipart upload a failed first request created', async () => {
    const location = await startUpload(r.url, 'repair/first');
    await failedPatch(location, 0, 40 * MiB, bytes(25 * MiB, 10));
    const mpus = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket, Prefix: 'blobs/' }));
    const id = location.split('/').pop()!;
    assert.deepEqual((mpus.Uploads ?? []).filter((u) => u.Key?.includes(id)), []);
    const data = bytes(100, 11);
    assert.equal((await patch(location, data, 0)).status, 202);
    assert.equal((await call(withDigest(location, sha256(data)), { method: 'PUT' })).status, 201);
  });
});
