/**
 * Client-side flows of the distribution API, spoken over HTTP like a real client.
 */
import assert from 'node:assert/strict';
import { call, resolve, type Received } from './http.js';
import { sha256 } from './data.js';

export interface Pushed {
  digest: string;
  location: string;
  finish: Received;
}

export async function startUpload(base: string, repo: string): Promise<string> {
  const res = await call(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  assert.equal(res.status, 202, res.body.toString());
  return resolve(base, res.header('location'));
}

export async function patch(location: string, chunk: Uint8Array, start?: number): Promise<Received> {
  const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
  if (start !== undefined) headers['Content-Range'] = `${start}-${start + chunk.length - 1}`;
  return call(location, { method: 'PATCH', headers, body: chunk });
}

export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

/** Pushes `data` as PATCH chunks of the given sizes (cycled), then an empty finishing PUT. */
export async function pushChunked(base: string, repo: string, data: Buffer, sizes: number[]): Promise<Pushed> {
  let location = await startUpload(base, repo);
  let offset = 0;
  for (let i = 0; offset < data.length; i++) {
    const size = sizes[i % sizes.length]!;
    const chunk = data.subarray(offset, offset + size);
    const res = await patch(location, chunk, offset);
    assert.equal(res.status, 202, `chunk at ${offset}: ${res.body.toString()}`);
    offset += chunk.length;
    assert.equal(res.header('range'), `0-${offset - 1}`);
    location = resolve(base, res.header('location'));
  }
  const digest = sha256(data);
  const finish = await call(withDigest(location, digest), { method: 'PUT' });
  assert.equal(finish.status, 201, finish.body.toString());
  return { digest, location, finish };
}

/** POST then PUT with the whole blob as the PUT's body (containerd, BuildKit, oras). */
export async function pushInPut(base: string, repo: string, data: Buffer): Promise<Pushed> {
  const location = await startUpload(base, repo);
  const digest = sha256(data);
  const finish = await call(withDigest(location, digest), { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' }, body: data });
  assert.equal(finish.status, 201, finish.body.toString());
  return { digest, location, finish };
}

export async function getBlob(base: string, repo: string, digest: string, headers: Record<string, string> = {}): Promise<Received> {
  return call(`${base}/v2/${repo}/blobs/${digest}`, { headers });
}

export function errorCode(res: Received): string | undefined {
  try {
    return res.json().errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** An OCI error answer: the status, JSON, and `errors[0]` with this code and a message. */
export function expectError(res: Received, status: number, code: string, context = ''): void {
  assert.equal(res.status, status, `${context} expected ${status} ${code}, got ${res.status}: ${res.body.toString().slice(0, 500)}`);
  assert.match(res.header('content-type') ?? '', /application\/json/, context);
  const body = res.json();
  assert.equal(body.errors?.[0]?.code, code, context);
  assert.equal(typeof body.errors[0].message, 'string', context);
}
