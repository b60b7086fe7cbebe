/**
 * S3 writes of a finish whose answer is lost. CompleteMultipartUpload is not idempotent: once it
 * applied, the multipart upload is gone, and a retry (the SDK's, or the code's) meets
 * NoSuchUpload. The finish recognises its own completion by the object it made (S3's multipart
 * ETag of exactly its part list, and their size) and answers 201 the first time, as if the
 * answer had arrived. Another attempt's completion (other parts) is never taken for ours. A
 * PutObject (a whole blob sent in the finish, a PATCH's tail) is recognised by its MD5 ETag.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { CompleteMultipartUploadCommand, ListMultipartUploadsCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { type FaultKind, injectFaults, nth } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { errorCode, getBlob, patch, startUpload, withDigest } from '../helpers/oci.js';
import { useRegistry } from '../helpers/registry.js';
import { multipartEtag } from '../../lib/storage/s3/lost-answers.js';

describe('S3 upload writes whose answer is lost', () => {
  const r = useRegistry('s3', { env: { S3_PART_SIZE: String(5 * MiB) } });

  const cases: { name: string; final: number }[] = [
    { name: 'without a final chunk (full part + provisional tail)', final: 0 },
    { name: 'with a final chunk (parts written by the finish)', final: 3 * MiB },
  ];
  for (const fault of ['lose', 'lose-retried'] as FaultKind[]) {
    for (const c of cases) {
      it(`answers 201 the first time, ${c.name} (${fault})`, async () => {
        const repo = `lost/complete-${fault}-${c.final}`;
        const data = bytes(7 * MiB + 123 + c.final, c.final + (fault === 'lose' ? 1 : 2));
        const patched = data.length - c.final;
        const location = await startUpload(r.url, repo);
        assert.equal((await patch(location, data.subarray(0, patched), 0)).status, 202);
        const faults = injectFaults(r);
        faults.arm(nth('CompleteMultipartUploadCommand', 0), fault);
        const put = await call(withDigest(location, sha256(data)), {
          method: 'PUT',
          ...(c.final ? { body: data.subarray(patched), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${patched}-${data.length - 1}` } } : {}),
        });
        const calls = faults.disarm();
        assert.ok(calls.some((x) => x.fault), 'the completion was hit');
        assert.equal(put.status, 201, put.body.toString());
        assert.equal(put.header('docker-content-digest'), sha256(data));
        assert.ok((await getBlob(r.url, repo, sha256(data))).body.equals(data), 'the blob reads back');
        const mpus = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket, Prefix: `blobs/${location.split('/').pop()}` }));
        assert.deepEqual(mpus.Uploads ?? [], [], 'nothing left to abort');
        assert.deepEqual(r.serverErrors, []);
      });
    }
  }

  for (const fault of ['lose', 'lose-retried'] as FaultKind[]) {
    it(`a whole blob sent in the finish (one PutObject) whose answer is lost answers 201 (${fault})`, async () => {
      const repo = `lost/put-${fault}`;
      const data = bytes(300_000, fault === 'lose' ? 7 : 8);
      const location = await startUpload(r.url, repo);
      const faults = injectFaults(r);
      faults.arm(nth('PutObjectCommand', 0, (input: { Key?: string }) => input.Key?.startsWith('blobs/') ?? false), fault);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
      assert.ok(faults.disarm().some((x) => x.fault), 'the PutObject was hit');
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, repo, sha256(data))).body.equals(data));
    });

    it(`a PATCH whose tail PutObject answer is lost answers 202 and the upload finishes (${fault})`, async () => {
      const repo = `lost/tail-${fault}`;
      const data = bytes(2 * MiB, fault === 'lose' ? 9 : 10);
      const location = await startUpload(r.url, repo);
      const faults = injectFaults(r);
      faults.arm(nth('PutObjectCommand', 0, (input: { Key?: string }) => input.Key?.includes('/tail/') ?? false), fault);
      const res = await patch(location, data.subarray(0, MiB), 0);
      assert.ok(faults.disarm().some((x) => x.fault), 'the tail PutObject was hit');
      assert.equal(res.status, 202, res.body.toString());
      assert.equal((await patch(location, data.subarray(MiB), MiB)).status, 202);
      assert.equal((await call(withDigest(location, sha256(data)), { method: 'PUT' })).status, 201);
      assert.ok((await getBlob(r.url, repo, sha256(data))).body.equals(data));
    });
  }

  it('does not take a completion of other parts for its own: the lost answer stays a failure', async () => {
    // A stale finish completed the multipart upload with its own last part first; ours then
    // meets NoSuchUpload, and the object there is not our part list.
    const repo = 'lost/other';
    const data = bytes(7 * MiB, 5);
    const location = await startUpload(r.url, repo);
    assert.equal((await patch(location, data, 0)).status, 202);
    const id = location.split('/').pop()!;
    const upload = (await r.registry.meta.uploads.get(id, repo))!;
    const other = bytes(2 * MiB, 6);
    const bucket = r.config.s3.bucket;
    const { key, multipartId } = upload.write;
    const part1 = (await r.registry.meta.uploads.ledger({ upload, attempt: 'x', seq: 0, until: 0, contended: false, parts: [] }).list(1))[0]!;
    const p2 = await r.s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: multipartId, PartNumber: 2, Body: other, ContentLength: other.length }));
    await r.s3.send(
      new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: multipartId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part1.etag }, { PartNumber: 2, ETag: p2.ETag }] } }),
    );
    const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
    assert.equal(put.status, 400, put.body.toString());
    assert.equal(errorCode(put), 'BLOB_UPLOAD_INVALID');
    assert.equal((await getBlob(r.url, repo, sha256(data))).status, 404, 'nothing linked under our digest');
    assert.deepEqual(r.serverErrors.splice(0), []);
  });

  it('computes S3\'s multipart ETag from the part ETags, and none from ETags that are not MD5s', () => {
    const md5 = (x: string) => createHash('md5').update(x).digest();
    const expected = `${createHash('md5').update(Buffer.concat([md5('a'), md5('b')])).digest('hex')}-2`;
    const parts = [
      { number: 1, etag: `"${md5('a').toString('hex')}"`, size: 1 },
      { number: 2, etag: md5('b').toString('hex'), size: 1 },
    ];
    assert.equal(multipartEtag(parts), expected);
    assert.equal(multipartEtag([{ number: 1, etag: 'not-an-md5', size: 1 }]), undefined);
  });
});
