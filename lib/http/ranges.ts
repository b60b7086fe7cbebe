/**
 * Range headers: Content-Range on upload chunks, Range on blob reads.
 */
import { RegistryError } from '../oci/errors.js';
import type { ByteSpan } from '../registry/body.js';

/**
 * A chunk's Content-Range. The spec's form is `<start>-<end>` (inclusive); the RFC 9110 form
 * `bytes <start>-<end>/<size|*>` that some clients send is accepted too.
 */
export function parseContentRange(header: string | undefined): ByteSpan | undefined {
  if (header === undefined || header === '') return undefined;
  const m = /^(?:bytes[ =])?(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?$/.exec(header.trim());
  if (!m) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'malformed Content-Range (expected <start>-<end>)', { detail: { contentRange: header } });
  }
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'Content-Range ends before it starts', { status: 416, detail: { contentRange: header } });
  }
  return { start, end };
}

export type ReadRange = { start: number; end: number } | 'unsatisfiable' | undefined;

/**
 * A single-range `Range: bytes=...` request against a blob of `size` bytes. Forms we do not
 * serve (several ranges, other units) are ignored, and the whole blob is sent, as RFC 9110
 * allows.
 */
export function parseReadRange(header: string | undefined, size: number): ReadRange {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(size - suffix, 0);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}
