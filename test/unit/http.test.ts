/**
 * The HTTP contract's parsers: routes, Content-Range on chunks, Range on reads.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../../lib/oci/errors.js';
import { parseContentRange, parseReadRange } from '../../lib/http/ranges.js';
import { matchRoute } from '../../lib/http/router.js';
import { registryOrigin } from '../../lib/http/auth.js';
import { fromBackend } from '../../lib/http/app.js';
import type { RegistryRequest } from '../../lib/http/types.js';
import type { Registry } from '../../lib/registry/index.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('routes', () => {
  it('take the repository name from before the endpoint suffix, slashes and all', () => {
    assert.deepEqual(matchRoute('/v2/'), { name: 'base' });
    assert.deepEqual(matchRoute('/v2'), { name: 'base' });
    assert.deepEqual(matchRoute('/v2/_catalog'), { name: 'catalog' });
    assert.deepEqual(matchRoute('/v2/a/b/c/blobs/uploads/'), { name: 'uploads', repo: 'a/b/c' });
    assert.deepEqual(matchRoute('/v2/a/blobs/uploads'), { name: 'uploads', repo: 'a' });
    assert.deepEqual(matchRoute('/v2/a/blobs/uploads/some-id'), { name: 'upload', repo: 'a', ref: 'some-id' });
    assert.deepEqual(matchRoute(`/v2/a/blobs/${D}`), { name: 'blob', repo: 'a', ref: D });
    assert.deepEqual(matchRoute(`/v2/a/blobs/${D.replace(':', '%3A')}`), { name: 'blob', repo: 'a', ref: D });
    // A repository may itself be called "blobs" or "uploads".
    assert.deepEqual(matchRoute(`/v2/blobs/blobs/${D}`), { name: 'blob', repo: 'blobs', ref: D });
    assert.deepEqual(matchRoute('/v2/x/blobs/uploads/blobs/uploads/'), { name: 'uploads', repo: 'x/blobs/uploads' });
    assert.deepEqual(matchRoute('/v2/a/manifests/latest'), { name: 'manifest', repo: 'a', ref: 'latest' });
    assert.deepEqual(matchRoute('/v2/a/tags/list'), { name: 'tags', repo: 'a' });
    assert.equal(matchRoute('/v2/a/other'), undefined);
    assert.equal(matchRoute('/elsewhere'), undefined);
  });

  it('keep names outside the grammar as sent, with the NAME_INVALID to answer once the caller is authorized', () => {
    for (const [path, repo] of [
      ['/v2/A/blobs/uploads/', 'A'],
      ['/v2/a//b/blobs/uploads/', 'a//b'],
      ['/v2/a/../b/blobs/uploads/', 'a/../b'],
      ['/v2/a%2Fb/blobs/uploads/', 'a%2Fb'],
      ['/v2//blobs/uploads/', ''],
    ]) {
      const route = matchRoute(path);
      assert.equal(route?.name, 'uploads', path);
      assert.equal(route.repo, repo, path);
      assert.ok(route.invalid instanceof RegistryError && route.invalid.code === 'NAME_INVALID', path);
    }
    const badRef = matchRoute('/v2/a/blobs/%E0%A4%A');
    assert.ok(badRef?.invalid instanceof RegistryError && badRef.invalid.code === 'NAME_INVALID');
  });
});

describe('Content-Range of a chunk', () => {
  it('accepts the spec form and the RFC form', () => {
    assert.equal(parseContentRange(undefined), undefined);
    assert.deepEqual(parseContentRange('0-99'), { start: 0, end: 99 });
    assert.deepEqual(parseContentRange('bytes 100-199/*'), { start: 100, end: 199 });
    assert.deepEqual(parseContentRange('bytes=5-5'), { start: 5, end: 5 });
    assert.deepEqual(parseContentRange('bytes 0-9/10'), { start: 0, end: 9 });
  });

  it('refuses malformed ranges (400) and backwards ones (416)', () => {
    for (const bad of ['x', '5', '-5', '5-', '1-2-3', '0x1-2', '1.5-2']) {
      assert.throws(() => parseContentRange(bad), (e: unknown) => e instanceof RegistryError && e.status === 400, bad);
    }
    assert.throws(() => parseContentRange('9-3'), (e: unknown) => e instanceof RegistryError && e.status === 416);
  });
});

describe('Range of a read', () => {
  it('serves single byte ranges, clamps the end, and ignores what it does not serve', () => {
    assert.equal(parseReadRange(undefined, 100), undefined);
    assert.deepEqual(parseReadRange('bytes=0-9', 100), { start: 0, end: 9 });
    assert.deepEqual(parseReadRange('bytes=90-200', 100), { start: 90, end: 99 });
    assert.deepEqual(parseReadRange('bytes=95-', 100), { start: 95, end: 99 });
    assert.deepEqual(parseReadRange('bytes=-10', 100), { start: 90, end: 99 });
    assert.deepEqual(parseReadRange('bytes=-1000', 100), { start: 0, end: 99 });
    assert.equal(parseReadRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseReadRange('items=0-1', 100), undefined);
    assert.equal(parseReadRange('bytes=9-3', 100), undefined);
  });

  it('calls ranges past the end unsatisfiable', () => {
    assert.equal(parseReadRange('bytes=100-', 100), 'unsatisfiable');
    assert.equal(parseReadRange('bytes=-0', 100), 'unsatisfiable');
    assert.equal(parseReadRange('bytes=0-', 0), 'unsatisfiable');
  });
});

describe("the registry's origin, for the upload host's blob Locations", () => {
  const req = (host: string) => ({ method: 'PUT', path: '/', query: new URLSearchParams(), headers: { host }, body: undefined, sourceIp: '10.0.0.9' }) as unknown as RegistryRequest;
  const open = {} as Registry;
  const withRealm = { auth: { settings: { realm: 'https://api.example.com/auth/token', trustedProxies: [] } } } as unknown as Registry;

  it('is the realm origin when a realm is configured, else the scheme and Host the client used', () => {
    assert.equal(registryOrigin(withRealm, req('elsewhere:1')), 'https://api.example.com');
    assert.equal(registryOrigin(open, req('127.0.0.1:5000')), 'http://127.0.0.1:5000');
    assert.equal(registryOrigin(open, req('[::1]:5000')), 'http://[::1]:5000');
  });

  it('is left out (a relative Location) when the Host is not a host', () => {
    for (const host of ['a b', 'x/y', 'x@y', 'x?y', 'h:port']) assert.equal(registryOrigin(open, req(host)), undefined, host);
  });
});

describe('backend failures as answers', () => {
  const sdkError = (props: Record<string, unknown>) => Object.assign(new Error('x'), { $metadata: {}, ...props });

  it('answer throttling 429 and an SDK call that failed or timed out 503, both with Retry-After', () => {
    const cases: [Error, number][] = [
      [sdkError({ name: 'SlowDown', $metadata: { httpStatusCode: 503 } }), 429],
      [sdkError({ name: 'ProvisionedThroughputExceededException', $metadata: { httpStatusCode: 400 } }), 429],
      [sdkError({ code: 'ECONNREFUSED' }), 503],
      [sdkError({ code: 'ECONNRESET' }), 503],
      [sdkError({ name: 'TimeoutError', code: 'ETIMEDOUT' }), 503],
      [sdkError({ name: 'InternalError', $fault: 'server', $metadata: { httpStatusCode: 500 } }), 503],
    ];
    for (const [err, status] of cases) {
      const answer = fromBackend(err);
      assert.equal(answer?.status, status, `${err.name} ${(err as { code?: string }).code}`);
      assert.equal(answer?.headers['Retry-After'], '1');
    }
  });

  it('leave a filesystem error, a refusal and a programming error to the 500 path', () => {
    assert.equal(fromBackend(Object.assign(new Error('disk'), { code: 'EIO' })), undefined);
    assert.equal(fromBackend(Object.assign(new Error('no'), { code: 'ECONNREFUSED' })), undefined, 'not from the SDK');
    assert.equal(fromBackend(sdkError({ name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 } })), undefined);
    assert.equal(fromBackend(new TypeError('bug')), undefined);
  });
});
