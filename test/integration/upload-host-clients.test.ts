/**
 * Real clients against the deployed shape on one machine: the registry API in Lambda mode
 * (API Gateway's 6 MB payloads, no streaming) with authentication required, and the upload host
 * on 127.0.0.2 (SKIFF_UPLOAD_ORIGIN), one `npm start` process, S3 storage. skopeo and podman send
 * a whole layer in one PATCH with Content-Length: through Lambda alone that is a 413 for any layer
 * over 4.4 MB; here the PATCH goes to the upload host and the push succeeds. Each image is pulled
 * back (by 307 redirects to S3) and compared byte for byte.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClientSandbox, ensureClients, recordingProxy, type RecordingProxy } from '../helpers/clients.js';
import { MiB } from '../helpers/data.js';
import { type ImageInfo, OciLayout, readLayout, tempDir } from '../helpers/oci-layout.js';
import { type RegistryProcess, processEnv, spawnRegistry } from '../helpers/process.js';
import { UPLOAD_HOST, freePort } from '../helpers/registry.js';
import { addUser } from '../helpers/users.js';

ensureClients(['skopeo', 'podman']);

const GiB = 1024 * MiB;

async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

describe('skopeo and podman push through the upload host (Lambda-mode registry API, authentication required, s3)', () => {
  let reg: RegistryProcess;
  let origin: string;
  let proxy: RecordingProxy;
  let layout: OciLayout;
  const images: Record<string, ImageInfo> = {};
  const creds = 'pusher:pusher-password';

  before(async () => {
    origin = `http://${UPLOAD_HOST}:${await freePort(UPLOAD_HOST)}`;
    const env = processEnv('s3', { SKIFF_LAMBDA_MODE: 'true', SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: `k1=${randomBytes(32).toString('base64url')}`, SKIFF_UPLOAD_ORIGIN: origin });
    reg = await spawnRegistry(env);
    await addUser(env, 'pusher', 'pusher-password', 'big/*');
    // Records what the clients send to the registry API (the upload host is reached directly).
    proxy = await recordingProxy(reg.url);
    layout = await OciLayout.create();
    images.mid = await layout.image({ seed: 41, layerSizes: [64 * MiB] });
    await layout.tag('mid', images.mid.descriptor);
  });
  after(async () => {
    await proxy?.close();
    await reg?.kill();
    await layout?.remove();
  });

  /** Pulls `ref` back with skopeo and checks every blob against the image as generated. */
  async function assertPullsBack(sb: ClientSandbox, ref: string, image: ImageInfo) {
    const dir = await tempDir('skiff-pulled');
    await sb.copy(`docker://${proxy.host}/${ref}`, `oci:${join(dir, 'layout')}:x`, { extra: ['--src-creds', creds] });
    const pulled = await readLayout(join(dir, 'layout'));
    assert.equal(pulled.ref('x').digest, image.manifest.digest);
    assert.deepEqual(await pulled.digests(), image.blobs.map((b) => b.digest).sort());
    for (const b of image.blobs) assert.equal(await fileDigest(join(dir, 'layout', 'blobs', 'sha256', b.digest.slice(7))), b.digest, `${b.digest} byte for byte`);
  }

  /** The layer went to the upload host in one PATCH: the registry API saw no layer bytes. */
  function assertLayerBypassedLambda(mark: number, image: ImageInfo) {
    const big = proxy.requests.slice(mark).filter((q) => q.bytesIn >= image.layers[0]!.size);
    assert.deepEqual(big, [], `no layer body reached the registry API:\n${proxy.log(mark)}`);
    const started = proxy.requests.slice(mark).filter((q) => q.method === 'POST' && q.status === 202);
    assert.ok(started.length > 0 && started.every((q) => String(q.responseHeaders?.location).startsWith(`${origin}/`)), proxy.log(mark));
  }

  it('skopeo copy pushes an image with a 64 MiB layer and it pulls back byte for byte', async () => {
    const sb = await ClientSandbox.create({ requestLog: proxy });
    try {
      const mark = proxy.requests.length;
      await sb.copy(`oci:${layout.dir}:mid`, `docker://${proxy.host}/big/skopeo:mid`, { extra: ['--dest-creds', creds] });
      assertLayerBypassedLambda(mark, images.mid!);
      await assertPullsBack(sb, 'big/skopeo:mid', images.mid!);
    } finally {
      await sb.dispose();
    }
  });

  it('podman push (after login) pushes an image with a 64 MiB layer and it pulls back byte for byte', async () => {
    const sb = await ClientSandbox.create({ requestLog: proxy, timeoutMs: 300_000 });
    try {
      await sb.podman(['login', '--tls-verify=false', '-u', 'pusher', '--password-stdin', proxy.host], { input: 'pusher-password\n' });
      const id = await sb.podmanPull(`oci:${layout.dir}:mid`);
      await sb.podman(['tag', id, `${proxy.host}/big/podman:mid`]);
      const mark = proxy.requests.length;
      // podman pushes what it stored (the layer recompressed), so compare by its own digests.
      const digest = await sb.podmanPush(`${proxy.host}/big/podman:mid`, `${proxy.host}/big/podman:mid`);
      const layerPatch = proxy.requests.slice(mark).filter((q) => q.bytesIn > 4.4e6);
      assert.deepEqual(layerPatch, [], `no layer body reached the registry API:\n${proxy.log(mark)}`);
      const other = await ClientSandbox.create();
      try {
        await other.podman(['login', '--tls-verify=false', '-u', 'pusher', '--password-stdin', proxy.host], { input: 'pusher-password\n' });
        const pulled = await other.podmanPull(`${proxy.host}/big/podman@${digest}`);
        assert.equal(pulled, id, 'the image pulled back is the one pushed (same config digest)');
        const inspected = await other.podmanInspect(pulled);
        assert.deepEqual(inspected.RootFS.Layers, images.mid!.layers.map((l) => l.diffId), 'the layer contents came back unchanged');
      } finally {
        await other.dispose();
      }
    } finally {
      await sb.dispose();
    }
  });

  it('skopeo copy pushes an image with a 1 GiB layer and it pulls back byte for byte', { timeout: 1_200_000 }, async () => {
    const big = await OciLayout.create();
    const sb = await ClientSandbox.create({ requestLog: proxy, timeoutMs: 900_000 });
    try {
      const image = await big.image({ seed: 42, layerSizes: [GiB] });
      await big.tag('gib', image.descriptor);
      const mark = proxy.requests.length;
      await sb.copy(`oci:${big.dir}:gib`, `docker://${proxy.host}/big/gib:v1`, { extra: ['--dest-creds', creds] });
      assertLayerBypassedLambda(mark, image);
      await assertPullsBack(sb, 'big/gib:v1', image);
    } finally {
      await sb.dispose();
      await big.remove();
    }
  });
});
