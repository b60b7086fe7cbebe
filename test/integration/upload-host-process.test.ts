/**
 * The upload host as `npm start` runs it (lib/local/main.ts, its own process): the deployed shape
 * on one machine (Lambda-mode registry API + upload host on 127.0.0.2, authentication required),
 * the open local registry with its ephemeral key, and `SKIFF_SERVE=uploads` alone: two such
 * processes serving one upload alternately, and one killed mid-body and started again.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { CAPABILITY_PARAM } from '../../lib/auth/capability.js';
import { MiB, bytes, gated, sha256 } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { expectError, patch, withDigest } from '../helpers/oci.js';
import { type RegistryProcess, nodeFlags, processEnv, spawnRegistry } from '../helpers/process.js';
import { UPLOAD_HOST, freePort } from '../helpers/registry.js';
import { addUser } from '../helpers/users.js';

const CAP = 4_400_000;
const newKey = () => `k1=${randomBytes(32).toString('base64url')}`;

describe('the deployed shape locally: Lambda-mode registry API + upload host, authentication required (s3)', () => {
  let reg: RegistryProcess;
  let origin: string;
  const basic = `Basic ${Buffer.from('dev:dev-password').toString('base64')}`;
  before(async () => {
    origin = `http://${UPLOAD_HOST}:${await freePort(UPLOAD_HOST)}`;
    const env = processEnv('s3', { SKIFF_LAMBDA_MODE: 'true', SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: newKey(), SKIFF_UPLOAD_ORIGIN: origin });
    reg = await spawnRegistry(env);
    await addUser(env, 'dev', 'dev-password', 'dev/*');
  });
  after(() => reg.kill());

  async function token(scope: string): Promise<string> {
    const res = await call(`${reg.url}/auth/token?service=skiff&scope=${encodeURIComponent(scope)}`, { headers: { Authorization: basic } });
    assert.equal(res.status, 200, res.body.toString());
    return res.json().token;
  }

  it('says what is served where', () => {
    assert.match(reg.output(), /Skiff registry listening on http:\/\/127\.0\.0\.1:\d+\/ \(authentication required\)/);
    assert.match(reg.output(), /mode: Lambda/);
    assert.ok(reg.output().includes(`upload host: listening on ${origin}/`), reg.output());
  });

  it('takes a 64 MiB layer in one PATCH on the upload host (no credentials there) and serves it back by redirect', async () => {
    const auth = { Authorization: `Bearer ${await token('repository:dev/big:pull,push')}` };
    const start = await call(`${reg.url}/v2/dev/big/blobs/uploads/`, { method: 'POST', headers: auth });
    assert.equal(start.status, 202, start.body.toString());
    const location = start.header('location')!;
    assert.ok(location.startsWith(`${origin}/v2/dev/big/blobs/uploads/`), location);
    assert.equal(start.header('oci-chunk-max-length'), undefined, "the Lambda chunk limit is not the upload host's");
    const data = bytes(64 * MiB, 21);
    const res = await call(location, { method: 'PATCH', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(res.status, 202, res.body.toString());
    const put = await call(withDigest(res.header('location')!, sha256(data)), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
    const get = await call(`${reg.url}/v2/dev/big/blobs/${sha256(data)}`, { headers: auth });
    assert.equal(get.status, 307);
    assert.ok((await call(get.header('location')!)).body.equals(data), 'byte for byte');
  });

  it('still takes chunks through Lambda at the advertised OCI-Chunk-Max-Length on the registry API', async () => {
    const auth = { Authorization: `Bearer ${await token('repository:dev/chunks:pull,push')}` };
    const start = await call(`${reg.url}/v2/dev/chunks/blobs/uploads/`, { method: 'POST', headers: auth });
    const id = start.header('docker-upload-uuid')!;
    // A client that keeps to the registry's own host (the path of the Location, with its token).
    let location = `${reg.url}/v2/dev/chunks/blobs/uploads/${id}`;
    const data = bytes(10 * MiB + 3, 22);
    for (let offset = 0; offset < data.length; ) {
      const chunk = data.subarray(offset, offset + CAP);
      const res = await call(location, { method: 'PATCH', body: chunk, headers: { ...auth, 'Content-Range': `${offset}-${offset + chunk.length - 1}` } });
      assert.equal(res.status, 202, res.body.toString());
      assert.equal(res.header('oci-chunk-max-length'), String(CAP));
      offset += chunk.length;
      location = resolve(reg.url, res.header('location'));
    }
    const put = await call(withDigest(location, sha256(data)), { method: 'PUT', headers: auth });
    assert.equal(put.status, 201, put.body.toString());
    const over = await call(`${reg.url}/v2/dev/chunks/blobs/uploads/${(await call(`${reg.url}/v2/dev/chunks/blobs/uploads/`, { method: 'POST', headers: auth })).header('docker-upload-uuid')}`, {
      method: 'PATCH',
      body: bytes(CAP + 1, 23),
      headers: auth,
    });
    expectError(over, 413, 'SIZE_INVALID');
  });
});

describe('npm start with SKIFF_UPLOAD_ORIGIN, open, without token keys (fs)', () => {
  it('signs capabilities with a key of its own, shared by both servers', async () => {
    const origin = `http://${UPLOAD_HOST}:${await freePort(UPLOAD_HOST)}`;
    const reg = await spawnRegistry(processEnv('fs', { SKIFF_UPLOAD_ORIGIN: origin }));
    try {
      assert.match(reg.output(), /\(open: no authentication\)/);
      const start = await call(`${reg.url}/v2/open/app/blobs/uploads/`, { method: 'POST' });
      const location = start.header('location')!;
      assert.ok(location.startsWith(origin) && new URL(location).searchParams.get(CAPABILITY_PARAM), location);
      const data = bytes(3 * MiB, 24);
      const res = await patch(location, data);
      assert.equal(res.status, 202, res.body.toString());
      assert.equal((await call(withDigest(res.header('location')!, sha256(data)), { method: 'PUT' })).status, 201);
      assert.ok((await call(`${reg.url}/v2/open/app/blobs/${sha256(data)}`)).body.equals(data));
      // Without the capability the open registry's upload host still refuses.
      expectError(await patch(location.split('?')[0]!, data), 401, 'UNAUTHORIZED');
    } finally {
      await reg.kill();
    }
  });
});

describe('SKIFF_SERVE=uploads: the upload host alone (s3)', () => {
  it('refuses to start without token keys', async () => {
    const env = processEnv('s3', { SKIFF_SERVE: 'uploads' });
    const child = spawn(process.execPath, ['--import', 'tsx', ...nodeFlags, 'lib/local/main.ts'], { cwd: join(import.meta.dirname, '..', '..'), env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = await new Promise<number | null>((done) => child.once('exit', done));
    assert.equal(code, 1);
    assert.match(err, /configuration error: SKIFF_SERVE=uploads needs SKIFF_TOKEN_KEYS/);
  });

  it('two upload-host processes serve one upload alternately; one killed mid-body and started again, the upload resumes at its committed offset', async () => {
    const key = newKey();
    // The registry API (open, in-process storage of its own) and two upload hosts on the same table and bucket.
    const apiEnv = processEnv('s3', { SKIFF_TOKEN_KEYS: key, SKIFF_UPLOAD_ORIGIN: `http://${UPLOAD_HOST}:${await freePort(UPLOAD_HOST)}`, SKIFF_LEASE_SECONDS: '2' });
    const hostEnv = (port: number) => ({ ...apiEnv, SKIFF_SERVE: 'uploads', SKIFF_HOST: UPLOAD_HOST, SKIFF_PORT: String(port), SKIFF_UPLOAD_ORIGIN: '' });
    const api = await spawnRegistry(apiEnv);
    const portA = await freePort(UPLOAD_HOST);
    let hostA = await spawnRegistry(hostEnv(portA));
    const hostB = await spawnRegistry(hostEnv(await freePort(UPLOAD_HOST)));
    try {
      assert.match(hostA.output(), /Skiff upload host listening on http:\/\/127\.0\.0\.2:\d+\//);
      assert.equal((await call(`${hostA.url}/v2/`)).status, 404, 'the upload host serves no registry API');
      const start = await call(`${api.url}/v2/alt/app/blobs/uploads/`, { method: 'POST' });
      const first = new URL(start.header('location')!);
      // The same path and capability on either host (a lone upload host answers relative Locations).
      const on = (host: RegistryProcess, location: string) => resolve(host.url, location.replace(/^https?:\/\/[^/]+/, ''));
      const data = bytes(24 * MiB + 11, 25);
      const parts = [data.subarray(0, 6 * MiB), data.subarray(6 * MiB, 12 * MiB), data.subarray(12 * MiB)];
      let location = first.toString();
      for (const [i, part] of parts.slice(0, 2).entries()) {
        const host = i % 2 === 0 ? hostA : hostB;
        const offset = i * 6 * MiB;
        const res = await patch(on(host, location), part, offset);
        assert.equal(res.status, 202, `part ${i} on host ${i % 2 === 0 ? 'A' : 'B'}: ${res.body}`);
        location = res.header('location')!;
        assert.match(location, /^\/v2\/alt\/app\/blobs\/uploads\/[0-9a-f-]+\?_cap=/, 'a lone upload host answers with relative Locations, with a capability');
      }
      // Host A dies with the last part half sent; the upload stays at what was committed.
      const held = gated(parts[2]!, 5 * MiB);
      const dying = call(on(hostA, location), { method: 'PATCH', body: held.body, headers: { 'Content-Range': `${12 * MiB}-${data.length - 1}` } }).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 500));
      await hostA.kill('SIGKILL');
      assert.ok((await dying) instanceof Error, 'the request died with the host');
      hostA = await spawnRegistry({ ...hostEnv(portA) });
      const status = await call(on(hostA, location));
      assert.equal(status.status, 204);
      assert.equal(status.header('range'), `0-${12 * MiB - 1}`, 'committed offset kept');
      // The killed request's lease expires (SKIFF_LEASE_SECONDS=2): a client retries on 416 until then.
      let res = await patch(on(hostA, location), parts[2]!, 12 * MiB);
      for (let i = 0; res.status === 416 && i < 50; i++) {
        await new Promise((r) => setTimeout(r, 200));
        res = await patch(on(hostA, location), parts[2]!, 12 * MiB);
      }
      assert.equal(res.status, 202, res.body.toString());
      const put = await call(withDigest(on(hostB, res.header('location')!), sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await call(`${api.url}/v2/alt/app/blobs/${sha256(data)}`)).body.equals(data), 'byte for byte');
    } finally {
      await Promise.all([api.kill(), hostA.kill(), hostB.kill()]);
    }
  });
});
