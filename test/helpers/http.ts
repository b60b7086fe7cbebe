/**
 * A small HTTP client on node:http, for exact control of what goes on the wire: Content-Range,
 * chunked bodies without Content-Length, bodies that lie about their length, streams.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';

export interface Sent {
  method?: string;
  headers?: Record<string, string | number>;
  /** A buffer (sent with Content-Length) or a stream (sent chunked unless a content-length header is given). */
  body?: Uint8Array | string | AsyncIterable<Uint8Array>;
  /** The local address to send from (Linux routes all of 127/8 to lo): another client source. */
  from?: string;
}

export interface Received {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  json(): any;
  header(name: string): string | undefined;
}

export async function call(url: string, sent: Sent = {}): Promise<Received> {
  // Split by hand: WHATWG URL parsing would resolve "/../" and "/./" before they reach the wire.
  const m = /^http:\/\/([^/:]+):(\d+)(\/.*)?$/.exec(url);
  if (!m) throw new Error(`not an http URL with a port: ${url}`);
  const target = { hostname: m[1], port: m[2], path: m[3] ?? '/' };
  const headers: Record<string, string | number> = { ...(sent.headers ?? {}) };
  const body = sent.body;
  if ((typeof body === 'string' || body instanceof Uint8Array) && !hasHeader(headers, 'content-length')) {
    headers['Content-Length'] = Buffer.byteLength(body);
  }
  return new Promise<Received>((resolve, reject) => {
    const req = httpRequest(
      { host: target.hostname, port: target.port, path: target.path, method: sent.method ?? 'GET', headers, localAddress: sent.from },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: buf,
            json: () => JSON.parse(buf.toString('utf8')),
            header: (name) => {
              const v = res.headers[name.toLowerCase()];
              return Array.isArray(v) ? v.join(', ') : v;
            },
          });
        });
      },
    );
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (typeof body === 'string' || body instanceof Uint8Array) req.end(body);
    else {
      (async () => {
        for await (const chunk of body) {
          if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch((err) => req.destroy(err));
    }
  });
}

function hasHeader(headers: Record<string, unknown>, name: string): boolean {
  return Object.keys(headers).some((k) => k.toLowerCase() === name);
}

/** An upload Location (relative) resolved against the registry's base URL. */
export function resolve(base: string, location: string | undefined): string {
  if (!location) throw new Error('response has no Location');
  return new URL(location, base).toString();
}
