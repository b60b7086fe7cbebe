/**
 * Lambda entry points, one module so that every function deploys the same bundle:
 *   http   every registry route (API Gateway HTTP API, payload 2.0)
 *   purge  hourly: frees what abandoned uploads hold
 *   gc     daily by default: retention policies (lib/registry/retention.ts), then online garbage
 *          collection (lib/registry/gc.ts)
 * Everything but the wiring lives in lib/: the event adapter in lib/http/lambda.ts, the API in
 * RegistryApp, the purge in lib/registry/purge.ts.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { loadConfig } from '../lib/config.js';
import { RegistryApp } from '../lib/http/app.js';
import { handleEvent } from '../lib/http/lambda.js';
import { createDynamo, createRegistry } from '../lib/registry/index.js';
import { purgeExpiredUploads } from '../lib/registry/purge.js';
import { collectGarbage } from '../lib/registry/gc.js';
import { DynamoCollectorStore } from '../lib/metadata/dynamo/gc.js';
import { DynamoPolicyStore } from '../lib/metadata/dynamo/policies.js';
import { applyRetention } from '../lib/registry/retention.js';
import { DynamoOrphanStore } from '../lib/metadata/dynamo/orphans.js';
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

/** The schedule's input (serverless.yml): the grace period, a parameter of the stack. */
export interface GcEvent {
  graceSeconds?: number | string;
}

/**
 * Stops a minute before Lambda's timeout (between candidates), so the run saves where it stopped
 * and reports instead of being killed; the next scheduled run resumes there. It walks the marks
 * only: it never makes a full pass (an operator's `gc --full`), and its role has no Scan.
 */
export async function gc(event: GcEvent = {}, context?: Pick<Context, 'getRemainingTimeInMillis'>): Promise<void> {
  const config = registry.config;
  // A stack parameter given on the command line arrives as a string.
  const graceSeconds = Number(event.graceSeconds ?? 86_400);
  if (!Number.isFinite(graceSeconds) || graceSeconds < 0) throw new Error(`gc: graceSeconds must be a number of seconds, not ${String(event.graceSeconds)}`);
  // Retention first, so that what it expires is collected in the same run; it may use half of
  // the time left, and the next run resumes after the last repository it finished.
  const half = ((context?.getRemainingTimeInMillis() ?? 900_000) - 60_000) / 2;
  // A failing retention run (a store error, a policy that no longer validates) must not stop
  // garbage collection: it is logged and counted (RetentionFailedRuns), GC runs, and the
  // invocation then fails with it. Lambda does not retry it (serverless.yml: no retries for gc):
  // a retry would redo GC's orphan sweep of all of storage for a retention error that the next
  // scheduled run meets again or not at all; both runs resume from their cursors there.
  let failed: unknown;
  try {
    const retention = await applyRetention(
      { manifests: registry.meta.manifests, policies: new DynamoPolicyStore(createDynamo(config), config.dynamo.table), storage: registry.storage },
      { dryRun: false, deadline: Date.now() + Math.max(1000, half) },
    );
    telemetry.retained(retention);
  } catch (err) {
    failed = err;
    telemetry.retentionFailed(err as Error);
  }
  const report = await collectGarbage(new DynamoCollectorStore(createDynamo(config), config.dynamo.table), registry.storage, {
    dryRun: false,
    graceMs: graceSeconds * 1000,
    budgetMs: Math.max(1000, (context?.getRemainingTimeInMillis() ?? 900_000) - 60_000),
    orphans: new DynamoOrphanStore(createDynamo(config), config.dynamo.table),
  });
  telemetry.collected(report);
  if (failed !== undefined) throw failed;
}
