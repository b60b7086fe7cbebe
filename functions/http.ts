/**
 * Lambda entry point for every registry route (API Gateway HTTP API, payload 2.0). Everything
 * but the wiring lives in lib/: the event adapter in lib/http/lambda.ts, the API in RegistryApp.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { loadConfig } from '../lib/config.js';
import { RegistryApp } from '../lib/http/app.js';
import { handleEvent } from '../lib/http/lambda.js';
import { createRegistry } from '../lib/registry/index.js';
import { Telemetry } from '../lib/telemetry.js';

// Created once per container, at cold start, and reused by every invocation it serves.
const telemetry = new Telemetry();
const app = new RegistryApp(createRegistry(loadConfig()), telemetry.logger);

export function handler(event: APIGatewayProxyEventV2, context: Context): Promise<APIGatewayProxyStructuredResultV2> {
  return handleEvent(app, telemetry, event, context);
}
