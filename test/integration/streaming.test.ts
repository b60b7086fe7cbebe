/**
 * A 256 MiB layer streamed in one PATCH (docker, podman, skopeo) and as the body of the
 * finishing PUT (containerd, BuildKit, Docker 29): the registry's memory stays bounded. Measured
 * as the growth of the registry process's peak resident set (VmHWM) across the upload; a
 * registry that buffered the body would grow by at least the body's size.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { MiB, asyncStream, bytes, sha256, stream } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { pushChunked, pushInPut, withDigest } from '../helpers/oci.js';
import { DRIVERS } from '../helpers/registry.js';
import { type RegistryProcess, processEnv, spawnRegistry } from '../helpers/process.js';

const SIZE = 256 * MiB;
/** Part size 8 MiB x (4 in flight + 1 filling) plus buffers: far below the body's size. */
const BOUND = 128 * MiB;

const digestOf = (size: number, seed: number) => sha256(stream(size, seed));

for (const driver of DRIVERS) {
  describe(`streaming a 256 MiB body (${driver})`, () => {
    let reg: RegistryProcess;
    before(async () => {
      reg = await spawnRegistry(processEnv(driver));
      // Warm up every code path once (the whole-blob PUT and a streamed PATCH, which starts the
      // hashing thread), so the baseline includes loaded modules, the thread and the pools.
      await pushInPut(reg.url, 'warm/up', bytes(9 * MiB, 1));
      await pushChunked(reg.url, 'warm/up', bytes(20 * MiB, 2), [20 * MiB]);
    });
    after(() => reg.kill());

    async function verify(repo: string, digest: string) {
      const got = await call(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
      assert.equal(got.status, 200);
      assert.equal(got.header('content-length'), String(SIZE));
      // Read it back streaming and compare with the generator, without holding 256 MiB.
      const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`);
      const h = createHash('sha256');
      for await (const chunk of res.body!) h.update(chunk);
      assert.equal(`sha256:${h.digest('hex')}`, digest);
    }

    it('streams one PATCH into storage with bounded memory', async (t) => {
      const seed = 42;
      const digest = digestOf(SIZE, seed);
      await reg.resetPeak();
      const base = await reg.peakRss();
      const post = await call(`${reg.url}/v2/stream/patch/blobs/uploads/`, { method: 'POST' });
      const location = resolve(reg.url, post.header('location'));
      const res = await call(location, { method: 'PATCH', body: asyncStream(SIZE, seed) });
      assert.equal(res.status, 202, res.body.toString());
      const put = await call(withDigest(resolve(reg.url, res.header('location')), digest), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      const growth = (await reg.peakRss()) - base;
      t.diagnostic(`peak RSS growth ${(growth / MiB).toFixed(1)} MiB for a ${SIZE / MiB} MiB body (bound ${BOUND / MiB} MiB)`);
      assert.ok(growth < BOUND, `peak RSS grew by ${(growth / MiB).toFixed(0)} MiB for a ${SIZE / MiB} MiB body`);
      await verify('stream/patch', digest);
    });

    it('streams the finishing PUT body into storage with bounded memory', async (t) => {
      const seed = 43;
      const digest = digestOf(SIZE, seed);
      await reg.resetPeak();
      const base = await reg.peakRss();
      const post = await call(`${reg.url}/v2/stream/put/blobs/uploads/`, { method: 'POST' });
      const location = resolve(reg.url, post.header('location'));
      const put = await call(withDigest(location, digest), { method: 'PUT', body: asyncStream(SIZE, seed), headers: { 'Content-Length': SIZE } });
      assert.equal(put.status, 201, put.body.toString());
      const growth = (await reg.peakRss()) - base;
      t.diagnostic(`peak RSS growth ${(growth / MiB).toFixed(1)} MiB for a ${SIZE / MiB} MiB body (bound ${BOUND / MiB} MiB)`);
      assert.ok(growth < BOUND, `peak RSS grew by ${(growth / MiB).toFixed(0)} MiB for a ${SIZE / MiB} MiB body`);
      await verify('stream/put', digest);
    });
  });
}
