/**
 * Integrity failures leave an error log line and an IntegrityErrors EMF metric by kind (what
 * CloudWatch alarms on), independent of the request's own metrics.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { INTEGRITY_LOG_MESSAGE, Telemetry } from '../../lib/telemetry.js';

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
