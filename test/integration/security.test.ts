/**
 * Hardening against someone who can reach the registry (issue 12), over HTTP on the real
 * backends: logins under attack (concurrent guesses, lockout by a shared address, made-up names
 * by the thousand, timing), what the challenge says with hostile headers, strict credentials,
 * tokens kept out of caches, manifest URLs, stored hashes with weak parameters, and file modes.
 * The embedded DynamoDB Local is covered in security-embedded.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { run as admin } from '../../lib/admin/cli.js';
import { hashPassword } from '../../lib/auth/passwords.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { bytes, sha256 } from '../helpers/data.js';
import { call, type Received } from '../helpers/http.js';
import { assertPrivateTree } from '../helpers/modes.js';
import { expectError } from '../helpers/oci.js';
import { delta, useRegistry } from '../helpers/registry.js';

const KEYS = `k1=${randomBytes(32).toString('base64url')}`;
/** The one address whose forwarding headers are believed. */
const PROXY = '127.0.0.9';
const LIMIT = 10;
const SOURCE_LIMIT = 30;
const PASSWORD = 'erin-password-1';

const basicOf = (raw: Buffer | string) => `Basic ${Buffer.from(raw).toString('base64')}`;
const basic = (user: string, password: string) => basicOf(`${user}:${password}`);

/** Auth-params of a challenge, parsed as RFC 9110 says (quoted-strings unescaped). */
function challengeParams(header: string): Record<string, string> {
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)=(?:"((?:[^"\\]|\\.)*)"|([^,"]*))(?:,|$)/y;
  re.lastIndex = header.indexOf(' ') + 1;
  while (re.lastIndex < header.length) {
    const m = re.exec(header);
    if (!m) throw new Error(`unparsable challenge: ${header}`);
    params[m[1]!] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!;
  }
  return params;
}

describe('security: logins, challenges and credentials', () => {
  const r = useRegistry('fs', {
    env: {
      SKIFF_AUTH: 'required',
      SKIFF_TOKEN_KEYS: KEYS,
      SKIFF_AUTH_FAILURE_LIMIT: String(LIMIT),
      SKIFF_AUTH_SOURCE_FAILURE_LIMIT: String(SOURCE_LIMIT),
      SKIFF_AUTH_CACHE_SECONDS: '0',
      SKIFF_TRUSTED_PROXIES: `${PROXY}/32`,
    },
  });
  const secrets = new Map<string, string>();
  const cli = (...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    return admin(argv, () => r.registry.meta.users, { out: (l) => out.push(l), err: (l) => err.push(l), readSecret: async () => secrets.get(argv[2]!) ?? '' }).then((code) => ({ code, out, err }));
  };
  const v2 = (authorization: string, from: string, extra: Record<string, string> = {}) => call(`${r.url}/v2/`, { headers: { Authorization: authorization, ...extra }, from });

  before(async () => {
    secrets.set('erin', PASSWORD);
    assert.equal((await cli('user', 'add', 'erin')).code, 0);
    assert.equal((await cli('grant', 'erin', 'erin/*', 'pull,push')).code, 0);
  });

  it('evaluates at most the limit of 48 concurrent wrong passwords; the rest get 429', async () => {
    const from = '127.0.0.20';
    const answers = await Promise.all(Array.from({ length: 48 }, () => v2(basic('erin', 'wrong-password'), from)));
    const refused = answers.filter((a) => a.status === 401).length;
    assert.ok(refused <= LIMIT, `${refused} wrong passwords were evaluated, the limit is ${LIMIT}`);
    for (const a of answers.filter((x) => x.status !== 401)) {
      expectError(a, 429, 'TOOMANYREQUESTS');
      assert.ok(Number(a.header('retry-after')) > 0);
    }
    assert.ok((await r.registry.meta.users.failures('erin', from)) <= LIMIT);
    expectError(await v2(basic('erin', PASSWORD), from), 429, 'TOOMANYREQUESTS', 'that source stays locked');
  });

  it('behind a trusted proxy, locks out the guessing client only; the right password from another client works; unlock clears', async () => {
    const guesser = { 'X-Forwarded-For': '203.0.113.7' };
    for (let i = 0; i < LIMIT; i++) expectError(await v2(basic('erin', 'wrong-password'), PROXY, guesser), 401, 'UNAUTHORIZED');
    expectError(await v2(basic('erin', PASSWORD), PROXY, guesser), 429, 'TOOMANYREQUESTS');
    // Another client through the same proxy (the client's own claim left of it is ignored).
    assert.equal((await v2(basic('erin', PASSWORD), PROXY, { 'X-Forwarded-For': `203.0.113.7, 198.51.100.2` })).status, 200);
    assert.equal((await call(`${r.url}/auth/token?service=skiff`, { headers: { Authorization: basic('erin', PASSWORD), 'X-Forwarded-For': '198.51.100.2' }, from: PROXY })).status, 200);
    assert.equal(await r.registry.meta.users.failures('erin', '203.0.113.7'), LIMIT);
    // A client that is no proxy cannot pick its address: its X-Forwarded-For is ignored.
    const spoofer = '127.0.0.21';
    for (let i = 0; i < LIMIT; i++) expectError(await v2(basic('erin', 'wrong-password'), spoofer, { 'X-Forwarded-For': `192.0.2.${i}` }), 401, 'UNAUTHORIZED');
    expectError(await v2(basic('erin', PASSWORD), spoofer, { 'X-Forwarded-For': '192.0.2.200' }), 429, 'TOOMANYREQUESTS');
    // The operator lets the locked-out client back in.
    const unlock = await cli('user', 'unlock', 'erin');
    assert.equal(unlock.code, 0, unlock.err.join('\n'));
    assert.equal((await v2(basic('erin', PASSWORD), PROXY, guesser)).status, 200);
    assert.equal((await v2(basic('erin', PASSWORD), spoofer)).status, 200);
    assert.match((await cli('user', 'unlock', 'nobody')).err[0]!, /no user nobody/);
  });

  it('budgets failed logins per source across names: made-up names by the dozen get 429, other sources do not', async () => {
    const from = '127.0.0.22';
    for (let i = 0; i < SOURCE_LIMIT; i++) expectError(await v2(basic(`made-up-${i}`, 'whatever-password'), from), 401, 'UNAUTHORIZED', `name ${i}`);
    expectError(await v2(basic('made-up-new', 'whatever-password'), from), 429, 'TOOMANYREQUESTS');
    expectError(await v2(basic('erin', PASSWORD), from), 429, 'TOOMANYREQUESTS', 'the guessing source is refused, whatever the name');
    assert.equal((await v2(basic('erin', PASSWORD), '127.0.0.23')).status, 200, 'another source is not');
  });

  it('takes the same steps for a wrong password of a real user as for a made-up name', async () => {
    const steps = async (user: string, from: string) => {
      const before = { ...r.dynamoCalls };
      expectError(await v2(basic(user, 'wrong-password'), from), 401, 'UNAUTHORIZED');
      return delta(before, r.dynamoCalls);
    };
    const real = await steps('erin', '127.0.0.24');
    const madeUp = await steps('nobody-at-all', '127.0.0.25');
    assert.deepEqual(real, madeUp);
    await r.registry.meta.users.clearFailures('erin');
  });

  it('keeps an authorized blob read answered while a burst of made-up-name logins waits, and turns away a burst past the queue', async () => {
    const blob = bytes(64 * 1024, 7);
    const token = (await call(`${r.url}/auth/token?service=skiff&scope=repository:erin/app:pull,push`, { headers: { Authorization: basic('erin', PASSWORD) }, from: '127.0.0.26' })).json().token;
    const bearer = { Authorization: `Bearer ${token}` };
    const put = await call(`${r.url}/v2/erin/app/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob, headers: bearer });
    assert.equal(put.status, 201, put.body.toString());

    // The read starts once the logins' password checks are under way (the first has answered 401).
    let answered = 0;
    let firstChecked!: () => void;
    const checking = new Promise<void>((ok) => (firstChecked = ok));
    const burst = Array.from({ length: 48 }, (_, i) =>
      v2(basic(`burst-${i}`, 'whatever-password'), `127.0.1.${i + 1}`).then((res) => {
        answered++;
        if (res.status === 401) firstChecked();
        return res;
      }),
    );
    await checking;
    const get = await call(`${r.url}/v2/erin/app/blobs/${sha256(blob)}`, { headers: bearer });
    const pendingAtGet = burst.length - answered;
    assert.equal(get.status, 200);
    assert.ok(get.body.equals(blob));
    const answers = await Promise.all(burst);
    const turnedAway = answers.filter((a) => a.status === 429);
    const queued = answers.length - turnedAway.length;
    assert.ok(pendingAtGet >= queued / 2, `the read waited for the logins: only ${pendingAtGet} of ${queued} queued logins were still pending when it was answered`);
    assert.ok(turnedAway.length > 0, 'past the queue, logins are turned away');
    for (const a of turnedAway) {
      expectError(a, 429, 'TOOMANYREQUESTS');
      assert.equal(a.header('retry-after'), '1');
    }
    for (const a of answers.filter((x) => x.status !== 429)) expectError(a, 401, 'UNAUTHORIZED');
  });

  it('escapes the challenge parameters and believes X-Forwarded-Host/-Proto only from a trusted proxy', async () => {
    const hostile = 'evil.example",service="other",scope="repository:erin/app:push,pull",x="\\';
    const res = await call(`${r.url}/v2/erin/app/manifests/v1`, { headers: { Host: hostile } });
    expectError(res, 401, 'UNAUTHORIZED');
    const params = challengeParams(res.header('www-authenticate')!);
    assert.deepEqual(params, { realm: `http://${hostile}/auth/token`, service: 'skiff', scope: 'repository:erin/app:pull' });

    const forwarded = { 'X-Forwarded-Host': 'registry.example.com', 'X-Forwarded-Proto': 'https' };
    const direct = await call(`${r.url}/v2/`, { headers: { Host: 'direct.example', ...forwarded }, from: '127.0.0.27' });
    assert.equal(challengeParams(direct.header('www-authenticate')!).realm, 'http://direct.example/auth/token');
    const proxied = await call(`${r.url}/v2/`, { headers: { Host: 'internal:5000', ...forwarded }, from: PROXY });
    assert.equal(challengeParams(proxied.header('www-authenticate')!).realm, 'https://registry.example.com/auth/token');
  });

  it('decodes Basic credentials strictly: invalid UTF-8 and trailing garbage get 401, real UTF-8 works', async () => {
    // A hash stored for a password holding U+FFFD (the admin tool now refuses to make one).
    const now = Date.now();
    await r.registry.meta.users.putUser({ name: 'frank', passwordHash: await hashPassword('pass\uFFFDword-1'), createdAt: now, updatedAt: now });
    await r.registry.meta.users.putUser({ name: 'grete', passwordHash: await hashPassword('pässwörd-ü-1'), createdAt: now, updatedAt: now });
    const from = '127.0.0.28';
    const invalid = Buffer.concat([Buffer.from('frank:pass'), Buffer.from([0xff]), Buffer.from('word-1')]);
    expectError(await v2(basicOf(invalid), from), 401, 'UNAUTHORIZED', 'an invalid byte is not U+FFFD');
    expectError(await call(`${r.url}/auth/token?service=skiff`, { headers: { Authorization: basicOf(invalid) }, from }), 401, 'UNAUTHORIZED');
    assert.equal((await v2(basic('grete', 'pässwörd-ü-1'), from)).status, 200);
    expectError(await v2(`${basic('grete', 'pässwörd-ü-1')}=garbage`, from), 401, 'UNAUTHORIZED', 'trailing garbage after padding');
    expectError(await v2(`${basic('grete', 'pässwörd-ü-1')} trailing`, from), 401, 'UNAUTHORIZED', 'trailing words');
    // The admin tool refuses such a password outright.
    secrets.set('frank2', 'pass\uFFFDword-1');
    const made = await cli('user', 'add', 'frank2');
    assert.equal(made.code, 1);
    assert.match(made.err[0]!, /U\+FFFD/);
  });

  it('refuses a stored hash whose scrypt parameters are below the ones Skiff writes', async () => {
    const strong = (await hashPassword('weak-params-1')).split('$');
    // The same salt and password, derived with N=1024: what someone able to write the item might plant.
    const { scryptSync } = await import('node:crypto');
    const salt = Buffer.from(strong[4]!, 'base64');
    const weak = ['scrypt', 1024, 8, 1, strong[4], scryptSync('weak-params-1', salt, 32, { N: 1024, r: 8, p: 1 }).toString('base64')].join('$');
    const now = Date.now();
    await r.registry.meta.users.putUser({ name: 'henry', passwordHash: weak, createdAt: now, updatedAt: now });
    expectError(await v2(basic('henry', 'weak-params-1'), '127.0.0.29'), 401, 'UNAUTHORIZED');
    await r.registry.meta.users.putUser({ name: 'henry', passwordHash: strong.join('$'), createdAt: now, updatedAt: now });
    assert.equal((await v2(basic('henry', 'weak-params-1'), '127.0.0.29')).status, 200);
  });

  it('keeps token responses out of caches', async () => {
    const got = await call(`${r.url}/auth/token?service=skiff`, { headers: { Authorization: basic('erin', PASSWORD) }, from: '127.0.0.30' });
    assert.equal(got.status, 200);
    assert.equal(got.header('cache-control'), 'no-store');
    const form = new URLSearchParams({ grant_type: 'password', username: 'erin', password: PASSWORD, service: 'skiff' });
    const posted = await call(`${r.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, from: '127.0.0.30' });
    assert.equal(posted.status, 200);
    assert.equal(posted.header('cache-control'), 'no-store');
  });

  it('refuses manifest layer URLs other than http(s) (400 MANIFEST_INVALID), as distribution does', async () => {
    const auth = { Authorization: basic('erin', PASSWORD) };
    const config = Buffer.from('{}');
    const post = await call(`${r.url}/v2/erin/urls/blobs/uploads/?digest=${sha256(config)}`, { method: 'POST', body: config, headers: auth, from: '127.0.0.31' });
    assert.equal(post.status, 201);
    const manifest = (url: string) =>
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: sha256(bytes(10, 3)), size: 10, urls: [url] }],
      });
    const put = (url: string): Promise<Received> =>
      call(`${r.url}/v2/erin/urls/manifests/v1`, { method: 'PUT', body: manifest(url), headers: { ...auth, 'Content-Type': MediaTypes.ociManifest }, from: '127.0.0.31' });
    for (const url of ['file:///etc/passwd', 'ftp://example.com/layer', 'https://example.com/layer#frag', 'not a url']) {
      expectError(await put(url), 400, 'MANIFEST_INVALID', url);
    }
    assert.equal((await call(`${r.url}/v2/erin/urls/manifests/v1`, { headers: auth, from: '127.0.0.31' })).status, 404, 'nothing was stored');
    assert.equal((await put('https://example.com/layer')).status, 201);
  });

  it('creates blob directories 0700 and files 0600', async () => {
    const seen = await assertPrivateTree(join(r.config.dataDir, 'storage'));
    assert.ok(seen.length > 0, 'the tests above stored blobs');
  });
});
