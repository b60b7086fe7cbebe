/**
 * Real clients against the registry, on each storage driver and the real backends: skopeo 1.9.3
 * and podman 4.3.1 (Debian packages, installed when missing) push and pull OCI image layouts
 * generated on the fly (test/helpers/oci-layout.ts: real gzipped tar layers, real configs),
 * a multi-architecture index and artifacts with a `subject`, and the tests compare digests and
 * bytes end to end (distribution-spec v1.1).
 *
 * The clients talk to the registry through a recording pass-through (recordingProxy), so the
 * tests can check what a client did (a cross-repository mount, OCI-Subject on its manifest PUT)
 * and a failing command shows the requests it made. What these clients send, as recorded here:
 *
 *   - push (both): GET /v2/; per blob HEAD in the target repository (skopeo twice for layers),
 *     then, when the blob-info cache knows another repository of this registry holding it, HEAD
 *     there and POST ?mount=&from= (201 ends it); otherwise POST, ONE PATCH with the whole blob
 *     (Content-Length, Content-Type application/octet-stream, no Content-Range: 20 MiB in a
 *     single request) and an empty PUT ?digest=. The config blob is never mounted, always
 *     uploaded again. Manifests: PUT by digest for the images of an index, then by tag.
 *   - pull (both): GET /v2/<name>/manifests/<ref> with Accept: OCI manifest, Docker v2, Docker v1
 *     (prettyjws and json), Docker manifest list, OCI index; then GET of each blob (no Range).
 *   - skopeo list-tags: GET /v2/<name>/tags/list without n (one page); skopeo inspect (not raw)
 *     reads the manifest, the config blob and tags/list for RepoTags.
 *   - podman pushes what it stores: the layers uncompressed in vfs are compressed again (new
 *     layer digests, a new manifest digest) unless its blob-info cache maps them to a compressed
 *     blob the registry already holds; the config (the image ID) is unchanged.
 *
 * podman needs no privileges beyond root here: an isolated store (--root/--runroot, vfs) and
 * configuration, see test/helpers/clients.ts.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MiB, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { ClientSandbox, type CopyOptions, type RecordingProxy, ensureClients, formatRequest, formatRun, recordingProxy } from '../helpers/clients.js';
import {
  type ArtifactInfo,
  type BlobFile,
  type ImageInfo,
  type IndexInfo,
  MediaType,
  OciLayout,
  type ReadLayout,
  readLayout,
  tempDir,
} from '../helpers/oci-layout.js';
import { DRIVERS, blobObjects, delta, useRegistry } from '../helpers/registry.js';
import { Footprint } from '../helpers/footprint.js';

ensureClients(['skopeo', 'podman']);

const SBOM = 'application/vnd.example.sbom.v1+json';
/** The second artifact has no artifactType: its type is its config's media type. */
const SIGNATURE = 'application/vnd.example.signature.v1+json';
const PULL_ACCEPT = [MediaType.manifest, MediaType.index, 'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');

for (const driver of DRIVERS) {
  describe(`real clients: skopeo and podman (${driver})`, () => {
    const r = useRegistry(driver);
    let proxy: RecordingProxy;
    let sb: ClientSandbox;
    let layout: OciLayout;
    let tiny: ImageInfo;
    let small: ImageInfo;
    let large: ImageInfo;
    let forPodman: ImageInfo;
    let multi: IndexInfo;
    let sbom: ArtifactInfo;
    let signature: ArtifactInfo;
    const temporary: string[] = [];
    /** The system before any client ran (test/helpers/footprint.ts). */
    let footprint: Footprint;

    /** A docker:// reference to `name:tag` (or `name@digest`) on the registry, through the proxy. */
    const remote = (ref: string) => `docker://${proxy.host}/${ref}`;
    const local = (tag: string) => `oci:${layout.dir}:${tag}`;
    /** A podman sandbox of its own: fresh store, fresh blob-info cache. */
    const podmanSandbox = () => ClientSandbox.create({ timeoutMs: 60_000, requestLog: proxy });

    /** skopeo copy from the registry into a new layout; returns it, read back. */
    async function pull(src: string, tag: string, opts: CopyOptions = {}): Promise<ReadLayout> {
      const dir = await tempDir('skiff-pulled');
      temporary.push(dir);
      await sb.copy(src, `oci:${join(dir, 'layout')}:${tag}`, opts);
      return readLayout(join(dir, 'layout'));
    }

    /** Every blob byte-for-byte as generated, and nothing else in the pulled layout. */
    async function assertBlobs(pulled: ReadLayout, blobs: BlobFile[]) {
      assert.deepEqual(await pulled.digests(), [...new Set(blobs.map((b) => b.digest))].sort(), 'the pulled layout holds exactly the blobs pushed');
      for (const b of blobs) {
        const got = await pulled.blob(b.digest);
        assert.equal(got.length, b.size, `${b.mediaType} ${b.digest}: size`);
        assert.ok(got.equals(await readFile(b.path)), `${b.mediaType} ${b.digest}: bytes differ after the round trip`);
      }
    }

    async function assertPulledImage(pulled: ReadLayout, tag: string, image: ImageInfo) {
      const d = pulled.ref(tag);
      assert.equal(d.digest, image.manifest.digest, `${tag}: the manifest digest pulled is the one pushed`);
      assert.equal(d.mediaType, MediaType.manifest);
      assert.equal(d.size, image.manifest.size);
      await assertBlobs(pulled, image.blobs);
    }

    async function digestFile(name: string): Promise<{ path: string; read(): Promise<string> }> {
      const path = join(sb.dir, `${name}-${Date.now()}.digest`);
      return { path, read: async () => (await readFile(path, 'utf8')).trim() };
    }

    before(async () => {
      footprint = await Footprint.take();
      proxy = await recordingProxy(r.url);
      sb = await ClientSandbox.create({ timeoutMs: 60_000, requestLog: proxy });
      layout = await OciLayout.create();
      tiny = await layout.image({ seed: 101, layerSizes: [2 * 1024] });
      small = await layout.image({ seed: 102, layerSizes: [16 * 1024, 256 * 1024, 1 * MiB] });
      large = await layout.image({ seed: 103, layerSizes: [20 * MiB] });
      multi = await layout.multiArch({ seed: 104, layerSizes: [64 * 1024] });
      sbom = await layout.artifact({ seed: 106, subject: small.descriptor, artifactType: SBOM });
      signature = await layout.artifact({ seed: 107, subject: small.descriptor, configMediaType: SIGNATURE });
      forPodman = await layout.image({ seed: 108, layerSizes: [64 * 1024, 2 * MiB] });
      const tags = { tiny, small, large, multi, sbom, signature, podman: forPodman };
      for (const [tag, x] of Object.entries(tags)) await layout.tag(tag, x.descriptor);
    });

    after(async () => {
      await proxy?.close();
      await sb?.dispose();
      await layout?.remove();
      for (const dir of temporary) await rm(dir, { recursive: true, force: true });
    });

    it('skopeo copy pushes images of several sizes (up to a 20 MiB layer) and pulls back the same digest and bytes', async () => {
      for (const [tag, image] of [['tiny', tiny], ['small', small], ['large', large]] as const) {
        const s3Before = { ...r.s3Calls };
        const pushed = await digestFile(tag);
        await sb.copy(local(tag), remote(`clients/app:${tag}`), { digestFile: pushed.path });
        assert.equal(await pushed.read(), image.manifest.digest, `${tag}: skopeo pushed the manifest unchanged`);

        const head = await call(`${r.url}/v2/clients/app/manifests/${tag}`, { method: 'HEAD', headers: { Accept: PULL_ACCEPT } });
        assert.equal(head.status, 200, `${tag}: HEAD manifest`);
        assert.equal(head.header('docker-content-digest'), image.manifest.digest);
        assert.equal(head.header('content-type'), MediaType.manifest);
        assert.equal(head.header('content-length'), String(image.manifest.size));
        if (tag === 'large' && driver === 's3') {
          const calls = delta(s3Before, r.s3Calls);
          assert.ok((calls.UploadPartCommand ?? 0) >= 2, `the 20 MiB layer went through S3 multipart parts: ${JSON.stringify(calls)}`);
        }

        const pulled = await pull(remote(`clients/app:${tag}`), tag);
        await assertPulledImage(pulled, tag, image);
      }
    });

    it('skopeo pushes the same image to a second repository by mounting its layer, and it pulls back intact', async () => {
      // The layer's location comes from this sandbox's blob-info cache: push it to clients/app
      // first (a no-op beyond HEADs when the test above ran).
      await sb.copy(local('large'), remote('clients/app:large'));
      const objectsBefore = await blobObjects(r);
      const mark = proxy.requests.length;
      await sb.copy(local('large'), remote('clients/mirror:large'));
      const sent = proxy.requests.slice(mark);
      const log = proxy.log(mark);
      const layer = large.layers[0]!;

      const mount = sent.find((q) => q.method === 'POST' && new URLSearchParams(q.url.split('?')[1] ?? '').get('mount') === layer.digest);
      assert.ok(mount, `skopeo tried no cross-repository mount of the layer:\n${log}`);
      assert.ok(mount.url.startsWith('/v2/clients/mirror/blobs/uploads/?'), mount.url);
      assert.equal(new URLSearchParams(mount.url.split('?')[1]).get('from'), 'clients/app');
      assert.equal(mount.status, 201, `the mount was not accepted:\n${log}`);
      assert.ok(String(mount.responseHeaders?.location).endsWith(`/v2/clients/mirror/blobs/${layer.digest}`), `mount Location: ${mount.responseHeaders?.location}`);
      assert.deepEqual(sent.filter((q) => q.bytesIn >= layer.size).map(formatRequest), [], 'the layer bytes were not sent again');
      assert.deepEqual((await blobObjects(r)).filter((k) => !objectsBefore.includes(k)), [], 'no blob bytes stored again');

      const head = await call(`${r.url}/v2/clients/mirror/blobs/${layer.digest}`, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.header('content-length'), String(layer.size));
      await assertPulledImage(await pull(remote('clients/mirror:large'), 'large'), 'large', large);
    });

    it('skopeo list-tags lists every tag pushed; skopeo inspect shows the image, raw and summarised', async () => {
      const tags = ['v1', 'v1.1', 'latest', 'Stable', 'build_2'];
      for (const tag of tags) await sb.copy(local('tiny'), remote(`clients/tags:${tag}`));
      const listed = await sb.listTags(remote('clients/tags'));
      assert.equal(listed.Repository, `${proxy.host}/clients/tags`);
      assert.deepEqual([...listed.Tags].sort(), [...tags].sort());

      await sb.copy(local('small'), remote('clients/app:small'));
      const raw = await sb.inspect(remote('clients/app:small'), { raw: true });
      assert.equal(raw, (await readFile(small.manifest.path)).toString('utf8'), 'inspect --raw returns the manifest bytes as pushed');
      const rawConfig = await sb.inspect(remote('clients/app:small'), { raw: true, config: true });
      assert.equal(rawConfig, (await readFile(small.config.path)).toString('utf8'), 'inspect --raw --config returns the config bytes');

      const info = JSON.parse(await sb.inspect(remote('clients/tags:v1')));
      assert.equal(info.Name, `${proxy.host}/clients/tags`);
      assert.equal(info.Digest, tiny.manifest.digest);
      assert.equal(info.Architecture, 'amd64');
      assert.equal(info.Os, 'linux');
      assert.equal(info.Created, '2026-01-01T00:00:00Z');
      assert.deepEqual(info.Layers, tiny.layers.map((l) => l.digest));
      assert.deepEqual(info.Labels, { 'org.example.skiff.seed': '101' });
      assert.deepEqual([...info.RepoTags].sort(), [...tags].sort());
    });

    it('skopeo copy --all pushes a multi-architecture index and pulls it back with both images', async () => {
      const pushed = await digestFile('multi');
      await sb.copy(local('multi'), remote('clients/multi:v1'), { all: true, digestFile: pushed.path });
      assert.equal(await pushed.read(), multi.index.digest);

      const index = await call(`${r.url}/v2/clients/multi/manifests/v1`, { headers: { Accept: PULL_ACCEPT } });
      assert.equal(index.status, 200);
      assert.equal(index.header('content-type'), MediaType.index);
      assert.equal(index.header('docker-content-digest'), multi.index.digest);
      assert.ok(index.body.equals(await readFile(multi.index.path)), 'the index bytes as pushed');
      for (const image of multi.images) {
        const child = await call(`${r.url}/v2/clients/multi/manifests/${image.manifest.digest}`, { headers: { Accept: MediaType.manifest } });
        assert.equal(child.status, 200, `${image.platform.architecture} manifest by digest`);
        assert.ok(child.body.equals(await readFile(image.manifest.path)));
      }

      const pulled = await pull(remote('clients/multi:v1'), 'v1', { all: true });
      const d = pulled.ref('v1');
      assert.equal(d.digest, multi.index.digest, 'the index digest pulled is the one pushed');
      assert.equal(d.mediaType, MediaType.index);
      const manifests = (await pulled.json(d.digest)).manifests as { digest: string; platform: unknown }[];
      assert.deepEqual(manifests.map((m) => [m.digest, m.platform]), multi.images.map((i) => [i.manifest.digest, i.platform]));
      await assertBlobs(pulled, multi.blobs);

      // Without --all skopeo picks the image for this machine's platform out of the index.
      const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch as string];
      const mine = multi.images.find((i) => i.platform.architecture === arch);
      if (mine) await assertPulledImage(await pull(remote('clients/multi:v1'), 'mine'), 'mine', mine);
    });

    it('skopeo pushes artifacts with a subject; the referrers API lists them, filtered by artifactType', async () => {
      await sb.copy(local('small'), remote('clients/art:small'));
      const mark = proxy.requests.length;
      for (const [tag, artifact] of [['sbom', sbom], ['signature', signature]] as const) {
        const pushed = await digestFile(tag);
        await sb.copy(local(tag), remote(`clients/art:${tag}`), { digestFile: pushed.path });
        assert.equal(await pushed.read(), artifact.manifest.digest, `${tag}: pushed unchanged (subject kept)`);
      }
      const puts = proxy.requests.slice(mark).filter((q) => q.method === 'PUT' && q.url.startsWith('/v2/clients/art/manifests/'));
      assert.equal(puts.length, 2, proxy.log(mark));
      for (const put of puts) {
        assert.equal(put.status, 201);
        assert.equal(put.responseHeaders?.['oci-subject'], small.manifest.digest, `OCI-Subject on ${put.url}`);
      }

      const subject = small.manifest.digest;
      const byDigest = (a: { digest: string }, b: { digest: string }) => a.digest.localeCompare(b.digest);
      const res = await call(`${r.url}/v2/clients/art/referrers/${subject}`);
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(res.header('content-type'), MediaType.index);
      assert.equal(res.header('oci-filters-applied'), undefined);
      const listing = res.json();
      assert.equal(listing.schemaVersion, 2);
      assert.equal(listing.mediaType, MediaType.index);
      assert.deepEqual(
        [...listing.manifests].sort(byDigest),
        [sbom.descriptor, signature.descriptor].sort(byDigest),
        'each referrer with its artifactType (the config media type when the manifest has none) and annotations',
      );

      for (const artifact of [sbom, signature]) {
        const filtered = await call(`${r.url}/v2/clients/art/referrers/${subject}?artifactType=${encodeURIComponent(artifact.artifactType)}`);
        assert.equal(filtered.status, 200);
        assert.equal(filtered.header('oci-filters-applied'), 'artifactType');
        assert.deepEqual(filtered.json().manifests, [artifact.descriptor]);
      }
      const none = await call(`${r.url}/v2/clients/art/referrers/${tiny.manifest.digest}`);
      assert.equal(none.status, 200, 'a digest without referrers is an empty index, never 404');
      assert.deepEqual(none.json().manifests, []);

      const pulled = await pull(remote('clients/art:sbom'), 'sbom');
      assert.equal(pulled.ref('sbom').digest, sbom.manifest.digest);
      await assertBlobs(pulled, sbom.blobs);
    });

    it('podman pushes an image from its store and pulls it back with the same digest', async () => {
      const pm = await podmanSandbox();
      try {
        const id = await pm.podmanPull(local('podman'));
        assert.equal(`sha256:${id}`, forPodman.config.digest, 'podman stored the layout image (its ID is the config digest)');
        const target = `${proxy.host}/clients/podman:v1`;
        await pm.podman(['tag', id, target]);
        const pushed = await pm.podmanPush(target, `docker://${target}`);

        const head = await call(`${r.url}/v2/clients/podman/manifests/v1`, { method: 'HEAD', headers: { Accept: PULL_ACCEPT } });
        assert.equal(head.status, 200);
        assert.equal(head.header('docker-content-digest'), pushed, 'the registry names the manifest as podman does');
        const got = await call(`${r.url}/v2/clients/podman/manifests/${pushed}`, { headers: { Accept: PULL_ACCEPT } });
        assert.equal(got.status, 200);
        assert.equal(sha256(got.body), pushed);
        const manifest = got.json();
        assert.equal(manifest.config.digest, forPodman.config.digest, 'the same config');
        assert.equal(manifest.layers.length, forPodman.layers.length);

        await pm.podman(['rmi', '--all', '--force']);
        assert.equal(`sha256:${await pm.podmanPull(target)}`, forPodman.config.digest, 'the same image came back');
        const info = await pm.podmanInspect(target);
        assert.equal(info.Digest, pushed);
        assert.deepEqual(info.RootFS.Layers, forPodman.layers.map((l) => l.diffId), 'the layers unpack to the same diff IDs');
        assert.equal(`sha256:${await pm.podmanPull(`${proxy.host}/clients/podman@${pushed}`)}`, forPodman.config.digest, 'pull by digest');
      } finally {
        await pm.dispose();
      }
    });

    it('podman pulls an image skopeo pushed', async () => {
      await sb.copy(local('large'), remote('clients/app:large'));
      const pm = await podmanSandbox();
      try {
        const target = `${proxy.host}/clients/app:large`;
        assert.equal(`sha256:${await pm.podmanPull(target)}`, large.config.digest);
        const info = await pm.podmanInspect(target);
        assert.equal(info.Digest, large.manifest.digest);
        assert.ok(info.RepoDigests.includes(`${proxy.host}/clients/app@${large.manifest.digest}`), JSON.stringify(info.RepoDigests));
        assert.deepEqual(info.RootFS.Layers, large.layers.map((l) => l.diffId));
      } finally {
        await pm.dispose();
      }
    });

    it('a tag that does not exist is "manifest unknown" to skopeo and to podman', async () => {
      await sb.copy(local('tiny'), remote('clients/app:tiny'));
      const missing = remote('clients/app:no-such-tag');
      const inspect = await sb.skopeoRaw(['inspect', '--tls-verify=false', missing]);
      assert.notEqual(inspect.code, 0, formatRun(inspect));
      assert.match(inspect.stderr, /manifest unknown/i, formatRun(inspect));
      const dir = await tempDir('skiff-pulled');
      temporary.push(dir);
      const copy = await sb.skopeoRaw(sb.copyArgs(missing, `oci:${dir}:x`));
      assert.notEqual(copy.code, 0, formatRun(copy));
      assert.match(copy.stderr, /manifest unknown/i, formatRun(copy));

      const pm = await podmanSandbox();
      try {
        const mark = proxy.requests.length;
        const pullMissing = await pm.podmanRaw(['pull', '--tls-verify=false', `${proxy.host}/clients/app:no-such-tag`]);
        assert.notEqual(pullMissing.code, 0, formatRun(pullMissing));
        assert.match(pullMissing.stderr, /manifest unknown/i, formatRun(pullMissing));
        const asked = proxy.requests.slice(mark).filter((q) => q.url === '/v2/clients/app/manifests/no-such-tag');
        assert.ok(asked.length > 0 && asked.every((q) => q.status === 404), proxy.log(mark));
      } finally {
        await pm.dispose();
      }
    });

    it('skopeo and podman left nothing in /var/lib or /run (their blob-info cache, auth file and state are the sandbox\'s)', async () => {
      await footprint.assertNothingAdded('skopeo and podman');
    });
  });
}
