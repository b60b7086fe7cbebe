/**
 * Lambda entry point for every registry route (API Gateway HTTP API, payload 2.0): parse the
 * event, let the RegistryApp answer, map the result. Everything else lives in lib/.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { Logger } from '@aws-lambda-powertools/logger';
import { loadConfig } from '../lib/config.js';
import { RegistryApp, json } from '../lib/http/app.js';
import { fromEvent, toResult } from '../lib/http/lambda.js';
import { RegistryError } from '../lib/oci/errors.js';
import { createRegistry } from '../lib/registry/index.js';

const logger = new Logger({ serviceName: 'skiff' });
// Created once per container, at cold start, and reused by every invocation it serves.
const app = new RegistryApp(createRegistry(loadConfig()), logger);

export async function handler(event: APIGatewayProxyEventV2, context: Context): Promise<APIGatewayProxyStructuredResultV2> {
  logger.addContext(context);
  try {
    return await toResult(await app.handle(fromEvent(event)));
  } catch (err) {
    // fromEvent refuses malformed events before the app sees them.
    const e = err instanceof RegistryError ? err : new RegistryError('UNKNOWN', 'internal server error');
    if (!(err instanceof RegistryError)) logger.error('unhandled', { error: err as Error });
    return toResult({ ...json(e.status, e.toJSON()), headers: { ...e.headers, 'Content-Type': 'application/json', 'Docker-Distribution-API-Version': 'registry/2.0' } });
  }
}
