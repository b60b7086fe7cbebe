/**
 * Digests, repository names and tags against the spec's grammars.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EMPTY_SHA256, parseDigest, tryParseDigest } from '../../lib/oci/digest.js';
import { RegistryError } from '../../lib/oci/errors.js';
import { isValidName, isValidTag } from '../../lib/oci/names.js';

describe('digests', () => {
  it('accepts sha256 and sha512 in lowercase hex of the right length', () => {
    assert.equal(tryParseDigest(EMPTY_SHA256)?.algorithm, 'sha256');
    assert.equal(tryParseDigest(`sha512:${'a'.repeat(128)}`)?.algorithm, 'sha512');
  });

  it('refuses malformed or unsupported digests with DIGEST_INVALID and a reason', () => {
    const cases: [string | undefined, RegExp][] = [
      [undefined, /missing/],
      ['', /missing/],
      ['sha256', /form algorithm:hex/],
      [`sha256:${'A'.repeat(64)}`, /lowercase/],
      [`sha256:${'a'.repeat(65)}`, /wrong length/],
      [`sha512:${'a'.repeat(64)}`, /wrong length/],
      [`md5:${'a'.repeat(32)}`, /unsupported algorithm/],
      [`sha256+b64u:${'a'.repeat(43)}`, /unsupported algorithm/],
      ['sha256:../../etc', /form algorithm:hex/],
    ];
    for (const [input, reason] of cases) {
      assert.throws(
        () => parseDigest(input),
        (err: unknown) => err instanceof RegistryError && err.code === 'DIGEST_INVALID' && err.status === 400 && reason.test(err.message),
        String(input),
      );
    }
  });
});

describe('repository names', () => {
  it('accepts the spec grammar', () => {
    for (const name of ['a', 'library/ubuntu', 'a0/b-1/c_2', 'x.y/z__w', 'a--b', 'a/b/c/d/e/f', 'a'.repeat(255)]) {
      assert.ok(isValidName(name), name);
    }
  });

  it('refuses everything else', () => {
    for (const name of ['', 'A', 'a/', '/a', 'a//b', 'a/../b', '.', 'a/.', '-a', 'a-', 'a_', 'a___b', 'a..b', 'a/b c', 'a%2fb', 'é', 'a'.repeat(256)]) {
      assert.ok(!isValidName(name), name);
    }
  });
});

describe('tags', () => {
  it('follow [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}', () => {
    for (const tag of ['latest', 'v1.2.3', '_x', 'A-b_c.d', 'a'.repeat(128)]) assert.ok(isValidTag(tag), tag);
    for (const tag of ['', '.x', '-x', 'a/b', 'a:b', 'a'.repeat(129), 'sha256:abc']) assert.ok(!isValidTag(tag), tag);
  });
});
