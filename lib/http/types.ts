/**
 * The registry's HTTP contract, independent of how requests arrive: the Lambda handlers
 * (functions/) and the local server (lib/local) both translate into these and call the same
 * RegistryApp.
 */
import type { Body } from '../registry/body.js';

export interface RegistryRequest {
  method: string;
  /** The path as sent, still percent-encoded. */
  path: string;
  query: URLSearchParams;
  /** Header names in lower case. */
  headers: Record<string, string | undefined>;
  body: Body;
  /** The client's address as the platform saw it (API Gateway's sourceIp, the socket's peer); never a header. */
  sourceIp?: string;
}

export type ResponseBody = string | Uint8Array | AsyncIterable<Uint8Array>;

export interface RegistryResponse {
  status: number;
  headers: Record<string, string>;
  body?: ResponseBody;
  /** Which route answered (for logs and metrics; never sent). */
  route?: string;
}
