/**
 * Integrity failures leave an error log line and an IntegrityErrors EMF metric by kind (what
 * CloudWatch alarms on), independent of the request's own metrics; a retention run's report
 * becomes its log line and Retention* metrics, value for value.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { INTEGRITY_LOG_MESSAGE, Telemetry } from '../../lib/telemetry.js';
import type { RetentionReport } from '../../lib/registry/retention.js';

/** JSON lines written to stdout and stderr while `work` runs (Powertools writes logs and EMF there). */
function captureOutput(work: () => void): Record<string, any>[] {
  const lines: string[] = [];
  const streams = [process.stdout, process.stderr];
  const writes = streams.map((s) => s.write);
  for (const s of streams) {
    s.write = ((chunk: string | Uint8Array) => {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      return true;
    }) as typeof s.write;
  }
  try {
    work();
  } finally {
    streams.forEach((s, i) => (s.write = writes[i]!));
  }
  return lines.map((l) => JSON.parse(l));
}

describe('telemetry: integrity failures', () => {
  it('logs an error line and publishes IntegrityErrors with the kind as dimension', () => {
    const disabled = process.env.POWERTOOLS_METRICS_DISABLED;
    process.env.POWERTOOLS_METRICS_DISABLED = 'false';
    try {
      const telemetry = new Telemetry('skiff-test');
      const out = captureOutput(() => telemetry.integrity({ kind: 'object-missing', message: 'gone', digest: 'sha256:ab', key: 'blobs/x' }));
      const log = out.find((o) => o.message === INTEGRITY_LOG_MESSAGE);
      assert.ok(log, `an integrity log line in ${JSON.stringify(out)}`);
      assert.equal(log.level, 'ERROR');
      assert.equal(log.kind, 'object-missing');
      assert.equal(log.key, 'blobs/x');
      const emf = out.find((o) => o._aws);
      assert.ok(emf, 'an EMF document');
      assert.equal(emf.IntegrityErrors, 1);
      assert.equal(emf.kind, 'object-missing');
      const definition = emf._aws.CloudWatchMetrics[0];
      assert.deepEqual(definition.Metrics.map((m: { Name: string }) => m.Name), ['IntegrityErrors']);
      assert.ok(definition.Dimensions[0].includes('kind'));
    } finally {
      if (disabled === undefined) delete process.env.POWERTOOLS_METRICS_DISABLED;
      else process.env.POWERTOOLS_METRICS_DISABLED = disabled;
    }
  });
});

describe('telemetry: the retention run', () => {
  it('logs the report and publishes its counts as metrics, value for value; a failed run publishes RetentionFailedRuns 1', () => {
    const disabled = process.env.POWERTOOLS_METRICS_DISABLED;
    process.env.POWERTOOLS_METRICS_DISABLED = 'false';
    try {
      const telemetry = new Telemetry('skiff-test');
      const report: RetentionReport = {
        dryRun: false,
        complete: false,
        stopped: 'deadline',
        resumed: true,
        from: 'a/b',
        policies: 2,
        examined: 7,
        repositories: [],
        unlisted: ['x', 'y', 'z'],
        found: { tags: 6, manifests: 5 },
        deleted: { tags: 4, manifests: 3 },
        raced: { tags: 1, manifests: 1, unlisted: 1 },
      };
      const out = captureOutput(() => telemetry.retained(report));
      const log = out.find((o) => o.message === 'retention');
      assert.equal(log?.examined, 7);
      assert.ok(out.some((o) => o.level === 'WARN' && /resumes/.test(o.message)), 'an incomplete run warns');
      const emf = out.find((o) => o._aws);
      assert.ok(emf, 'an EMF document');
      const names = emf._aws.CloudWatchMetrics[0].Metrics.map((m: { Name: string }) => m.Name).sort();
      const expected = {
        RetentionExpiredManifests: 3,
        RetentionExpiredTags: 4,
        RetentionFailedRuns: 0,
        RetentionIncompleteRuns: 1,
        RetentionRacedDeletes: 3,
        RetentionRepositoriesExamined: 7,
        RetentionUnlistedRepositories: 3,
      };
      assert.deepEqual(names, Object.keys(expected).sort());
      assert.deepEqual(Object.fromEntries(names.map((n: string) => [n, emf[n]])), expected);

      const failed = captureOutput(() => telemetry.retentionFailed(new Error('bad policy')));
      assert.equal(failed.find((o) => o.message === 'retention failed')?.level, 'ERROR');
      assert.equal(failed.find((o) => o._aws)?.RetentionFailedRuns, 1);
    } finally {
      if (disabled === undefined) delete process.env.POWERTOOLS_METRICS_DISABLED;
      else process.env.POWERTOOLS_METRICS_DISABLED = disabled;
    }
  });
});
