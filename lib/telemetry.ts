/**
 * Structured logs and metrics (Powertools for AWS Lambda): one JSON log line and one EMF
 * metrics document per request. In Lambda, CloudWatch turns the EMF document into metrics;
 * elsewhere POWERTOOLS_METRICS_DISABLED=true keeps it off stdout.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { MetricUnit, Metrics } from '@aws-lambda-powertools/metrics';
import type { CollectReport } from './registry/gc.js';

export interface Observation {
  method: string;
  path: string;
  status: number;
  route?: string;
  durationMs: number;
  bytesIn?: number;
}

export class Telemetry {
  readonly logger: Logger;
  private readonly metrics: Metrics;

  constructor(service = process.env.POWERTOOLS_SERVICE_NAME ?? 'skiff') {
    this.logger = new Logger({ serviceName: service, logLevel: (process.env.SKIFF_LOG_LEVEL ?? 'INFO') as 'INFO' });
    this.metrics = new Metrics({ serviceName: service, namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'Skiff' });
  }

  observe(o: Observation): void {
    this.logger.info('request', { ...o });
    const m = this.metrics;
    m.addDimension('route', o.route ?? 'none');
    m.addMetric('Requests', MetricUnit.Count, 1);
    m.addMetric('Latency', MetricUnit.Milliseconds, o.durationMs);
    if (o.status >= 500) m.addMetric('ServerErrors', MetricUnit.Count, 1);
    else if (o.status >= 400) m.addMetric('ClientErrors', MetricUnit.Count, 1);
    if (o.bytesIn) m.addMetric('BytesIn', MetricUnit.Bytes, o.bytesIn);
    m.publishStoredMetrics();
  }

  /** One garbage collection run (lib/registry/gc.ts): its report as a log line and as metrics. */
  collected(report: CollectReport): void {
    this.logger.info('gc', { ...report });
    if (!report.complete) this.logger.warn('gc: the scan did not finish within the budget; nothing was deleted');
    const m = this.metrics;
    m.addMetric('GcIncompleteRuns', MetricUnit.Count, report.complete ? 0 : 1);
    for (const [what, unit] of [['links', MetricUnit.Count], ['descriptors', MetricUnit.Count], ['objects', MetricUnit.Count], ['bytes', MetricUnit.Bytes]] as const) {
      const name = what[0]!.toUpperCase() + what.slice(1);
      m.addMetric(`GcFound${name}`, unit, report.found[what]);
      m.addMetric(`GcFreed${name}`, unit, report.freed[what]);
    }
    m.addMetric('GcCapacityUnits', MetricUnit.Count, report.cost.capacityUnits);
    m.publishStoredMetrics();
  }
}
