/**
 * parseManifest and media-type detection, without a registry: encoding, required fields, and
 * the artifactType the referrers API reports.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../../lib/oci/errors.js';
import { MediaTypes, declaredType, parseManifest } from '../../lib/oci/manifest.js';

const CONFIG = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'c'.repeat(64)}`, size: 10 };
const LAYER = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${'1'.repeat(64)}`, size: 20 };
const CHILD = { mediaType: MediaTypes.ociManifest, digest: `sha256:${'2'.repeat(64)}`, size: 30 };

const enc = (doc: unknown) => Buffer.from(JSON.stringify(doc));
const image = (extra: Record<string, unknown> = {}) => ({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: CONFIG, layers: [LAYER], ...extra });
const index = (extra: Record<string, unknown> = {}) => ({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [CHILD], ...extra });

function assertInvalid(fn: () => unknown, reason?: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RegistryError, String(err));
    assert.equal(err.code, 'MANIFEST_INVALID');
    assert.equal(err.status, 400);
    if (reason) assert.match(err.message, reason);
    return true;
  });
}

describe('parseManifest: encoding', () => {
  it('refuses a body that is not valid UTF-8 (a Latin-1 byte in an annotation)', () => {
    const text = JSON.stringify(image({ annotations: { note: 'caf_' } }));
    const bytes = Buffer.from(text, 'latin1');
    bytes[bytes.indexOf('caf_') + 3] = 0xe9; // "é" in Latin-1: a lone continuation-less lead byte in UTF-8
    assertInvalid(() => parseManifest(bytes, MediaTypes.ociManifest), /UTF-8/);
  });

  it('refuses truncated multi-byte sequences and overlong encodings', () => {
    for (const bad of [[0xc3], [0xe2, 0x82], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xff]]) {
      const text = JSON.stringify(image({ annotations: { note: 'X' } }));
      const at = text.indexOf('"X"') + 1;
      const bytes = Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(bad), Buffer.from(text.slice(at + 1))]);
      assertInvalid(() => parseManifest(bytes, MediaTypes.ociManifest));
    }
  });

  it('accepts valid multi-byte UTF-8 and keeps it exactly', () => {
    const m = parseManifest(enc(image({ annotations: { note: 'café ✓ 𝄞' } })), MediaTypes.ociManifest);
    assert.deepEqual(m.annotations, { note: 'café ✓ 𝄞' });
  });

  it('refuses a byte-order mark, as JSON does not allow one', () => {
    assertInvalid(() => parseManifest(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), enc(image())]), MediaTypes.ociManifest));
  });
});

describe('parseManifest: required fields', () => {
  it('requires layers in an OCI image manifest; an empty array is fine', () => {
    const { layers: _, ...noLayers } = image();
    assertInvalid(() => parseManifest(enc(noLayers), MediaTypes.ociManifest), /layers/);
    assertInvalid(() => parseManifest(enc(noLayers), undefined), /layers/);
    assertInvalid(() => parseManifest(enc({ ...noLayers, layers: null }), MediaTypes.ociManifest), /layers/);
    assert.deepEqual(parseManifest(enc(image({ layers: [] })), MediaTypes.ociManifest).blobs, [CONFIG]);
  });

  it('requires layers in a Docker manifest and manifests in an index', () => {
    assertInvalid(() => parseManifest(enc({ schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config: CONFIG }), MediaTypes.dockerManifest), /layers/);
    assertInvalid(() => parseManifest(enc({ schemaVersion: 2, mediaType: MediaTypes.ociIndex }), MediaTypes.ociIndex), /manifests/);
  });
});

describe('parseManifest: artifactType for the referrers API', () => {
  it('an image manifest reports its artifactType when non-empty, else its config media type', () => {
    assert.equal(parseManifest(enc(image({ artifactType: 'application/vnd.example.sbom' })), undefined).artifactType, 'application/vnd.example.sbom');
    assert.equal(parseManifest(enc(image()), undefined).artifactType, CONFIG.mediaType);
    assert.equal(parseManifest(enc(image({ artifactType: '' })), undefined).artifactType, CONFIG.mediaType);
  });

  it('an index reports its artifactType when non-empty, else none', () => {
    assert.equal(parseManifest(enc(index({ artifactType: 'application/vnd.example.bundle' })), undefined).artifactType, 'application/vnd.example.bundle');
    assert.equal(parseManifest(enc(index()), undefined).artifactType, undefined);
    assert.equal(parseManifest(enc(index({ artifactType: '' })), undefined).artifactType, undefined);
  });

  it('refuses an artifactType that is not a string', () => {
    assertInvalid(() => parseManifest(enc(image({ artifactType: 3 })), undefined), /artifactType/);
  });
});

describe('media-type detection', () => {
  it('uses Content-Type, else the document mediaType, else the shape of an OCI document', () => {
    assert.equal(declaredType(MediaTypes.ociIndex, {}), MediaTypes.ociIndex);
    assert.equal(declaredType('application/vnd.oci.image.manifest.v1+json; charset=utf-8', {}), MediaTypes.ociManifest);
    assert.equal(declaredType('application/json', { mediaType: MediaTypes.dockerList }), MediaTypes.dockerList);
    assert.equal(declaredType(undefined, { manifests: [] }), MediaTypes.ociIndex);
    assert.equal(declaredType(undefined, { config: {} }), MediaTypes.ociManifest);
    assertInvalid(() => declaredType(MediaTypes.ociManifest, { mediaType: MediaTypes.ociIndex }), /disagree/);
    assertInvalid(() => declaredType(undefined, {}), /cannot tell/);
  });

  it('refuses a manifest of one type sent as another', () => {
    assertInvalid(() => parseManifest(enc(image()), MediaTypes.ociIndex));
    assertInvalid(() => parseManifest(enc({ ...index(), mediaType: undefined }), MediaTypes.ociManifest));
  });
});
