/**
 * `npm test`: starts the real backends once for the whole run, then runs every test file.
 *
 *   DynamoDB: DynamoDB Local (in memory) on a free port, unless DYNAMODB_ENDPOINT is set.
 *   S3:       Ceph RGW from Debian packages (test/backends/ceph-rgw.sh installs it when missing),
 *             unless S3_ENDPOINT is set (with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
 *
 * Temporary files go under one directory per run, removed at the end (SKIFF_KEEP_TMP=1 keeps it).
 *
 * Arguments narrow the run to test files whose path contains one of them:
 *   npm test -- unit        npm test -- blob-api bad-input
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
  // Every temporary file of the run (registry data directories, image layouts, packaged stacks,
  // podman storage) lives under one directory that goes when the run ends, however it ends.
  // Lower case throughout (podman names an image pulled from `oci:<dir>` after the directory) and
  // short (podman refuses a runroot path longer than 50 characters).
  const scratch = join(tmpdir(), `skiff-run-${randomBytes(3).toString('hex')}`);
  await mkdir(scratch, { mode: 0o700 });
  const cleanup = async () => {
    await backends?.stop();
    backends = undefined;
    if (!process.env.SKIFF_KEEP_TMP) await rm(scratch, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  process.once('SIGTERM', () => void cleanup().then(() => process.exit(143)));

  try {
    if (needsBackends) backends = await startBackends(log);
    const env = backends?.env ?? {};
    // One file at a time, on any machine: the files share the backends and the machine's cores,
    // and the client suites check that nothing appeared under /var/lib or /run while they ran.
    log(`running ${files.length} test files: ${files.map((f) => relative('test', f)).join(' ')}`);
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, ...env, TMPDIR: scratch, NODE_NO_WARNINGS: '1' },
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
