/**
 * Token keys: parsing, signing and verification across a rotation, and the SSM-backed provider
 * (with a fake parameter reader: there is no SSM here) refreshing its keys.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { tokenServiceProvider } from '../../lib/auth/keys.js';
import { InvalidToken, TokenService, parseKeys } from '../../lib/auth/tokens.js';

const secret = () => randomBytes(32).toString('base64url');
const settings = { issuer: 'skiff', service: 'skiff', ttlSeconds: 60 };
const access = [{ type: 'repository' as const, name: 'a/b', actions: ['pull'] }];

describe('token keys', () => {
  it('parse kid=secret lists and refuse short, duplicate or malformed ones', () => {
    assert.deepEqual(parseKeys(`a=${secret()}, b=${secret()}`).map((k) => k.kid), ['a', 'b']);
    assert.throws(() => parseKeys('a=c2hvcnQ'), /shorter than 32 bytes/);
    assert.throws(() => parseKeys(`a=${secret()},a=${secret()}`), /unique/);
    assert.throws(() => parseKeys('justasecret'), /kid=secret/);
    assert.throws(() => parseKeys(''), /no token keys/);
  });

  it('verify tokens from the old key after a rotation, and stop once it is retired', async () => {
    const [oldKey, newKey] = [secret(), secret()];
    const before = new TokenService(parseKeys(`old=${oldKey}`), settings);
    const during = new TokenService(parseKeys(`new=${newKey},old=${oldKey}`), settings);
    const after = new TokenService(parseKeys(`new=${newKey}`), settings);
    const issuedBefore = (await before.issue('alice', access)).token;
    const issuedDuring = (await during.issue('alice', access)).token;
    assert.deepEqual((await during.verify(issuedBefore)).access, access);
    assert.equal((await after.verify(issuedDuring)).subject, 'alice');
    await assert.rejects(after.verify(issuedBefore), InvalidToken);
  });

  it('are read from the parameter store, cached, refreshed, and kept when a refresh fails', async () => {
    const [k1, k2] = [secret(), secret()];
    let value = `k1=${k1}`;
    let reads = 0;
    let fail = false;
    let clock = 0;
    const provider = tokenServiceProvider(
      { parameter: '/skiff/test/token-keys', region: 'eu-west-1', refreshMs: 1000 },
      settings,
      async (name, region) => {
        assert.equal(name, '/skiff/test/token-keys');
        assert.equal(region, 'eu-west-1');
        reads++;
        if (fail) throw new Error('SSM unavailable');
        return value;
      },
      () => clock,
    );
    const first = await provider();
    await Promise.all([provider(), provider()]);
    assert.equal(reads, 1, 'cached');
    const token = (await first.issue('alice', access)).token;
    value = `k2=${k2},k1=${k1}`;
    clock += 1001;
    const rotated = await provider();
    assert.equal(reads, 2, 'refreshed after refreshMs');
    assert.equal((await rotated.verify(token)).subject, 'alice', 'old tokens still verify');
    assert.equal(JSON.parse(Buffer.from((await rotated.issue('bob', access)).token.split('.')[0]!, 'base64url').toString()).kid, 'k2');
    fail = true;
    clock += 1001;
    assert.equal(await provider(), rotated, 'a failed refresh keeps the known keys');
    await assert.rejects(
      tokenServiceProvider({ parameter: '/x', region: 'r' }, settings, async () => {
        throw new Error('SSM unavailable');
      })(),
      /SSM unavailable/,
    );
  });
});
