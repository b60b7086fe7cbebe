/**
 * Lambda entry points, one module so that every function deploys the same bundle:
 *   http   every registry route (API Gateway HTTP API, payload 2.0)
 *   purge  hourly: frees what abandoned uploads hold
 * Everything but the wiring lives in lib/: the event adapter in lib/http/lambda.ts, the API in
 * RegistryApp, the purge in lib/registry/purge.ts.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { loadConfig } from '../lib/config.js';
import { RegistryApp } from '../lib/http/app.js';
import { handleEvent } from '../lib/http/lambda.js';
import { createRegistry } from '../lib/registry/index.js';
import { purgeExpiredUploads } from '../lib/registry/purge.js';
import { Telemetry } from '../lib/telemetry.js';

// Created once per container, at cold start, and reused by every invocation it serves.
const telemetry = new Telemetry();
const registry = createRegistry(loadConfig(), telemetry.integrity);
const app = new RegistryApp(registry, telemetry.logger);

export function http(event: APIGatewayProxyEventV2, context: Context): Promise<APIGatewayProxyStructuredResultV2> {
  return handleEvent(app, telemetry, event, context);
}

export async function purge(): Promise<void> {
  const result = await purgeExpiredUploads(registry.meta, registry.storage);
  telemetry.logger.info('purge', { ...result });
}
