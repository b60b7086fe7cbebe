/**
 * Lambda's limits, reproduced by the local server's Lambda mode (the real handler, API Gateway
 * v2 events with base64 bodies, 6,291,456-byte payloads, no streaming) on the real backends:
 * pushes of 64 MiB in chunks that fit, and clear refusals for chunks that do not; and the same
 * handler with authentication required (token endpoint, Bearer pushes, refusals).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { run as admin } from '../../lib/admin/cli.js';
import { createDocumentClient } from '../../lib/metadata/dynamo/table.js';
import { DynamoUserStore } from '../../lib/metadata/dynamo/users.js';
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

  it('round-trips a manifest with non-ASCII UTF-8 annotations byte for byte, digest and all', async () => {
    const config = bytes(500, 11);
    assert.equal((await call(`${reg.url}/v2/lambda/utf8/blobs/uploads/?digest=${sha256(config)}`, { method: 'POST', body: config })).status, 201);
    const text = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [],
      annotations: { 'org.opencontainers.image.title': 'café 日本 😀', 'org.example.note': 'Ünïcødé — “quotes”' },
    });
    const body = Buffer.from(text, 'utf8');
    assert.notEqual(body.length, text.length, 'multi-byte characters');
    const digest = sha256(body);
    const put = await call(`${reg.url}/v2/lambda/utf8/manifests/v1`, { method: 'PUT', body, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
    assert.equal(put.status, 201, put.body.toString());
    assert.equal(put.header('docker-content-digest'), digest);
    for (const ref of ['v1', digest]) {
      const got = await call(`${reg.url}/v2/lambda/utf8/manifests/${ref}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(body), `${ref}: the same bytes`);
      assert.equal(sha256(got.body), digest);
      assert.equal(got.header('docker-content-digest'), digest);
      assert.equal(got.header('content-length'), String(body.length));
      const head = await call(`${reg.url}/v2/lambda/utf8/manifests/${ref}`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
      assert.equal(head.header('content-length'), String(body.length));
    }
  });
});

describe('Lambda mode with authentication required (s3)', () => {
  let reg: RegistryProcess;
  let store: DynamoUserStore;
  const password = 'lambda-password-1';
  const basic = (user: string, pass = password) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

  before(async () => {
    const env = processEnv('s3', {
      SKIFF_LAMBDA_MODE: 'true',
      SKIFF_AUTH: 'required',
      SKIFF_TOKEN_KEYS: `k1=${randomBytes(32).toString('base64url')}`,
      SKIFF_AUTH_CACHE_SECONDS: '0',
    });
    reg = await spawnRegistry(env);
    assert.match(reg.output(), /mode: Lambda/);
    assert.match(reg.output(), /authentication required/);
    // The process made its table; users go in with the admin tool, as an operator would.
    const db = createDocumentClient({ table: env.DYNAMODB_TABLE!, region: 'us-east-1', endpoint: env.DYNAMODB_ENDPOINT!, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
    store = new DynamoUserStore(db, env.DYNAMODB_TABLE!);
    const io = { out: () => undefined, err: (l: string) => assert.fail(l), readSecret: async () => password };
    for (const argv of [['user', 'add', 'lam'], ['grant', 'lam', 'lambda/*', 'pull,push'], ['user', 'add', 'reader'], ['grant', 'reader', 'lambda/*', 'pull']]) {
      assert.equal(await admin(argv, () => store, io), 0, argv.join(' '));
    }
  });
  after(() => reg.kill());

  async function tokenGet(user: string, scope: string): Promise<string> {
    const res = await call(`${reg.url}/auth/token?service=skiff&scope=${encodeURIComponent(scope)}`, { headers: { Authorization: basic(user) } });
    assert.equal(res.status, 200, res.body.toString());
    return res.json().token;
  }

  it('issues tokens at the token endpoint by GET with Basic and by POST with the OAuth2 password grant', async () => {
    const got = await tokenGet('lam', 'repository:lambda/auth:pull,push');
    assert.deepEqual(decodeJwt(got).access, [{ type: 'repository', name: 'lambda/auth', actions: ['pull', 'push'] }]);
    const form = new URLSearchParams({ grant_type: 'password', username: 'lam', password, scope: 'repository:lambda/auth:pull', service: 'skiff', client_id: 'test' });
    const posted = await call(`${reg.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    assert.equal(posted.status, 200, posted.body.toString());
    assert.equal(posted.json().token_type, 'Bearer');
    assert.deepEqual(decodeJwt(posted.json().access_token).access, [{ type: 'repository', name: 'lambda/auth', actions: ['pull'] }]);
    const wrong = await call(`${reg.url}/auth/token?service=skiff`, { headers: { Authorization: basic('lam', 'wrong-password') } });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json().errors[0].code, 'UNAUTHORIZED');
    assert.match(wrong.header('www-authenticate')!, /^Basic realm=/);
    // Counted against the event's requestContext.http.sourceIp, and cleared by the next good login.
    assert.equal(await store.failures('lam', '127.0.0.1'), 1);
    assert.equal((await call(`${reg.url}/v2/`, { headers: { Authorization: basic('lam') } })).status, 200);
    assert.equal(await store.failures('lam', '127.0.0.1'), 0);
  });

  it('takes a chunked push (POST, PATCH, PUT) with a Bearer token, and serves it back', async () => {
    const auth = { Authorization: `Bearer ${await tokenGet('lam', 'repository:lambda/auth:pull,push')}` };
    const data = bytes(3 * MiB + 123, 12);
    const start = await call(`${reg.url}/v2/lambda/auth/blobs/uploads/`, { method: 'POST', headers: auth });
    assert.equal(start.status, 202, start.body.toString());
    let location = resolve(reg.url, start.header('location'));
    for (let offset = 0; offset < data.length; ) {
      const chunk = data.subarray(offset, offset + 2 * MiB);
      const res = await call(location, { method: 'PATCH', body: chunk, headers: { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + chunk.length - 1}` } });
      assert.equal(res.status, 202, res.body.toString());
      offset += chunk.length;
      location = resolve(reg.url, res.header('location'));
    }
    const digest = sha256(data);
    const put = await call(withDigest(location, digest), { method: 'PUT', headers: auth });
    assert.equal(put.status, 201, put.body.toString());
    const head = await call(`${reg.url}/v2/lambda/auth/blobs/${digest}`, { method: 'HEAD', headers: auth });
    assert.equal(head.status, 200);
    assert.equal(head.header('content-length'), String(data.length));
    const get = await call(`${reg.url}/v2/lambda/auth/blobs/${digest}`, { headers: auth });
    assert.equal(get.status, 307);
    assert.ok((await call(get.header('location')!)).body.equals(data));
  });

  it('refuses a push without credentials (401 with a challenge) or without push rights (403), storing nothing', async () => {
    const anonymous = await call(`${reg.url}/v2/lambda/refused/blobs/uploads/`, { method: 'POST' });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json().errors[0].code, 'UNAUTHORIZED');
    assert.match(anonymous.header('www-authenticate')!, /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/auth\/token",service="skiff",scope="repository:lambda\/refused:push"$/);
    const small = bytes(100, 13);
    const mono = await call(`${reg.url}/v2/lambda/refused/blobs/uploads/?digest=${sha256(small)}`, { method: 'POST', body: small });
    assert.equal(mono.status, 401);
    const reader = await call(`${reg.url}/v2/lambda/refused/blobs/uploads/?digest=${sha256(small)}`, { method: 'POST', body: small, headers: { Authorization: basic('reader') } });
    assert.equal(reader.status, 403);
    assert.equal(reader.json().errors[0].code, 'DENIED');
    const readerToken = await tokenGet('reader', 'repository:lambda/refused:pull,push');
    const bearer = await call(`${reg.url}/v2/lambda/refused/blobs/uploads/`, { method: 'POST', headers: { Authorization: `Bearer ${readerToken}` } });
    assert.equal(bearer.status, 401);
    assert.match(bearer.header('www-authenticate')!, /error="insufficient_scope"/);
    const head = await call(`${reg.url}/v2/lambda/refused/blobs/${sha256(small)}`, { method: 'HEAD', headers: { Authorization: basic('lam') } });
    assert.equal(head.status, 404, 'nothing stored');
  });

  it('still refuses an over-limit PATCH with the OCI 413 naming the limit', async () => {
    const auth = { Authorization: `Bearer ${await tokenGet('lam', 'repository:lambda/over:pull,push')}` };
    const start = await call(`${reg.url}/v2/lambda/over/blobs/uploads/`, { method: 'POST', headers: auth });
    assert.equal(start.status, 202);
    const location = resolve(reg.url, start.header('location'));
    const res = await call(location, { method: 'PATCH', body: bytes(CAP + 1, 14), headers: { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${CAP}` } });
    assert.equal(res.status, 413, res.body.toString());
    const err = res.json().errors[0];
    assert.equal(err.code, 'SIZE_INVALID');
    assert.equal(err.detail.maxChunkBytes, CAP);
    assert.equal(res.header('oci-chunk-max-length'), String(CAP));
    assert.equal((await call(location, { headers: auth })).header('range'), '0-0');
    // Without credentials the same PATCH is refused as unauthenticated, before its size matters.
    const anonymous = await call(location, { method: 'PATCH', body: bytes(CAP + 1, 14), headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.json().errors[0].code, 'UNAUTHORIZED');
  });
});
