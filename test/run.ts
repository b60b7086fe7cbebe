/**
 * `npm test`: starts the real backends once for the whole run, then runs every test file.
 *
 *   DynamoDB: DynamoDB Local (in memory) on a free port, unless DYNAMODB_ENDPOINT is set.
 *   S3:       Ceph RGW from Debian packages (test/backends/ceph-rgw.sh installs it when missing),
 *             unless S3_ENDPOINT is set (with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
 *
 * Arguments narrow the run to test files whose path contains one of them:
 *   npm test -- unit        npm test -- blob-api bad-input
 */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, relative } from 'node:path';
import { startDynamoDbLocal, type DynamoDbLocal } from '../lib/local/dynamodb-local.js';

const root = join(import.meta.dirname, '..');

function testFiles(filters: string[]): string[] {
  const files = readdirSync(join(root, 'test'), { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => join('test', f))
    .sort();
  return filters.length ? files.filter((f) => filters.some((x) => f.includes(x))) : files;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const log = (msg: string) => process.stderr.write(`[test] ${msg}\n`);

async function main(): Promise<number> {
  const files = testFiles(process.argv.slice(2));
  if (!files.length) {
    log('no test files match');
    return 1;
  }
  const needsBackends = files.some((f) => !f.startsWith(join('test', 'unit')));
  const env: Record<string, string> = {};
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async () => {
    for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch((err) => log(`cleanup failed: ${err}`));
    cleanups.length = 0;
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  process.once('SIGTERM', () => void cleanup().then(() => process.exit(143)));

  try {
    if (needsBackends) {
      if (process.env.DYNAMODB_ENDPOINT) {
        env.SKIFF_TEST_DYNAMODB_ENDPOINT = process.env.DYNAMODB_ENDPOINT;
      } else {
        const t = Date.now();
        const ddb: DynamoDbLocal = await startDynamoDbLocal({ port: await freePort() });
        cleanups.push(() => ddb.stop());
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
        const script = join(root, 'test/backends/ceph-rgw.sh');
        const rgwEnv = { ...process.env, RGW_PORT: String(await freePort()), MON_PORT: String(await freePort()), MON2_PORT: String(await freePort()) };
        cleanups.push(() => void spawnSync('bash', [script, 'stop', base], { stdio: 'inherit', env: rgwEnv }));
        const started = spawnSync('bash', [script, 'start', base], { env: rgwEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
        const endpoint = /S3_ENDPOINT=(\S+)/.exec(started.stdout ?? '')?.[1];
        if (started.status !== 0 || !endpoint) throw new Error(`Ceph RGW did not start (exit ${started.status}); see ${base}/log`);
        env.SKIFF_TEST_S3_ENDPOINT = endpoint;
        env.SKIFF_TEST_S3_ACCESS_KEY = process.env.RGW_ACCESS_KEY ?? 'test';
        env.SKIFF_TEST_S3_SECRET_KEY = process.env.RGW_SECRET_KEY ?? 'testsecret';
        log(`Ceph RGW at ${endpoint} (${Date.now() - t} ms)`);
      }
    }
    log(`running ${files.length} test files: ${files.map((f) => relative('test', f)).join(' ')}`);
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, ...env, NODE_NO_WARNINGS: '1' },
    });
    return await new Promise<number>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    log(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
