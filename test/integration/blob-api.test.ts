/**
 * The blob API over HTTP, for each storage driver, on the real backends (Ceph RGW, DynamoDB
 * Local): every way clients push a blob, reads, ranges, status, cancel, dedupe, mount,
 * isolation and deletion.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MiB, bytes, chunked, sha256, sha512 } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { errorCode, getBlob, patch, pushChunked, pushInPut, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, blobObjects, delta, useRegistry } from '../helpers/registry.js';
import { EMPTY_SHA256 } from '../../lib/oci/digest.js';

for (const driver of DRIVERS) {
  describe(`blob API (${driver})`, () => {
    const r = useRegistry(driver);

    async function expectBlob(repo: string, digest: string, data: Buffer) {
      const head = await call(`${r.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.header('content-length'), String(data.length));
      assert.equal(head.header('docker-content-digest'), digest);
      const got = await getBlob(r.url, repo, digest);
      assert.equal(got.status, 200);
      assert.equal(got.header('docker-content-digest'), digest);
      assert.equal(got.body.length, data.length);
      assert.ok(got.body.equals(data), 'bytes read back differ from bytes pushed');
    }

    it('answers the version check', async () => {
      const res = await call(`${r.url}/v2/`);
      assert.equal(res.status, 200);
      assert.equal(res.header('docker-distribution-api-version'), 'registry/2.0');
    });

    it('starts an upload with 202, a Location, an upload UUID and Range 0-0', async () => {
      const res = await call(`${r.url}/v2/start/test/blobs/uploads/`, { method: 'POST' });
      assert.equal(res.status, 202);
      const id = res.header('docker-upload-uuid');
      assert.match(id ?? '', /^[0-9a-f-]{36}$/);
      assert.equal(res.header('location'), `/v2/start/test/blobs/uploads/${id}`);
      assert.equal(res.header('range'), '0-0');
      assert.equal(res.header('oci-chunk-max-length'), undefined, 'no limit configured, none advertised');
    });

    it('takes a whole blob in one POST ?digest= (monolithic)', async () => {
      const data = bytes(300 * 1024, 11);
      const digest = sha256(data);
      const res = await call(`${r.url}/v2/mono/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(res.status, 201, res.body.toString());
      assert.equal(res.header('location'), `/v2/mono/blobs/${digest}`);
      assert.equal(res.header('docker-content-digest'), digest);
      await expectBlob('mono', digest, data);
    });

    for (const size of [1024, 5 * MiB + 1, 20 * MiB + 3]) {
      it(`takes the blob as the finishing PUT's body, ${size} bytes (containerd, BuildKit, oras)`, async () => {
        const data = bytes(size, size);
        const { digest, finish } = await pushInPut(r.url, 'put/body', data);
        assert.equal(finish.header('location'), `/v2/put/body/blobs/${digest}`);
        await expectBlob('put/body', digest, data);
      });
    }

    for (const size of [1 * MiB, 17 * MiB + 5]) {
      it(`takes a whole layer in one PATCH without Content-Range, ${size} bytes (docker, podman, skopeo)`, async () => {
        const data = bytes(size, size + 1);
        const location = await startUpload(r.url, 'docker/style');
        const res = await call(location, { method: 'PATCH', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
        assert.equal(res.status, 202, res.body.toString());
        assert.equal(res.header('range'), `0-${size - 1}`);
        const digest = sha256(data);
        const put = await call(withDigest(resolve(r.url, res.header('location')), digest), { method: 'PUT' });
        assert.equal(put.status, 201, put.body.toString());
        await expectBlob('docker/style', digest, data);
      });
    }

    it('takes a streamed PATCH with no Content-Length (chunked transfer)', async () => {
      const data = bytes(9 * MiB + 17, 5);
      const location = await startUpload(r.url, 'chunked/te');
      const res = await call(location, { method: 'PATCH', body: chunked(data, 700_001) });
      assert.equal(res.status, 202, res.body.toString());
      const put = await call(withDigest(resolve(r.url, res.header('location')), sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      await expectBlob('chunked/te', sha256(data), data);
    });

    it('assembles many 1-byte chunks', async () => {
      const data = bytes(100, 7);
      const { digest } = await pushChunked(r.url, 'tiny/bytes', data, [1]);
      await expectBlob('tiny/bytes', digest, data);
    });

    it('assembles many 1 KiB chunks', async () => {
      const data = bytes(200 * 1024 + 5, 8);
      const { digest } = await pushChunked(r.url, 'tiny/kib', data, [1024]);
      await expectBlob('tiny/kib', digest, data);
    });

    it('assembles chunks that cross the 5 MiB part minimum at odd places', async () => {
      // 3 MiB + 3 MiB crosses 5 MiB inside the second chunk; the 1-byte chunk lands in a fresh
      // tail; the 4 MiB and 2 MiB chunks cross 8 MiB (the part size) and leave a final tail.
      const data = bytes(3 * MiB + 3 * MiB + 1 + 4 * MiB + 2 * MiB + 9, 9);
      const { digest } = await pushChunked(r.url, 'cross/boundary', data, [3 * MiB, 3 * MiB, 1, 4 * MiB, 2 * MiB, 9]);
      await expectBlob('cross/boundary', digest, data);
    });

    it('assembles bounded chunks with the last one in the finishing PUT (regctl)', async () => {
      const data = bytes(12 * MiB + 100, 10);
      let location = await startUpload(r.url, 'regctl/style');
      const chunk = 1 * MiB;
      let offset = 0;
      for (; offset + chunk < data.length; offset += chunk) {
        const res = await patch(location, data.subarray(offset, offset + chunk), offset);
        assert.equal(res.status, 202, res.body.toString());
        location = resolve(r.url, res.header('location'));
      }
      const last = data.subarray(offset);
      const digest = sha256(data);
      const put = await call(withDigest(location, digest), {
        method: 'PUT',
        body: last,
        headers: { 'Content-Range': `${offset}-${data.length - 1}`, 'Content-Type': 'application/octet-stream' },
      });
      assert.equal(put.status, 201, put.body.toString());
      await expectBlob('regctl/style', digest, data);
    });

    it('stores zero-length blobs, monolithic and via an empty finishing PUT', async () => {
      const mono = await call(`${r.url}/v2/empty/one/blobs/uploads/?digest=${EMPTY_SHA256}`, { method: 'POST' });
      assert.equal(mono.status, 201, mono.body.toString());
      await expectBlob('empty/one', EMPTY_SHA256, Buffer.alloc(0));
      const location = await startUpload(r.url, 'empty/two');
      const put = await call(withDigest(location, EMPTY_SHA256), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      await expectBlob('empty/two', EMPTY_SHA256, Buffer.alloc(0));
    });

    it('serves byte ranges with 206 and refuses unsatisfiable ones with 416', async () => {
      const data = bytes(10_000, 12);
      const { digest } = await pushInPut(r.url, 'ranges', data);
      const mid = await getBlob(r.url, 'ranges', digest, { Range: 'bytes=10-19' });
      assert.equal(mid.status, 206);
      assert.equal(mid.header('content-range'), 'bytes 10-19/10000');
      assert.ok(mid.body.equals(data.subarray(10, 20)));
      const suffix = await getBlob(r.url, 'ranges', digest, { Range: 'bytes=-5' });
      assert.equal(suffix.status, 206);
      assert.ok(suffix.body.equals(data.subarray(9995)));
      const open = await getBlob(r.url, 'ranges', digest, { Range: 'bytes=9990-' });
      assert.ok(open.body.equals(data.subarray(9990)));
      const beyond = await getBlob(r.url, 'ranges', digest, { Range: 'bytes=10000-10010' });
      assert.equal(beyond.status, 416);
      assert.equal(beyond.header('content-range'), 'bytes */10000');
    });

    it('reports upload status with 204 and Range, and every Location handed out stays valid', async () => {
      const first = await startUpload(r.url, 'status/check');
      const st0 = await call(first);
      assert.equal(st0.status, 204);
      assert.equal(st0.header('range'), '0-0');
      assert.equal(st0.header('content-length'), undefined, 'RFC 9110: no Content-Length on a 204');
      const data = bytes(3000, 13);
      const p1 = await patch(first, data.subarray(0, 1000), 0);
      const second = resolve(r.url, p1.header('location'));
      await patch(second, data.subarray(1000, 3000), 1000);
      // The first Location still answers, with the current offset.
      const st = await call(first);
      assert.equal(st.status, 204);
      assert.equal(st.header('range'), '0-2999');
      assert.equal(st.header('docker-upload-uuid'), st0.header('docker-upload-uuid'));
      // A chunk at a stale offset, on an old Location, is refused with the current Range.
      const stale = await patch(first, data.subarray(1000, 2000), 1000);
      assert.equal(stale.status, 416);
      assert.equal(stale.header('range'), '0-2999');
      assert.equal(errorCode(stale), 'BLOB_UPLOAD_INVALID');
      const put = await call(withDigest(first, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201);
      await expectBlob('status/check', sha256(data), data);
    });

    it('cancels an upload; afterwards every operation on it is 404 BLOB_UPLOAD_UNKNOWN', async () => {
      const location = await startUpload(r.url, 'cancel/me');
      assert.equal((await patch(location, bytes(100, 14), 0)).status, 202);
      const del = await call(location, { method: 'DELETE' });
      assert.equal(del.status, 204);
      for (const res of [
        await call(location),
        await patch(location, bytes(10, 1), 100),
        await call(withDigest(location, sha256(bytes(100, 14))), { method: 'PUT' }),
        await call(location, { method: 'DELETE' }),
      ]) {
        assert.equal(res.status, 404);
        assert.equal(errorCode(res), 'BLOB_UPLOAD_UNKNOWN');
      }
    });

    it('keeps one copy of the bytes when a digest is uploaded twice', async () => {
      const data = bytes(6 * MiB + 7, 15);
      const before = await blobObjects(r);
      const a = await pushChunked(r.url, 'dedupe/a', data, [4 * MiB]);
      const b = await pushInPut(r.url, 'dedupe/b', data);
      const c = await pushChunked(r.url, 'dedupe/a', data, [1 * MiB]);
      assert.equal(a.digest, b.digest);
      assert.equal(a.digest, c.digest);
      const added = (await blobObjects(r)).filter((k) => !before.includes(k));
      assert.equal(added.length, 1, `expected one stored copy, found ${added.join(', ')}`);
      await expectBlob('dedupe/a', a.digest, data);
      await expectBlob('dedupe/b', a.digest, data);
    });

    it('mounts a blob from a repository that links it (201), and falls back to an upload otherwise (202)', async () => {
      const data = bytes(2048, 16);
      const { digest } = await pushInPut(r.url, 'mount/source', data);
      const mounted = await call(`${r.url}/v2/mount/target/blobs/uploads/?mount=${digest}&from=mount/source`, { method: 'POST' });
      assert.equal(mounted.status, 201, mounted.body.toString());
      assert.equal(mounted.header('location'), `/v2/mount/target/blobs/${digest}`);
      assert.equal(mounted.header('docker-content-digest'), digest);
      await expectBlob('mount/target', digest, data);

      const other = sha256(bytes(10, 99));
      const missing = await call(`${r.url}/v2/mount/target2/blobs/uploads/?mount=${other}&from=mount/source`, { method: 'POST' });
      assert.equal(missing.status, 202);
      assert.ok(missing.header('location')?.startsWith('/v2/mount/target2/blobs/uploads/'));
      // The source must link the blob: existing elsewhere (here, in mount/source) is not enough.
      assert.equal((await pushInPut(r.url, 'mount/bystander', bytes(10, 98))).digest.length, 71);
      const unlinked = await call(`${r.url}/v2/mount/target4/blobs/uploads/?mount=${digest}&from=mount/bystander`, { method: 'POST' });
      assert.equal(unlinked.status, 202, 'mounted from a repository that does not link the blob');
      assert.ok(unlinked.header('location')?.startsWith('/v2/mount/target4/blobs/uploads/'));
      assert.equal((await call(`${r.url}/v2/mount/target4/blobs/${digest}`, { method: 'HEAD' })).status, 404);
      const noFrom = await call(`${r.url}/v2/mount/target3/blobs/uploads/?mount=${digest}`, { method: 'POST' });
      assert.equal(noFrom.status, 202, 'a mount without from must not find blobs of other repositories');
      assert.equal((await call(`${r.url}/v2/mount/target3/blobs/${digest}`, { method: 'HEAD' })).status, 404);
    });

    it('isolates repositories: a blob is unknown where it is not linked', async () => {
      const data = bytes(512, 17);
      const { digest } = await pushInPut(r.url, 'isolated/mine', data);
      for (const method of ['HEAD', 'GET']) {
        const res = await call(`${r.url}/v2/isolated/theirs/blobs/${digest}`, { method });
        assert.equal(res.status, 404);
        if (method === 'GET') assert.equal(errorCode(res), 'BLOB_UNKNOWN');
      }
    });

    it('deletes a blob from one repository (202), leaving others untouched', async () => {
      const data = bytes(777, 18);
      const { digest } = await pushInPut(r.url, 'del/one', data);
      await pushInPut(r.url, 'del/two', data);
      const del = await call(`${r.url}/v2/del/one/blobs/${digest}`, { method: 'DELETE' });
      assert.equal(del.status, 202);
      assert.equal((await call(`${r.url}/v2/del/one/blobs/${digest}`, { method: 'HEAD' })).status, 404);
      const again = await call(`${r.url}/v2/del/one/blobs/${digest}`, { method: 'DELETE' });
      assert.equal(again.status, 404);
      assert.equal(errorCode(again), 'BLOB_UNKNOWN');
      await expectBlob('del/two', digest, data);
    });

    it('accepts a sha512 digest at finish, verified by reading the blob back', async () => {
      const data = bytes(6 * MiB + 1, 19);
      const location = await startUpload(r.url, 'sha/512');
      assert.equal((await patch(location, data.subarray(0, 4 * MiB), 0)).status, 202);
      assert.equal((await patch(location, data.subarray(4 * MiB), 4 * MiB)).status, 202);
      const digest = sha512(data);
      const put = await call(withDigest(location, digest), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.equal(put.header('docker-content-digest'), digest);
      await expectBlob('sha/512', digest, data);

      const wrong = await startUpload(r.url, 'sha/512');
      await patch(wrong, data.subarray(0, 1000), 0);
      const bad = await call(withDigest(wrong, sha512(data)), { method: 'PUT' });
      assert.equal(bad.status, 400);
      assert.equal(errorCode(bad), 'DIGEST_INVALID');
    });

    it('answers HEAD with one DynamoDB read and no storage request', async () => {
      const { digest } = await pushInPut(r.url, 'head/cost', bytes(4096, 20));
      const dynamo = { ...r.dynamoCalls };
      const storage = { ...r.registry.storage.objects.stats.requests };
      const head = await call(`${r.url}/v2/head/cost/blobs/${digest}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.deepEqual(delta(dynamo, r.dynamoCalls), { GetItemCommand: 1 });
      assert.deepEqual(delta(storage, r.registry.storage.objects.stats.requests), {});
      const miss = await call(`${r.url}/v2/head/cost/blobs/${sha256(bytes(1, 1))}`, { method: 'HEAD' });
      assert.equal(miss.status, 404);
    });
  });
}

for (const driver of DRIVERS) {
  describe(`blob deletion disabled by configuration (${driver})`, () => {
    const r = useRegistry(driver, { env: { SKIFF_DELETE_ENABLED: 'false' } });

    it('answers 405 UNSUPPORTED with Allow, and keeps the blob', async () => {
      const data = bytes(100, 21);
      const { digest } = await pushInPut(r.url, 'nodelete', data);
      const del = await call(`${r.url}/v2/nodelete/blobs/${digest}`, { method: 'DELETE' });
      assert.equal(del.status, 405);
      assert.equal(errorCode(del), 'UNSUPPORTED');
      assert.equal(del.header('allow'), 'GET, HEAD');
      const got = await getBlob(r.url, 'nodelete', digest);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(data), 'the blob is untouched');
    });
  });
}

describe('presigned redirects (s3)', () => {
  const r = useRegistry('s3', { env: { SKIFF_REDIRECT: 'true', SKIFF_REDIRECT_SECONDS: '60' } });

  it('redirects GET with 307 to a presigned URL that serves the bytes; HEAD never redirects', async () => {
    const data = bytes(70_000, 22);
    const { digest } = await pushInPut(r.url, 'redirect/me', data);
    const head = await call(`${r.url}/v2/redirect/me/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    const get = await call(`${r.url}/v2/redirect/me/blobs/${digest}`);
    assert.equal(get.status, 307);
    const url = get.header('location')!;
    assert.match(url, /X-Amz-Expires=60/);
    assert.ok(url.startsWith(r.config.s3.endpoint!), url);
    const direct = await call(url);
    assert.equal(direct.status, 200);
    assert.ok(direct.body.equals(data));
  });
});
