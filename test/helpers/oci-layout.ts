/**
 * OCI image layouts on disk (image-spec image-layout.md: `oci-layout`, `index.json`,
 * `blobs/sha256/<hex>`), built deterministically from a seed for the real-client tests:
 *
 *   - images whose layers are real gzipped tar archives (ustar written here: a directory, a few
 *     small regular files and one file of pseudo-random bytes of the requested size, so the layer
 *     is about that size), with a real config (architecture, os, rootfs.diff_ids = sha256 of the
 *     uncompressed tars, history) and an OCI image manifest;
 *   - a multi-architecture OCI image index (amd64 + arm64) over two such images;
 *   - an artifact: an OCI image manifest with `artifactType`, the empty config
 *     (application/vnd.oci.empty.v1+json, the two bytes `{}`), one small layer and a `subject`.
 *
 * Everything returned carries paths, digests and sizes so tests can compare what a client pulled
 * with what was pushed. The same seed always gives the same bytes (fixed mtimes, owners and
 * gzip header; zlib's output for a given level is stable for a given Node build).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, openSync, readSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { sha256, stream } from './data.js';

export const MediaType = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  empty: 'application/vnd.oci.empty.v1+json',
} as const;

/** The empty descriptor's blob: `{}` (image-spec "Guidance for an Empty Descriptor"). */
export const EMPTY_JSON = Buffer.from('{}');

/** A fixed time for every timestamp in the generated content, so it is reproducible. */
const EPOCH = 1_767_225_600; // 2026-01-01T00:00:00Z
const CREATED = new Date(EPOCH * 1000).toISOString().replace('.000Z', 'Z');

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

/** An OCI content descriptor as it appears in manifests and indexes. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** A blob written into the layout. */
export interface BlobFile {
  mediaType: string;
  digest: string;
  size: number;
  /** Absolute path under blobs/sha256/. */
  path: string;
}

export interface TarEntry {
  name: string;
  /** Absent for a directory. */
  data?: Buffer;
  /** Instead of data, for a large file: its size and a generator of exactly that many bytes. */
  stream?: { size: number; chunks: () => Iterable<Buffer> };
  mode?: number;
}

export interface LayerInfo extends BlobFile {
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: string;
  uncompressedSize: number;
  /** Names of the regular files in the tar. */
  files: string[];
}

export interface ImageInfo {
  /** The manifest's descriptor (with `platform` when the image is part of an index). */
  descriptor: Descriptor;
  manifest: BlobFile;
  config: BlobFile;
  layers: LayerInfo[];
  platform: Platform;
  /** Every blob of the image: manifest, config, layers. */
  blobs: BlobFile[];
}

export interface IndexInfo {
  descriptor: Descriptor;
  index: BlobFile;
  images: ImageInfo[];
  /** Every blob: the index and each image's. */
  blobs: BlobFile[];
}

export interface ArtifactInfo {
  descriptor: Descriptor;
  manifest: BlobFile;
  config: BlobFile;
  layer: BlobFile;
  artifactType: string;
  subject: Descriptor;
  blobs: BlobFile[];
}

export interface ImageOptions {
  seed: number;
  /** About the compressed size of each layer, in bytes (the size of its random file). Default: one layer of 16 KiB. */
  layerSizes?: number[];
  platform?: Platform;
}


/** A 32-bit seed for the pseudo-random bytes of one layer, derived from the image seed. */
function subSeed(seed: number, ...parts: (number | string)[]): number {
  return createHash('sha256').update(JSON.stringify([seed, ...parts])).digest().readUInt32BE(0);
}

/**
 * A POSIX ustar archive of the entries, in the given order: 512-byte headers (owner root:root,
 * fixed mtime), data padded to 512 bytes, two zero blocks at the end. Names up to 100 bytes.
 * Piece by piece, so a layer of any size never has to be in memory at once.
 */
function* tarStream(entries: TarEntry[]): Generator<Buffer> {
  for (const e of entries) {
    const isDir = e.data === undefined && e.stream === undefined;
    const name = isDir && !e.name.endsWith('/') ? `${e.name}/` : e.name;
    if (Buffer.byteLength(name) > 100) throw new Error(`tar name longer than 100 bytes: ${name}`);
    const size = e.data?.length ?? e.stream?.size ?? 0;
    const h = Buffer.alloc(512);
    const octal = (value: number, offset: number, width: number) => h.write(`${value.toString(8).padStart(width - 1, '0')}\0`, offset, 'ascii');
    h.write(name, 0, 'utf8');
    octal(e.mode ?? (isDir ? 0o755 : 0o644), 100, 8);
    octal(0, 108, 8); // uid
    octal(0, 116, 8); // gid
    octal(size, 124, 12);
    octal(EPOCH, 136, 12);
    h.fill(0x20, 148, 156); // checksum field counts as spaces while summing
    h.write(isDir ? '5' : '0', 156, 'ascii');
    h.write('ustar\0', 257, 'ascii');
    h.write('00', 263, 'ascii');
    h.write('root', 265, 'ascii');
    h.write('root', 297, 'ascii');
    octal(0, 329, 8); // devmajor
    octal(0, 337, 8); // devminor
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    yield h;
    if (e.data) yield e.data;
    if (e.stream) {
      let n = 0;
      for (const c of e.stream.chunks()) {
        n += c.length;
        yield c;
      }
      if (n !== size) throw new Error(`tar entry ${name}: the stream gave ${n} bytes, not ${size}`);
    }
    if (size % 512) yield Buffer.alloc(512 - (size % 512));
  }
  yield Buffer.alloc(1024);
}

/**
 * gzip with a fixed header (mtime 0, as node writes it): level 6 for small (text) archives;
 * past 256 KiB the archive is mostly pseudo-random bytes, which do not compress, so level 0
 * (stored deflate blocks: a valid gzip stream, over four times as fast as level 1 here, which
 * matters for 1 GiB layers).
 */
const gzipLevel = (randomSize: number) => (randomSize > 256 * 1024 ? 0 : 6);

/** Stable JSON: what the tests compare is the exact bytes written here. */
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

export class OciLayout {
  /** Every blob written, by digest. */
  readonly blobs = new Map<string, BlobFile>();
  private readonly refs = new Map<string, Descriptor>();

  private constructor(readonly dir: string) {}

  /** A new, empty layout in a fresh directory under os.tmpdir() (or in `dir`, created if missing). */
  static async create(dir?: string): Promise<OciLayout> {
    const path = dir ?? (await tempDir('skiff-oci'));
    await mkdir(join(path, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(path, 'oci-layout'), json({ imageLayoutVersion: '1.0.0' }));
    const layout = new OciLayout(path);
    await layout.writeIndex();
    return layout;
  }

  /** Path of a blob of this layout (which need not exist). */
  blobPath(digest: string): string {
    const [alg, hex] = digest.split(':');
    return join(this.dir, 'blobs', alg!, hex!);
  }

  readBlob(digest: string): Promise<Buffer> {
    return readFile(this.blobPath(digest));
  }

  async putBlob(mediaType: string, data: Buffer): Promise<BlobFile> {
    const digest = sha256(data);
    const path = this.blobPath(digest);
    await writeFile(path, data);
    const blob = { mediaType, digest, size: data.length, path };
    this.blobs.set(digest, blob);
    return blob;
  }

  /**
   * One layer: a gzipped tar with a directory, small text files and `size` random bytes, written
   * as a stream (a 1 GiB layer costs a few MiB of memory), hashed on the way.
   */
  async layer(seed: number, index: number, size: number): Promise<LayerInfo> {
    const dir = `opt/skiff-${seed}-${index}`;
    const entries: TarEntry[] = [
      { name: 'etc' },
      { name: `etc/skiff-${seed}-${index}.conf`, data: Buffer.from(`# layer ${index} of image ${seed}\nseed=${seed}\nlayer=${index}\n`) },
      { name: dir },
      { name: `${dir}/README`, data: Buffer.from(`Test content generated by Skiff's tests (seed ${seed}, layer ${index}).\n`) },
      { name: `${dir}/run.sh`, data: Buffer.from(`#!/bin/sh\necho skiff ${seed} ${index}\n`), mode: 0o755 },
      { name: `${dir}/random.bin`, stream: { size, chunks: () => stream(size, subSeed(seed, 'layer', index)) } },
    ];
    const tarHash = createHash('sha256');
    let uncompressedSize = 0;
    async function* archive() {
      for (const piece of tarStream(entries)) {
        tarHash.update(piece);
        uncompressedSize += piece.length;
        yield piece;
      }
    }
    const gzHash = createHash('sha256');
    let compressedSize = 0;
    const tmp = join(this.dir, 'blobs', `layer-${seed}-${index}.tmp`);
    await pipeline(
      archive(),
      createGzip({ level: gzipLevel(size) }),
      async function* (compressed: AsyncIterable<Buffer>) {
        for await (const c of compressed) {
          gzHash.update(c);
          compressedSize += c.length;
          yield c;
        }
      },
      createWriteStream(tmp),
    );
    const digest = `sha256:${gzHash.digest('hex')}`;
    const path = this.blobPath(digest);
    await rename(tmp, path);
    const blob: BlobFile = { mediaType: MediaType.layerGzip, digest, size: compressedSize, path };
    this.blobs.set(digest, blob);
    return {
      ...blob,
      diffId: `sha256:${tarHash.digest('hex')}`,
      uncompressedSize,
      files: entries.filter((e) => e.data || e.stream).map((e) => e.name),
    };
  }

  /** A single-platform image: layers, config, OCI image manifest. */
  async image(opts: ImageOptions): Promise<ImageInfo> {
    const platform = opts.platform ?? { architecture: 'amd64', os: 'linux' };
    const layers: LayerInfo[] = [];
    for (const [i, size] of (opts.layerSizes ?? [16 * 1024]).entries()) layers.push(await this.layer(opts.seed, i, size));
    const config = await this.putBlob(
      MediaType.config,
      json({
        created: CREATED,
        architecture: platform.architecture,
        ...(platform.variant ? { variant: platform.variant } : {}),
        os: platform.os,
        config: {
          Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `SKIFF_SEED=${opts.seed}`],
          Cmd: [`/opt/skiff-${opts.seed}-0/run.sh`],
          Labels: { 'org.example.skiff.seed': String(opts.seed) },
        },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
        history: layers.map((_, i) => ({ created: CREATED, created_by: `skiff test layer ${i}` })),
      }),
    );
    const manifest = await this.putBlob(
      MediaType.manifest,
      json({
        schemaVersion: 2,
        mediaType: MediaType.manifest,
        config: descriptorOf(config),
        layers: layers.map(descriptorOf),
        annotations: { 'org.opencontainers.image.created': CREATED },
      }),
    );
    return {
      descriptor: { ...descriptorOf(manifest), platform },
      manifest,
      config,
      layers,
      platform,
      blobs: [manifest, config, ...layers],
    };
  }

  /** A multi-architecture index over two images, linux/amd64 and linux/arm64/v8. */
  async multiArch(opts: { seed: number; layerSizes?: number[] }): Promise<IndexInfo> {
    const images = [
      await this.image({ seed: opts.seed, layerSizes: opts.layerSizes, platform: { architecture: 'amd64', os: 'linux' } }),
      await this.image({ seed: opts.seed + 1, layerSizes: opts.layerSizes, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } }),
    ];
    const index = await this.putBlob(
      MediaType.index,
      json({ schemaVersion: 2, mediaType: MediaType.index, manifests: images.map((i) => i.descriptor) }),
    );
    return { descriptor: descriptorOf(index), index, images, blobs: [index, ...images.flatMap((i) => i.blobs)] };
  }

  /**
   * An artifact manifest referring to `subject`, with one small layer. By default it has an
   * `artifactType` and the empty config; without `artifactType` its type is its config's media
   * type (`configMediaType`, whose blob is then `{}` too), which is what the referrers API must
   * report for it.
   */
  async artifact(opts: { seed: number; subject: Descriptor; artifactType?: string; configMediaType?: string; layerMediaType?: string }): Promise<ArtifactInfo> {
    const config = await this.putBlob(opts.configMediaType ?? MediaType.empty, EMPTY_JSON);
    const layer = await this.putBlob(
      opts.layerMediaType ?? 'application/spdx+json',
      json({ spdxVersion: 'SPDX-2.3', SPDXID: 'SPDXRef-DOCUMENT', name: `skiff-test-${opts.seed}`, creationInfo: { created: CREATED } }),
    );
    const subject: Descriptor = { mediaType: opts.subject.mediaType, digest: opts.subject.digest, size: opts.subject.size };
    const annotations = { 'org.opencontainers.image.created': CREATED, 'org.example.skiff.seed': String(opts.seed) };
    const manifest = await this.putBlob(
      MediaType.manifest,
      json({
        schemaVersion: 2,
        mediaType: MediaType.manifest,
        ...(opts.artifactType ? { artifactType: opts.artifactType } : {}),
        config: descriptorOf(config),
        layers: [descriptorOf(layer)],
        subject,
        annotations,
      }),
    );
    const artifactType = opts.artifactType ?? config.mediaType;
    return {
      descriptor: { ...descriptorOf(manifest), artifactType, annotations },
      manifest,
      config,
      layer,
      artifactType,
      subject,
      blobs: [manifest, config, layer],
    };
  }

  /**
   * Names a manifest or index in index.json with `org.opencontainers.image.ref.name` (the
   * `<tag>` of `oci:<dir>:<tag>`), replacing an earlier entry of that name.
   */
  async tag(name: string, descriptor: Descriptor): Promise<void> {
    this.refs.set(name, descriptor);
    await this.writeIndex();
  }

  private async writeIndex(): Promise<void> {
    const manifests = [...this.refs].map(([name, d]) => ({ ...d, annotations: { ...(d.annotations ?? {}), 'org.opencontainers.image.ref.name': name } }));
    await writeFile(join(this.dir, 'index.json'), json({ schemaVersion: 2, mediaType: MediaType.index, manifests }));
  }

  remove(): Promise<void> {
    return rm(this.dir, { recursive: true, force: true });
  }
}

/** A file's bytes, read piece by piece (for a tar entry of a blob of any size). */
function* fileChunks(path: string, chunk = 1024 * 1024): Generator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    for (;;) {
      const buf = Buffer.allocUnsafe(chunk);
      const n = readSync(fd, buf, 0, chunk, null);
      if (n === 0) return;
      yield buf.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}

const blobEntry = (name: string, blob: BlobFile): TarEntry => ({ name, stream: { size: blob.size, chunks: () => fileChunks(blob.path) } });

/**
 * `image` as an archive a client loads, named `ref` (a full reference, `host/repo:tag`), streamed
 * from the layout's files (nothing is copied on disk: what `docker load` and `ctr images import`
 * read from their standard input):
 *
 *   - `oci`: an OCI image layout in a tar (what `skopeo copy ... oci-archive:` writes, and
 *     `ctr images import` reads), index.json naming the image `ref` as containerd's own export
 *     does (io.containerd.image.name, the tag in org.opencontainers.image.ref.name);
 *   - `docker`: the layout of `docker save` (manifest.json with Config, RepoTags and Layers, the
 *     config and each layer as a file), which `docker load` reads; the layers stay gzipped as
 *     generated (docker load decompresses a compressed layer file itself).
 */
export function* imageArchive(image: ImageInfo, ref: string, format: 'oci' | 'docker'): Generator<Buffer> {
  const hex = (b: BlobFile) => b.digest.slice('sha256:'.length);
  if (format === 'oci') {
    const tag = ref.slice(ref.lastIndexOf(':') + 1);
    const index = { schemaVersion: 2, mediaType: MediaType.index, manifests: [{ ...descriptorOf(image.manifest), annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag } }] };
    yield* tarStream([
      { name: 'oci-layout', data: json({ imageLayoutVersion: '1.0.0' }) },
      { name: 'index.json', data: json(index) },
      { name: 'blobs' },
      { name: 'blobs/sha256' },
      ...image.blobs.map((b) => blobEntry(`blobs/sha256/${hex(b)}`, b)),
    ]);
  } else {
    const manifest = [{ Config: `${hex(image.config)}.json`, RepoTags: [ref], Layers: image.layers.map((l) => `${hex(l)}/layer.tar`) }];
    yield* tarStream([
      { name: 'manifest.json', data: json(manifest) },
      blobEntry(`${hex(image.config)}.json`, image.config),
      ...image.layers.flatMap((l) => [{ name: hex(l) }, blobEntry(`${hex(l)}/layer.tar`, l)]),
    ]);
  }
}

/**
 * A new empty directory under os.tmpdir() whose path is all lower case: podman 4.3 names an image
 * pulled from `oci:<dir>` after the directory and refuses upper case (mkdtemp's suffix has some).
 */
export async function tempDir(prefix: string): Promise<string> {
  const dir = join(tmpdir(), `${prefix}-${randomBytes(6).toString('hex')}`);
  await mkdir(dir, { recursive: false });
  return dir;
}

/** The descriptor of a blob as a manifest lists it (no local path). */
export function descriptorOf(blob: BlobFile): Descriptor {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
}

/** A layout some client wrote (e.g. `skopeo copy ... oci:<dir>:<tag>`), read back. */
export interface ReadLayout {
  dir: string;
  index: { schemaVersion: number; manifests: Descriptor[] };
  /** The descriptor index.json names `ref` (or the only one). */
  ref(name?: string): Descriptor;
  blob(digest: string): Promise<Buffer>;
  json<T = any>(digest: string): Promise<T>;
  /** Digests of every blob file in blobs/sha256, sorted. */
  digests(): Promise<string[]>;
}

export async function readLayout(dir: string): Promise<ReadLayout> {
  const layoutFile = JSON.parse(await readFile(join(dir, 'oci-layout'), 'utf8'));
  if (layoutFile.imageLayoutVersion !== '1.0.0') throw new Error(`${dir}: unexpected oci-layout ${JSON.stringify(layoutFile)}`);
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  const blob = (digest: string) => {
    const [alg, hex] = digest.split(':');
    return readFile(join(dir, 'blobs', alg!, hex!));
  };
  return {
    dir,
    index,
    ref(name?: string) {
      const all: Descriptor[] = index.manifests ?? [];
      const found = name === undefined && all.length === 1 ? all[0] : all.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === name);
      if (!found) throw new Error(`${dir}/index.json names no ${name ?? 'single manifest'}: ${JSON.stringify(index)}`);
      return found;
    },
    blob,
    async json(digest: string) {
      return JSON.parse((await blob(digest)).toString('utf8'));
    },
    async digests() {
      return (await readdir(join(dir, 'blobs', 'sha256'))).map((hex) => `sha256:${hex}`).sort();
    },
  };
}
