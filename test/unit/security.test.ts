/**
 * The small pieces of the login hardening, alone: the verification gate, strict Basic
 * decoding, challenge quoting, trusted-proxy addresses and their configuration.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseBasic, quoted } from '../../lib/auth/authorizer.js';
import { VerificationGate } from '../../lib/auth/gate.js';
import { ConfigError, isCidr, loadConfig } from '../../lib/config.js';
import { TrustedProxies, clientView } from '../../lib/http/forwarded.js';
import { RegistryError } from '../../lib/oci/errors.js';
import type { RegistryRequest } from '../../lib/http/types.js';

describe('VerificationGate', () => {
  it('runs at most `concurrency` at once, queues `queue` more, and turns the rest away', async () => {
    const gate = new VerificationGate(2, 1);
    let running = 0;
    let peak = 0;
    const releases: (() => void)[] = [];
    const work = () =>
      new Promise<void>((done) => {
        running++;
        peak = Math.max(peak, running);
        releases.push(() => {
          running--;
          done();
        });
      });
    const tickets = [gate.admit(), gate.admit(), gate.admit()];
    assert.ok(tickets.every(Boolean));
    assert.equal(gate.admit(), undefined, 'the line is full');
    const runs = tickets.map((t) => t!.run(work).finally(() => t!.leave()));
    await new Promise((r) => setImmediate(r));
    assert.equal(running, 2);
    releases.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.equal(running, 2, 'the waiting one took the freed slot');
    while (releases.length) releases.shift()!();
    await Promise.all(runs);
    assert.equal(peak, 2);
    assert.ok(gate.admit(), 'places are given back');
  });

  it('gives a place back when its holder leaves without running', () => {
    const gate = new VerificationGate(1, 0);
    const t = gate.admit()!;
    assert.equal(gate.admit(), undefined);
    t.leave();
    t.leave();
    assert.ok(gate.admit());
    assert.equal(gate.admit(), undefined, 'leaving twice gives back one place');
  });
});

describe('parseBasic', () => {
  const b64 = (s: Buffer | string) => Buffer.from(s).toString('base64');
  it('decodes canonical base64 of UTF-8', () => {
    assert.deepEqual(parseBasic(b64('ülla:pa:ss')), { user: 'ülla', password: 'pa:ss' });
  });
  it('refuses invalid UTF-8, trailing garbage, missing padding and no colon with 401', () => {
    for (const value of [b64(Buffer.from([0x61, 0x3a, 0xff])), `${b64('a:b')}=x`, `${b64('a:b')} x`, b64('ab:c').replace(/=+$/, ''), b64('no-colon'), '!!!']) {
      assert.throws(() => parseBasic(value), (err: unknown) => err instanceof RegistryError && err.status === 401, value);
    }
  });
});

describe('quoted', () => {
  it('escapes quotes and backslashes as an RFC 9110 quoted-string', () => {
    assert.equal(quoted('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(quoted('plain'), '"plain"');
  });
});

describe('trusted proxies', () => {
  const req = (sourceIp: string, headers: Record<string, string> = {}): RegistryRequest => ({
    method: 'GET',
    path: '/v2/',
    query: new URLSearchParams(),
    headers: { host: 'reg.example', ...headers },
    body: { stream: (async function* () {})(), length: 0 },
    sourceIp,
  });
  const proxies = new TrustedProxies(['10.0.0.0/8', '::1']);

  it('believes forwarding headers only from a trusted peer, and takes the rightmost untrusted hop', () => {
    const fwd = { 'x-forwarded-for': '1.1.1.1, 2.2.2.2, 10.1.1.1', 'x-forwarded-host': 'public.example', 'x-forwarded-proto': 'https' };
    assert.deepEqual(clientView(req('10.2.2.2', fwd), proxies), { source: '2.2.2.2', proto: 'https', host: 'public.example' });
    assert.deepEqual(clientView(req('::ffff:10.2.2.2', fwd), proxies).source, '2.2.2.2', 'IPv4-mapped peers');
    assert.deepEqual(clientView(req('3.3.3.3', fwd), proxies), { source: '3.3.3.3', proto: 'http', host: 'reg.example' });
    assert.equal(clientView(req('10.2.2.2', { 'x-forwarded-for': '10.3.3.3' }), proxies).source, '10.3.3.3', 'all hops ours: the leftmost');
    assert.equal(clientView(req('10.2.2.2', { 'x-forwarded-for': 'junk, 10.3.3.3' }), proxies).source, '10.3.3.3', 'a hop that is no address ends the walk');
    assert.equal(clientView(req('10.2.2.2', { 'x-forwarded-proto': 'gopher' }), proxies).proto, 'http');
    assert.equal(clientView(req('10.2.2.2'), new TrustedProxies([])).source, '10.2.2.2', 'no proxies configured');
  });

  it('takes SKIFF_TRUSTED_PROXIES as addresses or CIDRs and refuses anything else', () => {
    assert.deepEqual(loadConfig({ SKIFF_TRUSTED_PROXIES: '10.0.0.0/8, fd00::/8,127.0.0.1' }).auth.trustedProxies, ['10.0.0.0/8', 'fd00::/8', '127.0.0.1']);
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '::1/129', '10.0.0.0/x']) {
      assert.equal(isCidr(bad), false, bad);
      assert.throws(() => loadConfig({ SKIFF_TRUSTED_PROXIES: bad }), ConfigError, bad);
    }
  });
});
