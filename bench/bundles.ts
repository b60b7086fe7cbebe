/**
 * Bundle size and cold start of each Lambda function: the stack packaged offline (osls +
 * serverless-esbuild, exactly what a deploy uploads), each function's zip unpacked, and a fresh
 * Node process timed loading the bundle and answering one event.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..');

export interface BundleFigures {
  name: string;
  jsBytes: number;
  zipBytes: number;
  /** Median over the runs: import of the bundle plus the first event, in a fresh process. */
  initMs: number;
}

const PROBE = `
const t0 = performance.now();
const { http: handler } = await import(process.env.BUNDLE);
const res = await handler({ version: '2.0', rawPath: '/v2/', rawQueryString: '', headers: {}, requestContext: { http: { method: 'GET', path: '/v2/' } }, isBase64Encoded: false }, { awsRequestId: 'bench' });
// 401 when the function's environment requires authentication (the deployed default).
if (res.statusCode !== 200 && res.statusCode !== 401) throw new Error('status ' + res.statusCode);
process.stderr.write('INIT ' + (performance.now() - t0) + '\\n');`;

export async function measureBundles(runs = 7): Promise<BundleFigures[]> {
  const out = await mkdtemp(join(tmpdir(), 'skiff-bench-package-'));
  try {
    const env = { PATH: process.env.PATH!, HOME: out, AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', SLS_TELEMETRY_DISABLED: '1' };
    await run(join(root, 'node_modules/.bin/osls'), ['package', '--stage', 'bench', '--package', out], { cwd: root, env, timeout: 240_000 });
    const template = JSON.parse(await readFile(join(out, 'cloudformation-template-update-stack.json'), 'utf8'));
    const figures: BundleFigures[] = [];
    for (const name of ['read', 'upload', 'chunk', 'finish', 'delete']) {
      const zip = join(out, `${name}.zip`);
      const dir = join(out, name);
      await run('unzip', ['-q', zip, '-d', dir]);
      const listing = (await run('unzip', ['-l', zip])).stdout;
      const jsBytes = listing
        .split('\n')
        .filter((l) => l.trim().endsWith('.mjs'))
        .reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]), 0);
      const times: number[] = [];
      for (let i = 0; i < runs; i++) {
        const probeEnv = {
          // What the function is deployed with (NODE_OPTIONS included), where it is a plain value.
          ...deployedEnv(template, name),
          PATH: process.env.PATH!,
          BUNDLE: join(dir, 'functions', 'handlers.mjs'),
          SKIFF_STORAGE: 's3',
          S3_BUCKET: 'bench',
          DYNAMODB_TABLE: 'bench',
          AWS_REGION: 'us-east-1',
          AWS_ACCESS_KEY_ID: 'bench',
          AWS_SECRET_ACCESS_KEY: 'bench',
          SKIFF_HASH_THREAD: 'false',
          POWERTOOLS_METRICS_DISABLED: 'true',
          SKIFF_LOG_LEVEL: 'ERROR',
          NODE_NO_WARNINGS: '1',
        };
        const { stderr } = await run(process.execPath, ['--input-type=module', '-e', PROBE], { env: probeEnv });
        times.push(Number(/INIT ([\d.]+)/.exec(stderr)?.[1]));
      }
      times.sort((a, b) => a - b);
      figures.push({ name, jsBytes, zipBytes: (await stat(zip)).size, initMs: times[Math.floor(times.length / 2)]! });
    }
    return figures;
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

/** A function's environment in the packaged template, without the values CloudFormation resolves. */
function deployedEnv(template: { Resources: Record<string, { Type: string; Properties: Record<string, any> }> }, name: string): Record<string, string> {
  const fn = Object.values(template.Resources).find((r) => r.Type === 'AWS::Lambda::Function' && String(r.Properties.FunctionName).endsWith(`-${name}`));
  if (!fn) throw new Error(`no function ${name} in the packaged template`);
  const vars: Record<string, unknown> = fn.Properties.Environment?.Variables ?? {};
  return Object.fromEntries(Object.entries(vars).filter((e): e is [string, string] => typeof e[1] === 'string'));
}
