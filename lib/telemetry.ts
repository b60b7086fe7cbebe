/**
 * Structured logs and metrics (Powertools for AWS Lambda): one JSON log line and one EMF
 * metrics document per request. In Lambda, CloudWatch turns the EMF document into metrics;
 * elsewhere POWERTOOLS_METRICS_DISABLED=true keeps it off stdout.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { MetricUnit, Metrics } from '@aws-lambda-powertools/metrics';
import type { CollectReport } from './registry/gc.js';
import type { RetentionReport } from './registry/retention.js';

export interface Observation {
  method: string;
  path: string;
  status: number;
  route?: string;
  durationMs: number;
  bytesIn?: number;
}

/**
 * What kind of disagreement between storage and metadata was found (the metric's dimension):
 *   object-missing      a descriptor or link names an object that is not there
 *   object-truncated    the object is there but its size is not the recorded one
 *   descriptor-repaired a dedupe found the kept copy gone and pointed the descriptor at a new one
 *   upload-data-missing an upload's written bytes are shorter than its record says
 *   multipart-repaired  S3 refused the recorded part list and the repair fixed it
 *   multipart-corrupt   S3 holds parts that differ from the record: the upload cannot finish
 */
export type IntegrityKind =
  | 'object-missing'
  | 'object-truncated'
  | 'descriptor-repaired'
  | 'upload-data-missing'
  | 'multipart-repaired'
  | 'multipart-corrupt';

export interface IntegrityFailure {
  kind: IntegrityKind;
  message: string;
  digest?: string;
  key?: string;
  [detail: string]: unknown;
}

/** Receives integrity failures where they are found (services, drivers); must not throw. */
export type IntegrityReporter = (failure: IntegrityFailure) => void;

/** The log line's message for an integrity failure, so log queries and tests can find them. */
export const INTEGRITY_LOG_MESSAGE = 'integrity failure';

export class Telemetry {
  readonly logger: Logger;
  private readonly metrics: Metrics;

  constructor(service = process.env.POWERTOOLS_SERVICE_NAME ?? 'skiff') {
    this.logger = new Logger({ serviceName: service, logLevel: (process.env.SKIFF_LOG_LEVEL ?? 'INFO') as 'INFO' });
    this.metrics = new Metrics({ serviceName: service, namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'Skiff' });
  }

  /**
   * Storage disagreeing with metadata is never the client's fault and rarely visible in a
   * status: an error log line and the IntegrityErrors metric (by kind) make it seen.
   */
  readonly integrity: IntegrityReporter = (failure) => {
    this.logger.error(INTEGRITY_LOG_MESSAGE, { ...failure });
    // Its own EMF document, published at once: independent of the request's metrics.
    const m = this.metrics.singleMetric();
    m.addDimension('kind', failure.kind);
    m.addMetric('IntegrityErrors', MetricUnit.Count, 1);
  };

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
    if (report.stopped === 'busy') this.logger.warn('gc: another run holds the lease; nothing was done');
    else if (!report.complete) this.logger.warn('gc: stopped at the budget; the next run resumes where this one stopped');
    const m = this.metrics;
    m.addMetric('GcIncompleteRuns', MetricUnit.Count, report.complete ? 0 : 1);
    for (const [what, unit] of [['links', MetricUnit.Count], ['descriptors', MetricUnit.Count], ['objects', MetricUnit.Count], ['bytes', MetricUnit.Bytes]] as const) {
      const name = what[0]!.toUpperCase() + what.slice(1);
      m.addMetric(`GcFound${name}`, unit, report.found[what]);
      m.addMetric(`GcFreed${name}`, unit, report.freed[what]);
    }
    m.addMetric('GcCapacityUnits', MetricUnit.Count, report.cost.capacityUnits);
    m.addMetric('GcUnlistedRepositories', MetricUnit.Count, report.unlisted.length);
    if (report.orphans) {
      const o = report.orphans;
      m.addMetric('GcFoundOrphanObjects', MetricUnit.Count, o.found.objects);
      m.addMetric('GcFreedOrphanObjects', MetricUnit.Count, o.freed.objects);
      m.addMetric('GcFreedOrphanBytes', MetricUnit.Bytes, o.freed.bytes);
      m.addMetric('GcFreedOrphanUploads', MetricUnit.Count, o.freed.writes);
      m.addMetric('GcNotedOrphanObjects', MetricUnit.Count, o.noted.objects);
      m.addMetric('GcOrphanCapacityUnits', MetricUnit.Count, o.cost.capacityUnits);
    }
    m.publishStoredMetrics();
  }

  /**
   * One retention run (lib/registry/retention.ts): its report as a log line and as metrics,
   * RetentionFailedRuns 0 among them (a failed run sends 1: retentionFailed()), so that an alarm
   * on it has a data point every run.
   */
  retained(report: RetentionReport): void {
    this.logger.info('retention', { ...report });
    if (report.stopped === 'busy') this.logger.warn('retention: another run holds the lease; nothing was done');
    else if (!report.complete) this.logger.warn('retention: stopped at the deadline; the next run resumes after the last repository this one finished');
    const m = this.metrics;
    m.addMetric('RetentionFailedRuns', MetricUnit.Count, 0);
    m.addMetric('RetentionIncompleteRuns', MetricUnit.Count, report.complete ? 0 : 1);
    m.addMetric('RetentionRepositoriesExamined', MetricUnit.Count, report.examined);
    m.addMetric('RetentionExpiredTags', MetricUnit.Count, report.deleted.tags);
    m.addMetric('RetentionExpiredManifests', MetricUnit.Count, report.deleted.manifests);
    m.addMetric('RetentionUnlistedRepositories', MetricUnit.Count, report.unlisted.length);
    m.addMetric('RetentionRacedDeletes', MetricUnit.Count, report.raced.tags + report.raced.manifests + report.raced.unlisted);
    m.publishStoredMetrics();
  }

  /** A retention run that failed (a store error, a policy that no longer validates). */
  retentionFailed(err: Error): void {
    this.logger.error('retention failed', err);
    const m = this.metrics;
    m.addMetric('RetentionFailedRuns', MetricUnit.Count, 1);
    m.publishStoredMetrics();
  }
}
