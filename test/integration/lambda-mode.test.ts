/**
 * Lambda's limits, reproduced by the local server's Lambda mode (the real handler, API Gateway
 * v2 events with base64 bodies, 6,291,456-byte payloads, no streaming) on the real backends:
 * pushes of 64 MiB in chunks that fit, and clear refusals for chunks that do not.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { patch, startUpload, withDigest } from '../helpers/oci.js';
import { type RegistryProcess, processEnv, spawnRegistry } from '../helpers/process.js';

const CAP = 4_400_000;

describe('Lambda mode (s3)', () => {
  let reg: RegistryProcess;
  before(async () => {
    reg = await spawnRegistry(processEnv('s3', { SKIFF_LAMBDA_MODE: 'true' }));
    assert.match(reg.output(), /mode: Lambda/);
  });
  after(() => reg.kill());

  /** Pushes `data` in PATCH chunks of the given sizes (cycled) and checks what comes back. */
  async function pushAndVerify(repo: string, data: Buffer, sizes: number[]) {
    let location = await startUpload(reg.url, repo);
    for (let offset = 0, i = 0; offset < data.length; i++) {
      const chunk = data.subarray(offset, offset + sizes[i % sizes.length]!);
      const res = await patch(location, chunk, offset);
      assert.equal(res.status, 202, `chunk at ${offset}: ${res.body}`);
      assert.equal(res.header('oci-chunk-max-length'), String(CAP));
      offset += chunk.length;
      location = resolve(reg.url, res.header('location'));
    }
    const digest = sha256(data);
    const put = await call(withDigest(location, digest), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
    const head = await call(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(head.header('content-length'), String(data.length));
    // Lambda cannot answer with 64 MiB: downloads are redirects to presigned S3 URLs.
    const get = await call(`${reg.url}/v2/${repo}/blobs/${digest}`);
    assert.equal(get.status, 307);
    const direct = await call(get.header('location')!);
    assert.equal(direct.status, 200);
    assert.equal(sha256(direct.body), digest);
    assert.ok(direct.body.equals(data));
  }

  it('pushes 64 MiB in chunks of exactly the limit', async () => {
    await pushAndVerify('lambda/cap', bytes(64 * MiB, 1), [CAP]);
  });

  it('pushes 64 MiB in chunks whose tail lands exactly on the 5 MiB part minimum', async () => {
    await pushAndVerify('lambda/boundary', bytes(64 * MiB, 2), [2.5 * MiB]);
  });

  it('pushes 64 MiB in chunks of mixed sizes', async () => {
    await pushAndVerify('lambda/mixed', bytes(64 * MiB + 7, 3), [1, CAP, 1 * MiB, 3 * MiB + 5, 17, 4 * MiB, CAP - 3, 2 * MiB]);
  });

  it('refuses a chunk over the limit with an OCI 413 naming the limit, storing nothing', async () => {
    const location = await startUpload(reg.url, 'lambda/over');
    assert.equal((await patch(location, bytes(1000, 4), 0)).status, 202);
    const res = await patch(location, bytes(CAP + 1, 5), 1000);
    assert.equal(res.status, 413);
    const err = res.json().errors[0];
    assert.equal(err.code, 'SIZE_INVALID');
    assert.equal(err.detail.maxChunkBytes, CAP);
    assert.equal(res.header('oci-chunk-max-length'), String(CAP));
    assert.equal((await call(location)).header('range'), '0-999');
  });

  it('refuses a request the platform cannot carry (base64 over 6,291,456 bytes) before the function runs', async () => {
    const location = await startUpload(reg.url, 'lambda/platform');
    const res = await patch(location, bytes(5 * MiB, 6), 0);
    assert.equal(res.status, 413);
    assert.deepEqual(res.json(), { message: 'Request Entity Too Large' });
    assert.equal((await call(location)).header('range'), '0-0');
  });

  it('refuses a whole layer in one PATCH (docker, podman, skopeo) when it is over the limit', async () => {
    const location = await startUpload(reg.url, 'lambda/docker');
    const res = await call(location, { method: 'PATCH', body: bytes(9 * MiB, 7) });
    assert.equal(res.status, 413);
    assert.deepEqual(res.json(), { message: 'Request Entity Too Large' });
    // Over API Gateway's own 10 MB the connection is refused before the body is read.
    const huge = await call(location, { method: 'PATCH', body: bytes(20 * MiB, 8) }).catch((err: NodeJS.ErrnoException) => err.code);
    assert.ok(huge === 'EPIPE' || huge === 'ECONNRESET' || (typeof huge === 'object' && huge.status === 413), String(huge));
    assert.equal((await call(location)).header('range'), '0-0');
  });

  it('serves the rest of the API through the same handler', async () => {
    const small = bytes(3000, 8);
    const mono = await call(`${reg.url}/v2/lambda/api/blobs/uploads/?digest=${sha256(small)}`, { method: 'POST', body: small });
    assert.equal(mono.status, 201);
    const text = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(small), size: small.length },
      layers: [],
    });
    const put = await call(`${reg.url}/v2/lambda/api/manifests/v1`, { method: 'PUT', body: text, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(put.status, 201, put.body.toString());
    const got = await call(`${reg.url}/v2/lambda/api/manifests/v1`);
    assert.equal(got.body.toString(), text);
    assert.deepEqual((await call(`${reg.url}/v2/lambda/api/tags/list`)).json().tags, ['v1']);
    const missing = await call(`${reg.url}/v2/lambda/api/manifests/nope`);
    assert.equal(missing.status, 404);
    assert.equal(missing.json().errors[0].code, 'MANIFEST_UNKNOWN');
  });
});
