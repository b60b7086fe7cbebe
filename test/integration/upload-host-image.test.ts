/**
 * The upload host's container image (`npm run image`, scripts/image.sh), built with buildah from
 * scratch and run with podman on the host network against the test's S3 (Ceph RGW) and DynamoDB
 * Local: the registry API (in this process) starts an upload and hands out a Location with a
 * capability; the upload continues in the container, and the blob reads back through the API.
 *
 * Running containers in this sandbox needs two settings, found by experiment (podman 4.3.1,
 * crun 1.8, runc 1.1, cgroup v1 controllers plus a cgroup2 "unified" hierarchy with hugetlb,
 * no CAP_SYS_RESOURCE): crun refuses the hybrid cgroup layout ("cgroups in hybrid mode not
 * supported", also with --cgroups=disabled), runc accepts it; and podman asks the runtime for
 * RLIMIT_NOFILE / RLIMIT_NPROC above the hard limits the runtime inherits (conmon: 20000 /
 * 32768), which needs CAP_SYS_RESOURCE (EPERM), so the limits are given explicitly below them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CAPABILITY_PARAM } from '../../lib/auth/capability.js';
import { hashPassword } from '../../lib/auth/passwords.js';
import { MiB, bytes, chunked, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { expectError, withDigest } from '../helpers/oci.js';
import { ClientSandbox, ensureClients } from '../helpers/clients.js';
import { Footprint } from '../helpers/footprint.js';
import { backends } from '../helpers/backends.js';
import { nodeFlags } from '../helpers/process.js';
import { freePort, useRegistry } from '../helpers/registry.js';
import { root } from '../deploy/package.js';

const KEY = `k1=${randomBytes(32).toString('base64url')}`;
const basic = `Basic ${Buffer.from('pusher:pusher-password').toString('base64')}`;
const TAG = `test-${randomBytes(4).toString('hex')}`;
const IMAGE = `localhost/skiff-upload-host:${TAG}`;

describe('upload host image (npm run image, run with podman)', () => {
  const r = useRegistry('s3', { uploadHost: true, env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: KEY } });
  let sandbox: ClientSandbox;
  let archive: string;
  let container: string | undefined;
  let host: string;

  /** podman run on the host network, with what this sandbox needs (see the file comment). */
  const podmanRun = (args: string[]) =>
    sandbox.podman(['run', '--runtime', 'runc', '--network', 'host', '--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096', ...args], { timeoutMs: 120_000 });

  /** The system before any client ran (test/helpers/footprint.ts). */
  let footprint: Footprint;

  before(async () => {
    ensureClients(['podman', 'skopeo', 'buildah', 'runc']);
    footprint = await Footprint.take();
    sandbox = await ClientSandbox.create({ timeoutMs: 600_000 });
    archive = join(sandbox.dir, 'upload-host.tar');
    // The documented command; buildah stores the image in the sandbox's containers-storage
    // (CONTAINERS_STORAGE_CONF), where the sandbox's podman finds it. Run inside the sandbox's
    // mount namespace (runRaw), so buildah's blob-info cache lands under the sandbox, not in
    // /var/lib/containers on the host.
    const built = await sandbox.runRaw('npm', ['--prefix', root, 'run', '-s', 'image', '--', '--tag', TAG, '--output', archive], { timeoutMs: 600_000 });
    assert.equal(built.code, 0, built.stderr);
    assert.equal(built.stdout.trim(), IMAGE);
  });
  after(async () => {
    if (container) await sandbox.podmanRaw(['rm', '--force', '--time', '5', container]);
    await sandbox?.podmanRaw(['rmi', '--force', IMAGE]);
    await sandbox?.dispose();
  });

  it('is a Docker-format image: non-root numeric user, port 8080, the bundle started as the upload host', async () => {
    const manifest = JSON.parse(await sandbox.inspect(`docker-archive:${archive}`, { raw: true }));
    assert.equal(manifest.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    const config = JSON.parse(await sandbox.inspect(`docker-archive:${archive}`, { config: true }));
    assert.equal(config.config.User, '65532:65532');
    assert.deepEqual(Object.keys(config.config.ExposedPorts), ['8080/tcp']);
    // Started as npm start starts the registry: with its Node flags (package.json's config.nodeFlags).
    assert.deepEqual(config.config.Cmd, ['/usr/local/bin/node', ...nodeFlags, '/app/main.js']);
    for (const env of ['SKIFF_SERVE=uploads', 'SKIFF_HOST=0.0.0.0', 'SKIFF_PORT=8080']) assert.ok(config.config.Env.includes(env), env);
    // The malloc settings npm start runs the registry with (README, Configuration: GLIBC_TUNABLES).
    const tunables = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).config.glibcTunables;
    assert.ok(config.config.Env.includes(`GLIBC_TUNABLES=${tunables}`), `GLIBC_TUNABLES in ${config.config.Env.join(' ')}`);
    assert.equal(config.architecture, process.arch === 'arm64' ? 'arm64' : 'amd64');
    // One layer: no base image.
    assert.equal(manifest.layers.length, 1);
  });

  it('holds Node 22, an empty writable /tmp and nothing else a shell would need; runs as 65532', async () => {
    const probe = `const fs = require('fs');
      fs.writeFileSync('/tmp/probe', 'x');
      console.log(JSON.stringify({ version: process.version, uid: process.getuid(), gid: process.getgid(), tmp: (fs.statSync('/tmp').mode & 0o7777).toString(8),
        top: fs.readdirSync('/').sort(), bin: fs.readdirSync('/usr/local/bin'), app: fs.readdirSync('/app').sort() }));`;
    const out = JSON.parse((await podmanRun(['--rm', IMAGE, '/usr/local/bin/node', '-e', probe])).stdout);
    assert.match(out.version, /^v22\./);
    assert.deepEqual([out.uid, out.gid], [65532, 65532]);
    assert.equal(out.tmp, '1777');
    assert.deepEqual(out.bin, ['node']);
    assert.deepEqual(out.app, ['main.js', 'package.json', 'sha256-thread.js']);
    for (const dir of out.top) assert.ok(['app', 'etc', 'lib', 'lib64', 'tmp', 'usr', 'dev', 'proc', 'sys', 'run'].includes(dir), `unexpected /${dir}`);
    const empty = JSON.parse((await podmanRun(['--rm', IMAGE, '/usr/local/bin/node', '-e', "console.log(JSON.stringify(require('fs').readdirSync('/tmp')))"])).stdout);
    assert.deepEqual(empty, [], '/tmp is empty in the image');
  });

  it('serves an upload started on the registry API: a streamed PATCH and the finishing PUT, on the real S3 and DynamoDB', async () => {
    const b = backends();
    const port = await freePort('127.0.0.1');
    host = `http://127.0.0.1:${port}`;
    const env = {
      SKIFF_PORT: String(port),
      SKIFF_STORAGE: 's3',
      S3_ENDPOINT: b.s3Endpoint,
      S3_BUCKET: r.config.s3.bucket,
      S3_ACCESS_KEY_ID: b.s3Credentials.accessKeyId,
      S3_SECRET_ACCESS_KEY: b.s3Credentials.secretAccessKey,
      DYNAMODB_ENDPOINT: b.dynamoEndpoint,
      DYNAMODB_TABLE: r.config.dynamo.table,
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
      SKIFF_TOKEN_KEYS: KEY,
      SKIFF_AUTH: 'required',
    };
    // The image's own command (CMD, SKIFF_SERVE=uploads); only where its backends are differs.
    container = (await podmanRun(['--detach', ...Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]), IMAGE])).stdout.trim();
    for (let i = 0; ; i++) {
      const health = await call(`${host}/healthz`).catch(() => undefined);
      if (health?.status === 200) break;
      const state = (await sandbox.podmanRaw(['inspect', '--format', '{{.State.Status}}', container])).stdout.trim();
      assert.ok(state === 'running' && i < 600, `the container answers /healthz (${state}):\n${(await sandbox.podmanRaw(['logs', container])).stderr}`);
      await new Promise((res) => setTimeout(res, 100));
    }

    const now = Date.now();
    await r.registry.meta.users.putUser({ name: 'pusher', passwordHash: await hashPassword('pusher-password'), createdAt: now, updatedAt: now });
    await r.registry.meta.users.putGrant('pusher', { pattern: 'image/*', actions: ['pull', 'push'] });
    const start = await call(`${r.url}/v2/image/test/blobs/uploads/`, { method: 'POST', headers: { Authorization: basic } });
    assert.equal(start.status, 202, start.body.toString());
    // The Location names the upload host the registry was configured with; the container is
    // another upload host on the same storage and keys, so the same path and capability go there.
    const handedOut = new URL(start.header('location')!);
    assert.ok(handedOut.searchParams.get(CAPABILITY_PARAM));
    const location = `${host}${handedOut.pathname}${handedOut.search}`;

    // 24 MiB in one PATCH with no Content-Length (buildah, docker): streamed, hashed on the
    // worker thread the bundle starts from /app/sha256-thread.js.
    const data = bytes(24 * MiB + 3, 7);
    const patched = await call(location, { method: 'PATCH', body: chunked(data.subarray(0, 20 * MiB), 256 * 1024), headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(patched.status, 202, patched.body.toString());
    assert.equal(patched.header('range'), `0-${20 * MiB - 1}`);
    const next = patched.header('location')!;
    assert.ok(next.startsWith('/v2/image/test/blobs/uploads/') && new URLSearchParams(next.split('?')[1]).get(CAPABILITY_PARAM), next);
    const put = await call(withDigest(`${host}${next}`, sha256(data)), { method: 'PUT', body: data.subarray(20 * MiB), headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(put.status, 201, put.body.toString());
    assert.equal(put.header('docker-content-digest'), sha256(data));

    const got = await call(`${r.url}/v2/image/test/blobs/${sha256(data)}`, { headers: { Authorization: basic } });
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(data), 'byte for byte through the registry API');
    // Only upload sessions there; no capability, no upload.
    expectError(await call(`${host}/v2/`), 404, 'UNSUPPORTED');
    assert.equal((await call(`${host}${handedOut.pathname}`, { method: 'PATCH', body: bytes(10, 8) })).status, 401);
  });

  it('left nothing in /var/lib or /run', async () => {
    await footprint.assertNothingAdded('npm run image (buildah) and podman run');
  });
});
