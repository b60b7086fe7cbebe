/**
 * Real clients against the running registry, on both storage drivers and the real backends:
 * skopeo and podman (Debian packages, installed when missing) push and pull OCI images built on
 * the fly, a multi-architecture index and an artifact with a subject; then the same with
 * authentication required, including a refusal for each client.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../lib/auth/passwords.js';
import { MiB } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { type Descriptor, type Layout, OCI_INDEX, addArtifact, addImage, addIndex, newLayout, writeIndex } from '../helpers/layouts.js';
import { DRIVERS, blobObjects, useRegistry } from '../helpers/registry.js';
import { ensureTools, ok, podman, run } from '../helpers/tools.js';

ensureTools({ skopeo: 'skopeo', podman: 'podman' });

const SBOM = 'application/vnd.example.sbom.v1+json';

/** Every blob of a pulled layout must be byte-identical to the original's. */
async function sameBlobs(original: Layout, pulledDir: string, digests: string[]) {
  for (const digest of digests) {
    const got = await readFile(join(pulledDir, 'blobs', 'sha256', digest.slice(7)));
    assert.ok(got.equals(original.blobs.get(digest)!), `blob ${digest} differs after the round trip`);
  }
}

async function pulledIndex(dir: string): Promise<{ digest: string; mediaType: string }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  return index.manifests[0];
}

function manifestBlobs(layout: Layout, manifest: Descriptor): string[] {
  const m = JSON.parse(layout.blobs.get(manifest.digest)!.toString());
  return [manifest.digest, m.config.digest, ...m.layers.map((l: Descriptor) => l.digest)];
}

for (const driver of DRIVERS) {
  describe(`skopeo and podman (${driver})`, () => {
    const r = useRegistry(driver);
    let layout: Layout;
    let small: Descriptor;
    let large: Descriptor;
    let multi: Descriptor;
    let sbom: Descriptor;
    const dirs: string[] = [];
    const host = () => new URL(r.url).host;
    const skopeo = (...args: string[]) => ok('skopeo', args);
    const pulled = async (ref: string, all = false) => {
      const dir = (await newLayout()).dir;
      dirs.push(dir);
      await skopeo('copy', '--src-tls-verify=false', ...(all ? ['--all'] : []), `docker://${host()}/${ref}`, `oci:${dir}:pulled`);
      return dir;
    };

    before(async () => {
      layout = await newLayout();
      small = await addImage(layout, 1, [10_000, 50_000]);
      large = await addImage(layout, 2, [20 * MiB]);
      multi = await addIndex(layout, 3);
      sbom = await addArtifact(layout, small, SBOM);
      await writeIndex(layout, { small, large, multi, sbom });
    });
    after(async () => {
      for (const d of [layout.dir, ...dirs]) await rm(d, { recursive: true, force: true });
    });

    it('skopeo pushes images and pulls back the same manifest digest and bytes', async () => {
      for (const [tag, desc] of [['small', small], ['large', large]] as const) {
        await skopeo('copy', '--dest-tls-verify=false', `oci:${layout.dir}:${tag}`, `docker://${host()}/clients/app:${tag}`);
        const dir = await pulled(`clients/app:${tag}`);
        assert.equal((await pulledIndex(dir)).digest, desc.digest, `${tag}: the digest pulled is the digest pushed`);
        await sameBlobs(layout, dir, manifestBlobs(layout, desc));
      }
    });

    it('skopeo pushes the same image to a second repository by mounting its layers', async () => {
      const before = await blobObjects(r);
      await skopeo('copy', '--dest-tls-verify=false', `oci:${layout.dir}:large`, `docker://${host()}/clients/second:v1`);
      assert.deepEqual((await blobObjects(r)).filter((k) => !before.includes(k)), [], 'no layer bytes stored again');
      const dir = await pulled('clients/second:v1');
      assert.equal((await pulledIndex(dir)).digest, large.digest);
      await sameBlobs(layout, dir, manifestBlobs(layout, large));
    });

    it('skopeo lists tags and inspects images', async () => {
      await skopeo('copy', '--dest-tls-verify=false', `oci:${layout.dir}:small`, `docker://${host()}/clients/app:v2`);
      const tags = JSON.parse(await skopeo('list-tags', '--tls-verify=false', `docker://${host()}/clients/app`));
      assert.deepEqual(tags.Tags.sort(), ['large', 'small', 'v2']);
      const raw = await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${host()}/clients/app:small`);
      assert.equal(raw, layout.blobs.get(small.digest)!.toString());
      const info = JSON.parse(await skopeo('inspect', '--tls-verify=false', `docker://${host()}/clients/app:small`));
      assert.equal(info.Digest, small.digest);
      assert.equal(info.Architecture, 'amd64');
      assert.equal(info.Layers.length, 2);
    });

    it('skopeo pushes and pulls a multi-architecture index with all its images', async () => {
      await skopeo('copy', '--all', '--dest-tls-verify=false', `oci:${layout.dir}:multi`, `docker://${host()}/clients/multi:v1`);
      const got = await call(`${r.url}/v2/clients/multi/manifests/v1`, { headers: { Accept: OCI_INDEX } });
      assert.equal(got.header('docker-content-digest'), multi.digest);
      assert.ok(got.body.equals(layout.blobs.get(multi.digest)!));
      const dir = await pulled('clients/multi:v1', true);
      assert.equal((await pulledIndex(dir)).digest, multi.digest);
      const index = JSON.parse(layout.blobs.get(multi.digest)!.toString());
      for (const child of index.manifests) await sameBlobs(layout, dir, manifestBlobs(layout, child));
    });

    it('skopeo pushes an artifact with a subject, which the referrers API then lists', async () => {
      await skopeo('copy', '--dest-tls-verify=false', `oci:${layout.dir}:small`, `docker://${host()}/clients/app:small`);
      await skopeo('copy', '--dest-tls-verify=false', `oci:${layout.dir}:sbom`, `docker://${host()}/clients/app:sbom`);
      const res = await call(`${r.url}/v2/clients/app/referrers/${small.digest}`);
      assert.equal(res.status, 200);
      const listed = res.json().manifests;
      assert.deepEqual(listed.map((d: Descriptor) => [d.digest, d.artifactType]), [[sbom.digest, SBOM]]);
      const filtered = await call(`${r.url}/v2/clients/app/referrers/${small.digest}?artifactType=${encodeURIComponent(SBOM)}`);
      assert.equal(filtered.header('oci-filters-applied'), 'artifactType');
      assert.equal(filtered.json().manifests.length, 1);
    });

    it('podman pushes an image and pulls it back, and pulls what skopeo pushed', async () => {
      const p = await podman();
      try {
        await p(['pull', `oci:${layout.dir}:small`]);
        await p(['tag', `${await imageId(p, 'small')}`, `${host()}/clients/podman:v1`]);
        const digestFile = join(layout.dir, 'podman-digest');
        await p(['push', '--tls-verify=false', '--digestfile', digestFile, `${host()}/clients/podman:v1`]);
        const pushed = (await readFile(digestFile, 'utf8')).trim();
        const head = await call(`${r.url}/v2/clients/podman/manifests/v1`, { method: 'HEAD' });
        assert.equal(head.header('docker-content-digest'), pushed);
        await p(['rmi', '--all', '--force']);
        await p(['pull', '--tls-verify=false', `${host()}/clients/podman:v1`]);
        const config = JSON.parse(layout.blobs.get(small.digest)!.toString()).config.digest as string;
        assert.equal(`sha256:${await imageId(p, `${host()}/clients/podman:v1`)}`, config, 'the same image came back');
        await p(['pull', '--tls-verify=false', `${host()}/clients/app:large`]);
        const largeConfig = JSON.parse(layout.blobs.get(large.digest)!.toString()).config.digest as string;
        assert.equal(`sha256:${await imageId(p, `${host()}/clients/app:large`)}`, largeConfig);
      } finally {
        await p.dispose();
      }
    });

    it('both clients report a tag that does not exist as manifest unknown', async () => {
      const s = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${host()}/clients/app:nope`]);
      assert.notEqual(s.code, 0);
      assert.match(s.stderr, /manifest unknown/i);
      const p = await podman();
      try {
        const res = await p.raw(['pull', '--tls-verify=false', `${host()}/clients/app:nope`]);
        assert.notEqual(res.code, 0);
        assert.match(res.stderr, /manifest unknown/i);
      } finally {
        await p.dispose();
      }
    });
  });
}

describe('skopeo and podman with authentication (s3)', () => {
  const r = useRegistry('s3', { env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: `k1=${Buffer.alloc(32, 7).toString('base64url')}` } });
  let layout: Layout;
  let image: Descriptor;
  const host = () => new URL(r.url).host;

  before(async () => {
    const users = r.registry.meta.users;
    const now = Date.now();
    await users.putUser({ name: 'alice', passwordHash: await hashPassword('alice-password'), createdAt: now, updatedAt: now });
    await users.putUser({ name: 'bob', passwordHash: await hashPassword('bob-password'), createdAt: now, updatedAt: now });
    await users.putGrant('alice', { pattern: 'team/*', actions: ['pull', 'push'] });
    await users.putGrant('bob', { pattern: 'team/app', actions: ['pull'] });
    layout = await newLayout();
    image = await addImage(layout, 9, [100_000, 6 * MiB]);
    await writeIndex(layout, { v1: image });
  });
  after(() => rm(layout.dir, { recursive: true, force: true }));

  it('skopeo pushes and pulls with --creds, and is refused without the right ones', async () => {
    await ok('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'alice:alice-password', `oci:${layout.dir}:v1`, `docker://${host()}/team/app:v1`]);
    const info = JSON.parse(await ok('skopeo', ['inspect', '--tls-verify=false', '--creds', 'bob:bob-password', `docker://${host()}/team/app:v1`]));
    assert.equal(info.Digest, image.digest);
    const denied = await run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', 'bob:bob-password', `oci:${layout.dir}:v1`, `docker://${host()}/team/app:v2`]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /denied|unauthorized|authentication required/i);
    const anonymous = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${host()}/team/app:v1`]);
    assert.notEqual(anonymous.code, 0);
    assert.match(anonymous.stderr, /unauthorized|authentication required/i);
    const wrong = await run('skopeo', ['inspect', '--tls-verify=false', '--creds', 'alice:nope', `docker://${host()}/team/app:v1`]);
    assert.notEqual(wrong.code, 0);
    assert.equal((await call(`${r.url}/v2/team/app/tags/list`, { headers: { Authorization: `Basic ${Buffer.from('alice:alice-password').toString('base64')}` } })).json().tags.includes('v2'), false);
  });

  it('podman logs in, pushes and pulls, and is refused a push it has no grant for', async () => {
    const alice = await podman();
    const bob = await podman();
    try {
      await alice(['login', '--tls-verify=false', '-u', 'alice', '--password-stdin', host()], 'alice-password\n');
      await alice(['pull', `oci:${layout.dir}:v1`]);
      await alice(['tag', await imageId(alice, 'v1'), `${host()}/team/podman:v1`]);
      await alice(['push', '--tls-verify=false', `${host()}/team/podman:v1`]);
      await bob(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host()], 'bob-password\n');
      await bob(['pull', '--tls-verify=false', `${host()}/team/app:v1`]);
      await bob(['pull', `oci:${layout.dir}:v1`]);
      await bob(['tag', await imageId(bob, 'v1'), `${host()}/team/app:bob`]);
      const denied = await bob.raw(['push', '--tls-verify=false', `${host()}/team/app:bob`]);
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /denied|unauthorized/i);
      const badLogin = await bob.raw(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host()], 'wrong-password\n');
      assert.notEqual(badLogin.code, 0);
    } finally {
      await alice.dispose();
      await bob.dispose();
    }
  });
});

/** The id of the one image podman holds whose name contains `name` (for an oci: pull, its tag). */
async function imageId(p: Awaited<ReturnType<typeof podman>>, name: string): Promise<string> {
  const lines = (await p(['images', '--no-trunc', '--format', '{{.ID}} {{.Repository}}:{{.Tag}}'])).trim().split('\n');
  const line = lines.find((l) => l.includes(name)) ?? (lines.length === 1 ? lines[0] : undefined);
  assert.ok(line, `podman holds no image named ${name}: ${lines.join(' | ')}`);
  return line.split(' ')[0]!.replace(/^sha256:/, '');
}


