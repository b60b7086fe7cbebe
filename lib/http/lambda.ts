/**
 * API Gateway HTTP API (payload format 2.0) <-> RegistryRequest / RegistryResponse.
 *
 * Binary bodies arrive base64-encoded and are decoded here; the whole body is in the event, so
 * Lambda never streams. Responses must fit in Lambda's 6 MB payload: blob downloads go out as
 * presigned redirects (SKIFF_REDIRECT=true in serverless.yml), and a streamed body that would
 * not fit is refused with a clear error instead of being cut.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { bufferBody } from '../registry/body.js';
import { RegistryError } from '../oci/errors.js';
import type { Telemetry } from '../telemetry.js';
import type { RegistryRequest, RegistryResponse } from './types.js';
import type { RegistryApp } from './app.js';
import { errorResponse } from './responses.js';

/** One invocation: event in, result out, one log line and one metrics document. */
export async function handleEvent(app: RegistryApp, telemetry: Telemetry, event: APIGatewayProxyEventV2, context: Context): Promise<APIGatewayProxyStructuredResultV2> {
  telemetry.logger.addContext(context);
  const started = performance.now();
  const method = event.requestContext.http.method;
  let res: RegistryResponse;
  let bytesIn: number | undefined;
  try {
    const req = fromEvent(event);
    bytesIn = req.body.length;
    res = await app.handle(req);
  } catch (err) {
    // fromEvent refuses malformed events before the app sees them.
    res = app.failure(err, { method, path: event.rawPath });
  }
  const result = await toResult(res);
  telemetry.observe({ method, path: event.rawPath, status: result.statusCode!, route: res.route, durationMs: performance.now() - started, bytesIn });
  return result;
}

/** Lambda's limit on a response payload, less room for headers and base64 growth. */
export const MAX_RESPONSE_BYTES = Math.floor((6 * 1024 * 1024 - 64 * 1024) * 3 / 4);

export function fromEvent(event: APIGatewayProxyEventV2): RegistryRequest {
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(event.headers ?? {})) headers[name.toLowerCase()] = value;
  const body = event.body ? Buffer.from(event.body, event.isBase64Encoded ? 'base64' : 'utf8') : Buffer.alloc(0);
  const declared = headers['content-length'];
  if (declared !== undefined && Number(declared) !== body.length) {
    // API Gateway delivers the body whole; a disagreement means a truncated or altered request.
    throw new RegistryError('BLOB_UPLOAD_INVALID', 'request body length does not match Content-Length', {
      detail: { contentLength: Number(declared), received: body.length },
    });
  }
  return {
    method: event.requestContext.http.method,
    path: event.rawPath,
    query: new URLSearchParams(event.rawQueryString ?? ''),
    headers,
    body: bufferBody(body),
    sourceIp: event.requestContext.http?.sourceIp,
  };
}

export async function toResult(res: RegistryResponse): Promise<APIGatewayProxyStructuredResultV2> {
  let body: Buffer | undefined;
  if (typeof res.body === 'string') body = Buffer.from(res.body);
  else if (res.body instanceof Uint8Array) body = Buffer.from(res.body.buffer, res.body.byteOffset, res.body.byteLength);
  else if (res.body) {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > MAX_RESPONSE_BYTES) {
        const err = new RegistryError('SIZE_INVALID', 'response too large for Lambda; enable SKIFF_REDIRECT or request a byte Range', {
          status: 413,
          detail: { maxResponseBytes: MAX_RESPONSE_BYTES },
        });
        return toResult(errorResponse(err));
      }
      chunks.push(Buffer.from(chunk));
    }
    body = Buffer.concat(chunks);
  }
  const headers = { ...res.headers };
  if (body) headers['Content-Length'] = String(body.length);
  // Only what the registry wrote itself (error and listing JSON) travels as text. Stored bytes,
  // manifests included, go base64: exact whatever they contain, and no larger than 4/3 of
  // their size, where JSON escaping of a manifest's text could double it past Lambda's limit.
  const text = body && typeof res.body === 'string';
  return {
    statusCode: res.status,
    headers,
    body: body ? (text ? body.toString('utf8') : body.toString('base64')) : undefined,
    isBase64Encoded: Boolean(body && !text),
  };
}
