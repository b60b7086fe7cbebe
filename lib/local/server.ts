/**
 * The local server: adapts node:http requests into RegistryRequests for the same RegistryApp
 * the Lambda handlers call. Bodies stream in and out with backpressure; nothing is buffered.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RegistryError } from '../oci/errors.js';
import type { RegistryApp } from '../http/app.js';
import type { RegistryRequest, RegistryResponse } from '../http/types.js';

export function createRegistryServer(app: RegistryApp): Server {
  const server = createServer((req, res) => {
    void serve(app, req, res);
  });
  // Layers of many gigabytes take longer than Node's default 5-minute request timeout.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  return server;
}

async function serve(app: RegistryApp, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const response = await app.handle(toRegistryRequest(req));
  await writeResponse(req, res, response);
}

export function toRegistryRequest(req: IncomingMessage): RegistryRequest {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(req.headers)) headers[name] = Array.isArray(value) ? value.join(', ') : value;
  const declared = headers['content-length'];
  const hasBody = declared !== undefined || headers['transfer-encoding'] !== undefined;
  return {
    method: req.method ?? 'GET',
    path: q < 0 ? url : url.slice(0, q),
    query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)),
    headers,
    body: { stream: requestBody(req), length: declared !== undefined ? Number(declared) : hasBody ? undefined : 0 },
    sourceIp: req.socket.remoteAddress,
  };
}

/** The request body; a connection the client drops mid-body is the client's error, not ours. */
async function* requestBody(req: IncomingMessage): AsyncIterable<Uint8Array> {
  try {
    for await (const chunk of req) yield chunk as Uint8Array;
  } catch (err) {
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'request body ended early: the client closed the connection', { cause: err });
  }
}

export async function writeResponse(req: IncomingMessage, res: ServerResponse, response: RegistryResponse): Promise<void> {
  if (res.destroyed) return;
  const headers = { ...response.headers };
  // A body we did not read (an error before reading, e.g. a 413) is not worth draining.
  if (!req.complete) headers['Connection'] = 'close';
  res.writeHead(response.status, headers);
  const body = response.body;
  if (body === undefined || typeof body === 'string' || body instanceof Uint8Array) {
    res.end(body);
    return;
  }
  try {
    await pipeline(Readable.from(body, { objectMode: false }), res);
  } catch {
    // The client went away mid-download, or storage failed mid-stream: the connection is
    // already closed by pipeline; there is no status left to send.
    res.destroy();
  }
}
