/**
 * Concurrency on one upload: the conditional write on the offset decides, the loser gets 416
 * and nothing it sent is kept; two finishes give one blob.
 */
import assert from 'node:assert/strict';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { MiB, bytes, gated, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { errorCode, patch, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, blobObjects, useRegistry } from '../helpers/registry.js';
import { Contended } from '../../lib/metadata/types.js';

for (const driver of DRIVERS) {
  describe(`concurrency (${driver})`, () => {
    const r = useRegistry(driver);

    it('refuses a PATCH while another PATCH at the same offset is still streaming', async () => {
      const location = await startUpload(r.url, 'race/slow');
      const head = bytes(1000, 1);
      assert.equal((await patch(location, head, 0)).status, 202);
      const winner = bytes(6 * MiB, 2);
      const loser = bytes(6 * MiB, 3);
      const { body: slow, release } = gated(winner, 3 * MiB);
      const first = call(location, { method: 'PATCH', body: slow, headers: { 'Content-Range': `1000-${1000 + winner.length - 1}` } });
      await sleep(300); // the first request holds the lease and is waiting on the gate
      const second = await patch(location, loser, 1000);
      assert.equal(second.status, 416);
      assert.equal(errorCode(second), 'BLOB_UPLOAD_INVALID');
      assert.equal(second.header('range'), '0-999');
      release();
      const done = await first;
      assert.equal(done.status, 202, done.body.toString());
      const whole = Buffer.concat([head, winner]);
      const put = await call(withDigest(location, sha256(whole)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      const got = await call(`${r.url}/v2/race/slow/blobs/${sha256(whole)}`);
      assert.ok(got.body.equals(whole), 'the stored blob is exactly the winner');
    });

    it('ends a PATCH whose upload is cancelled while it streams with 404, and leaves nothing behind', async () => {
      const location = await startUpload(r.url, 'race/cancel');
      const id = new URL(location).pathname.split('/').pop()!;
      const body = bytes(12 * MiB, 5);
      // After the gate more than a part follows: on S3 it goes to UploadPart of the multipart
      // upload the cancel aborted.
      const { body: slow, release } = gated(body, MiB);
      const streaming = call(location, { method: 'PATCH', body: slow, headers: { 'Content-Range': `0-${body.length - 1}` } });
      await sleep(300);
      assert.equal((await call(location, { method: 'DELETE' })).status, 204);
      release();
      const res = await streaming;
      assert.equal(res.status, 404, res.body.toString());
      assert.equal(errorCode(res), 'BLOB_UPLOAD_UNKNOWN');
      assert.equal((await call(location)).status, 404);
      assert.deepEqual(await r.registry.storage.objects.list(`uploads/${id}/`), [], 'no hash state or tail left');
      assert.deepEqual(await blobObjects(r).then((keys) => keys.filter((k) => k.includes(id))), [], 'no partial blob left');
      if (driver === 's3') {
        const open = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket, Prefix: `blobs/${id}` }));
        assert.deepEqual(open.Uploads ?? [], [], 'no multipart upload left open');
      }
    });

    it('a finish whose link write fails: a lost answer is still success, a real failure frees the bytes and ends the upload', async () => {
      const uploads = r.registry.meta.uploads;
      const real = uploads.finish.bind(uploads);
      try {
        // The transaction lands but its answer is lost (a timeout): the client gets its 201.
        const landed = bytes(2 * MiB + 1, 60);
        const l1 = await startUpload(r.url, 'race/linkfail');
        assert.equal((await patch(l1, landed, 0)).status, 202);
        uploads.finish = async (...args) => {
          await real(...args);
          throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError' });
        };
        const ok = await call(withDigest(l1, sha256(landed)), { method: 'PUT' });
        assert.equal(ok.status, 201, ok.body.toString());
        assert.ok((await call(`${r.url}/v2/race/linkfail/blobs/${sha256(landed)}`)).body.equals(landed), 'the bytes are there');

        // The transaction does not land: 429, nothing linked, no bytes kept, the upload ended.
        const lost = bytes(2 * MiB + 2, 61);
        const l2 = await startUpload(r.url, 'race/linkfail');
        assert.equal((await patch(l2, lost, 0)).status, 202);
        const before = await blobObjects(r);
        uploads.finish = async () => {
          throw new Contended();
        };
        const refused = await call(withDigest(l2, sha256(lost)), { method: 'PUT' });
        assert.equal(refused.status, 429, refused.body.toString());
        uploads.finish = real;
        assert.equal((await call(`${r.url}/v2/race/linkfail/blobs/${sha256(lost)}`, { method: 'HEAD' })).status, 404);
        assert.equal((await call(l2)).status, 404, 'the upload is over: the client starts again');
        const id2 = new URL(l2).pathname.split('/').pop()!;
        assert.deepEqual((await blobObjects(r)).filter((k) => !before.includes(k) || k.includes(id2)), [], 'no orphaned bytes');

        // Neither the write nor the look afterwards answers: nothing is deleted (an orphan
        // object is better than a link to deleted bytes), and the failure is reported.
        const unsure = bytes(2 * MiB + 3, 62);
        const l3 = await startUpload(r.url, 'race/linkfail');
        assert.equal((await patch(l3, unsure, 0)).status, 202);
        const blobs = r.registry.meta.blobs;
        const getDescriptor = blobs.getDescriptor.bind(blobs);
        uploads.finish = async () => {
          throw new Contended();
        };
        blobs.getDescriptor = async () => {
          throw new Contended();
        };
        const id3 = new URL(l3).pathname.split('/').pop()!;
        try {
          assert.equal((await call(withDigest(l3, sha256(unsure)), { method: 'PUT' })).status, 429);
        } finally {
          blobs.getDescriptor = getDescriptor;
          uploads.finish = real;
        }
        assert.ok((await blobObjects(r)).some((k) => k.includes(id3)), 'the assembled bytes are kept');
        assert.equal((await call(l3)).status, 204, 'the upload record is kept');
      } finally {
        uploads.finish = real;
      }
    });

    it('lets exactly one of two simultaneous PATCHes at one offset win, every round', async () => {
      const location = await startUpload(r.url, 'race/rounds');
      const kept: Buffer[] = [];
      let offset = 0;
      for (let round = 0; round < 8; round++) {
        const a = bytes(200_000 + round, round * 2 + 10);
        const b = bytes(200_000 + round, round * 2 + 11);
        const [ra, rb] = await Promise.all([patch(location, a, offset), patch(location, b, offset)]);
        const statuses = [ra.status, rb.status].sort();
        assert.deepEqual(statuses, [202, 416], `round ${round}: ${ra.status} ${rb.status}`);
        kept.push(ra.status === 202 ? a : b);
        offset += a.length;
        assert.equal((await call(location)).header('range'), `0-${offset - 1}`);
      }
      const whole = Buffer.concat(kept);
      const put = await call(withDigest(location, sha256(whole)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      const got = await call(`${r.url}/v2/race/rounds/blobs/${sha256(whole)}`);
      assert.ok(got.body.equals(whole), 'the blob holds exactly the winners, in order');
    });

    it('gives one blob for two simultaneous finishes of one upload', async () => {
      for (let round = 0; round < 4; round++) {
        const data = bytes(2 * MiB + round, 40 + round);
        const location = await startUpload(r.url, 'race/finish');
        assert.equal((await patch(location, data, 0)).status, 202);
        const digest = sha256(data);
        const results = await Promise.all([call(withDigest(location, digest), { method: 'PUT' }), call(withDigest(location, digest), { method: 'PUT' })]);
        const created = results.filter((x) => x.status === 201);
        assert.equal(created.length, 1, `round ${round}: ${results.map((x) => x.status).join(' ')}`);
        const other = results.find((x) => x.status !== 201)!;
        assert.ok([404, 416].includes(other.status), `loser answered ${other.status}`);
        const got = await call(`${r.url}/v2/race/finish/blobs/${digest}`);
        assert.equal(got.status, 200);
        assert.ok(got.body.equals(data));
      }
    });

    it('stores one copy when two uploads of the same bytes finish at once', async () => {
      const data = bytes(3 * MiB, 50);
      const digest = sha256(data);
      const before = await blobObjects(r);
      const locations = await Promise.all([startUpload(r.url, 'race/same'), startUpload(r.url, 'race/same2')]);
      await Promise.all(locations.map((l) => patch(l, data, 0)));
      const results = await Promise.all(locations.map((l) => call(withDigest(l, digest), { method: 'PUT' })));
      assert.deepEqual(results.map((x) => x.status), [201, 201]);
      const descriptor = await r.registry.meta.blobs.getDescriptor(digest);
      const a = await r.registry.meta.blobs.getLink('race/same', digest);
      const b = await r.registry.meta.blobs.getLink('race/same2', digest);
      assert.ok(descriptor && a && b);
      assert.equal(a.key, descriptor.key);
      assert.equal(b.key, descriptor.key);
      const added = (await blobObjects(r)).filter((k) => !before.includes(k));
      assert.equal(added.length, 1, `expected one stored copy, found ${added.join(', ')}`);
      for (const repo of ['race/same', 'race/same2']) {
        assert.ok((await call(`${r.url}/v2/${repo}/blobs/${digest}`)).body.equals(data));
      }
    });
  });
}

for (const driver of DRIVERS) {
  describe(`a request that lost its lease (${driver})`, () => {
    const r = useRegistry(driver, { env: { SKIFF_LEASE_SECONDS: '2' } });

    it('leaves alone the blob another request finished meanwhile (on the filesystem it is the same file)', async () => {
      const uploads = r.registry.meta.uploads;
      const renew = uploads.renew.bind(uploads);
      const location = await startUpload(r.url, 'lease/lost');
      const slowBody = bytes(3 * MiB, 70);
      const { body: slow, release } = gated(slowBody, MiB);
      // The stalled request cannot renew its lease (as if its process froze), so it expires.
      uploads.renew = async () => undefined;
      try {
        const stalled = call(location, { method: 'PATCH', body: slow, headers: { 'Content-Range': `0-${slowBody.length - 1}` } });
        await sleep(2500);
        const blob = bytes(MiB + 5, 71);
        const finished = await call(withDigest(location, sha256(blob)), { method: 'PUT', body: blob, headers: { 'Content-Range': `0-${blob.length - 1}` } });
        assert.equal(finished.status, 201, finished.body.toString());
        release();
        const late = await stalled;
        assert.equal(late.status, 404, late.body.toString());
        assert.equal(errorCode(late), 'BLOB_UPLOAD_UNKNOWN');
        const got = await call(`${r.url}/v2/lease/lost/blobs/${sha256(blob)}`);
        assert.equal(got.status, 200, 'the finished blob survives the late request');
        assert.ok(got.body.equals(blob));
      } finally {
        uploads.renew = renew;
      }
    });
  });
}
