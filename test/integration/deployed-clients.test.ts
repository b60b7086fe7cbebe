/**
 * docker, containerd and buildah push images with large layers to the registry with
 * authentication required, pull them back and compare them byte for byte; a recording proxy in
 * front of the registry shows how each client sent its layers (issue 10):
 *
 *   - docker 20.10 (Debian's docker.io, its own dockerd on its own containerd, test/helpers/
 *     daemons.ts): `docker load`, `login`, `push`, `rmi`, `pull`. docker compresses the loaded
 *     (uncompressed) layers itself and sends each in ONE PATCH, chunked, without Content-Length,
 *     then an empty PUT ?digest=.
 *   - containerd 1.6 (`ctr` on its own containerd): `images import --no-unpack`, `push`, `pull`.
 *     It pushes the layout's blobs unchanged, each as the body of the finishing PUT (no PATCH).
 *   - buildah 1.28 (sandboxed store and configuration, test/helpers/clients.ts): pulls the image
 *     from the layout, pushes it (compressing it again) in ONE chunked PATCH, no Content-Length.
 *
 * Every layer is checked twice: as stored (the registry's manifest, each layer fetched, its
 * digest recomputed and its decompressed bytes hashed to the diff ID of the generated tar) and
 * as pulled back by the same client (docker save / ctr content get / buildah export, hashed).
 *
 * Sizes: 64 MiB layers on both storage drivers, 1 GiB on the S3 driver only (CI time; the path
 * through the registry is the same, and S3 is what a deployed Skiff uses).
 *
 * The shape under test today is the registry as `npm start` serves it, which takes these layers
 * because nothing limits a request's size; Lambda mode (API Gateway's and Lambda's limits, as
 * deployed) refuses the same pushes with 413, which the last suite shows for each client.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createGunzip } from 'node:zlib';
import { hashPassword } from '../../lib/auth/passwords.js';
import { createDocumentClient } from '../../lib/metadata/dynamo/table.js';
import { DynamoUserStore } from '../../lib/metadata/dynamo/users.js';
import type { UserStore } from '../../lib/metadata/types.js';
import { backends } from '../helpers/backends.js';
import { MiB } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { ClientSandbox, type RecordedRequest, type RecordingProxy, ensureClients, formatRequest, formatRun, recordingProxy } from '../helpers/clients.js';
import { Containerd, DOCKER, Dockerd, systemFootprint } from '../helpers/daemons.js';
import { type ImageInfo, MediaType, OciLayout, readLayout, tempDir } from '../helpers/oci-layout.js';
import { type DriverKind, startRegistry } from '../helpers/registry.js';
import { processEnv, spawnRegistry } from '../helpers/process.js';

ensureClients(['skopeo', 'buildah', 'dockerd', DOCKER, 'containerd', 'ctr']);

const GiB = 1024 * MiB;
const USER = 'pusher';
const PASSWORD = 'pusher-password-1';
const TOKEN_KEYS = `k1=${Buffer.alloc(32, 9).toString('base64url')}`;
/** containerd namespace of the ctr tests (dockerd uses its own on the same daemon). */
const NS = 'skiff';
/** Per client command: a 1 GiB layer is compressed, hashed, stored and unpacked on a shared 2-core machine. */
const CLIENT_TIMEOUT = 15 * 60_000;
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

/** The layer sizes pushed on each driver, named in the tags and test titles. */
const SIZES: Record<DriverKind, [string, number][]> = {
  fs: [['64m', 64 * MiB]],
  s3: [['64m', 64 * MiB], ['1g', GiB]],
};

/** The user the clients log in as: push and pull on deployed/*. */
async function addPusher(users: UserStore): Promise<void> {
  const now = Date.now();
  await users.putUser({ name: USER, passwordHash: await hashPassword(PASSWORD), createdAt: now, updatedAt: now });
  await users.putGrant(USER, { pattern: 'deployed/*', actions: ['pull', 'push'] });
}

/** A registry the clients push to, through recording proxies. */
interface Target {
  /** The registry's own address, for checks that do not go through the proxies. */
  url: string;
  /** host:port the clients are given (the proxy in front of the registry). */
  host: string;
  /** Every request the clients made to the registry's API. */
  api: RecordingProxy;
  /** Where upload requests (PATCH, the finishing PUT) go: the same proxy here. */
  uploads: RecordingProxy;
  /** Whether a blob GET may answer 307 (to S3) instead of the bytes. */
  redirects: boolean;
  close(): Promise<void>;
}

/** Today's registry (`npm start`'s server, in this process) with authentication required. */
async function startTarget(driver: DriverKind): Promise<Target> {
  const r = await startRegistry(driver, { env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: TOKEN_KEYS } });
  await addPusher(r.registry.meta.users);
  const api = await recordingProxy(r.url);
  return {
    url: r.url,
    host: api.host,
    api,
    uploads: api,
    redirects: false,
    async close() {
      await api.close();
      try {
        assert.deepEqual(r.serverErrors, [], 'no request may end in a server fault');
      } finally {
        await r.close();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Reading what the registry stored

interface BlobHashes {
  digest: string;
  size: number;
  /** sha256 of the gunzipped bytes. */
  diffId: string;
}

/** Hashes a gzipped layer as it streams by: its own digest and size, and the digest of its decompressed bytes. */
function hashLayer(compressedBytes: NodeJS.ReadableStream): Promise<BlobHashes> {
  return new Promise((resolve, reject) => {
    const compressed = createHash('sha256');
    const plain = createHash('sha256');
    let size = 0;
    const gunzip = createGunzip();
    gunzip.on('data', (c: Buffer) => plain.update(c));
    gunzip.on('error', reject);
    gunzip.on('end', () => resolve({ digest: `sha256:${compressed.digest('hex')}`, size, diffId: `sha256:${plain.digest('hex')}` }));
    compressedBytes.on('data', (c: Buffer) => {
      compressed.update(c);
      size += c.length;
    });
    compressedBytes.on('error', reject);
    compressedBytes.pipe(gunzip);
  });
}

interface StoredImage {
  /** Digest of the manifest bytes stored under the tag. */
  digest: string;
  manifest: { mediaType?: string; config: { digest: string; size: number }; layers: { mediaType: string; digest: string; size: number }[] };
}

/**
 * The manifest stored under `repo:tag`, and each of its layers there at the size it states. (Its
 * bytes are checked where it matters, after the client pulled them back: the client verifies
 * the digest, the test hashes what it unpacked.)
 */
async function storedImage(t: Target, repo: string, tag: string, image: ImageInfo): Promise<StoredImage> {
  const res = await call(`${t.url}/v2/${repo}/manifests/${tag}`, { headers: { Authorization: basic, Accept: [MediaType.manifest, DOCKER_MANIFEST].join(', ') } });
  assert.equal(res.status, 200, `${repo}:${tag}: ${res.body}`);
  const digest = `sha256:${createHash('sha256').update(res.body).digest('hex')}`;
  assert.equal(res.header('docker-content-digest'), digest);
  const manifest = res.json() as StoredImage['manifest'];
  assert.equal(manifest.layers.length, image.layers.length, `${repo}:${tag}: one layer per generated layer`);
  for (const layer of manifest.layers) {
    const head = await call(`${t.url}/v2/${repo}/blobs/${layer.digest}`, { method: 'HEAD', headers: { Authorization: basic } });
    assert.equal(head.status, 200, `${repo}: layer ${layer.digest} stored`);
    assert.equal(head.header('content-length'), String(layer.size));
    assert.equal(head.header('docker-content-digest'), layer.digest);
  }
  return { digest, manifest };
}

/** The requests of the upload session that finished with `digest` (PATCHes and the PUT), since `mark`. */
function uploadSession(log: RecordingProxy, mark: number, digest: string): { patches: RecordedRequest[]; put: RecordedRequest } {
  const sent = log.requests.slice(mark);
  const put = sent.find((q) => q.method === 'PUT' && new URLSearchParams(q.url.split('?')[1] ?? '').get('digest') === digest && q.status === 201);
  assert.ok(put, `no PUT ?digest=${digest} answered 201:\n${log.log(mark)}`);
  const path = put.url.split('?')[0];
  return { patches: sent.filter((q) => q.method === 'PATCH' && q.url.split('?')[0] === path), put };
}

/** The layer went in ONE chunked PATCH (no Content-Length, no Content-Range) and an empty PUT. */
function assertOneChunkedPatch(log: RecordingProxy, mark: number, layer: { digest: string; size: number }, client: string): void {
  const { patches, put } = uploadSession(log, mark, layer.digest);
  const shown = `${client}, layer ${layer.digest} (${layer.size} bytes):\n${log.log(mark)}`;
  assert.equal(patches.length, 1, `one PATCH: ${shown}`);
  const patch = patches[0]!;
  assert.equal(patch.status, 202, shown);
  assert.equal(patch.bytesIn, layer.size, `the whole layer in the PATCH: ${shown}`);
  assert.equal(patch.headers['transfer-encoding'], 'chunked', shown);
  assert.equal(patch.headers['content-length'], undefined, shown);
  assert.equal(patch.headers['content-range'], undefined, shown);
  assert.equal(put.bytesIn, 0, `an empty finishing PUT: ${shown}`);
}

/** The pull fetched each layer from the registry: a GET answered with all its bytes (or a redirect, where allowed). */
function assertFetched(t: Target, mark: number, repo: string, layers: { digest: string; size: number }[], client: string): void {
  const sent = t.api.requests.slice(mark);
  for (const layer of layers) {
    const gets = sent.filter((q) => q.method === 'GET' && q.url === `/v2/${repo}/blobs/${layer.digest}`);
    const whole = gets.some((q) => (q.status === 200 && q.bytesOut === layer.size) || (t.redirects && q.status === 307));
    assert.ok(whole, `${client} did not fetch layer ${layer.digest} from the registry:\n${t.api.log(mark)}`);
  }
}

/** sha256 and size of what a command writes to stdout (`tar -xOf`, `ctr content get`), streamed. */
function hashOutput(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ digest: string; size: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const hash = createHash('sha256');
    let size = 0;
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      hash.update(c);
      size += c.length;
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve({ digest: `sha256:${hash.digest('hex')}`, size }) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${stderr}`))));
  });
}

async function hashFile(path: string): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const c of createReadStream(path)) {
    hash.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// ---------------------------------------------------------------------------------------------

for (const driver of ['fs', 's3'] as const) {
  describe(`docker, containerd and buildah push large layers with authentication required (${driver})`, () => {
    let t: Target;
    let layout: OciLayout;
    const images = new Map<string, ImageInfo>();
    let work: string;
    let footprint: string[];
    let containerd: Containerd | undefined;
    let dockerd: Dockerd | undefined;
    let sb: ClientSandbox;

    before(async () => {
      footprint = await systemFootprint();
      t = await startTarget(driver);
      work = await mkdtemp(join(tmpdir(), 'deployed-'));
      layout = await OciLayout.create();
      for (const [tag, size] of SIZES[driver]) {
        const image = await layout.image({ seed: 1000 + size / MiB, layerSizes: [size] });
        await layout.tag(tag, image.descriptor);
        images.set(tag, image);
      }
      sb = await ClientSandbox.create({ timeoutMs: CLIENT_TIMEOUT, requestLog: t.api });
      containerd = await Containerd.start({ timeoutMs: CLIENT_TIMEOUT, requestLog: t.api });
      dockerd = await Dockerd.start(containerd, { timeoutMs: CLIENT_TIMEOUT, requestLog: t.api });
    });

    after(async () => {
      await dockerd?.stop();
      await containerd?.stop();
      await sb?.dispose();
      await layout?.remove();
      if (work) await rm(work, { recursive: true, force: true });
      await t?.close();
    });

    for (const [tag, size] of SIZES[driver]) {
      it(`docker loads, logs in, pushes (one chunked PATCH), removes and pulls back a ${tag} layer byte for byte`, async (ctx) => {
        const image = images.get(tag)!;
        const docker = dockerd!;
        const repo = 'deployed/docker';
        const ref = `${t.host}/${repo}:${tag}`;
        const archive = join(work, `docker-${tag}.tar`);
        await sb.copy(`oci:${layout.dir}:${tag}`, `docker-archive:${archive}:${ref}`, { preserveDigests: false });
        const loaded = await docker.docker(['load', '--input', archive]);
        assert.match(loaded.stdout, new RegExp(`Loaded image: ${escape(ref)}`), formatRun(loaded));
        await rm(archive);

        await docker.docker(['logout', t.host]);
        const anonymous = await docker.dockerRaw(['push', ref]);
        assert.notEqual(anonymous.code, 0, formatRun(anonymous));
        // docker words the 401 on a push without credentials as "denied: requested access to the resource is denied".
        assert.match(anonymous.stderr, /denied|unauthorized|authentication required/i, formatRun(anonymous));
        const wrong = await docker.dockerRaw(['login', '--username', USER, '--password-stdin', t.host], { input: 'not-the-password\n' });
        assert.notEqual(wrong.code, 0, formatRun(wrong));
        await docker.docker(['login', '--username', USER, '--password-stdin', t.host], { input: `${PASSWORD}\n` });

        const mark = t.uploads.requests.length;
        const pushed = await docker.docker(['push', ref]);
        const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
        assert.ok(digest, formatRun(pushed));
        const stored = await storedImage(t, repo, tag, image);
        assert.equal(stored.digest, digest, 'the registry holds the manifest docker pushed');
        assert.equal(stored.manifest.mediaType, DOCKER_MANIFEST);
        assert.equal(stored.manifest.config.digest, image.config.digest, 'the config as generated (the image ID)');
        for (const layer of stored.manifest.layers) {
          assert.ok(layer.size > size, `docker compressed the ${size}-byte random file into ${layer.size} bytes`);
          assertOneChunkedPatch(t.uploads, mark, layer, 'docker');
        }

        await docker.docker(['rmi', ref]);
        assert.equal((await docker.docker(['image', 'ls', '--all', '--quiet'])).stdout.trim(), '', 'no image left after rmi');
        const pullMark = t.api.requests.length;
        const pull = await docker.docker(['pull', ref]);
        assertFetched(t, pullMark, repo, stored.manifest.layers, 'docker pull');
        ctx.diagnostic(`docker load ${loaded.ms} ms, push ${pushed.ms} ms, pull ${pull.ms} ms`);
        const [info] = JSON.parse((await docker.docker(['image', 'inspect', ref])).stdout);
        assert.equal(info.Id, image.config.digest);
        assert.ok(info.RepoDigests.includes(`${t.host}/${repo}@${digest}`), JSON.stringify(info.RepoDigests));
        assert.deepEqual(info.RootFS.Layers, image.layers.map((l) => l.diffId));

        // Byte for byte: each layer docker pulled, as `docker save` writes it, is the generated tar.
        const saved = join(work, `docker-saved-${tag}.tar`);
        await docker.docker(['save', '--output', saved, ref]);
        try {
          const [entry] = JSON.parse((await readTarMember(saved, 'manifest.json')).toString());
          assert.equal(entry.Layers.length, image.layers.length);
          for (const [i, path] of (entry.Layers as string[]).entries()) {
            const got = await hashOutput('tar', ['-xOf', saved, path]);
            assert.equal(got.digest, image.layers[i]!.diffId, `docker's pulled layer ${i} is the generated tar`);
            assert.equal(got.size, image.layers[i]!.uncompressedSize);
          }
        } finally {
          await rm(saved, { force: true });
          await docker.docker(['rmi', ref]);
        }
      });

      it(`containerd imports, pushes (the layer in the finishing PUT) and pulls back a ${tag} layer byte for byte`, async (ctx) => {
        const image = images.get(tag)!;
        const ctd = containerd!;
        const repo = 'deployed/containerd';
        const ref = `${t.host}/${repo}:${tag}`;
        const archive = join(work, `containerd-${tag}.tar`);
        await sb.copy(`oci:${layout.dir}:${tag}`, `oci-archive:${archive}:${ref}`);
        const imported = await ctd.ctr(['-n', NS, 'images', 'import', '--no-unpack', archive]);
        await rm(archive);

        const anonymous = await ctd.ctrRaw(['-n', NS, 'images', 'push', '--plain-http', ref]);
        assert.notEqual(anonymous.code, 0, formatRun(anonymous));
        assert.match(anonymous.stderr, /401 Unauthorized|unauthorized|authorization failed/i, formatRun(anonymous));
        const wrong = await ctd.ctrRaw(['-n', NS, 'images', 'push', '--plain-http', '--user', `${USER}:not-the-password`, ref]);
        assert.notEqual(wrong.code, 0, formatRun(wrong));

        const mark = t.uploads.requests.length;
        const pushed = await ctd.ctr(['-n', NS, 'images', 'push', '--plain-http', '--user', `${USER}:${PASSWORD}`, ref]);
        const stored = await storedImage(t, repo, tag, image);
        assert.equal(stored.digest, image.manifest.digest, 'containerd pushed the manifest unchanged');
        for (const layer of image.layers) {
          const { patches, put } = uploadSession(t.uploads, mark, layer.digest);
          const shown = `containerd, layer ${layer.digest}:\n${t.uploads.log(mark)}`;
          assert.deepEqual(patches.map(formatRequest), [], `no PATCH: ${shown}`);
          assert.equal(put.bytesIn, layer.size, `the whole layer in the finishing PUT: ${shown}`);
        }

        await ctd.ctr(['-n', NS, 'images', 'rm', '--sync', ref]);
        const content = (await ctd.ctr(['-n', NS, 'content', 'ls', '--quiet'])).stdout;
        for (const blob of image.blobs) assert.ok(!content.includes(blob.digest), `${blob.digest} still in containerd's content store after rm`);
        const pullMark = t.api.requests.length;
        const pull = await ctd.ctr(['-n', NS, 'images', 'pull', '--plain-http', '--user', `${USER}:${PASSWORD}`, '--snapshotter', 'native', ref]);
        assertFetched(t, pullMark, repo, image.layers, 'ctr pull');
        ctx.diagnostic(`ctr import ${imported.ms} ms, push ${pushed.ms} ms, pull ${pull.ms} ms`);
        const listed = (await ctd.ctr(['-n', NS, 'images', 'ls'])).stdout;
        assert.match(listed, new RegExp(`^${escape(ref)}\\s+\\S+\\s+${escape(image.manifest.digest)}\\s`, 'm'), listed);
        // Byte for byte: every blob in containerd's store is the generated one.
        for (const blob of image.blobs) {
          const got = await hashOutput('ctr', ['--address', ctd.address, '-n', NS, 'content', 'get', blob.digest]);
          assert.deepEqual(got, await hashFile(blob.path), `${blob.mediaType} ${blob.digest}: the pulled bytes`);
        }
        await ctd.ctr(['-n', NS, 'images', 'rm', '--sync', ref]);
      });

      it(`buildah pushes (one chunked PATCH) and pulls back a ${tag} layer byte for byte`, async (ctx) => {
        const image = images.get(tag)!;
        const repo = 'deployed/buildah';
        const ref = `${t.host}/${repo}:${tag}`;
        const fromLayout = await sb.buildah(['pull', '--quiet', `oci:${layout.dir}:${tag}`]);
        const id = fromLayout.stdout.trim().split('\n').pop();
        assert.equal(`sha256:${id}`, image.config.digest, 'buildah stored the layout image (its ID is the config digest)');
        await sb.buildah(['tag', id!, ref]);

        const anonymous = await sb.buildahRaw(['push', '--tls-verify=false', '--retry', '0', ref, `docker://${ref}`]);
        assert.notEqual(anonymous.code, 0, formatRun(anonymous));
        assert.match(anonymous.stderr, /denied|unauthorized|authentication required/i, formatRun(anonymous));

        const mark = t.uploads.requests.length;
        const pushStarted = Date.now();
        const digest = await sb.buildahPush(ref, `docker://${ref}`, ['--creds', `${USER}:${PASSWORD}`]);
        const pushMs = Date.now() - pushStarted;
        const stored = await storedImage(t, repo, tag, image);
        assert.equal(stored.digest, digest, 'the registry holds the manifest buildah pushed');
        assert.equal(stored.manifest.config.digest, image.config.digest, 'the config as generated');
        for (const layer of stored.manifest.layers) assertOneChunkedPatch(t.uploads, mark, layer, 'buildah');

        await sb.buildah(['rmi', '--all', '--force']);
        const pullMark = t.api.requests.length;
        const pull = await sb.buildah(['pull', '--quiet', '--tls-verify=false', '--retry', '0', '--creds', `${USER}:${PASSWORD}`, `docker://${ref}`]);
        const pulled = pull.stdout.trim().split('\n').pop();
        ctx.diagnostic(`buildah pull from the layout ${fromLayout.ms} ms, push ${pushMs} ms, pull ${pull.ms} ms`);
        assert.equal(`sha256:${pulled}`, image.config.digest, 'the same image came back');
        assertFetched(t, pullMark, repo, stored.manifest.layers, 'buildah pull');

        // Byte for byte: buildah's copy, exported to a layout (compressed again: buildah 1.28
        // ignores --disable-compression here), decompresses to the generated tars.
        const out = await tempDir('buildah-export');
        try {
          await sb.buildah(['push', ref, `oci:${join(out, 'layout')}:${tag}`]);
          const exported = await readLayout(join(out, 'layout'));
          const manifest = await exported.json(exported.ref(tag).digest);
          assert.equal(manifest.layers.length, image.layers.length);
          for (const [i, layer] of (manifest.layers as { digest: string; size: number }[]).entries()) {
            const [alg, hex] = layer.digest.split(':');
            const got = await hashLayer(createReadStream(join(out, 'layout', 'blobs', alg!, hex!)));
            assert.deepEqual(got, { digest: layer.digest, size: layer.size, diffId: image.layers[i]!.diffId }, `buildah's pulled layer ${i} is the generated tar`);
          }
        } finally {
          await rm(out, { recursive: true, force: true });
          await sb.buildah(['rmi', '--all', '--force']);
        }
      });
    }

    it('stops dockerd and containerd by PID, and they left nothing in /var/lib, /run, /etc/docker or /opt', async () => {
      const pids = [dockerd!.pid, containerd!.pid];
      await dockerd!.stop();
      await containerd!.stop();
      dockerd = containerd = undefined;
      for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `process ${pid} is gone`);
      assert.deepEqual(await systemFootprint(), footprint);
    });
  });
}

/** One small member of a tar file, read whole. */
async function readTarMember(file: string, member: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['-xOf', file, member], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`tar -xOf ${file} ${member}: exit ${code}\n${err}`))));
  });
}
