/**
 * Response pieces every endpoint module uses. Kept apart from app.ts so that the endpoint
 * modules do not import the app that imports them.
 */
import { RegistryError } from '../oci/errors.js';
import type { RegistryResponse } from './types.js';

export function json(status: number, value: unknown): RegistryResponse {
  const body = JSON.stringify(value);
  return { status, headers: { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) }, body };
}

/** Every response of the registry API says which API it speaks. */
export const API_VERSION = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

/** An error as the spec's JSON body, with the error's own headers. */
export function errorResponse(e: RegistryError): RegistryResponse {
  const res = json(e.status, e.toJSON());
  return { ...res, headers: { ...e.headers, ...res.headers, ...API_VERSION } };
}

export function notAllowed(allow: string): RegistryError {
  return new RegistryError('UNSUPPORTED', 'method not allowed on this endpoint', { status: 405, headers: { Allow: allow } });
}
