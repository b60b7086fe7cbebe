/**
 * Lambda mode: the local server behaves like API Gateway (HTTP API, payload 2.0) in front of
 * the real Lambda handler (functions/handlers.ts, `http`), with the platform's limits reproduced exactly:
 *
 * - the whole request is buffered into an event, the body base64-encoded as API Gateway does
 *   for binary content, and nothing streams;
 * - an invocation payload (the event as JSON) over 6,291,456 bytes is refused before the
 *   function runs, with the 413 API Gateway answers (after reading a body of up to 10 MB, as
 *   API Gateway does; a larger one is refused at once); the function itself refuses bodies over
 *   SKIFF_MAX_CHUNK_BYTES with an OCI 413;
 * - a response payload over the same limit becomes the 500 API Gateway answers.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { randomUUID } from 'node:crypto';

export const LAMBDA_PAYLOAD_LIMIT = 6_291_456;
/** API Gateway's own request limit: it reads bodies up to this size before answering. */
export const API_GATEWAY_LIMIT = 10 * 1024 * 1024;

export type LambdaHandler = (event: APIGatewayProxyEventV2, context: Context) => Promise<APIGatewayProxyStructuredResultV2>;

/** Content types API Gateway passes as text; everything else arrives base64-encoded. */
const TEXT = /^(text\/|application\/(json|xml|javascript|x-www-form-urlencoded)\b)/i;

export function createLambdaModeServer(handler: LambdaHandler, limit = LAMBDA_PAYLOAD_LIMIT): Server {
  return createServer((req, res) => {
    void invoke(handler, limit, req, res).catch(() => {
      if (!res.headersSent) platformError(res, 502, 'Internal Server Error');
      else res.destroy();
    });
  });
}

async function invoke(handler: LambdaHandler, limit: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > API_GATEWAY_LIMIT) return platformError(res, 413, 'Request Too Large', true);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > API_GATEWAY_LIMIT) return platformError(res, 413, 'Request Too Large', true);
    // Past what base64 lets into an event, keep reading (and dropping) to answer afterwards.
    if (Math.ceil(size / 3) * 4 <= limit) chunks.push(chunk as Buffer);
  }
  if (Math.ceil(size / 3) * 4 > limit) return platformError(res, 413, 'Request Entity Too Large');
  const event = toEvent(req, Buffer.concat(chunks));
  if (Buffer.byteLength(JSON.stringify(event)) > limit) return platformError(res, 413, 'Request Entity Too Large');

  const result = await handler(event, lambdaContext());
  if (Buffer.byteLength(JSON.stringify(result)) > limit) return platformError(res, 500, 'Internal Server Error');
  const body = result.body === undefined ? undefined : Buffer.from(result.body, result.isBase64Encoded ? 'base64' : 'utf8');
  res.writeHead(result.statusCode ?? 200, result.headers as Record<string, string>);
  res.end(body);
}

function toEvent(req: IncomingMessage, body: Buffer): APIGatewayProxyEventV2 {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
  const text = TEXT.test(headers['content-type'] ?? '');
  const now = new Date();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: q < 0 ? '' : url.slice(q + 1),
    headers,
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      domainName: headers.host ?? 'localhost',
      domainPrefix: 'local',
      http: { method: req.method ?? 'GET', path, protocol: `HTTP/${req.httpVersion}`, sourceIp: req.socket.remoteAddress ?? '127.0.0.1', userAgent: headers['user-agent'] ?? '' },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: now.toUTCString(),
      timeEpoch: now.getTime(),
    },
    body: body.length ? body.toString(text ? 'utf8' : 'base64') : undefined,
    isBase64Encoded: body.length > 0 && !text,
  };
}

function lambdaContext(): Context {
  const id = randomUUID();
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: 'skiff-local',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:local:000000000000:function:skiff-local',
    memoryLimitInMB: '1024',
    awsRequestId: id,
    logGroupName: '/aws/lambda/skiff-local',
    logStreamName: 'local',
    getRemainingTimeInMillis: () => 29_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

/** What API Gateway itself answers when the platform refuses: not the registry's OCI JSON. */
function platformError(res: ServerResponse, status: number, message: string, close = false): void {
  const body = JSON.stringify({ message });
  const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
  if (close) headers['Connection'] = 'close';
  res.writeHead(status, headers);
  res.end(body);
}
