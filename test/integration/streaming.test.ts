/**
 * A 256 MiB layer streamed in one PATCH (docker, podman, skopeo) and as the body of the
 * finishing PUT (containerd, BuildKit, Docker 29), and back out in a blob GET: the registry's
 * memory stays bounded. Measured as the growth of the registry process's peak resident set
 * (VmHWM) across the request; a registry that buffered the body would grow by at least the
 * body's size. Clients that leave mid-download leave nothing open behind them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
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

    it('streams a blob GET with bounded memory', async (t) => {
      const seed = 44;
      const digest = digestOf(SIZE, seed);
      const post = await call(`${reg.url}/v2/stream/get/blobs/uploads/`, { method: 'POST' });
      const put = await call(withDigest(resolve(reg.url, post.header('location')), digest), { method: 'PUT', body: asyncStream(SIZE, seed), headers: { 'Content-Length': SIZE } });
      assert.equal(put.status, 201, put.body.toString());
      await reg.resetPeak();
      const base = await reg.peakRss();
      await verify('stream/get', digest);
      const growth = (await reg.peakRss()) - base;
      t.diagnostic(`peak RSS growth ${(growth / MiB).toFixed(1)} MiB for a ${SIZE / MiB} MiB GET`);
      assert.ok(growth < BOUND, `peak RSS grew by ${(growth / MiB).toFixed(0)} MiB for a ${SIZE / MiB} MiB GET`);
    });

    // Reads the blob the test above stored (node:test runs a describe's tests in order).
    it('closes the storage read of every client that leaves mid-download', { timeout: 180_000 }, async () => {
      const digest = digestOf(SIZE, 44);
      const openFds = async () => (await readdir(`/proc/${reg.pid}/fd`)).length;
      const before = await openFds();
      // More than the S3 client's 50 sockets: reads left open would hold them all, and the last
      // GET below would wait for a socket forever.
      for (let i = 0; i < 60; i++) {
        await new Promise<void>((done, fail) => {
          // Reads left open would hold the S3 client's sockets, and a later GET here would wait
          // for one: that is a failure too, not a hang.
          const timer = setTimeout(() => {
            req.destroy();
            fail(new Error(`download ${i} got no bytes in 20 s (S3 sockets held by earlier ones?)`));
          }, 20_000);
          const req = request(`${reg.url}/v2/stream/get/blobs/${digest}`, (res) => {
            if (res.statusCode !== 200) {
              clearTimeout(timer);
              req.destroy();
              return fail(new Error(`download ${i}: ${res.statusCode}`));
            }
            res.once('data', () => {
              clearTimeout(timer);
              req.destroy();
              done();
            });
          });
          req.on('error', (err) => (req.destroyed ? undefined : fail(err)));
          req.end();
        });
      }
      // The registry learns of each departure from its socket; give the last ones a moment.
      let after = await openFds();
      for (let i = 0; i < 50 && after > before + 10; i++) {
        await new Promise((r) => setTimeout(r, 100));
        after = await openFds();
      }
      assert.ok(after <= before + 10, `open descriptors ${before} before, ${after} after 60 abandoned downloads`);
      const res = await fetch(`${reg.url}/v2/stream/get/blobs/${digest}`, { signal: AbortSignal.timeout(60_000) });
      assert.equal(res.status, 200);
      const h = createHash('sha256');
      for await (const chunk of res.body!) h.update(chunk);
      assert.equal(`sha256:${h.digest('hex')}`, digest);
    });
  });
}
