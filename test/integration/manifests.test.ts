/**
 * Manifests, tags, referrers and the catalog over HTTP, for each storage driver, on the real
 * backends: what the spec says must happen, and every bad input getting its error code with
 * the stored data untouched.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bytes, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { errorCode, expectError, pushInPut } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, delta, useRegistry } from '../helpers/registry.js';
import { CONFIG_TYPE, LAYER_TYPE, manifestClient } from '../helpers/manifests.js';
import { MediaTypes } from '../../lib/oci/manifest.js';

for (const driver of DRIVERS) {
  describe(`manifests, tags, referrers, catalog (${driver})`, () => {
    const r = useRegistry(driver);
    const { blob, image, put, get } = manifestClient(r);

    it('stores a manifest by tag and serves the exact bytes by tag and by digest', async () => {
      const m = await image('img/one');
      // Formatting that a re-serializing registry would change: the digest must still match.
      const text = m.text.replace('{', '{\n   ').replace(/,/g, ',  ');
      const digest = sha256(Buffer.from(text));
      const res = await put('img/one', 'v1', text);
      assert.equal(res.status, 201, res.body.toString());
      assert.equal(res.header('location'), `/v2/img/one/manifests/${digest}`);
      assert.equal(res.header('docker-content-digest'), digest);
      assert.equal(res.header('oci-subject'), undefined);
      for (const ref of ['v1', digest]) {
        const got = await get('img/one', ref);
        assert.equal(got.status, 200);
        assert.equal(got.body.toString(), text);
        assert.equal(got.header('content-type'), MediaTypes.ociManifest);
        assert.equal(got.header('docker-content-digest'), digest);
        assert.equal(got.header('content-length'), String(Buffer.byteLength(text)));
        const head = await get('img/one', ref, {}, 'HEAD');
        assert.equal(head.status, 200);
        assert.equal(head.header('docker-content-digest'), digest);
        assert.equal(head.header('content-length'), String(Buffer.byteLength(text)));
      }
    });

    it('answers HEAD by tag with one read, and GET by tag with two and no storage request', async () => {
      const m = await image('img/cost');
      assert.equal((await put('img/cost', 'latest', m.text)).status, 201);
      let before = { ...r.dynamoCalls };
      const storage = { ...r.registry.storage.objects.stats.requests };
      assert.equal((await get('img/cost', 'latest', {}, 'HEAD')).status, 200);
      assert.deepEqual(delta(before, r.dynamoCalls), { GetItemCommand: 1 });
      before = { ...r.dynamoCalls };
      assert.equal((await get('img/cost', 'latest')).status, 200);
      assert.deepEqual(delta(before, r.dynamoCalls), { GetItemCommand: 2 });
      assert.deepEqual(delta(storage, r.registry.storage.objects.stats.requests), {});
    });

    it('pushes by digest, and refuses a body whose digest is not the reference', async () => {
      const m = await image('img/bydigest');
      assert.equal((await put('img/bydigest', m.digest, m.text)).status, 201);
      assert.equal((await get('img/bydigest', m.digest)).body.toString(), m.text);
      const other = JSON.stringify({ ...JSON.parse(m.text), annotations: { x: 'y' } });
      const wrong = await put('img/bydigest', m.digest, other);
      expectError(wrong, 400, 'DIGEST_INVALID');
      assert.equal((await get('img/bydigest', m.digest)).body.toString(), m.text, 'the stored manifest is untouched');
    });

    it('stores Docker schema 2 manifests and manifest lists, and OCI indexes over pushed manifests', async () => {
      const config = await blob('docker/img', 'application/vnd.docker.container.image.v1+json', 300);
      const layer = await blob('docker/img', 'application/vnd.docker.image.rootfs.diff.tar.gzip', 800);
      const docker = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config, layers: [layer] });
      assert.equal((await put('docker/img', 'amd64', docker, MediaTypes.dockerManifest)).status, 201);
      const child = { mediaType: MediaTypes.dockerManifest, digest: sha256(Buffer.from(docker)), size: Buffer.byteLength(docker), platform: { architecture: 'amd64', os: 'linux' } };
      const list = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.dockerList, manifests: [child] });
      assert.equal((await put('docker/img', 'latest', list, MediaTypes.dockerList)).status, 201);
      const got = await get('docker/img', 'latest');
      assert.equal(got.header('content-type'), MediaTypes.dockerList);
      assert.equal(got.body.toString(), list);

      const a = await image('oci/multi');
      const b = await image('oci/multi');
      await put('oci/multi', a.digest, a.text);
      await put('oci/multi', b.digest, b.text);
      const index = JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociIndex,
        manifests: [
          { mediaType: MediaTypes.ociManifest, digest: a.digest, size: Buffer.byteLength(a.text), platform: { architecture: 'amd64', os: 'linux' } },
          { mediaType: MediaTypes.ociManifest, digest: b.digest, size: Buffer.byteLength(b.text), platform: { architecture: 'arm64', os: 'linux' } },
        ],
      });
      assert.equal((await put('oci/multi', 'latest', index, MediaTypes.ociIndex)).status, 201);
      assert.equal((await get('oci/multi', 'latest')).header('content-type'), MediaTypes.ociIndex);
    });

    it('keeps large manifests (over the inline size) byte for byte, and refuses ones over 4 MiB with 413', async () => {
      const annotations: Record<string, string> = {};
      for (let i = 0; i < 1500; i++) annotations[`org.example.key.${i}`] = 'v'.repeat(60);
      const m = await image('img/large', { annotations });
      assert.ok(Buffer.byteLength(m.text) > 64 * 1024);
      assert.equal((await put('img/large', 'big', m.text)).status, 201);
      const got = await get('img/large', 'big');
      assert.equal(got.body.toString(), m.text);

      const huge = Buffer.alloc(4 * 1024 * 1024 + 1, ' ');
      expectError(await put('img/large', 'huge', huge), 413, 'SIZE_INVALID');
      expectError(await get('img/large', 'huge'), 404, 'MANIFEST_UNKNOWN');
    });

    it('refuses invalid manifests with MANIFEST_INVALID and changes nothing', async () => {
      const m = await image('bad/manifest');
      assert.equal((await put('bad/manifest', 'keep', m.text)).status, 201);
      const base = JSON.parse(m.text);
      const cases: [string, string | undefined][] = [
        ['{not json', MediaTypes.ociManifest],
        ['[1,2,3]', MediaTypes.ociManifest],
        [JSON.stringify({ ...base, schemaVersion: 1 }), MediaTypes.ociManifest],
        [JSON.stringify(base), MediaTypes.ociIndex], // an image manifest sent as an index
        [JSON.stringify({ ...base, mediaType: MediaTypes.dockerManifest }), MediaTypes.ociManifest],
        [JSON.stringify({ ...base, mediaType: undefined }), MediaTypes.dockerManifest], // docker requires its mediaType
        [JSON.stringify({ ...base, config: { ...base.config, digest: 'sha256:nope' } }), MediaTypes.ociManifest],
        [JSON.stringify({ ...base, config: { ...base.config, size: -1 } }), MediaTypes.ociManifest],
        [JSON.stringify({ ...base, layers: 'all of them' }), MediaTypes.ociManifest],
        [JSON.stringify({ ...base, annotations: { a: 1 } }), MediaTypes.ociManifest],
        [JSON.stringify({ ...base, layers: [{ ...base.layers[0], size: base.layers[0].size + 1 }] }), MediaTypes.ociManifest],
        [JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }), 'application/vnd.docker.distribution.manifest.v1+prettyjws'],
        [JSON.stringify({ schemaVersion: 2 }), undefined],
      ];
      for (const [text, type] of cases) {
        const res = await put('bad/manifest', 'keep', text, type);
        expectError(res, 400, 'MANIFEST_INVALID');
      }
      assert.equal((await get('bad/manifest', 'keep')).body.toString(), m.text, 'the tag still points at the good manifest');
    });

    it('refuses manifests whose blobs or child manifests the repository lacks (MANIFEST_BLOB_UNKNOWN)', async () => {
      const m = await image('missing/blobs');
      const base = JSON.parse(m.text);
      const elsewhere = await blob('missing/other', LAYER_TYPE);
      for (const layers of [[...base.layers, { mediaType: LAYER_TYPE, digest: sha256(bytes(7, 7)), size: 7 }], [elsewhere]]) {
        expectError(await put('missing/blobs', 'x', JSON.stringify({ ...base, layers })), 400, 'MANIFEST_BLOB_UNKNOWN');
      }
      const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ mediaType: MediaTypes.ociManifest, digest: m.digest, size: Buffer.byteLength(m.text) }] });
      expectError(await put('missing/blobs', 'idx', index, MediaTypes.ociIndex), 400, 'MANIFEST_BLOB_UNKNOWN');
      expectError(await get('missing/blobs', 'x'), 404, 'MANIFEST_UNKNOWN');
      // Foreign (non-distributable) layers are not the registry's to hold.
      const foreign = { mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: sha256(bytes(9, 9)), size: 9, urls: ['https://example.com/l'] };
      assert.equal((await put('missing/blobs', 'foreign', JSON.stringify({ ...base, layers: [...base.layers, foreign] }))).status, 201);
    });

    it('refuses to store under invalid tags and malformed digests (400); reading them is 404 MANIFEST_UNKNOWN, never 500', async () => {
      const m = await image('bad/ref');
      for (const tag of ['-dash', '.dot', 'a'.repeat(129), 'with%20space', 'sha256:abc', 'md5:' + 'a'.repeat(32)]) {
        const res = await put('bad/ref', tag, m.text);
        assert.equal(res.status, 400, `${tag}: ${res.body}`);
        assert.ok(['MANIFEST_INVALID', 'DIGEST_INVALID'].includes(errorCode(res)!), tag);
        // Nothing can exist there: a read answers as for any absent manifest (OCI conformance).
        expectError(await get('bad/ref', tag), 404, 'MANIFEST_UNKNOWN', tag);
        const head = await get('bad/ref', tag, {}, 'HEAD');
        assert.equal(head.status, 404, tag);
      }
      expectError(await get('bad/ref', '.INVALID_MANIFEST_NAME'), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('bad/ref', '.INVALID_MANIFEST_NAME', {}, 'HEAD')).status, 404);
      expectError(await put('bad/ref', '.INVALID_MANIFEST_NAME', m.text), 400, 'MANIFEST_INVALID');
      expectError(await get('bad/ref', 'nosuchtag'), 404, 'MANIFEST_UNKNOWN');
      expectError(await get('bad/ref', sha256(bytes(3, 3))), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('bad/ref', 'nosuchtag', {}, 'HEAD')).status, 404);
    });

    it('lists tags in case-insensitive lexical order, paginated with n, last and Link', async () => {
      const m = await image('tags/repo');
      const tags = ['b', 'A', 'a10', 'a2', 'C', 'a', '_under', 'a-b', 'Z9', 'z'];
      for (const t of tags) assert.equal((await put('tags/repo', t, m.text)).status, 201);
      const all = await call(`${r.url}/v2/tags/repo/tags/list`);
      assert.equal(all.status, 200);
      // Case-insensitive, ties ("A", "a") in byte order.
      assert.deepEqual(all.json(), { name: 'tags/repo', tags: ['_under', 'A', 'a', 'a-b', 'a10', 'a2', 'b', 'C', 'z', 'Z9'] });
      assert.equal(all.header('link'), undefined);
      // Walk the pages of 3 by following Link.
      const seen: string[] = [];
      let next: string | undefined = `/v2/tags/repo/tags/list?n=3`;
      while (next) {
        const page = await call(`${r.url}${next}`);
        assert.equal(page.status, 200);
        const got: string[] = page.json().tags;
        assert.ok(got.length === 3 || !page.header('link'), 'a page is short only at the end');
        seen.push(...got);
        next = /^<([^>]+)>; rel="next"$/.exec(page.header('link') ?? '')?.[1];
      }
      assert.deepEqual(seen, all.json().tags);
      const after = await call(`${r.url}/v2/tags/repo/tags/list?last=b`);
      assert.deepEqual(after.json().tags, ['C', 'z', 'Z9']);
      const zero = await call(`${r.url}/v2/tags/repo/tags/list?n=0`);
      assert.deepEqual(zero.json(), { name: 'tags/repo', tags: [] });
      assert.equal(zero.header('link'), undefined);
      const exact = await call(`${r.url}/v2/tags/repo/tags/list?n=10`);
      assert.equal(exact.json().tags.length, 10);
      assert.equal(exact.header('link'), undefined, 'no Link when nothing follows');
      assert.deepEqual((await call(`${r.url}/v2/tags/repo/tags/list?n=5&last=zzz`)).json().tags, []);
      for (const bad of ['?n=-1', '?n=abc', '?n=1.5', '?last=-bad']) {
        assert.equal((await call(`${r.url}/v2/tags/repo/tags/list${bad}`)).status, 400, bad);
      }
      expectError(await call(`${r.url}/v2/no/such/repo/tags/list`), 404, 'NAME_UNKNOWN');
    });

    it('deletes tags and manifests (202), and says 404 for what is not there', async () => {
      const m = await image('del/manifest');
      await put('del/manifest', 'one', m.text);
      await put('del/manifest', 'two', m.text);
      assert.equal((await call(`${r.url}/v2/del/manifest/manifests/one`, { method: 'DELETE' })).status, 202);
      expectError(await get('del/manifest', 'one'), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('del/manifest', m.digest)).status, 200, 'deleting a tag keeps the manifest');
      assert.equal((await call(`${r.url}/v2/del/manifest/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
      expectError(await get('del/manifest', m.digest), 404, 'MANIFEST_UNKNOWN');
      expectError(await get('del/manifest', 'two'), 404, 'MANIFEST_UNKNOWN');
      assert.deepEqual((await call(`${r.url}/v2/del/manifest/tags/list`)).json().tags, []);
      expectError(await call(`${r.url}/v2/del/manifest/manifests/one`, { method: 'DELETE' }), 404, 'MANIFEST_UNKNOWN');
      expectError(await call(`${r.url}/v2/del/manifest/manifests/${m.digest}`, { method: 'DELETE' }), 404, 'MANIFEST_UNKNOWN');
      for (const layer of m.layers) assert.equal((await call(`${r.url}/v2/del/manifest/blobs/${layer.digest}`, { method: 'HEAD' })).status, 200, 'blobs stay');
    });

    it('lists referrers of a subject as an OCI index, with artifactType filtering', async () => {
      const subject = await image('ref/repo');
      const subjectDesc = { mediaType: MediaTypes.ociManifest, digest: subject.digest, size: Buffer.byteLength(subject.text) };
      // The subject need not exist yet when a referrer is pushed.
      const empty = await pushInPut(r.url, 'ref/repo', Buffer.from('{}'));
      const sbomLayer = await blob('ref/repo', 'application/spdx+json', 300);
      const sbom = JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        artifactType: 'application/vnd.example.sbom.v1',
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: empty.digest, size: 2 },
        layers: [sbomLayer],
        subject: subjectDesc,
        annotations: { 'org.opencontainers.image.created': '2026-11-25T00:00:00Z' },
      });
      const pushed = await put('ref/repo', sha256(Buffer.from(sbom)), sbom);
      assert.equal(pushed.status, 201, pushed.body.toString());
      assert.equal(pushed.header('oci-subject'), subject.digest);
      assert.equal((await put('ref/repo', 'subject', subject.text)).status, 201);
      const sig = await image('ref/repo', { subject: subjectDesc }); // no artifactType: the config's type counts
      assert.equal((await put('ref/repo', sig.digest, sig.text)).status, 201);
      const idx = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [], subject: subjectDesc });
      assert.equal((await put('ref/repo', sha256(Buffer.from(idx)), idx, MediaTypes.ociIndex)).status, 201);

      const res = await call(`${r.url}/v2/ref/repo/referrers/${subject.digest}`);
      assert.equal(res.status, 200);
      assert.equal(res.header('content-type'), MediaTypes.ociIndex);
      assert.equal(res.header('oci-filters-applied'), undefined);
      const body = res.json();
      assert.equal(body.schemaVersion, 2);
      assert.equal(body.mediaType, MediaTypes.ociIndex);
      const byDigest = new Map<string, any>(body.manifests.map((d: any) => [d.digest, d]));
      assert.equal(byDigest.size, 3);
      assert.deepEqual(byDigest.get(sha256(Buffer.from(sbom))), {
        mediaType: MediaTypes.ociManifest,
        digest: sha256(Buffer.from(sbom)),
        size: Buffer.byteLength(sbom),
        artifactType: 'application/vnd.example.sbom.v1',
        annotations: { 'org.opencontainers.image.created': '2026-11-25T00:00:00Z' },
      });
      assert.equal(byDigest.get(sig.digest).artifactType, CONFIG_TYPE);
      assert.equal(byDigest.get(sha256(Buffer.from(idx))).artifactType, undefined, 'an index without artifactType has none');

      const filtered = await call(`${r.url}/v2/ref/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent('application/vnd.example.sbom.v1')}`);
      assert.equal(filtered.header('oci-filters-applied'), 'artifactType');
      assert.deepEqual(filtered.json().manifests.map((d: any) => d.digest), [sha256(Buffer.from(sbom))]);
      const none = await call(`${r.url}/v2/ref/repo/referrers/${subject.digest}?artifactType=application/other`);
      assert.equal(none.status, 200);
      assert.deepEqual(none.json().manifests, []);

      const unknown = await call(`${r.url}/v2/ref/repo/referrers/${sha256(bytes(5, 5))}`);
      assert.equal(unknown.status, 200, 'never 404 for an unknown subject');
      assert.deepEqual(unknown.json().manifests, []);
      expectError(await call(`${r.url}/v2/ref/repo/referrers/sha256:bad`), 400, 'DIGEST_INVALID');

      assert.equal((await call(`${r.url}/v2/ref/repo/manifests/${sig.digest}`, { method: 'DELETE' })).status, 202);
      const after = (await call(`${r.url}/v2/ref/repo/referrers/${subject.digest}`)).json();
      assert.equal(after.manifests.length, 2, 'a deleted referrer is no longer listed');
    });

    it('negotiates content: an Accept that leaves out the stored type gets 404', async () => {
      const m = await image('accept/repo');
      await put('accept/repo', 'v', m.text);
      assert.equal((await get('accept/repo', 'v', { Accept: `${MediaTypes.ociIndex}, ${MediaTypes.ociManifest};q=0.9` })).status, 200);
      assert.equal((await get('accept/repo', 'v', { Accept: '*/*' })).status, 200);
      expectError(await get('accept/repo', 'v', { Accept: MediaTypes.dockerManifest }), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('accept/repo', 'v', { Accept: MediaTypes.dockerManifest }, 'HEAD')).status, 404);
    });

    it('keeps manifests to their repository', async () => {
      const m = await image('iso/a');
      await put('iso/a', 'v', m.text);
      expectError(await get('iso/b', 'v'), 404, 'MANIFEST_UNKNOWN');
      expectError(await get('iso/b', m.digest), 404, 'MANIFEST_UNKNOWN');
    });

    it('lists repositories in the catalog, paginated', async () => {
      const names = ['cat/a', 'cat/b', 'cat/c'];
      for (const name of names) {
        const m = await image(name);
        assert.equal((await put(name, 'v', m.text)).status, 201);
      }
      const all = await call(`${r.url}/v2/_catalog`);
      assert.equal(all.status, 200);
      const repos: string[] = all.json().repositories;
      assert.deepEqual(repos.filter((x) => x.startsWith('cat/')), names);
      assert.deepEqual([...repos].sort(), repos, 'in lexical order');
      const first = await call(`${r.url}/v2/_catalog?n=1&last=cat/a`);
      assert.deepEqual(first.json().repositories, ['cat/b']);
      assert.match(first.header('link') ?? '', /^<\/v2\/_catalog\?n=1&last=cat%2Fb>; rel="next"$/);
      assert.deepEqual((await call(`${r.url}/v2/_catalog?n=0`)).json().repositories, []);
      assert.ok(!repos.includes('missing/other'), 'a repository with blobs and no manifest is not listed');
    });
  });
}

describe('manifest deletion disabled by configuration', () => {
  const r: TestRegistry = useRegistry('fs', { env: { SKIFF_DELETE_ENABLED: 'false' } });

  it('answers 405 UNSUPPORTED for tags and manifests', async () => {
    const config = await pushInPut(r.url, 'nodel', Buffer.from('{}'));
    const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: CONFIG_TYPE, digest: config.digest, size: 2 }, layers: [] });
    const res = await call(`${r.url}/v2/nodel/manifests/v`, { method: 'PUT', body: text, headers: { 'Content-Type': MediaTypes.ociManifest } });
    assert.equal(res.status, 201);
    for (const ref of ['v', sha256(Buffer.from(text))]) {
      const del = await call(`${r.url}/v2/nodel/manifests/${ref}`, { method: 'DELETE' });
      expectError(del, 405, 'UNSUPPORTED');
      assert.equal(del.header('allow'), 'GET, HEAD, PUT');
    }
    assert.equal((await call(`${r.url}/v2/nodel/manifests/v`)).status, 200);
  });
});
