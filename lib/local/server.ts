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

export interface ServerOptions {
  /**
   * A request body that brings no bytes for this long ends its request (SKIFF_STALL_SECONDS):
   * without it a client that stops sending would hold its upload's lease (and a stream slot)
   * as long as the connection lives. Default: never.
   */
  stallMs?: number;
}

export function createRegistryServer(app: RegistryApp, opts: ServerOptions = {}): Server {
  const server = createServer((req, res) => {
    void serve(app, req, res, opts);
  });
  // Layers of many gigabytes take longer than Node's default 5-minute request timeout.
  server.requestTimeout = 0;
  // Idle connections stay open longer than a load balancer keeps its own (the upload host's
  // ALB: 60 s). With Node's default of 5 s the balancer can send a request down a connection we
  // are closing, and the client gets a 502; AWS asks targets to outlast the balancer.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return server;
}

async function serve(app: RegistryApp, req: IncomingMessage, res: ServerResponse, opts: ServerOptions): Promise<void> {
  const response = await app.handle(toRegistryRequest(req, opts.stallMs));
  await writeResponse(req, res, response);
}

export function toRegistryRequest(req: IncomingMessage, stallMs?: number): RegistryRequest {
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
    body: { stream: requestBody(req, stallMs), length: declared !== undefined ? Number(declared) : hasBody ? undefined : 0 },
    sourceIp: req.socket.remoteAddress,
  };
}

/**
 * The request body; a connection the client drops mid-body is the client's error, not ours.
 * The stall clock runs only while we wait for the client's bytes (not while storage holds us
 * back), and a stall destroys the request: the client is not sending, so there is no one to
 * answer, and the error ends the request's work, which releases the upload's lease.
 */
async function* requestBody(req: IncomingMessage, stallMs?: number): AsyncIterable<Uint8Array> {
  const chunks = req[Symbol.asyncIterator]();
  let stalled = false;
  let done = false;
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      if (stallMs) {
        timer = setTimeout(() => {
          stalled = true;
          req.destroy(new Error('body stalled'));
        }, stallMs);
      }
      let next: IteratorResult<unknown>;
      try {
        next = await chunks.next();
      } finally {
        clearTimeout(timer);
      }
      if (next.done) {
        done = true;
        return;
      }
      yield next.value as Uint8Array;
    }
  } catch (err) {
    done = true;
    if (stalled) throw new RegistryError('BLOB_UPLOAD_INVALID', `request body stalled: no bytes for ${stallMs! / 1000} s`, { cause: err });
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'request body ended early: the client closed the connection', { cause: err });
  } finally {
    // Abandoned by the reader (a refusal mid-body): as `for await` would, stop the request.
    if (!done) await chunks.return?.();
  }
}

export async function writeResponse(req: IncomingMessage, res: ServerResponse, response: RegistryResponse): Promise<void> {
  if (res.destroyed) {
    // The client left while storage was being opened: nobody will read the body, and an S3
    // body left open would hold one of the S3 client's sockets.
    if (response.body instanceof Readable) response.body.destroy();
    return;
  }
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
    // A Node stream (the S3 driver's GetObject body) is piped as it is; anything else is adapted.
    await pipeline(body instanceof Readable ? body : Readable.from(body, { objectMode: false }), res);
  } catch {
    // The client went away mid-download, or storage failed mid-stream: the connection is
    // already closed by pipeline; there is no status left to send.
    res.destroy();
  }
}
