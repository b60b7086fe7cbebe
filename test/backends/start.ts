/**
 * Starts the real backends for a test or benchmark run, once: DynamoDB Local (in memory) and
 * Ceph RGW, each on a free port, unless DYNAMODB_ENDPOINT / S3_ENDPOINT point at running ones.
 * Returns the SKIFF_TEST_* environment that test/helpers/backends.ts reads, and a stop().
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { startDynamoDbLocal } from '../../lib/local/dynamodb-local.js';

export interface Started {
  env: Record<string, string>;
  /** The Ceph daemons this run started (none when S3_ENDPOINT names a running S3), for the benchmark to pin to cores. */
  s3Pids(): number[];
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function startBackends(log: (msg: string) => void): Promise<Started> {
  const env: Record<string, string> = {};
  let s3Pids = (): number[] => [];
  const stops: (() => Promise<void> | void)[] = [];
  const stop = async () => {
    for (const fn of stops.reverse()) await Promise.resolve(fn()).catch((err) => log(`stop failed: ${err}`));
    stops.length = 0;
  };
  try {
    if (process.env.DYNAMODB_ENDPOINT) {
      env.SKIFF_TEST_DYNAMODB_ENDPOINT = process.env.DYNAMODB_ENDPOINT;
    } else {
      const t = Date.now();
      const ddb = await startDynamoDbLocal({ port: await freePort() });
      stops.push(() => ddb.stop());
      env.SKIFF_TEST_DYNAMODB_ENDPOINT = ddb.endpoint;
      log(`DynamoDB Local at ${ddb.endpoint} (pid ${ddb.pid}, ${Date.now() - t} ms)`);
    }
    if (process.env.S3_ENDPOINT) {
      env.SKIFF_TEST_S3_ENDPOINT = process.env.S3_ENDPOINT;
      env.SKIFF_TEST_S3_ACCESS_KEY = process.env.AWS_ACCESS_KEY_ID ?? '';
      env.SKIFF_TEST_S3_SECRET_KEY = process.env.AWS_SECRET_ACCESS_KEY ?? '';
    } else {
      const t = Date.now();
      const base = process.env.RGW_BASE ?? `/tmp/skiff-ceph-${process.pid}`;
      const script = join(import.meta.dirname, 'ceph-rgw.sh');
      const rgwEnv = { ...process.env, RGW_PORT: String(await freePort()), MON_PORT: String(await freePort()), MON2_PORT: String(await freePort()) };
      stops.push(() => void spawnSync('bash', [script, 'stop', base], { stdio: 'inherit', env: rgwEnv }));
      const started = spawnSync('bash', [script, 'start', base], { env: rgwEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      const endpoint = /S3_ENDPOINT=(\S+)/.exec(started.stdout ?? '')?.[1];
      if (started.status !== 0 || !endpoint) throw new Error(`Ceph RGW did not start (exit ${started.status}); see ${base}/log`);
      env.SKIFF_TEST_S3_ENDPOINT = endpoint;
      env.SKIFF_TEST_S3_ACCESS_KEY = process.env.RGW_ACCESS_KEY ?? 'test';
      env.SKIFF_TEST_S3_SECRET_KEY = process.env.RGW_SECRET_KEY ?? 'testsecret';
      log(`Ceph RGW at ${endpoint} (${Date.now() - t} ms)`);
      s3Pids = () =>
        readdirSync(join(base, 'run'))
          .filter((f) => f.endsWith('.pid'))
          .map((f) => Number(readFileSync(join(base, 'run', f), 'utf8').trim()))
          .filter((pid) => pid > 0);
    }
    return { env, s3Pids: () => s3Pids(), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
