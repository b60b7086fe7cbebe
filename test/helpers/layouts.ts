/**
 * OCI image layouts built on the fly for the real-client tests: real tar archives, gzipped,
 * with a real config (rootfs.diff_ids), deterministic from a seed. Also a multi-architecture
 * index and an artifact with a `subject`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { bytes } from './data.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
  artifactType?: string;
}

export interface Layout {
  dir: string;
  /** Descriptors of every blob written, by digest. */
  blobs: Map<string, Buffer>;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export async function newLayout(): Promise<Layout> {
  // Lowercase: podman names an image pulled from an oci: layout after its directory.
  const dir = join(tmpdir(), `skiff-layout-${randomBytes(6).toString('hex')}`);
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return { dir, blobs: new Map() };
}

async function put(layout: Layout, mediaType: string, data: Buffer, extra: Partial<Descriptor> = {}): Promise<Descriptor> {
  const digest = sha(data);
  await writeFile(join(layout.dir, 'blobs', 'sha256', digest.slice(7)), data);
  layout.blobs.set(digest, data);
  return { mediaType, digest, size: data.length, ...extra };
}

/** A ustar archive of the given files. */
export function tar(files: { name: string; data: Buffer }[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of files) {
    const header = Buffer.alloc(512);
    header.write(f.name, 0, 100);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write(f.data.length.toString(8).padStart(11, '0') + '\0', 124);
    header.write('14000000000\0', 136); // a fixed mtime keeps layers deterministic
    header.fill(' ', 148, 156);
    header.write('0', 156);
    header.write('ustar\0', 257);
    header.write('00', 263);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    parts.push(header, f.data, Buffer.alloc((512 - (f.data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** An image: layers of (about) the given sizes, each a gzipped tar with a file of random bytes. */
export async function addImage(layout: Layout, seed: number, layerSizes: number[], platform = { architecture: 'amd64', os: 'linux' }): Promise<Descriptor> {
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const [i, size] of layerSizes.entries()) {
    const archive = tar([
      { name: `etc/skiff-${seed}-${i}.txt`, data: Buffer.from(`layer ${i} of image ${seed}\n`) },
      { name: `data/blob-${seed}-${i}.bin`, data: bytes(size, seed * 100 + i) },
    ]);
    diffIds.push(sha(archive));
    layers.push(await put(layout, 'application/vnd.oci.image.layer.v1.tar+gzip', gzipSync(archive, { level: 1 })));
  }
  const config = await put(
    layout,
    'application/vnd.oci.image.config.v1+json',
    Buffer.from(JSON.stringify({ architecture: platform.architecture, os: platform.os, config: { Cmd: ['/bin/true'] }, rootfs: { type: 'layers', diff_ids: diffIds } })),
  );
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
  return put(layout, OCI_MANIFEST, manifest, { platform });
}

/** A multi-architecture index over two images. */
export async function addIndex(layout: Layout, seed: number): Promise<Descriptor> {
  const amd = await addImage(layout, seed, [30_000], { architecture: 'amd64', os: 'linux' });
  const arm = await addImage(layout, seed + 1, [40_000], { architecture: 'arm64', os: 'linux' });
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [amd, arm] }));
  return put(layout, OCI_INDEX, index);
}

/** An artifact (empty config, one layer) whose `subject` is `subject`. */
export async function addArtifact(layout: Layout, subject: Descriptor, artifactType: string): Promise<Descriptor> {
  const config = await put(layout, 'application/vnd.oci.empty.v1+json', Buffer.from('{}'));
  const layer = await put(layout, 'application/spdx+json', Buffer.from(JSON.stringify({ spdxVersion: 'SPDX-2.3', name: 'skiff-test' })));
  const { platform: _unused, ...subjectDesc } = subject;
  void _unused;
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType, config, layers: [layer], subject: subjectDesc }));
  return put(layout, OCI_MANIFEST, manifest, { artifactType });
}

/** Writes index.json, naming each descriptor with a tag (org.opencontainers.image.ref.name). */
export async function writeIndex(layout: Layout, tagged: Record<string, Descriptor>): Promise<void> {
  const manifests = Object.entries(tagged).map(([tag, d]) => ({ ...d, annotations: { ...(d.annotations ?? {}), 'org.opencontainers.image.ref.name': tag } }));
  await writeFile(join(layout.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
}

export const digestOf = sha;
