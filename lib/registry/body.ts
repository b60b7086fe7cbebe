/**
 * Request bodies as the registry sees them: a stream of bytes with the length the client
 * declared, checked as it flows so that no byte beyond what was promised is ever stored.
 */
import { RegistryError } from '../oci/errors.js';

export interface Body {
  stream: AsyncIterable<Uint8Array>;
  /** Content-Length, when the client sent one. */
  length?: number;
}

export interface ByteSpan {
  start: number;
  end: number;
}

export function bufferBody(bytes: Uint8Array): Body {
  return {
    stream: (async function* () {
      if (bytes.length) yield bytes;
    })(),
    length: bytes.length,
  };
}

/** The whole of a small body (a manifest, a form), refused with `refusal()` past `max` bytes, declared or sent. */
export async function readAll(body: Body, max: number, refusal: () => RegistryError): Promise<Buffer> {
  if (body.length !== undefined && body.length > max) throw refusal();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body.stream) {
    size += chunk.length;
    if (size > max) throw refusal();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Header-level checks, made before anything is read or stored. `range` is the chunk's
 * Content-Range; `max` the largest chunk accepted (0: no limit).
 */
export function checkDeclared(body: Body, range: ByteSpan | undefined, max: number): number | undefined {
  let expected = body.length;
  if (range) {
    const span = range.end - range.start + 1;
    if (expected !== undefined && expected !== span) {
      throw new RegistryError('BLOB_UPLOAD_INVALID', 'Content-Length does not match Content-Range', {
        detail: { contentLength: expected, contentRange: `${range.start}-${range.end}` },
      });
    }
    expected = span;
  }
  if (max > 0 && expected !== undefined && expected > max) throw tooLarge(max);
  return expected;
}

export function tooLarge(max: number): RegistryError {
  return new RegistryError('SIZE_INVALID', `chunk larger than the maximum of ${max} bytes`, {
    status: 413,
    detail: { maxChunkBytes: max },
    headers: { 'OCI-Chunk-Max-Length': String(max) },
  });
}

/**
 * Passes the body through, feeding each chunk to `observe` and failing as soon as it exceeds
 * the declared length or the chunk maximum, or at the end if it fell short.
 */
export async function* checked(
  source: AsyncIterable<Uint8Array>,
  expected: number | undefined,
  max: number,
  observe?: (chunk: Uint8Array) => void | Promise<void>,
): AsyncIterable<Uint8Array> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.length;
    if (expected !== undefined && seen > expected) {
      throw new RegistryError('BLOB_UPLOAD_INVALID', 'body is longer than its declared length', { detail: { declared: expected } });
    }
    if (max > 0 && seen > max) throw tooLarge(max);
    await observe?.(chunk);
    yield chunk;
  }
  if (expected !== undefined && seen !== expected) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'body is shorter than its declared length', {
      detail: { declared: expected, received: seen },
    });
  }
}
