/**
 * Long bodies on the upload host: a body that stops arriving ends its request and frees the
 * upload (SKIFF_STALL_SECONDS), the lease is renewed as bytes arrive (and only then), a failed
 * renewal is tried again rather than ending the push, SKIFF_MAX_STREAMS turns extra streams
 * away with 503, and concurrent streams hash on threads of their own. Real backends.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { availableParallelism } from 'node:os';
import { hashThreads } from '../../lib/hash/thread.js';
import { MiB, bytes, gated, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { expectError, patch, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, blobObjects, useRegistry } from '../helpers/registry.js';

const KEY = `k1=${Buffer.alloc(32, 9).toString('base64url')}`;

/** A body of `data` in `pieces` parts with a pause of `pauseMs` between them: a slow client. */
async function* slowly(data: Uint8Array, pieces: number, pauseMs: number): AsyncGenerator<Uint8Array> {
  const size = Math.ceil(data.length / pieces);
  for (let o = 0; o < data.length; o += size) {
    if (o) await new Promise((r) => setTimeout(r, pauseMs));
    yield data.subarray(o, o + size);
  }
}

for (const driver of DRIVERS) {
  describe(`upload host: a stalled body (${driver})`, () => {
    // The lease outlives the test: only the stall limit can free the upload in time.
    const r = useRegistry(driver, { uploadHost: true, env: { SKIFF_TOKEN_KEYS: KEY, SKIFF_STALL_SECONDS: '1', SKIFF_LEASE_SECONDS: '600' } });

    it('ends the request and frees the upload; the client resumes at the committed offset', { timeout: 120_000 }, async () => {
      const location = await startUpload(r.url, 'stall/app');
      const data = bytes(12 * MiB + 1, 31);
      const first = await patch(location, data.subarray(0, 6 * MiB), 0);
      assert.equal(first.status, 202);
      const next = first.header('location')!;
      // Half of the second chunk, then nothing: the server gives up on it after a second.
      const held = gated(data.subarray(6 * MiB), 3 * MiB);
      const stalled = await call(next, { method: 'PATCH', body: held.body, headers: { 'Content-Range': `${6 * MiB}-${data.length - 1}` } }).catch((e: NodeJS.ErrnoException) => e);
      held.release();
      assert.ok(stalled instanceof Error, `the stalled request is cut off, not answered: ${JSON.stringify(stalled)}`);
      const status = await call(next);
      assert.equal(status.header('range'), `0-${6 * MiB - 1}`, 'the stalled bytes were not committed');
      // The lease (600 s) is released by the stalled request as it ends (the client may get there
      // a moment before the release does, and retries on 416 as clients do).
      let resumed = await patch(status.header('location')!, data.subarray(6 * MiB), 6 * MiB);
      for (let i = 0; resumed.status === 416 && i < 20; i++) {
        await new Promise((res) => setTimeout(res, 250));
        resumed = await patch(status.header('location')!, data.subarray(6 * MiB), 6 * MiB);
      }
      assert.equal(resumed.status, 202, resumed.body.toString());
      const put = await call(withDigest(resumed.header('location')!, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await call(`${r.url}/v2/stall/app/blobs/${sha256(data)}`)).body.equals(data));
    });
  });

  describe(`upload host: lease renewal (${driver})`, () => {
    const r = useRegistry(driver, { uploadHost: true, env: { SKIFF_TOKEN_KEYS: KEY, SKIFF_LEASE_SECONDS: '2', SKIFF_STALL_SECONDS: '60' } });

    it('a failed renewal (a throttle) is tried again: a body longer than the lease still lands', async () => {
      let injected = 0;
      r.db.middlewareStack.add(
        (next) => async (args) => {
          const input = (args as { input?: { UpdateExpression?: string } }).input;
          if (input?.UpdateExpression === 'SET #leaseUntil = :until' && injected === 0) {
            injected++;
            throw Object.assign(new Error('Rate of requests exceeds the allowed throughput.'), { name: 'ThrottlingException', $fault: 'client', $metadata: { httpStatusCode: 400 } });
          }
          return next(args);
        },
        { step: 'initialize', name: 'failOneRenewal' },
      );
      try {
        const location = await startUpload(r.url, 'renew/app');
        const data = bytes(16 * MiB, 32);
        // About 4 s of body against a 2 s lease: it needs renewals, and the first one fails.
        const res = await call(location, { method: 'PATCH', body: slowly(data, 16, 250) });
        assert.equal(res.status, 202, res.body.toString());
        assert.equal(injected, 1, 'the failure was injected');
        const put = await call(withDigest(res.header('location')!, sha256(data)), { method: 'PUT' });
        assert.equal(put.status, 201, put.body.toString());
      } finally {
        r.db.middlewareStack.remove('failOneRenewal');
      }
    });

    it('renews only while bytes arrive: a body that stops loses the upload to the next writer after the lease', { timeout: 120_000 }, async () => {
      const location = await startUpload(r.url, 'renew/quiet');
      const data = bytes(4 * MiB, 33);
      const held = gated(data, MiB);
      const quiet = call(location, { method: 'PATCH', body: held.body, headers: { 'Content-Range': `0-${data.length - 1}` } });
      // Another writer is refused while the lease is live, then takes over once it runs out.
      let other = await patch(location, data, 0);
      for (let i = 0; other.status === 416 && i < 40; i++) {
        await new Promise((r) => setTimeout(r, 250));
        other = await patch(location, data, 0);
      }
      assert.equal(other.status, 202, 'the quiet request kept no lease alive without bytes arriving');
      held.release();
      const late = await quiet;
      expectError(late, 416, 'BLOB_UPLOAD_INVALID', 'the quiet request, when it resumes, finds its lease gone');
      assert.equal((await call(other.header('location')!)).header('range'), `0-${data.length - 1}`);
    });
  });
}

describe('upload host: SKIFF_MAX_STREAMS and parallel hashing (s3)', () => {
  const r = useRegistry('s3', { uploadHost: true, env: { SKIFF_TOKEN_KEYS: KEY, SKIFF_MAX_STREAMS: '2' } });

  it('turns a stream past the cap away with 503 and Retry-After, storing nothing; streams hash on threads of their own', async () => {
    const a = await startUpload(r.url, 'cap/a');
    const b = await startUpload(r.url, 'cap/b');
    const c = await startUpload(r.url, 'cap/c');
    const data = bytes(24 * MiB, 34);
    // Two streams of unknown length (hashed on threads) held open mid-body.
    const heldA = gated(data, 12 * MiB);
    const heldB = gated(data, 12 * MiB);
    const pa = call(a, { method: 'PATCH', body: heldA.body });
    const pb = call(b, { method: 'PATCH', body: heldB.body });
    for (let i = 0; i < 100 && hashThreads() < Math.min(2, availableParallelism()); i++) await new Promise((res) => setTimeout(res, 50));
    assert.equal(hashThreads(), Math.min(2, availableParallelism()), 'each stream hashes on a thread of its own (up to one per core)');
    const before = await blobObjects(r);
    const refused = await call(c, { method: 'PATCH', body: data.subarray(0, MiB) });
    expectError(refused, 503, 'UNAVAILABLE');
    assert.equal(refused.header('retry-after'), '2');
    assert.deepEqual(await blobObjects(r), before, 'nothing stored for the refused stream');
    assert.equal((await call(c)).status, 204, 'a status request is no stream: still served');
    heldA.release();
    heldB.release();
    assert.equal((await pa).status, 202);
    assert.equal((await pb).status, 202);
    assert.equal((await call(c)).header('range'), '0-0');
    assert.equal((await patch(c, data.subarray(0, MiB))).status, 202, 'served once the others are done');
  });
});
