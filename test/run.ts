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
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { type Started, startBackends } from './backends/start.js';

const root = join(import.meta.dirname, '..');

function testFiles(filters: string[]): string[] {
  const files = readdirSync(join(root, 'test'), { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => join('test', f))
    .sort();
  return filters.length ? files.filter((f) => filters.some((x) => f.includes(x))) : files;
}

const log = (msg: string) => process.stderr.write(`[test] ${msg}\n`);

async function main(): Promise<number> {
  const files = testFiles(process.argv.slice(2));
  if (!files.length) {
    log('no test files match');
    return 1;
  }
  const needsBackends = files.some((f) => f.startsWith(join('test', 'integration')));
  let backends: Started | undefined;
  const cleanup = async () => {
    await backends?.stop();
    backends = undefined;
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  process.once('SIGTERM', () => void cleanup().then(() => process.exit(143)));

  try {
    if (needsBackends) backends = await startBackends(log);
    const env = backends?.env ?? {};
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
