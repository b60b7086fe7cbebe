/**
 * Every client family that installs here from Debian pushes images with large layers to the
 * deployed shape of Skiff (issue 10, test/helpers/deployed.ts): the registry API in Lambda mode
 * (API Gateway's and Lambda's limits) handing out upload Locations on the upload host
 * (SKIFF_UPLOAD_ORIGIN on 127.0.0.2, served by the same `npm start`), authentication required,
 * on both storage drivers. Each image is pulled back and compared byte for byte with what was
 * generated. How each client sends a layer (the three shapes the upload host must take):
 *
 *   - skopeo 1.9: copies the layout's blobs unchanged, each in ONE PATCH with Content-Length,
 *     then an empty PUT ?digest=.
 *   - podman 4.3 (sandboxed store, test/helpers/clients.ts): pulls the image from the layout
 *     into its store, pushes it (compressing it again) in ONE chunked PATCH, no Content-Length.
 *   - buildah 1.28 (the same kind of store): like podman, ONE chunked PATCH. These three (one
 *     library, containers/image) also send their Bearer token to the upload host, which ignores
 *     it: the capability in the Location is what counts there (each test reports what was sent).
 *   - docker 20.10 (Debian's docker.io, its own dockerd on its own containerd, test/helpers/
 *     daemons.ts): `docker load`, `login`, `push`, `rmi`, `pull`, `save`. docker compresses the
 *     layers it stored (uncompressed) itself and sends each in ONE chunked PATCH, then an empty PUT.
 *   - containerd 1.6 (`ctr` on its own containerd): `images import --no-unpack`, `push`, `pull`.
 *     It pushes the layout's blobs unchanged, each as the body of the finishing PUT (no PATCH),
 *     and sends no Authorization header to the upload host (another host than the registry's).
 *
 * Sizes (SIZES): every client pushes a 64 MiB and a 1 GiB layer on each driver. The images are
 * generated once for the whole file (gzip with stored blocks: random bytes do not compress) and
 * reach docker and containerd as archives streamed from the layout's files, so no test copies a
 * layer on disk before its client reads it. SKIFF_DEPLOYED_ONLY narrows the file to some tests.
 *
 * The last suite shows the bug the upload host fixes: Lambda mode without it refuses each
 * client's 8 MiB layer with 413.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type TestContext, after, before, describe, it } from 'node:test';
import { ClientSandbox, type RecordedRequest, type RecordingProxy, type RunResult, ensureClients, formatRequest, formatRun } from '../helpers/clients.js';
import { Containerd, DOCKER, Dockerd } from '../helpers/daemons.js';
import { Footprint } from '../helpers/footprint.js';
import { treeCpuSeconds } from '../helpers/cpu.js';
import { MiB } from '../helpers/data.js';
import { type Deployed, type Endpoint, type Started, startDeployed, startLambdaOnly } from '../helpers/deployed.js';
import { call } from '../helpers/http.js';
import { type ImageInfo, MediaType, OciLayout, imageArchive, readLayout, tempDir } from '../helpers/oci-layout.js';
import { UPLOAD_HOST } from '../helpers/registry.js';

ensureClients(['skopeo', 'podman', 'buildah', 'dockerd', DOCKER, 'containerd', 'ctr']);

const GiB = 1024 * MiB;
const USER = 'pusher';
const PASSWORD = 'pusher-password-1';
const users = [{ name: USER, password: PASSWORD, pattern: 'deployed/*' }];
const TOKEN_KEYS = `k1=${Buffer.alloc(32, 9).toString('base64url')}`;
/** containerd namespace of the ctr tests (dockerd uses its own on the same daemon). */
const NS = 'skiff';
/** Per client command: a 1 GiB layer is compressed, hashed, stored and unpacked on a shared 2-core machine. */
const CLIENT_TIMEOUT = 15 * 60_000;
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

const basic = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

type Client = 'skopeo' | 'podman' | 'docker' | 'containerd' | 'buildah';
const EVERY_CLIENT: Client[] = ['skopeo', 'podman', 'docker', 'containerd', 'buildah'];

/** The layer sizes every client pushes on each driver (tag, bytes), named in the tags and test titles. */
const SIZES: [tag: string, size: number][] = [
  ['64m', 64 * MiB],
  ['1g', GiB],
];

/**
 * SKIFF_DEPLOYED_ONLY narrows the file to some of its tests, for working on one of them: names,
 * separated by spaces or commas, each matched as part of a test's key `<driver>/<tag>/<client>`
 * (`fs/1g/podman`, `s3/64m/docker`; the refusals without an upload host: `413/<client>`). So
 * `fs/1g` runs the 1 GiB layers on the filesystem and `buildah` every buildah test. Unset (the
 * default, and CI): every test. The others are reported as skipped, naming the variable.
 */
const ONLY = (process.env.SKIFF_DEPLOYED_ONLY ?? '').split(/[\s,]+/).filter(Boolean);
const selected = (key: string) => !ONLY.length || ONLY.some((part) => key.includes(part));
const skipUnless = (key: string) => (selected(key) ? {} : { skip: `not in SKIFF_DEPLOYED_ONLY=${ONLY.join(',')}` });

// ---------------------------------------------------------------------------------------------
// The images: one single-layer image per size in one layout, generated on first use

let layout: Promise<OciLayout> | undefined;
const images = new Map<string, Promise<ImageInfo>>();

/** The layout's image `tag` with one layer of `size` bytes (its random file), generated once for the file. */
function imageOf(tag: string, size: number): Promise<ImageInfo> {
  let got = images.get(tag);
  if (!got) {
    layout ??= OciLayout.create();
    got = layout.then(async (l) => {
      const info = await l.image({ seed: 1000 + size / MiB, layerSizes: [size] });
      await l.tag(tag, info.descriptor);
      return info;
    });
    images.set(tag, got);
  }
  return got;
}

after(async () => {
  await (await layout?.catch(() => undefined))?.remove();
});

// ---------------------------------------------------------------------------------------------
// The clients and their daemons

class Clients {
  private constructor(
    /** The system before the daemons started and any client ran (test/helpers/footprint.ts). */
    readonly footprint: Footprint,
    readonly layout: OciLayout,
    /** buildah's (the one sandbox that pushes from one test to the next: its layers differ). */
    readonly sb: ClientSandbox,
    readonly requestLog: RecordingProxy,
    readonly containerd: Containerd,
    readonly dockerd: Dockerd,
  ) {}

  /** A sandbox for buildah, containerd and dockerd; the requests through `requestLog` go into a failing command's error. */
  static async start(requestLog: RecordingProxy): Promise<Clients> {
    const footprint = await Footprint.take();
    layout ??= OciLayout.create();
    const sb = await ClientSandbox.create({ timeoutMs: CLIENT_TIMEOUT, requestLog });
    // Last, so that nothing after them can fail and leave them running.
    const containerd = await Containerd.start({ timeoutMs: CLIENT_TIMEOUT, requestLog });
    const dockerd = await Dockerd.start(containerd, { timeoutMs: CLIENT_TIMEOUT, requestLog }).catch(async (err) => {
      await containerd.stop();
      throw err;
    });
    return new Clients(footprint, await layout, sb, requestLog, containerd, dockerd);
  }

  /**
   * A fresh sandbox (its own store and blob-info cache), podman logged in to each of `hosts`.
   * skopeo and podman get one per test: with a cache that knows where a layer went before,
   * c/image mounts it from there instead of uploading it (buildah did, after skopeo's push).
   */
  async sandbox(hosts: string[] = []): Promise<ClientSandbox> {
    const sb = await ClientSandbox.create({ timeoutMs: CLIENT_TIMEOUT, requestLog: this.requestLog });
    try {
      for (const host of new Set(hosts)) await sb.podman(['login', '--tls-verify=false', '-u', USER, '--password-stdin', host], { input: `${PASSWORD}\n` });
    } catch (err) {
      await sb.dispose();
      throw err;
    }
    return sb;
  }

  /** `docker load` of `image`, named `ref`, from an archive streamed from the layout's files (imageArchive). */
  async dockerLoad(image: ImageInfo, ref: string): Promise<RunResult> {
    const loaded = await this.dockerd.docker(['load'], { stdin: imageArchive(image, ref, 'docker') });
    assert.match(loaded.stdout, new RegExp(`Loaded image: ${escape(ref)}`), formatRun(loaded));
    return loaded;
  }

  /** `ctr images import --no-unpack` of `image`, named `ref`, from an OCI archive streamed from the layout's files (imageArchive). */
  ctrImport(image: ImageInfo, ref: string): Promise<RunResult> {
    return this.containerd.ctr(['-n', NS, 'images', 'import', '--no-unpack', '-'], { stdin: imageArchive(image, ref, 'oci') });
  }

  /** `buildah pull` of the layout's image `tag` into the sandbox's store, tagged `ref`. */
  async buildahFromLayout(tag: string, ref: string, image: ImageInfo): Promise<RunResult> {
    const pulled = await this.sb.buildah(['pull', '--quiet', `oci:${this.layout.dir}:${tag}`]);
    const id = pulled.stdout.trim().split('\n').pop();
    assert.equal(`sha256:${id}`, image.config.digest, 'buildah stored the layout image (its ID is the config digest)');
    await this.sb.buildah(['tag', id!, ref]);
    return pulled;
  }

  /** Stops both daemons by PID (idempotent) and removes every temporary file but the shared layout. */
  async stop(): Promise<void> {
    await this.dockerd.stop();
    await this.containerd.stop();
    await this.sb.dispose();
  }
}

/**
 * A test that reports what it cost: wall time, and the CPU seconds of this process and every
 * process it started (clients, daemons, the registry; not the shared S3 and DynamoDB servers),
 * which on a shared machine says more than wall time.
 */
function measured(fn: (ctx: TestContext) => Promise<void>): (ctx: TestContext) => Promise<void> {
  return async (ctx) => {
    const wall = Date.now();
    const cpu = treeCpuSeconds();
    try {
      await fn(ctx);
    } finally {
      ctx.diagnostic(`cost: ${((Date.now() - wall) / 1000).toFixed(1)} s wall, ${(treeCpuSeconds() - cpu).toFixed(1)} s CPU`);
    }
  };
}

/** The last test of a suite that started daemons: they stop by PID, and neither they nor the clients left anything on the system. */
function itStopsTheDaemons(clients: () => Clients | undefined): void {
  it('stops dockerd and containerd by PID, and no daemon or client left anything in /var/lib, /run, /etc/docker or /opt', async () => {
    const c = clients();
    assert.ok(c, 'the daemons started');
    const pids = [c.dockerd.pid, c.containerd.pid];
    await c.stop();
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `process ${pid} is gone`);
    await c.footprint.assertNothingAdded('dockerd, containerd, skopeo, podman and buildah');
  });
}

// ---------------------------------------------------------------------------------------------
// What the registry stored and how the clients sent it

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
async function storedImage(t: Endpoint, repo: string, tag: string, image: ImageInfo): Promise<StoredImage> {
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

/** The tag was not stored (a refused push). */
async function assertNotStored(t: Endpoint, repo: string, tag: string): Promise<void> {
  const res = await call(`${t.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { Authorization: basic } });
  assert.equal(res.status, 404, `${repo}:${tag} must not exist after a refused push`);
}

/** The requests of the upload session that finished with `digest` (PATCHes and the PUT), since `mark`. */
function uploadSession(log: RecordingProxy, mark: number, digest: string): { patches: RecordedRequest[]; put: RecordedRequest } {
  const sent = log.requests.slice(mark);
  const put = sent.find((q) => q.method === 'PUT' && new URLSearchParams(q.url.split('?')[1] ?? '').get('digest') === digest && q.status === 201);
  assert.ok(put, `no PUT ?digest=${digest} answered 201 on ${log.url}:\n${log.log(mark)}`);
  const path = put.url.split('?')[0];
  return { patches: sent.filter((q) => q.method === 'PATCH' && q.url.split('?')[0] === path), put };
}

/**
 * The layer went in ONE PATCH (no Content-Range), sent `chunked` (no Content-Length) or with a
 * Content-Length of the whole layer, then an empty PUT, all on the upload host.
 */
function assertOnePatch(t: Deployed, mark: number, layer: { digest: string; size: number }, client: string, how: 'chunked' | 'length'): void {
  const { patches, put } = uploadSession(t.uploads, mark, layer.digest);
  const shown = `${client}, layer ${layer.digest} (${layer.size} bytes):\n${t.uploads.log(mark)}`;
  assert.equal(patches.length, 1, `one PATCH: ${shown}`);
  const patch = patches[0]!;
  assert.equal(patch.status, 202, shown);
  assert.equal(patch.bytesIn, layer.size, `the whole layer in the PATCH: ${shown}`);
  if (how === 'chunked') {
    assert.equal(patch.headers['transfer-encoding'], 'chunked', shown);
    assert.equal(patch.headers['content-length'], undefined, shown);
  } else {
    assert.equal(patch.headers['transfer-encoding'], undefined, shown);
    assert.equal(patch.headers['content-length'], String(layer.size), shown);
  }
  assert.equal(patch.headers['content-range'], undefined, shown);
  assert.equal(put.bytesIn, 0, `an empty finishing PUT: ${shown}`);
}

/** Each upload started on the API (POST) was sent on to the upload host, none was finished on the API. */
function assertUploadsWentToTheHost(t: Deployed, apiMark: number, client: string): void {
  const sent = t.api.requests.slice(apiMark);
  const starts = sent.filter((q) => q.method === 'POST' && q.status === 202);
  assert.ok(starts.length > 0, `${client} started no upload:\n${t.api.log(apiMark)}`);
  for (const q of starts) assert.ok(String(q.responseHeaders?.location).startsWith(`http://${UPLOAD_HOST}:`), `upload Location on the upload host: ${formatRequest(q)}`);
  assert.deepEqual(sent.filter((q) => q.method === 'PATCH' || (q.method === 'PUT' && q.url.includes('/blobs/uploads/'))).map(formatRequest), [], `${client} sent no upload request to the API`);
}

/** For the test's diagnostics: which Authorization schemes the client sent to the upload host since `mark` (it ignores them). */
function authorizationSent(t: Deployed, mark: number): string {
  const schemes = new Set(t.uploads.requests.slice(mark).map((q) => q.headers.authorization?.split(' ')[0] ?? 'none'));
  return `Authorization to the upload host: ${[...schemes].sort().join(', ')}`;
}

/** The pull fetched each layer from the registry: a GET answered with all its bytes, or a redirect to S3. */
function assertFetched(e: Endpoint, mark: number, repo: string, layers: { digest: string; size: number }[], client: string): void {
  const sent = e.api.requests.slice(mark);
  for (const layer of layers) {
    const gets = sent.filter((q) => q.method === 'GET' && q.url === `/v2/${repo}/blobs/${layer.digest}`);
    const whole = gets.some((q) => (e.redirects ? q.status === 307 : q.status === 200 && q.bytesOut === layer.size));
    assert.ok(whole, `${client} did not fetch layer ${layer.digest} from the registry:\n${e.api.log(mark)}`);
  }
}

/** The push was refused on the request carrying the layer (`method`) with 413, on the API itself. */
function assertRefusedWith413(e: Endpoint, mark: number, method: 'PATCH' | 'PUT', r: RunResult): void {
  assert.notEqual(r.code, 0, formatRun(r));
  const sent = e.api.requests.slice(mark);
  const refused = sent.filter((q) => q.method === method && q.url.includes('/blobs/uploads/') && q.status === 413);
  assert.ok(refused.length > 0, `no ${method} of the layer answered 413:\n${e.api.log(mark)}\n${formatRun(r)}`);
  assert.match(r.stderr, /413|Request (Entity )?Too Large/i, formatRun(r));
}

// ---------------------------------------------------------------------------------------------
// Reading what the clients pulled back

/** What a command writes to stdout (`ctr content get`), streamed into a hash. */
function commandOutput(cmd: string, args: string[]): Promise<{ digest: string; size: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
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

/** A regular file of a tar archive: its digest and size, and its bytes when at most 1 MiB. */
interface TarFile {
  digest: string;
  size: number;
  data?: Buffer;
}

/**
 * The regular files of the tar archive a command writes to stdout (`docker save`), by name, each
 * hashed as it streams by: a 1 GiB layer never goes to disk or memory. Reads ustar headers (a
 * name with its prefix) and PAX `path` records, which is what Go's archive/tar writes.
 */
function tarContents(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Map<string, TarFile>> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const files = new Map<string, TarFile>();
    const field = (h: Buffer, offset: number, length: number) => {
      const raw = h.subarray(offset, offset + length);
      const end = raw.indexOf(0);
      return raw.subarray(0, end < 0 ? length : end).toString('utf8');
    };
    let header = Buffer.alloc(0);
    let skip = 0;
    let paxPath: string | undefined;
    let entry: { name: string; type: string; size: number; left: number; hash: ReturnType<typeof createHash>; kept: Buffer[] } | undefined;
    const finish = (e: NonNullable<typeof entry>) => {
      const data = Buffer.concat(e.kept);
      if (e.type === 'x') paxPath = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data.toString('utf8'))?.[1];
      else if (e.type === '0' || e.type === '') files.set(e.name, { digest: `sha256:${e.hash.digest('hex')}`, size: e.size, ...(e.size <= MiB ? { data } : {}) });
      skip = (512 - (e.size % 512)) % 512;
    };
    child.stdout.on('data', (chunk: Buffer) => {
      let off = 0;
      while (off < chunk.length) {
        if (skip) {
          const n = Math.min(skip, chunk.length - off);
          skip -= n;
          off += n;
        } else if (entry) {
          const n = Math.min(entry.left, chunk.length - off);
          const piece = chunk.subarray(off, off + n);
          entry.hash.update(piece);
          if (entry.size <= MiB) entry.kept.push(Buffer.from(piece));
          entry.left -= n;
          off += n;
          if (!entry.left) {
            finish(entry);
            entry = undefined;
          }
        } else {
          const n = Math.min(512 - header.length, chunk.length - off);
          header = Buffer.concat([header, chunk.subarray(off, off + n)]);
          off += n;
          if (header.length < 512) continue;
          const h = header;
          header = Buffer.alloc(0);
          if (h.every((b) => b === 0)) continue; // the end-of-archive blocks
          const prefix = field(h, 345, 155);
          const type = field(h, 156, 1);
          const name = type === 'x' || type === 'g' ? '' : (paxPath ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100)));
          if (type !== 'x' && type !== 'g') paxPath = undefined;
          const size = parseInt(field(h, 124, 12).trim() || '0', 8);
          entry = { name, type, size, left: size, hash: createHash('sha256'), kept: [] };
          if (!size) {
            finish(entry);
            entry = undefined;
          }
        }
      }
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${stderr}`));
      else if (entry || header.length) reject(new Error(`${cmd} ${args.join(' ')}: the archive ends inside ${entry ? `entry ${entry.name}` : 'a header'}`));
      else resolve(files);
    });
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
  const any = SIZES.some(([tag]) => EVERY_CLIENT.some((client) => selected(`${driver}/${tag}/${client}`)));
  describe(`skopeo, podman, buildah, docker and containerd push large layers to the deployed shape: Lambda-mode API + upload host, authentication required (${driver})`, any ? {} : { skip: `not in SKIFF_DEPLOYED_ONLY=${ONLY.join(',')}` }, () => {
    let t: Deployed;
    let c: Clients | undefined;

    before(async () => {
      for (const [tag, size] of SIZES) if (EVERY_CLIENT.some((client) => selected(`${driver}/${tag}/${client}`))) await imageOf(tag, size);
      t = await startDeployed(driver, { users, tokenKeys: TOKEN_KEYS });
      c = await Clients.start(t.api);
    });

    after(async () => {
      await c?.stop();
      await t?.close();
    });

    for (const [tag, size] of SIZES) {
      it(`skopeo copies (one PATCH with Content-Length to the upload host) and pulls back a ${tag} layer byte for byte`, skipUnless(`${driver}/${tag}/skopeo`), measured(async (ctx) => {
        const generated = await imageOf(tag, size);
        const sb = await c!.sandbox();
        const out = await tempDir('skopeo-pulled');
        try {
          const repo = 'deployed/skopeo';
          const ref = `docker://${t.host}/${repo}:${tag}`;

          const anonymous = await sb.skopeoRaw(sb.copyArgs(`oci:${c!.layout.dir}:${tag}`, ref, { extra: ['--retry-times', '0'] }));
          assert.notEqual(anonymous.code, 0, formatRun(anonymous));
          assert.match(anonymous.stderr, /denied|unauthorized|authentication required/i, formatRun(anonymous));
          await assertNotStored(t, repo, tag);

          const mark = t.uploads.requests.length;
          const apiMark = t.api.requests.length;
          const pushed = await sb.copy(`oci:${c!.layout.dir}:${tag}`, ref, { extra: ['--dest-creds', `${USER}:${PASSWORD}`] });
          const stored = await storedImage(t, repo, tag, generated);
          assert.equal(stored.digest, generated.manifest.digest, 'skopeo pushed the manifest unchanged');
          assertUploadsWentToTheHost(t, apiMark, 'skopeo');
          for (const layer of generated.layers) assertOnePatch(t, mark, layer, 'skopeo', 'length');

          const pullMark = t.pull.api.requests.length;
          const pull = await sb.copy(`docker://${t.pull.host}/${repo}:${tag}`, `oci:${join(out, 'layout')}:${tag}`, { extra: ['--src-creds', `${USER}:${PASSWORD}`] });
          assertFetched(t.pull, pullMark, repo, generated.layers, 'skopeo copy (pull)');
          ctx.diagnostic(`skopeo push ${pushed.ms} ms, pull ${pull.ms} ms; ${authorizationSent(t, mark)}`);
          const pulled = await readLayout(join(out, 'layout'));
          assert.equal(pulled.ref(tag).digest, generated.manifest.digest);
          assert.deepEqual(await pulled.digests(), generated.blobs.map((b) => b.digest).sort());
          // Byte for byte: every blob skopeo wrote hashes to the generated one's digest (the layout computed it as it wrote the file).
          for (const blob of generated.blobs) {
            assert.deepEqual(await hashFile(join(out, 'layout', 'blobs', 'sha256', blob.digest.slice(7))), { digest: blob.digest, size: blob.size }, `${blob.mediaType} ${blob.digest}: the pulled bytes`);
          }
        } finally {
          await rm(out, { recursive: true, force: true });
          await sb.dispose();
        }
      }));

      it(`podman logs in, pushes (one chunked PATCH to the upload host) and pulls back a ${tag} layer byte for byte`, skipUnless(`${driver}/${tag}/podman`), measured(async (ctx) => {
        const generated = await imageOf(tag, size);
        const repo = 'deployed/podman';
        const ref = `${t.host}/${repo}:${tag}`;
        const sb = await c!.sandbox([]);
        let other: ClientSandbox | undefined;
        const out = await tempDir('podman-saved');
        try {
          const id = await sb.podmanPull(`oci:${c!.layout.dir}:${tag}`);
          assert.equal(`sha256:${id}`, generated.config.digest, 'podman stored the layout image (its ID is the config digest)');
          await sb.podman(['tag', id, ref]);
          const anonymous = await sb.podmanRaw(['push', '--tls-verify=false', ref]);
          assert.notEqual(anonymous.code, 0, formatRun(anonymous));
          assert.match(anonymous.stderr, /denied|unauthorized|authentication required/i, formatRun(anonymous));
          const wrong = await sb.podmanRaw(['login', '--tls-verify=false', '-u', USER, '--password-stdin', t.host], { input: 'not-the-password\n' });
          assert.notEqual(wrong.code, 0, formatRun(wrong));
          await assertNotStored(t, repo, tag);
          await sb.podman(['login', '--tls-verify=false', '-u', USER, '--password-stdin', t.host], { input: `${PASSWORD}\n` });

          const mark = t.uploads.requests.length;
          const apiMark = t.api.requests.length;
          const pushStarted = Date.now();
          const digest = await sb.podmanPush(ref, ref);
          const pushMs = Date.now() - pushStarted;
          const stored = await storedImage(t, repo, tag, generated);
          assert.equal(stored.digest, digest, 'the registry holds the manifest podman pushed');
          assert.equal(stored.manifest.config.digest, generated.config.digest, 'the config as generated');
          assertUploadsWentToTheHost(t, apiMark, 'podman');
          for (const layer of stored.manifest.layers) assertOnePatch(t, mark, layer, 'podman', 'chunked');
          await sb.dispose();

          other = await c!.sandbox([t.pull.host]);
          const pullMark = t.pull.api.requests.length;
          const pullStarted = Date.now();
          const pulled = await other.podmanPull(`${t.pull.host}/${repo}@${digest}`);
          const pullMs = Date.now() - pullStarted;
          assert.equal(`sha256:${pulled}`, generated.config.digest, 'the same image came back');
          assertFetched(t.pull, pullMark, repo, stored.manifest.layers, 'podman pull');
          ctx.diagnostic(`podman push ${pushMs} ms, pull ${pullMs} ms; ${authorizationSent(t, mark)}`);

          // Byte for byte: podman's copy, saved as an OCI layout with its layers uncompressed, holds the generated tars.
          await other.podman(['save', '--format', 'oci-dir', '--uncompressed', '--output', join(out, 'layout'), pulled]);
          const saved = await readLayout(join(out, 'layout'));
          const manifest = await saved.json(saved.ref().digest);
          assert.equal(manifest.layers.length, generated.layers.length);
          for (const [i, layer] of (manifest.layers as { digest: string }[]).entries()) {
            const got = await hashFile(join(out, 'layout', 'blobs', 'sha256', layer.digest.slice(7)));
            assert.deepEqual(got, { digest: generated.layers[i]!.diffId, size: generated.layers[i]!.uncompressedSize }, `podman's pulled layer ${i} is the generated tar`);
          }
        } finally {
          await rm(out, { recursive: true, force: true });
          await sb.dispose();
          await other?.dispose();
        }
      }));

      it(`docker loads, logs in, pushes (one chunked PATCH to the upload host), removes and pulls back a ${tag} layer byte for byte`, skipUnless(`${driver}/${tag}/docker`), measured(async (ctx) => {
        const image = await imageOf(tag, size);
        const docker = c!.dockerd;
        const repo = 'deployed/docker';
        const ref = `${t.host}/${repo}:${tag}`;
        const loaded = await c!.dockerLoad(image, ref);

        await docker.docker(['logout', t.host]);
        const anonymous = await docker.dockerRaw(['push', ref]);
        assert.notEqual(anonymous.code, 0, formatRun(anonymous));
        // docker words the 401 on a push without credentials as "denied: requested access to the resource is denied".
        assert.match(anonymous.stderr, /denied|unauthorized|authentication required/i, formatRun(anonymous));
        const wrong = await docker.dockerRaw(['login', '--username', USER, '--password-stdin', t.host], { input: 'not-the-password\n' });
        assert.notEqual(wrong.code, 0, formatRun(wrong));
        await assertNotStored(t, repo, tag);
        await docker.docker(['login', '--username', USER, '--password-stdin', t.host], { input: `${PASSWORD}\n` });

        const mark = t.uploads.requests.length;
        const apiMark = t.api.requests.length;
        const pushed = await docker.docker(['push', ref]);
        const digest = /digest: (sha256:[0-9a-f]{64})/.exec(pushed.stdout)?.[1];
        assert.ok(digest, formatRun(pushed));
        const stored = await storedImage(t, repo, tag, image);
        assert.equal(stored.digest, digest, 'the registry holds the manifest docker pushed');
        assert.equal(stored.manifest.mediaType, DOCKER_MANIFEST);
        assert.equal(stored.manifest.config.digest, image.config.digest, 'the config as generated (the image ID)');
        assertUploadsWentToTheHost(t, apiMark, 'docker');
        for (const layer of stored.manifest.layers) {
          assert.ok(layer.size > size, `docker compressed the ${size}-byte random file into ${layer.size} bytes`);
          assertOnePatch(t, mark, layer, 'docker', 'chunked');
        }

        await docker.docker(['rmi', ref]);
        assert.equal((await docker.docker(['image', 'ls', '--all', '--quiet'])).stdout.trim(), '', 'no image left after rmi');
        const from = `${t.pull.host}/${repo}:${tag}`;
        if (t.pull.host !== t.host) await docker.docker(['login', '--username', USER, '--password-stdin', t.pull.host], { input: `${PASSWORD}\n` });
        const pullMark = t.pull.api.requests.length;
        const pull = await docker.docker(['pull', from]);
        assertFetched(t.pull, pullMark, repo, stored.manifest.layers, 'docker pull');
        ctx.diagnostic(`docker load ${loaded.ms} ms, push ${pushed.ms} ms, pull ${pull.ms} ms`);
        const [info] = JSON.parse((await docker.docker(['image', 'inspect', from])).stdout);
        assert.equal(info.Id, image.config.digest);
        assert.ok(info.RepoDigests.includes(`${t.pull.host}/${repo}@${digest}`), JSON.stringify(info.RepoDigests));
        assert.deepEqual(info.RootFS.Layers, image.layers.map((l) => l.diffId));

        // Byte for byte: each layer docker pulled, as `docker save` writes it, is the generated tar
        // (the archive read as docker writes it to stdout, nothing of it on disk).
        try {
          const saved = await tarContents(DOCKER, ['--host', docker.host, 'save', from], docker.env);
          const [entry] = JSON.parse(saved.get('manifest.json')?.data?.toString() ?? 'null') ?? [];
          assert.ok(entry, `docker save wrote a manifest.json: ${[...saved.keys()].join(' ')}`);
          assert.equal(entry.Layers.length, image.layers.length);
          for (const [i, path] of (entry.Layers as string[]).entries()) {
            const got = saved.get(path);
            assert.deepEqual({ digest: got?.digest, size: got?.size }, { digest: image.layers[i]!.diffId, size: image.layers[i]!.uncompressedSize }, `docker's pulled layer ${i} (${path}) is the generated tar`);
          }
        } finally {
          await docker.docker(['rmi', from]);
        }
      }));

      it(`containerd imports, pushes (the layer in the finishing PUT, no credentials to the upload host) and pulls back a ${tag} layer byte for byte`, skipUnless(`${driver}/${tag}/containerd`), measured(async (ctx) => {
        const image = await imageOf(tag, size);
        const ctd = c!.containerd;
        const repo = 'deployed/containerd';
        const ref = `${t.host}/${repo}:${tag}`;
        const imported = await c!.ctrImport(image, ref);

        const anonymous = await ctd.ctrRaw(['-n', NS, 'images', 'push', '--plain-http', ref]);
        assert.notEqual(anonymous.code, 0, formatRun(anonymous));
        assert.match(anonymous.stderr, /401 Unauthorized|unauthorized|authorization failed/i, formatRun(anonymous));
        const wrong = await ctd.ctrRaw(['-n', NS, 'images', 'push', '--plain-http', '--user', `${USER}:not-the-password`, ref]);
        assert.notEqual(wrong.code, 0, formatRun(wrong));
        await assertNotStored(t, repo, tag);

        const mark = t.uploads.requests.length;
        const apiMark = t.api.requests.length;
        const pushed = await ctd.ctr(['-n', NS, 'images', 'push', '--plain-http', '--user', `${USER}:${PASSWORD}`, ref]);
        const stored = await storedImage(t, repo, tag, image);
        assert.equal(stored.digest, image.manifest.digest, 'containerd pushed the manifest unchanged');
        assertUploadsWentToTheHost(t, apiMark, 'containerd');
        for (const layer of image.layers) {
          const { patches, put } = uploadSession(t.uploads, mark, layer.digest);
          const shown = `containerd, layer ${layer.digest}:\n${t.uploads.log(mark)}`;
          assert.deepEqual(patches.map(formatRequest), [], `no PATCH: ${shown}`);
          assert.equal(put.bytesIn, layer.size, `the whole layer in the finishing PUT: ${shown}`);
        }
        const withCredentials = t.uploads.requests.slice(mark).filter((q) => q.headers.authorization !== undefined);
        assert.deepEqual(withCredentials.map(formatRequest), [], 'containerd sends no credentials to a host other than the registry');

        await ctd.ctr(['-n', NS, 'images', 'rm', '--sync', ref]);
        const content = (await ctd.ctr(['-n', NS, 'content', 'ls', '--quiet'])).stdout;
        for (const blob of image.blobs) assert.ok(!content.includes(blob.digest), `${blob.digest} still in containerd's content store after rm`);
        const from = `${t.pull.host}/${repo}:${tag}`;
        const pullMark = t.pull.api.requests.length;
        const pull = await ctd.ctr(['-n', NS, 'images', 'pull', '--plain-http', '--user', `${USER}:${PASSWORD}`, '--snapshotter', 'native', from]);
        assertFetched(t.pull, pullMark, repo, image.layers, 'ctr pull');
        ctx.diagnostic(`ctr import ${imported.ms} ms, push ${pushed.ms} ms, pull ${pull.ms} ms`);
        const listed = (await ctd.ctr(['-n', NS, 'images', 'ls'])).stdout;
        assert.match(listed, new RegExp(`^${escape(from)}\\s+\\S+\\s+${escape(image.manifest.digest)}\\s`, 'm'), listed);
        // Byte for byte: every blob in containerd's store hashes to the generated one's digest (the layout computed it as it wrote the file).
        for (const blob of image.blobs) {
          const got = await commandOutput('ctr', ['--address', ctd.address, '-n', NS, 'content', 'get', blob.digest]);
          assert.deepEqual({ digest: got.digest, size: got.size }, { digest: blob.digest, size: blob.size }, `${blob.mediaType} ${blob.digest}: the pulled bytes`);
        }
        await ctd.ctr(['-n', NS, 'images', 'rm', '--sync', from]);
      }));

      it(`buildah pushes (one chunked PATCH to the upload host) and pulls back a ${tag} layer byte for byte`, skipUnless(`${driver}/${tag}/buildah`), measured(async (ctx) => {
        const image = await imageOf(tag, size);
        const sb = c!.sb;
        const repo = 'deployed/buildah';
        const ref = `${t.host}/${repo}:${tag}`;
        const fromLayout = await c!.buildahFromLayout(tag, ref, image);

        const anonymous = await sb.buildahRaw(['push', '--tls-verify=false', '--retry', '0', ref, `docker://${ref}`]);
        assert.notEqual(anonymous.code, 0, formatRun(anonymous));
        assert.match(anonymous.stderr, /denied|unauthorized|authentication required/i, formatRun(anonymous));
        await assertNotStored(t, repo, tag);

        const mark = t.uploads.requests.length;
        const apiMark = t.api.requests.length;
        const pushStarted = Date.now();
        const digest = await sb.buildahPush(ref, `docker://${ref}`, ['--creds', `${USER}:${PASSWORD}`]);
        const pushMs = Date.now() - pushStarted;
        const stored = await storedImage(t, repo, tag, image);
        assert.equal(stored.digest, digest, 'the registry holds the manifest buildah pushed');
        assert.equal(stored.manifest.config.digest, image.config.digest, 'the config as generated');
        assertUploadsWentToTheHost(t, apiMark, 'buildah');
        for (const layer of stored.manifest.layers) assertOnePatch(t, mark, layer, 'buildah', 'chunked');

        await sb.buildah(['rmi', '--all', '--force']);
        const from = `${t.pull.host}/${repo}:${tag}`;
        const pullMark = t.pull.api.requests.length;
        const pull = await sb.buildah(['pull', '--quiet', '--tls-verify=false', '--retry', '0', '--creds', `${USER}:${PASSWORD}`, `docker://${from}`]);
        assert.equal(`sha256:${pull.stdout.trim().split('\n').pop()}`, image.config.digest, 'the same image came back');
        assertFetched(t.pull, pullMark, repo, stored.manifest.layers, 'buildah pull');
        ctx.diagnostic(`buildah pull from the layout ${fromLayout.ms} ms, push ${pushMs} ms, pull ${pull.ms} ms; ${authorizationSent(t, mark)}`);

        // Byte for byte: buildah's copy, pushed to a directory with its layers left uncompressed
        // (--disable-compression, which 1.28 honours for dir: though not for oci:, where it would
        // compress 1 GiB again for the test to decompress), holds the generated tars.
        const out = await tempDir('buildah-export');
        try {
          await sb.buildah(['push', '--disable-compression', from, `dir:${join(out, 'dir')}`]);
          const manifest = JSON.parse(await readFile(join(out, 'dir', 'manifest.json'), 'utf8')) as StoredImage['manifest'];
          assert.equal(manifest.layers.length, image.layers.length);
          for (const [i, layer] of manifest.layers.entries()) {
            const got = await hashFile(join(out, 'dir', layer.digest.slice('sha256:'.length)));
            assert.deepEqual(got, { digest: image.layers[i]!.diffId, size: image.layers[i]!.uncompressedSize }, `buildah's pulled layer ${i} is the generated tar`);
          }
        } finally {
          await rm(out, { recursive: true, force: true });
          await sb.buildah(['rmi', '--all', '--force']);
        }
      }));

    }

    itStopsTheDaemons(() => c);
  });
}

/**
 * 8 MiB: over what one Lambda invocation carries (6 MB, base64), under API Gateway's 10 MB, past
 * which the connection is cut before any answer (lambda-mode.ts), so every client sees the 413.
 */
const any413 = EVERY_CLIENT.some((client) => selected(`413/${client}`));
describe('Lambda mode without an upload host refuses each client\'s 8 MiB layer with 413 (s3), the bug the upload host fixes', any413 ? {} : { skip: `not in SKIFF_DEPLOYED_ONLY=${ONLY.join(',')}` }, () => {
  let e: Started;
  let c: Clients | undefined;
  const tag = '8m';
  const size = 8 * MiB;

  before(async () => {
    e = await startLambdaOnly('s3', { users, tokenKeys: TOKEN_KEYS });
    c = await Clients.start(e.api);
  });

  after(async () => {
    await c?.stop();
    await e?.close();
  });

  it('skopeo copy: the PATCH with the layer gets 413, nothing is stored', skipUnless('413/skopeo'), async () => {
    await imageOf(tag, size);
    const ref = `docker://${e.host}/deployed/skopeo:${tag}`;
    const mark = e.api.requests.length;
    assertRefusedWith413(e, mark, 'PATCH', await c!.sb.skopeoRaw(c!.sb.copyArgs(`oci:${c!.layout.dir}:${tag}`, ref, { extra: ['--dest-creds', `${USER}:${PASSWORD}`, '--retry-times', '0'] })));
    await assertNotStored(e, 'deployed/skopeo', tag);
  });

  it('podman push: the PATCH with the layer gets 413, nothing is stored', skipUnless('413/podman'), async () => {
    await imageOf(tag, size);
    const ref = `${e.host}/deployed/podman:${tag}`;
    const sb = await c!.sandbox([e.host]);
    try {
      const id = await sb.podmanPull(`oci:${c!.layout.dir}:${tag}`);
      await sb.podman(['tag', id, ref]);
      const mark = e.api.requests.length;
      assertRefusedWith413(e, mark, 'PATCH', await sb.podmanRaw(['push', '--tls-verify=false', ref]));
      await assertNotStored(e, 'deployed/podman', tag);
    } finally {
      await sb.dispose();
    }
  });

  it('docker push: the PATCH with the layer gets 413, nothing is stored', skipUnless('413/docker'), async () => {
    const ref = `${e.host}/deployed/docker:${tag}`;
    await c!.dockerLoad(await imageOf(tag, size), ref);
    await c!.dockerd.docker(['login', '--username', USER, '--password-stdin', e.host], { input: `${PASSWORD}\n` });
    const mark = e.api.requests.length;
    assertRefusedWith413(e, mark, 'PATCH', await c!.dockerd.dockerRaw(['push', ref]));
    await assertNotStored(e, 'deployed/docker', tag);
  });

  it('containerd push: the finishing PUT with the layer gets 413, nothing is stored', skipUnless('413/containerd'), async () => {
    const ref = `${e.host}/deployed/containerd:${tag}`;
    await c!.ctrImport(await imageOf(tag, size), ref);
    const mark = e.api.requests.length;
    assertRefusedWith413(e, mark, 'PUT', await c!.containerd.ctrRaw(['-n', NS, 'images', 'push', '--plain-http', '--user', `${USER}:${PASSWORD}`, ref]));
    await assertNotStored(e, 'deployed/containerd', tag);
  });

  it('buildah push: the PATCH with the layer gets 413, nothing is stored', skipUnless('413/buildah'), async () => {
    const ref = `${e.host}/deployed/buildah:${tag}`;
    await c!.buildahFromLayout(tag, ref, await imageOf(tag, size));
    const mark = e.api.requests.length;
    assertRefusedWith413(e, mark, 'PATCH', await c!.sb.buildahRaw(['push', '--tls-verify=false', '--retry', '0', '--creds', `${USER}:${PASSWORD}`, ref, `docker://${ref}`]));
    await assertNotStored(e, 'deployed/buildah', tag);
  });

  itStopsTheDaemons(() => c);
});
