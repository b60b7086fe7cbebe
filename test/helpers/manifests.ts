/**
 * Building and sending manifests over HTTP: blobs pushed for real, image manifests over them,
 * PUT and GET of a reference. Shared by the manifest suites.
 */
import { MediaTypes } from '../../lib/oci/manifest.js';
import { bytes, sha256 } from './data.js';
import { call } from './http.js';
import { pushInPut } from './oci.js';
import type { TestRegistry } from './registry.js';

export const CONFIG_TYPE = 'application/vnd.oci.image.config.v1+json';
export const LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface Blob {
  mediaType: string;
  digest: string;
  size: number;
}

export interface ImageShape {
  configSize: number;
  layerSizes: number[];
}

/** Helpers bound to one registry; `seed` makes each pushed blob's bytes distinct. */
export function manifestClient(r: TestRegistry, seed = 1000, shape: ImageShape = { configSize: 200, layerSizes: [500, 1500] }) {
  async function blob(repo: string, mediaType: string, size = 500): Promise<Blob> {
    const data = bytes(size, seed++);
    const { digest } = await pushInPut(r.url, repo, data);
    return { mediaType, digest, size };
  }

  /** An OCI image manifest over freshly pushed blobs: its JSON text, digest and descriptor. */
  async function image(repo: string, extra: Record<string, unknown> = {}): Promise<{ text: string; digest: string; config: Blob; layers: Blob[]; desc: Blob }> {
    const config = await blob(repo, CONFIG_TYPE, shape.configSize);
    const layers: Blob[] = [];
    for (const size of shape.layerSizes) layers.push(await blob(repo, LAYER_TYPE, size));
    const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers, ...extra });
    const digest = sha256(Buffer.from(text));
    return { text, digest, config, layers, desc: { mediaType: MediaTypes.ociManifest, digest, size: Buffer.byteLength(text) } };
  }

  function put(repo: string, reference: string, text: string | Buffer, contentType: string | undefined = MediaTypes.ociManifest) {
    return call(`${r.url}/v2/${repo}/manifests/${reference}`, {
      method: 'PUT',
      body: typeof text === 'string' ? Buffer.from(text) : text,
      headers: contentType ? { 'Content-Type': contentType } : {},
    });
  }

  const get = (repo: string, reference: string, headers: Record<string, string> = {}, method = 'GET') =>
    call(`${r.url}/v2/${repo}/manifests/${reference}`, { method, headers });

  return { blob, image, put, get };
}
