/**
 * Body length checks and configuration parsing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../../lib/oci/errors.js';
import { checkDeclared, checked } from '../../lib/registry/body.js';
import { ConfigError, loadConfig } from '../../lib/config.js';

async function* chunks(...sizes: number[]) {
  for (const n of sizes) yield new Uint8Array(n);
}

async function drain(source: AsyncIterable<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const c of source) n += c.length;
  return n;
}

const isError = (code: string, status: number) => (e: unknown) => e instanceof RegistryError && e.code === code && e.status === status;

describe('declared lengths', () => {
  it('agree between Content-Length and Content-Range, or fail before reading', () => {
    assert.equal(checkDeclared({ stream: chunks(), length: 10 }, { start: 0, end: 9 }, 0), 10);
    assert.equal(checkDeclared({ stream: chunks(), length: undefined }, { start: 5, end: 9 }, 0), 5);
    assert.equal(checkDeclared({ stream: chunks(), length: undefined }, undefined, 0), undefined);
    assert.throws(() => checkDeclared({ stream: chunks(), length: 9 }, { start: 0, end: 9 }, 0), isError('BLOB_UPLOAD_INVALID', 400));
  });

  it('refuse a declared chunk over the maximum with 413 and the limit', () => {
    assert.throws(
      () => checkDeclared({ stream: chunks(), length: 11 }, undefined, 10),
      (e: unknown) => isError('SIZE_INVALID', 413)(e) && (e as RegistryError).headers['OCI-Chunk-Max-Length'] === '10',
    );
  });
});

describe('checked bodies', () => {
  it('pass exactly the declared bytes through and observe each chunk', async () => {
    let seen = 0;
    assert.equal(await drain(checked(chunks(3, 4, 3), 10, 0, (c) => void (seen += c.length))), 10);
    assert.equal(seen, 10);
  });

  it('fail as soon as a body runs past its declared length, before passing the excess on', async () => {
    let passed = 0;
    await assert.rejects(async () => {
      for await (const c of checked(chunks(5, 5, 5), 10, 0)) passed += c.length;
    }, isError('BLOB_UPLOAD_INVALID', 400));
    assert.equal(passed, 10);
  });

  it('fail at the end when a body falls short', async () => {
    await assert.rejects(drain(checked(chunks(5), 10, 0)), isError('BLOB_UPLOAD_INVALID', 400));
  });

  it('fail with 413 once an undeclared body passes the maximum', async () => {
    await assert.rejects(drain(checked(chunks(6, 6), undefined, 10)), isError('SIZE_INVALID', 413));
  });
});

describe('configuration', () => {
  it('has documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.storage, 'fs');
    assert.equal(c.http.host, '127.0.0.1');
    assert.equal(c.http.port, 5000);
    assert.equal(c.s3.partSize, 8 * 1024 * 1024);
    assert.equal(c.s3.checksums, 'WHEN_REQUIRED');
    assert.equal(c.blobs.deleteEnabled, true);
    assert.equal(c.blobs.redirect, false);
    assert.equal(c.uploads.maxChunkBytes, 0);
    assert.equal(c.s3.forcePathStyle, false);
    assert.equal(loadConfig({ S3_ENDPOINT: 'http://127.0.0.1:9000' }).s3.forcePathStyle, true);
  });

  it('refuses malformed values with a message naming the variable', () => {
    for (const env of [
      { SKIFF_STORAGE: 'gcs' },
      { SKIFF_PORT: 'eighty' },
      { S3_PART_SIZE: '1024' },
      { SKIFF_DELETE_ENABLED: 'maybe' },
      { S3_ACCESS_KEY_ID: 'only-half' },
      { S3_CHECKSUMS: 'ALWAYS' },
    ]) {
      const name = Object.keys(env)[0]!;
      assert.throws(() => loadConfig(env), (e: unknown) => e instanceof ConfigError && e.message.includes(name.startsWith('S3_ACCESS') ? 'S3_ACCESS_KEY_ID' : name), name);
    }
  });
});
