/**
 * Bad input over HTTP: each gets OCI error JSON with the spec's code and status, never a 500,
 * and leaves what is stored (and the upload's state) unchanged.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MiB, bytes, chunked, sha256 } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { errorCode, expectError, patch, pushInPut, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, delta, useRegistry } from '../helpers/registry.js';


for (const driver of DRIVERS) {
  describe(`bad input (${driver})`, () => {
    const r = useRegistry(driver);

    const digest = sha256(bytes(10, 1));

    it('rejects invalid repository names with 400 NAME_INVALID, including names the router could mistake', async () => {
      const names = [
        'UPPER/case',
        'a//b',
        'a/../b',
        'a/./b',
        '-leading',
        'trailing-',
        'double..dot',
        'a%2Fb',
        'sp%20ace',
        'x'.repeat(256),
        'a/b/',
      ];
      for (const name of names) {
        for (const [method, path] of [
          ['POST', `/v2/${name}/blobs/uploads/`],
          ['HEAD', `/v2/${name}/blobs/${digest}`],
          ['GET', `/v2/${name}/blobs/${digest}`],
          ['PATCH', `/v2/${name}/blobs/uploads/00000000-0000-0000-0000-000000000000`],
        ] as const) {
          const res = await call(`${r.url}${path}`, { method });
          if (method === 'HEAD') {
            assert.equal(res.status, 400, `${method} ${path}`);
            continue;
          }
          expectError(res, 400, 'NAME_INVALID', `${method} ${path}`);
        }
      }
    });

    it('rejects malformed and unsupported digests with 400 DIGEST_INVALID', async () => {
      const bad = ['sha256:xyz', `sha256:${'A'.repeat(64)}`, `sha256:${'a'.repeat(63)}`, `md5:${'a'.repeat(32)}`, 'nodigest', 'sha256:', `sha512:${'a'.repeat(64)}`];
      for (const d of bad) {
        expectError(await call(`${r.url}/v2/bad/digest/blobs/${encodeURIComponent(d)}`), 400, 'DIGEST_INVALID');
        expectError(await call(`${r.url}/v2/bad/digest/blobs/uploads/?digest=${encodeURIComponent(d)}`, { method: 'POST', body: 'x' }), 400, 'DIGEST_INVALID');
        expectError(await call(`${r.url}/v2/bad/digest/blobs/uploads/?mount=${encodeURIComponent(d)}&from=x`, { method: 'POST' }), 400, 'DIGEST_INVALID');
        const location = await startUpload(r.url, 'bad/digest');
        expectError(await call(withDigest(location, d), { method: 'PUT' }), 400, 'DIGEST_INVALID');
      }
      const location = await startUpload(r.url, 'bad/digest');
      expectError(await call(location, { method: 'PUT' }), 400, 'DIGEST_INVALID');
    });

    it('answers a wrong digest at finish with 400 DIGEST_INVALID and links nothing', async () => {
      const data = bytes(6 * MiB, 2);
      for (const withBody of [false, true]) {
        const location = await startUpload(r.url, 'wrong/digest');
        if (!withBody) assert.equal((await patch(location, data, 0)).status, 202);
        const claimed = sha256(bytes(6 * MiB, 3));
        const res = await call(withDigest(location, claimed), { method: 'PUT', body: withBody ? data : undefined });
        expectError(res, 400, 'DIGEST_INVALID');
        assert.equal((await call(`${r.url}/v2/wrong/digest/blobs/${claimed}`, { method: 'HEAD' })).status, 404);
        assert.equal((await call(`${r.url}/v2/wrong/digest/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 404);
        // The upload is over: its bytes can never become linkable.
        expectError(await call(location), 404, 'BLOB_UPLOAD_UNKNOWN');
      }
      const mono = await call(`${r.url}/v2/wrong/digest/blobs/uploads/?digest=${digest}`, { method: 'POST', body: 'not these bytes' });
      expectError(mono, 400, 'DIGEST_INVALID');
      assert.equal((await call(`${r.url}/v2/wrong/digest/blobs/${digest}`, { method: 'HEAD' })).status, 404);
    });

    it('answers unknown uploads with 404 BLOB_UPLOAD_UNKNOWN, for every method', async () => {
      for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid', '..', '%2E%2E']) {
        const location = `${r.url}/v2/unknown/upload/blobs/uploads/${id}`;
        expectError(await call(location), 404, 'BLOB_UPLOAD_UNKNOWN', `GET ${id}`);
        expectError(await call(location, { method: 'PATCH', body: 'abc' }), 404, 'BLOB_UPLOAD_UNKNOWN', `PATCH ${id}`);
        expectError(await call(withDigest(location, digest), { method: 'PUT' }), 404, 'BLOB_UPLOAD_UNKNOWN', `PUT ${id}`);
        expectError(await call(location, { method: 'DELETE' }), 404, 'BLOB_UPLOAD_UNKNOWN', `DELETE ${id}`);
      }
    });

    it('does not let a repository use an upload that another repository started', async () => {
      const location = await startUpload(r.url, 'owner/repo');
      const id = new URL(location).pathname.split('/').pop();
      const foreign = `${r.url}/v2/thief/repo/blobs/uploads/${id}`;
      expectError(await call(foreign), 404, 'BLOB_UPLOAD_UNKNOWN');
      expectError(await call(foreign, { method: 'PATCH', body: 'abc' }), 404, 'BLOB_UPLOAD_UNKNOWN');
      expectError(await call(foreign, { method: 'DELETE' }), 404, 'BLOB_UPLOAD_UNKNOWN');
      assert.equal((await call(location)).status, 204);
    });

    it('answers unknown blobs with 404 BLOB_UNKNOWN', async () => {
      expectError(await call(`${r.url}/v2/unknown/blob/blobs/${digest}`), 404, 'BLOB_UNKNOWN');
      assert.equal((await call(`${r.url}/v2/unknown/blob/blobs/${digest}`, { method: 'HEAD' })).status, 404);
      expectError(await call(`${r.url}/v2/unknown/blob/blobs/${digest}`, { method: 'DELETE' }), 404, 'BLOB_UNKNOWN');
    });

    it('refuses chunks whose Content-Length disagrees with Content-Range (400), changing nothing', async () => {
      const location = await startUpload(r.url, 'length/mismatch');
      assert.equal((await patch(location, bytes(100, 4), 0)).status, 202);
      const res = await call(location, { method: 'PATCH', body: bytes(50, 5), headers: { 'Content-Range': '100-199' } });
      expectError(res, 400, 'BLOB_UPLOAD_INVALID');
      assert.equal((await call(location)).header('range'), '0-99');
    });

    it('refuses streamed bodies longer or shorter than their Content-Range (400), changing nothing', async () => {
      for (const [declared, sent] of [
        [1000, 2000],
        [2000, 1000],
        [12 * MiB, 9 * MiB],
        [9 * MiB, 12 * MiB],
      ] as const) {
        const location = await startUpload(r.url, 'stream/mismatch');
        const first = bytes(100, 6);
        assert.equal((await patch(location, first, 0)).status, 202);
        const data = bytes(sent, 7);
        const res = await call(location, { method: 'PATCH', body: chunked(data, 64 * 1024), headers: { 'Content-Range': `100-${100 + declared - 1}` } });
        expectError(res, 400, 'BLOB_UPLOAD_INVALID');
        assert.equal((await call(location)).header('range'), '0-99', `declared ${declared}, sent ${sent}`);
        // The upload is still good: the rest of a real blob can follow and finish.
        const rest = bytes(3000, 8);
        assert.equal((await patch(location, rest, 100)).status, 202);
        const put = await call(withDigest(location, sha256(Buffer.concat([first, rest]))), { method: 'PUT' });
        assert.equal(put.status, 201, put.body.toString());
      }
    });

    it('refuses a finishing PUT whose body is longer or shorter than its Content-Range (400), and a retried finish still works', async () => {
      for (const [declared, sent] of [
        [1000, 2000],
        [2000, 1000],
        [7 * MiB, 6 * MiB],
        [6 * MiB, 7 * MiB],
      ] as const) {
        const location = await startUpload(r.url, 'finish/mismatch');
        const first = bytes(6 * MiB + 100, 30);
        assert.equal((await patch(location, first, 0)).status, 202);
        const wrongBody = bytes(sent, 31);
        const last = bytes(declared, 31);
        const whole = Buffer.concat([first, last]);
        const res = await call(withDigest(location, sha256(whole)), { method: 'PUT', body: chunked(wrongBody, 64 * 1024), headers: { 'Content-Range': `${first.length}-${first.length + declared - 1}` } });
        expectError(res, 400, 'BLOB_UPLOAD_INVALID');
        assert.equal((await call(location)).header('range'), `0-${first.length - 1}`, `declared ${declared}, sent ${sent}`);
        assert.equal((await call(`${r.url}/v2/finish/mismatch/blobs/${sha256(whole)}`, { method: 'HEAD' })).status, 404);
        // The client retries the finish with the right body: it completes, with exactly these bytes.
        const retry = await call(withDigest(location, sha256(whole)), { method: 'PUT', body: last, headers: { 'Content-Range': `${first.length}-${first.length + declared - 1}` } });
        assert.equal(retry.status, 201, retry.body.toString());
        const got = await call(`${r.url}/v2/finish/mismatch/blobs/${sha256(whole)}`);
        assert.ok(got.body.equals(whole), 'the blob is exactly the bytes of the good requests');
      }
    });

    it('refuses chunks out of order with 416, the current Range and the Location', async () => {
      const location = await startUpload(r.url, 'out/of/order');
      const skip = await patch(location, bytes(10, 9), 5);
      assert.equal(skip.status, 416);
      assert.equal(skip.header('range'), '0-0');
      assert.equal(skip.header('location'), new URL(location).pathname);
      assert.equal(errorCode(skip), 'BLOB_UPLOAD_INVALID');
      assert.equal((await patch(location, bytes(10, 9), 0)).status, 202);
      const back = await patch(location, bytes(10, 9), 0);
      assert.equal(back.status, 416);
      assert.equal(back.header('range'), '0-9');
      const put = await call(withDigest(location, sha256(bytes(10, 9))), { method: 'PUT', body: bytes(5, 1), headers: { 'Content-Range': '3-7' } });
      assert.equal(put.status, 416);
      assert.equal((await call(location)).header('range'), '0-9');
    });

    it('refuses malformed Content-Range with 400', async () => {
      const location = await startUpload(r.url, 'bad/range');
      for (const header of ['abc', '5', '-5', '1-2-3', 'bytes=a-b']) {
        expectError(await call(location, { method: 'PATCH', body: 'x', headers: { 'Content-Range': header } }), 400, 'BLOB_UPLOAD_INVALID');
      }
      const backwards = await call(location, { method: 'PATCH', body: 'x', headers: { 'Content-Range': '9-3' } });
      assert.equal(backwards.status, 416);
      assert.equal(backwards.header('range'), '0-0', 'the client learns where the upload is');
      assert.equal(backwards.header('location'), new URL(location).pathname);
      assert.equal((await call(location)).header('range'), '0-0');
      await call(location, { method: 'DELETE' });
      expectError(await call(location, { method: 'PATCH', body: 'x', headers: { 'Content-Range': '9-3' } }), 404, 'BLOB_UPLOAD_UNKNOWN');
    });

    it('refuses a POST body without ?digest= (400)', async () => {
      expectError(await call(`${r.url}/v2/post/body/blobs/uploads/`, { method: 'POST', body: 'some bytes' }), 400, 'BLOB_UPLOAD_INVALID');
    });

    it('answers 405 UNSUPPORTED for methods an endpoint does not have, and 404 JSON for unknown paths', async () => {
      const e1 = await call(`${r.url}/v2/some/repo/blobs/uploads/`, { method: 'GET' });
      expectError(e1, 405, 'UNSUPPORTED');
      assert.equal(e1.header('allow'), 'POST');
      expectError(await call(`${r.url}/v2/some/repo/blobs/${digest}`, { method: 'PUT', body: 'x' }), 405, 'UNSUPPORTED');
      expectError(await call(`${r.url}/v2/`, { method: 'POST' }), 405, 'UNSUPPORTED');
      expectError(await call(`${r.url}/v2/some/repo/nothing/here`), 404, 'UNSUPPORTED');
      expectError(await call(`${r.url}/other`), 404, 'UNSUPPORTED');
    });

    it('keeps stored blobs intact through all of the above', async () => {
      const data = bytes(5000, 10);
      const { digest: d } = await pushInPut(r.url, 'intact', data);
      await call(`${r.url}/v2/intact/blobs/uploads/?digest=${d}`, { method: 'POST', body: 'other bytes' });
      const location = await startUpload(r.url, 'intact');
      await call(withDigest(location, d), { method: 'PUT', body: bytes(5000, 11) });
      const got = await call(`${r.url}/v2/intact/blobs/${d}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(data));
    });
  });
}

for (const driver of DRIVERS) {
  describe(`chunk size limit (413, ${driver})`, () => {
    const r = useRegistry(driver, { env: { SKIFF_MAX_CHUNK_BYTES: '1024' } });

    it('advertises the limit on upload responses', async () => {
      const post = await call(`${r.url}/v2/limit/blobs/uploads/`, { method: 'POST' });
      assert.equal(post.header('oci-chunk-max-length'), '1024');
      const status = await call(resolve(r.url, post.header('location')));
      assert.equal(status.header('oci-chunk-max-length'), '1024');
    });

    it('refuses a declared chunk over the limit before storing anything, with the limit in detail and OCI-Chunk-Max-Length', async () => {
      const location = await startUpload(r.url, 'limit');
      assert.equal((await patch(location, bytes(1024, 1), 0)).status, 202);
      const res = await patch(location, bytes(1025, 2), 1024);
      expectError(res, 413, 'SIZE_INVALID');
      assert.equal(res.header('oci-chunk-max-length'), '1024');
      assert.equal(res.json().errors[0].detail.maxChunkBytes, 1024);
      assert.equal((await call(location)).header('range'), '0-1023');
    });

    it('refuses a streamed chunk (no Content-Length) once it passes the limit', async () => {
      const location = await startUpload(r.url, 'limit');
      async function* body() {
        for (let i = 0; i < 4; i++) yield bytes(512, i);
      }
      const res = await call(location, { method: 'PATCH', body: body() });
      expectError(res, 413, 'SIZE_INVALID');
      assert.equal((await call(location)).header('range'), '0-0');
    });

    it('applies the limit to monolithic and finishing bodies too', async () => {
      const data = bytes(2000, 3);
      const dynamo = { ...r.dynamoCalls };
      const storage = { ...r.registry.storage.objects.stats.requests };
      expectError(await call(`${r.url}/v2/limit/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data }), 413, 'SIZE_INVALID');
      assert.deepEqual(delta(dynamo, r.dynamoCalls), {}, 'refused before any record is written');
      assert.deepEqual(delta(storage, r.registry.storage.objects.stats.requests), {}, 'refused before anything is stored');
      const location = await startUpload(r.url, 'limit');
      expectError(await call(withDigest(location, sha256(data)), { method: 'PUT', body: data }), 413, 'SIZE_INVALID');
      assert.equal((await call(`${r.url}/v2/limit/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 404);
    });
  });
}
