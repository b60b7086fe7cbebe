/**
 * Authentication and repository-scoped authorization over HTTP, on the real backends: the
 * Docker token flow, Basic on the registry, and every attack the issue lists. Each refusal is
 * 401 UNAUTHORIZED or 403 DENIED (429 for a locked-out user) in OCI error JSON, never a 500,
 * and touches no data.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { GetCommand, ScanCommand } from '@aws-sdk/lib-dynamodb';
import { SignJWT, decodeJwt } from 'jose';
import { run as admin } from '../../lib/admin/cli.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { bytes, sha256 } from '../helpers/data.js';
import { expectError } from '../helpers/oci.js';
import { call } from '../helpers/http.js';
import { useRegistry } from '../helpers/registry.js';

const OLD = randomBytes(32);
const CURRENT = randomBytes(32);
const keys = `k2=${CURRENT.toString('base64url')},k1=${OLD.toString('base64url')}`;
const PASSWORDS: Record<string, string> = { alice: 'alice-password-1', bob: 'bob-password-12', carol: 'carol-password-1', dave: 'dave-password-12' };

const basic = (user: string, password = PASSWORDS[user]!) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;


describe('authentication and authorization (s3)', () => {
  const r = useRegistry('s3', {
    // No caching of verified passwords and grants: every change must show at once here.
    env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: keys, SKIFF_AUTH_FAILURE_LIMIT: '3', SKIFF_REDIRECT: 'true', SKIFF_AUTH_CACHE_SECONDS: '0' },
  });
  const secret = new Map<string, string>();

  async function cli(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
    const out: string[] = [];
    const err: string[] = [];
    const code = await admin(argv, () => r.registry.meta.users, {
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      readSecret: async () => secret.get(argv[2]!) ?? '',
    });
    return { code, out, err };
  }

  async function token(user: string | undefined, ...scopes: string[]): Promise<string> {
    const q = new URLSearchParams({ service: 'skiff' });
    for (const s of scopes) q.append('scope', s);
    const res = await call(`${r.url}/auth/token?${q}`, { headers: user ? { Authorization: basic(user) } : {} });
    assert.equal(res.status, 200, res.body.toString());
    return res.json().token;
  }

  const as = (auth: string | undefined, extra: Record<string, string> = {}) => ({ ...(auth ? { Authorization: auth } : {}), ...extra });

  /** Every registry item of the table (failed-login counters aside) and every object of the bucket. */
  async function state(): Promise<string[]> {
    const items: string[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const page = await r.db.send(new ScanCommand({ TableName: r.config.dynamo.table, ConsistentRead: true, ExclusiveStartKey: start }));
      for (const i of page.Items ?? []) if (!String(i.pk).startsWith('AUTHFAIL#')) items.push(JSON.stringify(i, Object.keys(i).sort()));
      start = page.LastEvaluatedKey;
    } while (start);
    let token: string | undefined;
    do {
      const page = await r.s3.send(new ListObjectsV2Command({ Bucket: r.config.s3.bucket, ContinuationToken: token }));
      for (const o of page.Contents ?? []) items.push(`s3:${o.Key}:${o.Size}:${o.ETag}`);
      token = page.NextContinuationToken;
    } while (token);
    return items.sort();
  }

  /** Runs refused requests and checks they changed nothing: no upload, link, manifest, tag or object. */
  async function unchanged<T>(refused: () => Promise<T>): Promise<T> {
    const before = await state();
    const result = await refused();
    assert.deepEqual(await state(), before, 'a refused request changed stored data');
    return result;
  }

  /** Pushes a blob and a manifest tagged v1 into `repo` with the given Authorization. */
  async function push(repo: string, auth: string): Promise<{ blob: string; manifest: string }> {
    const data = bytes(2000, repo.length);
    const blob = sha256(data);
    const mono = await call(`${r.url}/v2/${repo}/blobs/uploads/?digest=${blob}`, { method: 'POST', body: data, headers: as(auth) });
    assert.equal(mono.status, 201, mono.body.toString());
    const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: blob, size: data.length }, layers: [] });
    const put = await call(`${r.url}/v2/${repo}/manifests/v1`, { method: 'PUT', body: text, headers: as(auth, { 'Content-Type': MediaTypes.ociManifest }) });
    assert.equal(put.status, 201, put.body.toString());
    return { blob, manifest: sha256(Buffer.from(text)) };
  }

  before(async () => {
    for (const [user, password] of Object.entries(PASSWORDS)) {
      secret.set(user, password);
      assert.equal((await cli('user', 'add', user)).code, 0);
    }
    for (const [user, pattern, actions] of [
      ['alice', 'team/*', 'pull,push'],
      ['alice', 'alice/app', 'pull,push,delete'],
      ['bob', 'team/app', 'pull'],
      ['dave', 'secret/x', 'pull,push'],
      ['anonymous', 'public/*', 'pull'],
    ] as const) {
      assert.equal((await cli('grant', user, pattern, actions)).code, 0);
    }
  });

  it('challenges an anonymous caller with the realm, service and scope to ask for', async () => {
    const base = await call(`${r.url}/v2/`);
    expectError(base, 401, 'UNAUTHORIZED');
    assert.equal(base.header('www-authenticate'), `Bearer realm="${r.url}/auth/token",service="skiff"`);
    const res = await call(`${r.url}/v2/team/app/manifests/v1`);
    expectError(res, 401, 'UNAUTHORIZED');
    assert.equal(res.header('www-authenticate'), `Bearer realm="${r.url}/auth/token",service="skiff",scope="repository:team/app:pull"`);
    // The Host the client used; X-Forwarded-* only from trusted proxies (none here; see security.test.ts).
    const behind = await unchanged(() => call(`${r.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: { Host: 'registry.example.com', 'X-Forwarded-Proto': 'https' } }));
    assert.match(behind.header('www-authenticate')!, /realm="http:\/\/registry\.example\.com\/auth\/token"/);
  });

  it('issues tokens holding exactly the requested access the user is granted, and honours them', async () => {
    const t = await token('alice', 'repository:team/app:pull,push', 'repository:alice/app:delete', 'repository:secret/x:pull');
    const claims = decodeJwt(t);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.aud, 'skiff');
    assert.equal(claims.exp! - claims.iat!, 300);
    assert.deepEqual(claims.access, [
      { type: 'repository', name: 'team/app', actions: ['pull', 'push'] },
      { type: 'repository', name: 'alice/app', actions: ['delete'] },
    ]);
    const pushed = await push('team/app', `Bearer ${t}`);
    assert.equal((await call(`${r.url}/v2/team/app/manifests/v1`, { headers: as(`Bearer ${t}`) })).status, 200);
    assert.equal((await call(`${r.url}/v2/team/app/blobs/${pushed.blob}`, { method: 'HEAD', headers: as(`Bearer ${t}`) })).status, 200);
    // Basic works on the registry endpoints too.
    assert.equal((await call(`${r.url}/v2/team/app/tags/list`, { headers: as(basic('alice')) })).status, 200);
    assert.equal((await call(`${r.url}/v2/`, { headers: as(basic('alice')) })).status, 200);
  });

  it('grants nothing beyond the grants: scope escalation attempts get tokens without it', async () => {
    const t = await token('bob', 'repository:team/app:pull,push,delete', 'repository:team/*:pull', 'repository:team/app2:pull', 'repository:TEAM/app:pull', 'repository:team/../secret/x:pull', 'repository:secret/x:pull', 'registry:catalog:*');
    assert.deepEqual(decodeJwt(t).access, [
      { type: 'repository', name: 'team/app', actions: ['pull'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
    ]);
    const tagged = (await call(`${r.url}/v2/team/app/manifests/v1`, { method: 'HEAD', headers: as(`Bearer ${t}`) })).header('docker-content-digest');
    assert.ok(tagged);
    const data = bytes(100, 9);
    await unchanged(async () => {
      const post = await call(`${r.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: as(`Bearer ${t}`) });
      expectError(post, 401, 'UNAUTHORIZED');
      assert.match(post.header('www-authenticate')!, /scope="repository:team\/app:push",error="insufficient_scope"/);
      expectError(await call(`${r.url}/v2/team/app/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data, headers: as(`Bearer ${t}`) }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2/team/app/manifests/v1`, { method: 'DELETE', headers: as(`Bearer ${t}`) }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2/team/app/manifests/${tagged}`, { method: 'DELETE', headers: as(`Bearer ${t}`) }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2/team/app/manifests/v1`, { method: 'PUT', body: '{}', headers: as(`Bearer ${t}`, { 'Content-Type': MediaTypes.ociManifest }) }), 401, 'UNAUTHORIZED');
      // The same with Basic: the user is known, the action is not theirs.
      expectError(await call(`${r.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: as(basic('bob')) }), 403, 'DENIED');
      expectError(await call(`${r.url}/v2/team/app/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data, headers: as(basic('bob')) }), 403, 'DENIED');
      expectError(await call(`${r.url}/v2/team/app/manifests/v1`, { method: 'DELETE', headers: as(basic('bob')) }), 403, 'DENIED');
    });
    // Explicitly: the tag still names the same manifest, and the blob was linked nowhere.
    assert.equal((await call(`${r.url}/v2/team/app/manifests/v1`, { method: 'HEAD', headers: as(basic('alice')) })).header('docker-content-digest'), tagged);
    assert.equal((await call(`${r.url}/v2/team/app/blobs/${sha256(data)}`, { method: 'HEAD', headers: as(basic('alice')) })).status, 404);
    expectError(await call(`${r.url}/v2/team/other/manifests/v1`, { headers: as(basic('bob')) }), 403, 'DENIED');
    // A prefix grant covers what is below it, not look-alikes.
    expectError(await call(`${r.url}/v2/teammate/x/manifests/v1`, { headers: as(basic('alice')) }), 403, 'DENIED');
    expectError(await call(`${r.url}/v2/team/manifests/v1`, { headers: as(basic('alice')) }), 403, 'DENIED');
    assert.equal((await call(`${r.url}/v2/team/app/manifests/v1`, { headers: as(`Bearer ${t}`) })).status, 200, 'what was granted works');
  });

  it('authorizes path tricks in names as sent, before their grammar: 401 without credentials, 403 unless covered, 400 only then', async () => {
    const bobToken = await token('bob', 'repository:team/app:pull');
    const aliceToken = await token('alice', 'repository:team/app:pull,push');
    // [path, what alice's `team/*` makes of the raw string]
    const cases: [string, number][] = [
      ['/v2/team/../secret/x/manifests/v1', 400],
      ['/v2/team/app%2F/manifests/v1', 400],
      ['/v2/team/App/manifests/v1', 400],
      ['/v2/team%2F..%2Fsecret%2Fx/manifests/v1', 403],
      ['/v2/Team/app/manifests/v1', 403],
      ['/v2/TEAM/APP/manifests/v1', 403],
      ['/v2/./team/app/manifests/v1', 403],
      ['/v2/secret/x/../../team/app/manifests/v1', 403],
      ['/v2/secret%2Fx/manifests/v1', 403],
      ['/v2//manifests/v1', 403],
    ];
    await unchanged(async () => {
      for (const [path, alice] of cases) {
        for (const method of ['GET', 'PUT', 'DELETE']) {
          const sent = { method, body: method === 'PUT' ? '{}' : undefined, headers: { 'Content-Type': MediaTypes.ociManifest } };
          const anonymous = await call(`${r.url}${path}`, sent);
          expectError(anonymous, 401, 'UNAUTHORIZED', `${method} ${path} anonymous`);
          // The challenge names no scope: a token cannot be asked for a name outside the grammar.
          assert.match(anonymous.header('www-authenticate')!, /^Bearer realm="[^"]+",service="skiff"$/, path);
          expectError(await call(`${r.url}${path}`, { ...sent, headers: as(basic('bob'), sent.headers) }), 403, 'DENIED', `${method} ${path} bob`);
          expectError(await call(`${r.url}${path}`, { ...sent, headers: as(`Bearer ${bobToken}`, sent.headers) }), 403, 'DENIED', `${method} ${path} bob's token`);
          expectError(await call(`${r.url}${path}`, { ...sent, headers: as(`Bearer ${aliceToken}`, sent.headers) }), 403, 'DENIED', `${method} ${path} alice's token`);
          // alice's grant covers some of these raw strings; she learns only that the name is invalid.
          const status = method === 'DELETE' ? 403 : alice; // she may not delete under team/*
          expectError(await call(`${r.url}${path}`, { ...sent, headers: as(basic('alice'), sent.headers) }), status, status === 400 ? 'NAME_INVALID' : 'DENIED', `${method} ${path} alice`);
        }
      }
      // An empty name: challenged, refused, and (for a caller whose grants cover it) invalid, never "unknown endpoint".
      expectError(await call(`${r.url}/v2//blobs/uploads/`, { method: 'POST' }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2//blobs/uploads/`, { method: 'POST', headers: as(basic('alice')) }), 403, 'DENIED');
    });
  });

  it('refuses missing, malformed, expired, early, forged, alg:none and foreign tokens with 401', async () => {
    const now = Math.floor(Date.now() / 1000);
    const access = [{ type: 'repository', name: 'team/app', actions: ['pull'] }];
    const sign = (key: Buffer, kid: string, claims: Record<string, unknown>, alg = 'HS256') =>
      new SignJWT({ access, ...claims }).setProtectedHeader({ alg, kid }).sign(key);
    const base = { iss: 'skiff', sub: 'alice', aud: 'skiff', iat: now, nbf: now, exp: now + 300 };
    const none = (claims: Record<string, unknown>) =>
      `${Buffer.from(JSON.stringify({ alg: 'none', kid: 'k2' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
    const cases: Record<string, string> = {
      malformed: 'Bearer not.a.jwt',
      empty: 'Bearer ',
      garbage: 'Bearer aGVsbG8',
      expired: `Bearer ${await sign(CURRENT, 'k2', { ...base, iat: now - 600, nbf: now - 600, exp: now - 300 })}`,
      'not yet valid': `Bearer ${await sign(CURRENT, 'k2', { ...base, nbf: now + 600, exp: now + 900 })}`,
      'wrongly signed': `Bearer ${await sign(randomBytes(32), 'k2', base)}`,
      'unknown key': `Bearer ${await sign(CURRENT, 'k9', base)}`,
      'alg none': `Bearer ${none(base)}`,
      'HS512 instead of HS256': `Bearer ${await sign(Buffer.concat([CURRENT, CURRENT]), 'k2', base, 'HS512')}`,
      'another service': `Bearer ${await sign(CURRENT, 'k2', { ...base, aud: 'other-registry' })}`,
      'another issuer': `Bearer ${await sign(CURRENT, 'k2', { ...base, iss: 'evil' })}`,
      'unsupported scheme': 'Digest username="alice"',
    };
    for (const [what, header] of Object.entries(cases)) {
      const res = await call(`${r.url}/v2/team/app/manifests/v1`, { headers: { Authorization: header } });
      expectError(res, 401, 'UNAUTHORIZED');
      assert.match(res.header('www-authenticate') ?? '', /^Bearer realm=/, what);
    }
    // Valid, but for another repository: the needed scope is missing.
    const other = `Bearer ${await sign(CURRENT, 'k2', { ...base, access: [{ type: 'repository', name: 'team/other', actions: ['pull', 'push'] }] })}`;
    expectError(await call(`${r.url}/v2/team/app/manifests/v1`, { headers: { Authorization: other } }), 401, 'UNAUTHORIZED');
  });

  it('accepts tokens signed with any configured key, so keys rotate without downtime', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: 'skiff', sub: 'alice', aud: 'skiff', iat: now, nbf: now, exp: now + 60, access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] };
    for (const [kid, key] of [['k1', OLD], ['k2', CURRENT]] as const) {
      const t = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid }).sign(key);
      assert.equal((await call(`${r.url}/v2/team/app/manifests/v1`, { headers: { Authorization: `Bearer ${t}` } })).status, 200, kid);
    }
    const issued = await token('alice', 'repository:team/app:pull');
    assert.equal(JSON.parse(Buffer.from(issued.split('.')[0]!, 'base64url').toString()).kid, 'k2', 'the first key signs');
  });

  it('refuses wrong passwords (401), counts them per user and source, and locks out that source past the limit (429)', async () => {
    for (let i = 0; i < 3; i++) {
      expectError(await call(`${r.url}/v2/`, { headers: as(basic('carol', 'wrong-password')) }), 401, 'UNAUTHORIZED');
    }
    assert.equal(await r.registry.meta.users.failures('carol', '127.0.0.1'), 3);
    const locked = await call(`${r.url}/v2/`, { headers: as(basic('carol')) });
    expectError(locked, 429, 'TOOMANYREQUESTS');
    assert.ok(Number(locked.header('retry-after')) > 0);
    expectError(await call(`${r.url}/auth/token?service=skiff`, { headers: as(basic('carol')) }), 429, 'TOOMANYREQUESTS');
    // Someone guessing from one address does not lock carol out everywhere: from another source
    // her password works, and a wrong one there is counted there, apart.
    assert.equal((await call(`${r.url}/v2/`, { headers: as(basic('carol')), from: '127.0.0.2' })).status, 200, 'the right password from another source');
    assert.equal((await call(`${r.url}/auth/token?service=skiff`, { headers: as(basic('carol')), from: '127.0.0.2' })).status, 200);
    expectError(await call(`${r.url}/v2/`, { headers: as(basic('carol', 'wrong-password')), from: '127.0.0.3' }), 401, 'UNAUTHORIZED');
    assert.equal(await r.registry.meta.users.failures('carol', '127.0.0.3'), 1);
    assert.equal(await r.registry.meta.users.failures('carol', '127.0.0.1'), 3);
    assert.equal((await call(`${r.url}/v2/`, { headers: as(basic('carol')), from: '127.0.0.3' })).status, 200);
    assert.equal(await r.registry.meta.users.failures('carol', '127.0.0.3'), 0, 'a good login clears its source');
    expectError(await call(`${r.url}/v2/`, { headers: as(basic('carol')) }), 429, 'TOOMANYREQUESTS');
    // Made-up names are counted exactly as users are, and lock out the same way (no telling users apart).
    for (let i = 0; i < 3; i++) expectError(await call(`${r.url}/v2/`, { headers: as(basic(`nobody${i % 2}`, 'whatever-password')) }), 401, 'UNAUTHORIZED');
    expectError(await call(`${r.url}/v2/`, { headers: as(basic('nobody0', 'whatever-password')) }), 401, 'UNAUTHORIZED');
    expectError(await call(`${r.url}/v2/`, { headers: as(basic('nobody0', 'whatever-password')) }), 429, 'TOOMANYREQUESTS');
    assert.equal(await r.registry.meta.users.failures('nobody0', '127.0.0.1'), 3);
    // What is stored expires with its window.
    const counter = await r.db.send(new GetCommand({ TableName: r.config.dynamo.table, Key: { pk: 'AUTHFAIL#carol', sk: 'SOURCE#127.0.0.1' } }));
    assert.ok(counter.Item!.ttl > Date.now() / 1000 && counter.Item!.ttl === Math.ceil(counter.Item!.windowEnds / 1000));
    expectError(await call(`${r.url}/v2/`, { headers: as('Basic !!!not-base64') }), 401, 'UNAUTHORIZED');
    expectError(await call(`${r.url}/auth/token?service=skiff`, { headers: as(basic('alice', 'wrong')) }), 401, 'UNAUTHORIZED');
    assert.equal((await call(`${r.url}/v2/`, { headers: as(basic('alice')) })).status, 200, 'other users are unaffected');
  });

  it('never mounts from a repository the caller cannot read', async () => {
    const secretBlob = (await push('secret/x', basic('dave'))).blob;
    // bob may only pull team/app: a mount into it needs push.
    const bob = await unchanged(() => call(`${r.url}/v2/team/app/blobs/uploads/?mount=${secretBlob}&from=secret/x`, { method: 'POST', headers: as(basic('bob')) }));
    expectError(bob, 403, 'DENIED');
    // alice may push team/*, but not read secret/x: the mount becomes a plain new upload.
    const alice = await call(`${r.url}/v2/team/stolen/blobs/uploads/?mount=${secretBlob}&from=secret/x`, { method: 'POST', headers: as(basic('alice')) });
    assert.equal(alice.status, 202);
    assert.equal((await call(`${r.url}/v2/team/stolen/blobs/${secretBlob}`, { method: 'HEAD', headers: as(basic('alice')) })).status, 404);
    // From a repository she can read, it mounts.
    const own = await push('alice/app', basic('alice'));
    const ok = await call(`${r.url}/v2/team/copy/blobs/uploads/?mount=${own.blob}&from=alice/app`, { method: 'POST', headers: as(basic('alice')) });
    assert.equal(ok.status, 201);
  });

  it('lets anonymous callers pull what is granted to anonymous, and nothing else', async () => {
    const pub = await push('public/tools', await adminPushAuth());
    assert.equal((await call(`${r.url}/v2/public/tools/manifests/v1`)).status, 200);
    assert.equal((await call(`${r.url}/v2/public/tools/blobs/${pub.blob}`, { method: 'HEAD' })).status, 200);
    const tagged = (await call(`${r.url}/v2/public/tools/manifests/v1`, { method: 'HEAD' })).header('docker-content-digest');
    const data = bytes(50, 3);
    await unchanged(async () => {
      expectError(await call(`${r.url}/v2/public/tools/blobs/uploads/`, { method: 'POST' }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2/public/tools/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2/public/tools/manifests/v1`, { method: 'PUT', body: '{}', headers: { 'Content-Type': MediaTypes.ociManifest } }), 401, 'UNAUTHORIZED');
      expectError(await call(`${r.url}/v2/public/tools/manifests/${tagged}`, { method: 'DELETE' }), 401, 'UNAUTHORIZED');
    });
    assert.equal((await call(`${r.url}/v2/public/tools/manifests/v1`, { method: 'HEAD' })).header('docker-content-digest'), tagged, 'tag unchanged');
    assert.equal((await call(`${r.url}/v2/public/tools/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 404, 'nothing linked');
    const t = await token(undefined, 'repository:public/tools:pull,push', 'repository:team/app:pull');
    assert.deepEqual(decodeJwt(t).access, [{ type: 'repository', name: 'public/tools', actions: ['pull'] }]);
    assert.equal(decodeJwt(t).sub, 'anonymous');
    expectError(await call(`${r.url}/v2/team/app/manifests/v1`), 401, 'UNAUTHORIZED');
  });

  it('gives anonymous callers pull only, even if the store holds more for them', async () => {
    const dave = await adminPushAuth();
    const pub = await push('public/rw', dave);
    // Written straight into the store (the admin tool refuses it): push and delete for anonymous.
    await r.registry.meta.users.putGrant('anonymous', { pattern: 'public/rw', actions: ['pull', 'push', 'delete'] });
    await r.registry.meta.users.putGrant('anonymous', { pattern: 'open/*', actions: ['push', 'delete'] });
    try {
      const data = bytes(70, 4);
      await unchanged(async () => {
        for (const repo of ['public/rw', 'open/x']) {
          expectError(await call(`${r.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' }), 401, 'UNAUTHORIZED');
          expectError(await call(`${r.url}/v2/${repo}/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data }), 401, 'UNAUTHORIZED');
          expectError(await call(`${r.url}/v2/${repo}/manifests/v2`, { method: 'PUT', body: '{}', headers: { 'Content-Type': MediaTypes.ociManifest } }), 401, 'UNAUTHORIZED');
          expectError(await call(`${r.url}/v2/${repo}/manifests/v1`, { method: 'DELETE' }), 401, 'UNAUTHORIZED');
          expectError(await call(`${r.url}/v2/${repo}/blobs/${pub.blob}`, { method: 'DELETE' }), 401, 'UNAUTHORIZED');
        }
        // Nor does the token endpoint hand out more than pull to anonymous callers.
        const t = await token(undefined, 'repository:public/rw:pull,push,delete', 'repository:open/x:pull,push,delete');
        assert.deepEqual(decodeJwt(t).access, [{ type: 'repository', name: 'public/rw', actions: ['pull'] }]);
        expectError(await call(`${r.url}/v2/public/rw/blobs/uploads/`, { method: 'POST', headers: as(`Bearer ${t}`) }), 401, 'UNAUTHORIZED');
        expectError(await call(`${r.url}/v2/open/x/manifests/v1`), 401, 'UNAUTHORIZED');
      });
      assert.equal((await call(`${r.url}/v2/public/rw/manifests/v1`)).status, 200, 'pull still works');
      assert.equal((await call(`${r.url}/v2/public/rw/manifests/v1`, { method: 'HEAD' })).header('docker-content-digest'), pub.manifest, 'tag unchanged');
      assert.equal((await call(`${r.url}/v2/public/rw/blobs/${sha256(data)}`, { method: 'HEAD' })).status, 404, 'nothing linked');
      // A user keeps their own push: the filter is on anonymous grants only.
      assert.equal((await call(`${r.url}/v2/public/rw/blobs/uploads/`, { method: 'POST', headers: as(dave) })).status, 202);
    } finally {
      await r.registry.meta.users.deleteGrant('anonymous', 'public/rw');
      await r.registry.meta.users.deleteGrant('anonymous', 'open/*');
    }
  });

  /** A user that may push public/*: granted for this test only. */
  async function adminPushAuth(): Promise<string> {
    assert.equal((await cli('grant', 'dave', 'public/*', 'pull,push')).code, 0);
    return basic('dave');
  }

  it('issues presigned download URLs only after authorization', async () => {
    const { blob } = await push('team/dl', basic('alice'));
    expectError(await call(`${r.url}/v2/team/dl/blobs/${blob}`), 401, 'UNAUTHORIZED');
    expectError(await call(`${r.url}/v2/team/dl/blobs/${blob}`, { headers: as(basic('bob')) }), 403, 'DENIED');
    const ok = await call(`${r.url}/v2/team/dl/blobs/${blob}`, { headers: as(basic('alice')) });
    assert.equal(ok.status, 307);
    assert.match(ok.header('location')!, /X-Amz-Expires=300/);
  });

  it('lists in the catalog only what the caller may pull', async () => {
    const names = async (auth: string) => (await call(`${r.url}/v2/_catalog`, { headers: as(auth) })).json().repositories as string[];
    const alice = await names(basic('alice'));
    assert.ok(alice.includes('team/app') && alice.includes('alice/app'));
    assert.ok(!alice.includes('secret/x'));
    const bob = await names(basic('bob'));
    assert.ok(bob.every((n) => n === 'team/app' || n.startsWith('public/')), bob.join(' '));
    const paged = await call(`${r.url}/v2/_catalog?n=1`, { headers: as(basic('bob')) });
    assert.equal(paged.json().repositories.length, 1);
    const anonymous = await call(`${r.url}/v2/_catalog`);
    expectError(anonymous, 401, 'UNAUTHORIZED');
    assert.equal(anonymous.header('www-authenticate'), `Bearer realm="${r.url}/auth/token",service="skiff",scope="registry:catalog:*"`);
  });

  it('lists the catalog for a bearer whose token carries registry:catalog:*, by the user\'s own grants', async () => {
    // What alice may pull: her grants (team/*, alice/app) and the anonymous ones (public/*).
    const all = (await r.registry.manifests.repositories(undefined, undefined)).items;
    const expected = all.filter((n) => n.startsWith('team/') || n === 'alice/app' || n.startsWith('public/'));
    assert.ok(expected.includes('team/app') && expected.includes('alice/app') && expected.includes('public/tools'), expected.join(' '));
    assert.ok(all.includes('secret/x') && !expected.includes('secret/x'));

    // The flow of crane and regctl: challenged for the catalog scope, ask for it, list.
    const challenge = await call(`${r.url}/v2/_catalog`);
    expectError(challenge, 401, 'UNAUTHORIZED');
    const scope = /scope="([^"]+)"/.exec(challenge.header('www-authenticate')!)![1]!;
    assert.equal(scope, 'registry:catalog:*');
    const t = await token('alice', scope);
    assert.deepEqual(decodeJwt(t).access, [{ type: 'registry', name: 'catalog', actions: ['*'] }]);
    const listed = await call(`${r.url}/v2/_catalog`, { headers: as(`Bearer ${t}`) });
    assert.equal(listed.status, 200, listed.body.toString());
    assert.deepEqual(listed.json().repositories, expected);
    assert.deepEqual(listed.json().repositories, (await call(`${r.url}/v2/_catalog`, { headers: as(basic('alice')) })).json().repositories, 'as with Basic');
    // Paging works the same way.
    const first = await call(`${r.url}/v2/_catalog?n=2`, { headers: as(`Bearer ${t}`) });
    assert.deepEqual(first.json().repositories, expected.slice(0, 2));
    assert.match(first.header('link')!, /rel="next"/);
    // The OAuth2 password grant gives it too.
    const form = new URLSearchParams({ grant_type: 'password', username: 'dave', password: PASSWORDS.dave!, scope: 'registry:catalog:*', service: 'skiff' });
    const posted = await call(`${r.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    const daves = await call(`${r.url}/v2/_catalog`, { headers: as(`Bearer ${posted.json().access_token}`) });
    assert.deepEqual(daves.json().repositories, all.filter((n) => n === 'secret/x' || n.startsWith('public/')));

    // A token without the catalog scope is told which scope to get; one for anonymous never has it.
    const narrow = await call(`${r.url}/v2/_catalog`, { headers: as(`Bearer ${await token('alice', 'repository:team/app:pull')}`) });
    expectError(narrow, 401, 'UNAUTHORIZED');
    assert.equal(narrow.header('www-authenticate'), `Bearer realm="${r.url}/auth/token",service="skiff",scope="registry:catalog:*",error="insufficient_scope"`);
    const anon = await token(undefined, 'registry:catalog:*');
    assert.deepEqual(decodeJwt(anon).access, []);
    expectError(await call(`${r.url}/v2/_catalog`, { headers: as(`Bearer ${anon}`) }), 401, 'UNAUTHORIZED');
    // A grant revoked shows at once (no caching in this suite), though the token still stands.
    assert.equal((await cli('revoke', 'alice', 'alice/app')).code, 0);
    try {
      const after = (await call(`${r.url}/v2/_catalog`, { headers: as(`Bearer ${t}`) })).json().repositories;
      assert.deepEqual(after, expected.filter((n) => n !== 'alice/app'));
    } finally {
      assert.equal((await cli('grant', 'alice', 'alice/app', 'pull,push,delete')).code, 0);
    }
  });

  it('challenges refused credentials at the token endpoint with Basic', async () => {
    const cases: [string, Record<string, string>, string?][] = [
      ['wrong password', as(basic('alice', 'wrong-password'))],
      ['no such user', as(basic('nobody9', 'wrong-password'))],
      ['not Basic', as('Bearer abc')],
      ['malformed', as('Basic !!!')],
    ];
    for (const [what, headers] of cases) {
      const res = await call(`${r.url}/auth/token?service=skiff&scope=repository:team/app:pull`, { headers });
      expectError(res, 401, 'UNAUTHORIZED', what);
      assert.equal(res.header('www-authenticate'), 'Basic realm="skiff",charset="UTF-8"', what);
    }
    const form = new URLSearchParams({ grant_type: 'password', username: 'alice', password: 'wrong-password', service: 'skiff' });
    const posted = await call(`${r.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    expectError(posted, 401, 'UNAUTHORIZED');
    assert.equal(posted.header('www-authenticate'), 'Basic realm="skiff",charset="UTF-8"');
    await r.registry.meta.users.clearFailures('alice');
  });

  it('speaks the OAuth2 password grant at the token endpoint too, and refuses other services', async () => {
    const form = new URLSearchParams({ grant_type: 'password', username: 'alice', password: PASSWORDS.alice!, scope: 'repository:team/app:pull', service: 'skiff', client_id: 'test' });
    const res = await call(`${r.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.json().token_type, 'Bearer');
    assert.equal(res.json().scope, 'repository:team/app:pull');
    assert.equal((await call(`${r.url}/v2/team/app/manifests/v1`, { headers: as(`Bearer ${res.json().access_token}`) })).status, 200);
    const refresh = await call(`${r.url}/auth/token`, { method: 'POST', body: 'grant_type=refresh_token&refresh_token=x', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    assert.equal(refresh.status, 400);
    expectError(await call(`${r.url}/auth/token?service=elsewhere`, { headers: as(basic('alice')) }), 403, 'DENIED');
  });

  it('stores only slow salted hashes, and the admin tool never prints a password', async () => {
    const user = await r.registry.meta.users.getUser('alice');
    assert.match(user!.passwordHash, /^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    assert.ok(!user!.passwordHash.includes(PASSWORDS.alice!));
    const other = await r.registry.meta.users.getUser('bob');
    assert.notEqual(user!.passwordHash.split('$')[4], other!.passwordHash.split('$')[4], 'salts differ');
    const list = await cli('user', 'list');
    assert.equal(list.code, 0);
    assert.ok(list.out.includes('alice') && list.out.includes('  team/*: pull,push'));
    assert.ok(!list.out.join('\n').includes('password') && !list.out.join('\n').includes('scrypt'));
  });

  it('gives the admin tool clear errors and exit codes', async () => {
    secret.set('alice', 'another-password');
    const dup = await cli('user', 'add', 'alice');
    assert.equal(dup.code, 1);
    assert.match(dup.err[0]!, /already exists/);
    assert.equal((await cli('user', 'add', 'Bad Name!')).code, 2);
    assert.equal((await cli('user', 'add', 'anonymous')).code, 2);
    secret.set('erin', 'short');
    assert.match((await cli('user', 'add', 'erin')).err[0]!, /at least 8/);
    assert.equal((await cli('grant', 'alice', 'Team/*', 'pull')).code, 2);
    assert.equal((await cli('grant', 'alice', 'team/*', 'pull,admin')).code, 2);
    assert.match((await cli('grant', 'anonymous', 'x/*', 'push')).err[0]!, /only be granted pull/);
    assert.match((await cli('grant', 'nobody', 'x/*', 'pull')).err[0]!, /no user nobody/);
    assert.match((await cli('revoke', 'bob', 'x/*')).err[0]!, /no grant/);
    assert.equal((await cli('frobnicate')).code, 2);
    assert.match((await cli('key', 'new', 'k3')).out[0]!, /^k3=[A-Za-z0-9_-]{43}$/);
    // passwd, revoke and remove take effect.
    secret.set('carol', 'carol-new-password');
    assert.equal((await cli('user', 'passwd', 'carol')).code, 0);
    await r.registry.meta.users.clearFailures('carol');
    assert.equal((await call(`${r.url}/v2/`, { headers: as(basic('carol', 'carol-new-password')) })).status, 200);
    assert.equal((await cli('revoke', 'bob', 'team/app')).code, 0);
    assert.deepEqual(await r.registry.meta.users.grants('bob'), []);
    assert.equal((await cli('user', 'remove', 'bob')).code, 0);
    assert.equal(await r.registry.meta.users.getUser('bob'), undefined);
    assert.equal((await cli('user', 'remove', 'bob')).code, 1);
  });
});

describe('open registry', () => {
  const r = useRegistry('fs');
  it('needs no credentials and has no token endpoint', async () => {
    assert.equal((await call(`${r.url}/v2/`)).status, 200);
    expectError(await call(`${r.url}/auth/token`), 404, 'UNSUPPORTED');
  });

  it('calls an empty repository name invalid (400), not an unknown endpoint', async () => {
    for (const [method, path] of [
      ['POST', '/v2//blobs/uploads/'],
      ['GET', '/v2//blobs/uploads/some-id'],
      ['GET', `/v2//blobs/${sha256(bytes(1, 1))}`],
      ['GET', '/v2//manifests/v1'],
      ['GET', '/v2//tags/list'],
    ]) {
      expectError(await call(`${r.url}${path}`, { method }), 400, 'NAME_INVALID', `${method} ${path}`);
    }
  });
});
