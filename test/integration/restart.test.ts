/**
 * Upload state lives in DynamoDB and storage, not in the registry process: a registry that is
 * killed (between requests, or in the middle of one) and started again continues every upload.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { patch, withDigest } from '../helpers/oci.js';
import { DRIVERS } from '../helpers/registry.js';
import { type RegistryProcess, processEnv, spawnRegistry } from '../helpers/process.js';

for (const driver of DRIVERS) {
  describe(`registry restart (${driver})`, () => {
    // Long enough to outlast a restart on a busy machine: the lease is renewed only while bytes
    // arrive, so it runs from the dead request's last byte.
    const env = processEnv(driver, { SKIFF_LEASE_SECONDS: '20' });
    let current: RegistryProcess | undefined;
    after(() => current?.kill('SIGKILL'));

    it('continues an upload after the registry is killed between chunks', async () => {
      current = await spawnRegistry(env);
      const data = bytes(9 * MiB + 3, 1);
      const post = await call(`${current.url}/v2/restart/between/blobs/uploads/`, { method: 'POST' });
      assert.equal(post.status, 202);
      const path = post.header('location')!;
      assert.equal((await patch(resolve(current.url, path), data.subarray(0, 7 * MiB), 0)).status, 202);
      await current.kill('SIGKILL');

      current = await spawnRegistry(env);
      const location = resolve(current.url, path);
      const status = await call(location);
      assert.equal(status.status, 204);
      assert.equal(status.header('range'), `0-${7 * MiB - 1}`);
      assert.equal((await patch(location, data.subarray(7 * MiB), 7 * MiB)).status, 202);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      const got = await call(`${current.url}/v2/restart/between/blobs/${sha256(data)}`);
      assert.ok(got.body.equals(data));
    });

    it('keeps nothing of a request cut off by a crash, and resumes once its lease expires', async () => {
      current ??= await spawnRegistry(env);
      const post = await call(`${current.url}/v2/restart/during/blobs/uploads/`, { method: 'POST' });
      const path = post.header('location')!;
      const head = bytes(1 * MiB, 2);
      assert.equal((await patch(resolve(current.url, path), head, 0)).status, 202);

      const doomed = bytes(12 * MiB, 3);
      const proc = current;
      async function* body() {
        yield doomed.subarray(0, 10 * MiB);
        await sleep(500);
        await proc.kill('SIGKILL'); // the registry dies with the request half-way through
        yield doomed.subarray(10 * MiB);
      }
      await call(resolve(proc.url, path), { method: 'PATCH', body: body(), headers: { 'Content-Range': `${MiB}-${13 * MiB - 1}` } }).catch(() => undefined);

      current = await spawnRegistry(env);
      const location = resolve(current.url, path);
      assert.equal((await call(location)).header('range'), `0-${MiB - 1}`, 'the cut-off request committed nothing');
      const rest = bytes(2 * MiB, 4);
      const early = await patch(location, rest, MiB);
      assert.equal(early.status, 416, 'the dead writer still holds the lease');
      let retry = early;
      for (let i = 0; retry.status === 416 && i < 100; i++) {
        await sleep(250);
        retry = await patch(location, rest, MiB);
      }
      assert.equal(retry.status, 202, retry.body.toString());
      const whole = Buffer.concat([head, rest]);
      const put = await call(withDigest(location, sha256(whole)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await call(`${current.url}/v2/restart/during/blobs/${sha256(whole)}`)).body.equals(whole));
    });
  });
}
