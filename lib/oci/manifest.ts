/**
 * Manifests: the four formats clients push (OCI image manifest and index, Docker schema 2
 * manifest and manifest list), parsed and validated against their media type. The bytes are
 * never re-serialized: what is stored is exactly what was sent, so the digest a client pulls is
 * the digest it pushed.
 */
import { RegistryError } from './errors.js';
import { tryParseDigest } from './digest.js';

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export const MANIFEST_TYPES: readonly string[] = Object.values(MediaTypes);

/** Layers a registry does not hold by design ("foreign", non-distributable): never checked. */
const FOREIGN_LAYERS = new Set([
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
]);

export interface ContentDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface Manifest {
  mediaType: string;
  /** Blobs the repository must hold: config and (distributable) layers. */
  blobs: ContentDescriptor[];
  /** Manifests the repository must hold: the children of an index or list. */
  manifests: ContentDescriptor[];
  subject?: ContentDescriptor;
  /** The artifact type the referrers API reports for this manifest, if any. */
  artifactType?: string;
  annotations?: Record<string, string>;
}

function invalid(message: string, detail?: unknown): RegistryError {
  return new RegistryError('MANIFEST_INVALID', message, { detail });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringMap(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value) || Object.values(value).some((v) => typeof v !== 'string')) throw invalid(`${where} must map strings to strings`);
  return value as Record<string, string>;
}

function isFetchableUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && !value.includes('#');
  } catch {
    return false;
  }
}

function descriptor(value: unknown, where: string): ContentDescriptor {
  if (!isObject(value)) throw invalid(`${where} must be a descriptor object`);
  const { mediaType, digest, size, artifactType, annotations, urls } = value;
  if (typeof mediaType !== 'string' || !mediaType) throw invalid(`${where}.mediaType must be a non-empty string`);
  if (typeof digest !== 'string' || !tryParseDigest(digest)) throw invalid(`${where}.digest is not a valid sha256 or sha512 digest`, { digest });
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw invalid(`${where}.size must be a non-negative integer`);
  if (artifactType !== undefined && typeof artifactType !== 'string') throw invalid(`${where}.artifactType must be a string`);
  if (urls !== undefined && (!Array.isArray(urls) || urls.some((u) => typeof u !== 'string'))) throw invalid(`${where}.urls must be strings`);
  // As distribution: a client follows these URLs to fetch the blob, so only http(s), no fragment.
  for (const u of (urls as string[] | undefined) ?? []) if (!isFetchableUrl(u)) throw invalid(`${where}.urls may only hold http or https URLs`, { url: u });
  const out: ContentDescriptor = { mediaType, digest, size };
  if (artifactType) out.artifactType = artifactType;
  const ann = stringMap(annotations, `${where}.annotations`);
  if (ann) out.annotations = ann;
  if (urls) out.urls = urls as string[];
  return out;
}

function descriptors(value: unknown, where: string, required: boolean): ContentDescriptor[] {
  if (value === undefined && !required) return [];
  if (!Array.isArray(value)) throw invalid(`${where} must be an array of descriptors`);
  return value.map((d, i) => descriptor(d, `${where}[${i}]`));
}

/**
 * The media type a PUT declares: its Content-Type, else the document's own mediaType. When
 * both are present they must agree.
 */
export function declaredType(contentType: string | undefined, doc: Record<string, unknown>): string {
  const header = contentType?.split(';')[0]!.trim().toLowerCase();
  const inner = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  const generic = !header || header === 'application/json' || header === 'application/octet-stream';
  if (!generic && inner && inner !== header) {
    throw invalid('Content-Type and the manifest mediaType disagree', { contentType: header, mediaType: inner });
  }
  if (!generic) return header!;
  if (inner) return inner;
  // OCI documents may omit mediaType: tell an index from a manifest by its shape.
  if (Array.isArray(doc.manifests)) return MediaTypes.ociIndex;
  if (doc.config !== undefined) return MediaTypes.ociManifest;
  throw invalid('cannot tell the manifest type: send Content-Type or a mediaType field');
}

/**
 * Strict UTF-8: a malformed byte is an error, not a U+FFFD that would make the parsed document
 * differ from the stored bytes. A byte-order mark is kept (and so refused by JSON.parse).
 */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function parseManifest(bytes: Uint8Array, contentType: string | undefined): Manifest {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (err) {
    throw invalid('manifest is not valid UTF-8', { reason: (err as Error).message });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw invalid('manifest is not valid JSON', { reason: (err as Error).message });
  }
  if (!isObject(doc)) throw invalid('manifest must be a JSON object');
  const mediaType = declaredType(contentType, doc);
  if (!MANIFEST_TYPES.includes(mediaType)) {
    throw invalid(`unsupported manifest media type ${mediaType}`, { supported: MANIFEST_TYPES });
  }
  if (doc.schemaVersion !== 2) throw invalid('schemaVersion must be 2');
  const docker = mediaType === MediaTypes.dockerManifest || mediaType === MediaTypes.dockerList;
  // Docker's formats require their mediaType field; OCI's only must not contradict.
  if (docker && doc.mediaType !== mediaType) throw invalid(`a ${mediaType} must say so in its mediaType field`);

  const annotations = docker ? undefined : stringMap(doc.annotations, 'annotations');
  const artifactType = doc.artifactType === undefined ? undefined : typeof doc.artifactType === 'string' ? doc.artifactType : undefined;
  if (doc.artifactType !== undefined && artifactType === undefined) throw invalid('artifactType must be a string');
  const subject = !docker && doc.subject !== undefined ? descriptor(doc.subject, 'subject') : undefined;

  if (mediaType === MediaTypes.ociIndex || mediaType === MediaTypes.dockerList) {
    if (doc.config !== undefined || doc.layers !== undefined) throw invalid('an index has manifests, not config or layers');
    const manifests = descriptors(doc.manifests, 'manifests', true);
    // The referrers API reports an index's artifactType when it has a non-empty one, else none.
    return { mediaType, blobs: [], manifests, subject, artifactType: artifactType || undefined, annotations };
  }
  if (doc.manifests !== undefined) throw invalid('an image manifest has config and layers, not manifests');
  const config = descriptor(doc.config, 'config');
  // Both formats require layers (the OCI schema too; an empty array is allowed).
  const layers = descriptors(doc.layers, 'layers', true);
  const blobs = [config, ...layers.filter((l) => !FOREIGN_LAYERS.has(l.mediaType) && !l.urls?.length)];
  // The referrers API reports a manifest's non-empty artifactType, or else its config's media type.
  return { mediaType, blobs, manifests: [], subject, artifactType: artifactType || config.mediaType, annotations };
}

/** The digests a stored manifest names, by where it names them (readReferences). */
export interface StoredReferences {
  config?: string;
  subject?: string;
  layers: string[];
  blobs: string[];
  manifests: string[];
}

/**
 * What a stored manifest references, read leniently, for GC and retention (which judge bytes
 * the registry validated when they were pushed, and must not throw on what it stored before a
 * rule changed): undefined when the bytes are missing or not JSON, and the caller then keeps
 * what it cannot judge; a descriptor without a string digest is skipped.
 */
export function readReferences(bytes: Uint8Array | undefined): StoredReferences | undefined {
  if (!bytes) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const m = doc as Record<string, unknown>;
  const digestOf = (d: unknown): string | undefined => (typeof d === 'object' && d !== null && typeof (d as { digest?: unknown }).digest === 'string' ? (d as { digest: string }).digest : undefined);
  const digests = (list: unknown): string[] => (Array.isArray(list) ? list.flatMap((d) => digestOf(d) ?? []) : []);
  return { config: digestOf(m.config), subject: digestOf(m.subject), layers: digests(m.layers), blobs: digests(m.blobs), manifests: digests(m.manifests) };
}
