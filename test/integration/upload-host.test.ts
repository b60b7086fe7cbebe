/**
 * The upload host (SKIFF_UPLOAD_ORIGIN): the registry API starts uploads and hands out Locations
 * on the upload host carrying a capability; the upload host serves only upload sessions and
 * trusts the capability alone. On the real backends, both storage drivers, authentication
 * required on the registry API.
 *
 * Every refusal is checked to write and read nothing: no DynamoDB or S3 call at all, no file.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CAPABILITY_PARAM, UploadCapabilities } from '../../lib/auth/capability.js';
import { tokenServiceProvider } from '../../lib/auth/keys.js';
import { ConfigError, loadConfig } from '../../lib/config.js';
import { hashPassword } from '../../lib/auth/passwords.js';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { type Received, call } from '../helpers/http.js';
import { expectError, withDigest } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, blobObjects, delta, useRegistry } from '../helpers/registry.js';

const KEY = `k1=${randomBytes(32).toString('base64url')}`;
const basic = `Basic ${Buffer.from('alice:alice-password').toString('base64')}`;

/** Everything storage holds for the registry: S3 objects (any prefix), or files under the data directory. */
async function storedObjects(r: TestRegistry): Promise<string[]> {
  if (r.config.storage === 's3') return blobObjects(r).then(async (blobs) => [...blobs, ...(await r.registry.storage.objects.list('uploads/'))]);
  return (await readdir(join(r.config.dataDir, 'storage'), { recursive: true }).catch(() => [])).map(String).sort();
}

function withCapability(location: string, cap: string | undefined): string {
  const url = new URL(location);
  url.searchParams.delete(CAPABILITY_PARAM);
  if (cap !== undefined) url.searchParams.set(CAPABILITY_PARAM, cap);
  return url.toString();
}

for (const driver of DRIVERS) {
  describe(`upload host (${driver})`, () => {
    const r = useRegistry(driver, { uploadHost: true, env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: KEY, SKIFF_AUTH_CACHE_SECONDS: '60' } });

    async function addAlice() {
      const now = Date.now();
      const users = r.registry.meta.users;
      if (await users.getUser('alice')) return;
      await users.putUser({ name: 'alice', passwordHash: await hashPassword('alice-password'), createdAt: now, updatedAt: now });
      await users.putGrant('alice', { pattern: 'team/*', actions: ['pull', 'push'] });
    }

    async function start(repo: string): Promise<{ location: string; id: string }> {
      await addAlice();
      const res = await call(`${r.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { Authorization: basic } });
      assert.equal(res.status, 202, res.body.toString());
      return { location: res.header('location')!, id: res.header('docker-upload-uuid')! };
    }

    it('hands out an absolute Location on the upload host with a capability, and the upload completes there', async () => {
      const { location, id } = await start('team/app');
      const url = new URL(location);
      assert.equal(url.origin, r.uploadUrl);
      assert.equal(url.pathname, `/v2/team/app/blobs/uploads/${id}`);
      assert.ok(url.searchParams.get(CAPABILITY_PARAM), 'the Location carries the capability');
      assert.equal(url.searchParams.size, 1);
      // The main API's chunk limit does not apply to where the upload continues.
      const data = bytes(3 * MiB + 5, 1);
      const first = await call(location, { method: 'PATCH', body: data.subarray(0, MiB), headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(first.status, 202, first.body.toString());
      assert.equal(first.header('range'), `0-${MiB - 1}`);
      const next = first.header('location')!;
      assert.equal(new URL(next).origin, r.uploadUrl, 'the upload host answers with absolute Locations on itself');
      assert.ok(new URL(next).searchParams.get(CAPABILITY_PARAM));
      // An Authorization header on the upload host is ignored, whatever it says.
      const status = await call(next, { headers: { Authorization: 'Bearer nonsense' } });
      assert.equal(status.status, 204);
      assert.equal(status.header('range'), `0-${MiB - 1}`);
      // A finishing PUT with the rest as its body; the client appends digest= to the query.
      const put = await call(withDigest(next, sha256(data)), { method: 'PUT', body: data.subarray(MiB) });
      assert.equal(put.status, 201, put.body.toString());
      assert.equal(put.header('docker-content-digest'), sha256(data));
      // The blob's Location is on the registry (as the client reached it), not on the upload host.
      assert.equal(put.header('location'), `${r.url}/v2/team/app/blobs/${sha256(data)}`);
      const got = await call(put.header('location')!, { headers: { Authorization: basic } });
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(data), 'byte for byte');
    });

    it('a mount that falls back to an upload is sent to the upload host; a monolithic POST stays on the registry', async () => {
      await addAlice();
      const small = bytes(2000, 2);
      const mono = await call(`${r.url}/v2/team/mono/blobs/uploads/?digest=${sha256(small)}`, { method: 'POST', body: small, headers: { Authorization: basic } });
      assert.equal(mono.status, 201, mono.body.toString());
      assert.equal(mono.header('location'), `/v2/team/mono/blobs/${sha256(small)}`);
      const missing = sha256(bytes(10, 3));
      const mount = await call(`${r.url}/v2/team/mount/blobs/uploads/?mount=${missing}&from=team/mono`, { method: 'POST', headers: { Authorization: basic } });
      assert.equal(mount.status, 202);
      assert.equal(new URL(mount.header('location')!).origin, r.uploadUrl);
      assert.ok(new URL(mount.header('location')!).searchParams.get(CAPABILITY_PARAM));
    });

    it('refuses every request without a valid capability for that upload, writing and reading nothing', async () => {
      const { location, id } = await start('team/target');
      const other = await start('team/other');
      const data = bytes(MiB, 4);
      assert.equal((await call(location, { method: 'PATCH', body: data })).status, 202);
      const caps = r.registry.capabilities!;
      const stranger = new UploadCapabilities(
        tokenServiceProvider({ keys: `k1=${randomBytes(32).toString('base64url')}`, region: 'us-east-1' }, { issuer: 'skiff', service: 'skiff', ttlSeconds: 300 }),
        { service: 'skiff', ttlSeconds: 3600 },
      );
      const past = new UploadCapabilities((r.registry.auth!.tokens), { service: 'skiff', ttlSeconds: 3600 }, () => Date.now() - 7200_000);
      const bearer = (await (await r.registry.auth!.tokens()).issue('alice', [{ type: 'repository', name: 'team/target', actions: ['pull', 'push'] }])).token;
      const valid = new URL(location).searchParams.get(CAPABILITY_PARAM)!;
      const tampered = valid.slice(0, -4) + (valid.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      const cases: [string, string | undefined, Record<string, string>?][] = [
        ['missing', undefined],
        ['empty', ''],
        ['forged (another key, same kid)', await stranger.issue('team/target', id)],
        ['tampered signature', tampered],
        ['expired', await past.issue('team/target', id)],
        ['for another repository', await caps.issue('team/other', id)],
        ['for another upload', await caps.issue('team/target', other.id)],
        ['a registry bearer token', bearer],
        ['an Authorization header alone (Basic)', undefined, { Authorization: basic }],
        ['an Authorization header alone (Bearer)', undefined, { Authorization: `Bearer ${bearer}` }],
      ];
      const objects = await storedObjects(r);
      const dynamo = { ...r.dynamoCalls };
      const s3 = { ...r.s3Calls };
      for (const [what, cap, headers] of cases) {
        const url = withCapability(location, cap);
        const requests: [string, string, Uint8Array?][] = [
          ['PATCH', url, data],
          ['PUT', withDigest(url, sha256(data)), data],
          ['PUT', withDigest(url, sha256(data))],
          ['GET', url],
          ['DELETE', url],
        ];
        for (const [method, target, body] of requests) {
          const res = await call(target, { method, body, headers: { ...headers, ...(body ? { 'Content-Type': 'application/octet-stream' } : {}) } });
          expectError(res, 401, 'UNAUTHORIZED', `${what}: ${method}`);
          assert.equal(res.header('location'), undefined, `${what}: ${method} reveals no Location`);
          assert.equal(res.header('range'), undefined, `${what}: ${method} reveals no Range`);
          assert.equal(res.json().errors[0].detail, undefined, `${what}: nothing in the detail`);
        }
      }
      // A capability on a path that is no upload session, and the capability as a registry bearer token.
      const q = `?${CAPABILITY_PARAM}=${valid}`;
      for (const [method, path] of [
        ['GET', '/v2/'],
        ['POST', '/v2/team/target/blobs/uploads/'],
        ['GET', `/v2/team/target/blobs/${sha256(data)}`],
        ['HEAD', `/v2/team/target/blobs/${sha256(data)}`],
        ['GET', '/v2/team/target/manifests/latest'],
        ['GET', '/v2/team/target/tags/list'],
        ['GET', '/v2/_catalog'],
        ['GET', '/auth/token'],
        ['GET', '/'],
      ] as const) {
        const res = await call(`${r.uploadUrl}${path}${q}`, { method, headers: { Authorization: basic } });
        assert.equal(res.status, 404, `${method} ${path} on the upload host`);
        if (method !== 'HEAD') expectError(res, 404, 'UNSUPPORTED', `${method} ${path}`);
      }
      assert.deepEqual(delta(dynamo, r.dynamoCalls), {}, 'no DynamoDB call for any refusal');
      assert.deepEqual(delta(s3, r.s3Calls), {}, 'no S3 call for any refusal');
      assert.deepEqual(await storedObjects(r), objects, 'storage unchanged');
      // Nor is a capability a bearer token on the registry API (its audience is not the service).
      const asBearer = await call(`${r.url}/v2/team/target/blobs/uploads/${id}`, { headers: { Authorization: `Bearer ${valid}` } });
      expectError(asBearer, 401, 'UNAUTHORIZED', 'a capability as a registry bearer token');
      const status = await call(location);
      assert.equal(status.status, 204);
      assert.equal(status.header('range'), `0-${MiB - 1}`, 'the upload is where it was');
    });

    it('answers a 416 with a Location that carries a capability, and DELETE ends the upload', async () => {
      const { location } = await start('team/range');
      const res: Received = await call(location, { method: 'PATCH', body: bytes(100, 5), headers: { 'Content-Range': '10-109' } });
      assert.equal(res.status, 416);
      assert.equal(res.header('range'), '0-0');
      assert.ok(new URL(res.header('location')!).searchParams.get(CAPABILITY_PARAM));
      assert.equal((await call(location, { method: 'DELETE' })).status, 204);
      expectError(await call(location), 404, 'BLOB_UPLOAD_UNKNOWN');
    });

    it('keeps idle connections longer than the load balancer in front of it (60 s)', async () => {
      for (const base of [r.uploadUrl, r.url]) assert.equal((await call(`${base}/healthz`)).header('keep-alive'), 'timeout=65');
    });

    it('answers GET /healthz on the upload host only', async () => {
      const ok = await call(`${r.uploadUrl}/healthz`);
      assert.equal(ok.status, 200);
      assert.deepEqual(ok.json(), { status: 'ok' });
      expectError(await call(`${r.url}/healthz`), 404, 'UNSUPPORTED');
    });
  });
}

describe('upload host configuration', () => {
  const keys = { SKIFF_TOKEN_KEYS: KEY };
  it('takes an absolute http(s) origin and normalizes it', () => {
    assert.equal(loadConfig({ ...keys, SKIFF_UPLOAD_ORIGIN: 'https://abc.ecs.eu-west-1.on.aws/' }).uploadHost.origin, 'https://abc.ecs.eu-west-1.on.aws');
    assert.equal(loadConfig({ ...keys, SKIFF_UPLOAD_ORIGIN: 'http://127.0.0.2:5001' }).uploadHost.origin, 'http://127.0.0.2:5001');
    assert.equal(loadConfig({}).uploadHost.origin, undefined);
  });
  it('refuses an origin with a path, query or credentials, a relative one, or another scheme', () => {
    for (const bad of ['uploads.example.com', '/uploads', 'https://x.example.com/v2', 'https://x.example.com?a=b', 'https://u:p@x.example.com', 'ftp://x.example.com']) {
      assert.throws(() => loadConfig({ ...keys, SKIFF_UPLOAD_ORIGIN: bad }), ConfigError, bad);
    }
  });
  it('needs token keys to sign capabilities, with an origin or as the upload host alone', () => {
    assert.throws(() => loadConfig({ SKIFF_UPLOAD_ORIGIN: 'http://127.0.0.2:5001' }), /SKIFF_UPLOAD_ORIGIN needs SKIFF_TOKEN_KEYS/);
    assert.throws(() => loadConfig({ SKIFF_SERVE: 'uploads' }), /SKIFF_SERVE=uploads needs SKIFF_TOKEN_KEYS/);
    assert.throws(() => loadConfig({ ...keys, SKIFF_SERVE: 'both' }), ConfigError);
    assert.equal(loadConfig({ SKIFF_SERVE: 'uploads', SKIFF_TOKEN_KEYS_PARAMETER: '/skiff/keys' }).uploadHost.serve, 'uploads');
  });
});
