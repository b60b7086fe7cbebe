/**
 * The Lambda path: API Gateway HTTP API v2 events (base64 binary bodies) through the same
 * RegistryApp, on the real backends.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { RegistryApp } from '../../lib/http/app.js';
import { MAX_RESPONSE_BYTES, fromEvent, toResult } from '../../lib/http/lambda.js';
import { RegistryError } from '../../lib/oci/errors.js';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

function event(method: string, path: string, opts: { query?: string; headers?: Record<string, string>; body?: Buffer } = {}): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: `${method} /v2/{proxy+}`,
    rawPath: path,
    rawQueryString: opts.query ?? '',
    headers: { ...(opts.body ? { 'content-length': String(opts.body.length) } : {}), ...(opts.headers ?? {}) },
    requestContext: { http: { method, path, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'test' } } as APIGatewayProxyEventV2['requestContext'],
    body: opts.body?.toString('base64'),
    isBase64Encoded: Boolean(opts.body),
  };
}

describe('Lambda adapter (s3)', () => {
  let r: TestRegistry;
  let app: RegistryApp;
  const invoke = async (e: APIGatewayProxyEventV2) => toResult(await app.handle(fromEvent(e)));

  before(async () => {
    r = await startRegistry('s3');
    app = new RegistryApp(r.registry, { info() {}, warn() {}, error: (m, ...x) => void r.serverErrors.push({ m, x }) });
  });
  after(async () => {
    assert.deepEqual(r.serverErrors, []);
    await r.close();
  });

  it('pushes a blob in base64 chunks smaller than the part minimum and reads it back', async () => {
    const data = bytes(9 * MiB + 5, 1);
    const start = await invoke(event('POST', '/v2/lambda/repo/blobs/uploads/'));
    assert.equal(start.statusCode, 202);
    let location = start.headers!['Location'] as string;
    const chunk = 4 * MiB;
    for (let o = 0; o < data.length; o += chunk) {
      const piece = data.subarray(o, o + chunk);
      const res = await invoke(event('PATCH', location, { body: piece, headers: { 'content-range': `${o}-${o + piece.length - 1}` } }));
      assert.equal(res.statusCode, 202, String(res.body));
      location = res.headers!['Location'] as string;
    }
    const digest = sha256(data);
    const put = await invoke(event('PUT', location, { query: `digest=${digest}` }));
    assert.equal(put.statusCode, 201, String(put.body));
    const small = bytes(1000, 2);
    const mono = await invoke(event('POST', '/v2/lambda/repo/blobs/uploads/', { query: `digest=${sha256(small)}`, body: small }));
    assert.equal(mono.statusCode, 201);
    const get = await invoke(event('GET', `/v2/lambda/repo/blobs/${sha256(small)}`));
    assert.equal(get.statusCode, 200);
    assert.equal(get.isBase64Encoded, true);
    assert.ok(Buffer.from(get.body!, 'base64').equals(small));
    const big = await invoke(event('GET', `/v2/lambda/repo/blobs/${digest}`, { headers: { range: 'bytes=0-1023' } }));
    assert.equal(big.statusCode, 206);
    assert.ok(Buffer.from(big.body!, 'base64').equals(data.subarray(0, 1024)));
  });

  it('refuses to serve a body larger than a Lambda response can carry, with a clear error', async () => {
    const data = bytes(MAX_RESPONSE_BYTES + 1, 3);
    const mono = await invoke(event('POST', '/v2/lambda/big/blobs/uploads/', { query: `digest=${sha256(data)}`, body: data }));
    assert.equal(mono.statusCode, 201);
    const get = await invoke(event('GET', `/v2/lambda/big/blobs/${sha256(data)}`));
    assert.equal(get.statusCode, 413);
    assert.equal(JSON.parse(get.body!).errors[0].code, 'SIZE_INVALID');
  });

  it('serves a manifest base64, byte for byte, within the Lambda response limit even when its text escapes badly', async () => {
    const config = Buffer.from('{}');
    assert.equal((await invoke(event('POST', '/v2/lambda/manifest/blobs/uploads/', { query: `digest=${sha256(config)}`, body: config }))).statusCode, 201);
    // Quotes, backslashes and control characters: JSON escaping of this text would double it.
    const noise = '"\\\u0001'.repeat(330_000);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: 2 },
        layers: [],
        annotations: { noise, 'org.example.text': 'café 日本' },
      }),
    );
    assert.ok(manifest.length > 3 * MiB && manifest.length < 4 * MiB, String(manifest.length));
    const put = await invoke(event('PUT', '/v2/lambda/manifest/manifests/v1', { body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } }));
    assert.equal(put.statusCode, 201, String(put.body));
    const get = await invoke(event('GET', '/v2/lambda/manifest/manifests/v1', { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } }));
    assert.equal(get.statusCode, 200);
    assert.equal(get.isBase64Encoded, true);
    assert.ok(Buffer.from(get.body!, 'base64').equals(manifest), 'the bytes pulled are the bytes pushed');
    assert.equal(get.headers!['Docker-Content-Digest'], sha256(manifest));
    assert.ok(Buffer.byteLength(JSON.stringify(get)) <= 6_291_456, 'the response fits in a Lambda invocation result');
  });

  it('answers errors as OCI JSON in plain text', async () => {
    const res = await invoke(event('GET', `/v2/lambda/repo/blobs/${sha256(bytes(1, 9))}`));
    assert.equal(res.statusCode, 404);
    assert.equal(res.isBase64Encoded, false);
    assert.equal(JSON.parse(res.body!).errors[0].code, 'BLOB_UNKNOWN');
  });

  it('refuses an event whose body disagrees with its Content-Length', () => {
    const e = event('PATCH', '/v2/x/blobs/uploads/abc', { body: Buffer.from('hello'), headers: { 'content-length': '9' } });
    assert.throws(() => fromEvent(e), (err: unknown) => err instanceof RegistryError && err.code === 'BLOB_UPLOAD_INVALID');
  });
});
