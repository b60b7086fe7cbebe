/**
 * Finishing an upload reads no blob data back and costs the same for any size: measured by
 * the storage layer's own counters (every read path of both drivers goes through them) and by
 * counting the S3 commands the SDK sends.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { errorCode, patch, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, delta, useRegistry } from '../helpers/registry.js';
import { SHA256_STATE_SIZE } from '../../lib/hash/sha256-state.js';
import { keys } from '../../lib/storage/types.js';

for (const driver of DRIVERS) {
  describe(`finish cost (${driver})`, () => {
    const r = useRegistry(driver);

    const uploadId = (location: string) => location.split('/').pop()!.split('?')[0]!;

    /** Pushes `data` with PATCHes of `chunk` bytes and returns the upload's Location. */
    async function patched(repo: string, data: Buffer, chunk: number): Promise<string> {
      const location = await startUpload(r.url, repo);
      for (let o = 0; o < data.length; o += chunk) {
        const res = await patch(location, data.subarray(o, o + chunk), o);
        assert.equal(res.status, 202, res.body.toString());
      }
      return location;
    }

    async function measuredFinish(location: string, digest: string) {
      const stats = r.registry.storage.objects.stats;
      const bytesBefore = stats.bytesRead;
      const requestsBefore = { ...stats.requests };
      const s3Before = { ...r.s3Calls };
      const put = await call(withDigest(location, digest), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      return { bytesRead: stats.bytesRead - bytesBefore, requests: delta(requestsBefore, stats.requests), s3: delta(s3Before, r.s3Calls) };
    }

    it('reads only the 108-byte hash state when finishing, and nothing else', async () => {
      for (const [size, chunk] of [
        [1 * MiB, 512 * 1024],
        [64 * MiB + 12345, 16 * MiB],
      ] as const) {
        const data = bytes(size, size);
        const location = await patched('finish/zero', data, chunk);
        const cost = await measuredFinish(location, sha256(data));
        assert.equal(cost.bytesRead, SHA256_STATE_SIZE, `${size} bytes: read ${cost.bytesRead} bytes at finish`);
        if (driver === 's3') {
          assert.equal(cost.s3.GetObjectCommand, 1, 'one GetObject: the hash state');
          for (const forbidden of ['CopyObjectCommand', 'UploadPartCopyCommand', 'UploadPartCommand', 'ListPartsCommand']) {
            assert.equal(cost.s3[forbidden], undefined, `${forbidden} at finish for ${size} bytes`);
          }
        }
        const got = await call(`${r.url}/v2/finish/zero/blobs/${sha256(data)}`);
        assert.ok(got.body.equals(data));
      }
    });

    it('sends the same storage requests to finish 1 MiB and 64 MiB', async () => {
      const costs = [];
      for (const size of [1 * MiB, 64 * MiB]) {
        const data = bytes(size, size + 7);
        const location = await patched('finish/same', data, 3 * MiB);
        costs.push(await measuredFinish(location, sha256(data)));
      }
      assert.deepEqual(costs[0]!.requests, costs[1]!.requests);
      assert.deepEqual(costs[0]!.s3, costs[1]!.s3);
      assert.equal(costs[0]!.bytesRead, costs[1]!.bytesRead);
    });

    it('resumes from an older hash state by hashing only the gap from stored data', async () => {
      const first = bytes(100 * 1024, 1);
      const second = bytes(200 * 1024, 2);
      const location = await startUpload(r.url, 'finish/gap');
      const id = uploadId(location);
      assert.equal((await patch(location, first, 0)).status, 202);
      const attempt = async () => (await r.registry.meta.uploads.get(id, 'finish/gap'))!.attempt;
      const firstAttempt = await attempt();
      const older = await r.registry.storage.objects.get(keys.hashState(id, 'sha256', first.length, firstAttempt));
      assert.ok(older, 'a state is stored for the committed offset');
      assert.equal((await patch(location, second, first.length)).status, 202);
      const end = first.length + second.length;
      assert.equal(await r.registry.storage.objects.get(keys.hashState(id, 'sha256', first.length, firstAttempt)), undefined, 'the superseded state was removed');
      // Lose the current state, keep only the older one.
      await r.registry.storage.objects.delete([keys.hashState(id, 'sha256', end, await attempt())]);
      await r.registry.storage.objects.put(keys.hashState(id, 'sha256', first.length, firstAttempt), older);
      const data = Buffer.concat([first, second]);
      const cost = await measuredFinish(location, sha256(data));
      assert.equal(cost.bytesRead, SHA256_STATE_SIZE + second.length, 'the older state plus exactly the gap');
      assert.ok((await call(`${r.url}/v2/finish/gap/blobs/${sha256(data)}`)).body.equals(data));
    });

    if (driver === 's3') {
      it('refuses with a clear 400 when the hash state is lost and the gap is in sealed parts', async () => {
        const data = bytes(9 * MiB, 3);
        const location = await patched('finish/lost', data, 9 * MiB);
        const { attempt } = (await r.registry.meta.uploads.get(uploadId(location), 'finish/lost'))!;
        await r.registry.storage.objects.delete([keys.hashState(uploadId(location), 'sha256', data.length, attempt)]);
        const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
        assert.equal(put.status, 400);
        assert.equal(errorCode(put), 'BLOB_UPLOAD_INVALID');
        assert.match(put.json().errors[0].message, /hash state/);
      });
    }
  });
}
