/**
 * The stack packaged offline, as CI and a deploy build it: `osls package` with no AWS
 * credentials, no login and no config files, into a fresh directory under the run's TMPDIR.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const root = join(import.meta.dirname, '..', '..');

export interface PackagedStack {
  /** The package directory: the template and one zip per function. */
  dir: string;
  /** What to remove when done: the package directory and the child's TMPDIR (see below). */
  scratch: string;
  template: { Resources: Record<string, Resource>; Outputs: Record<string, any>; [k: string]: any };
}

export type Resource = { Type: string; Properties: any; DependsOn?: unknown; DeletionPolicy?: string; UpdateReplacePolicy?: string };

/**
 * Packages stage `ci` in eu-west-1 with the given `--param`s. serverless-esbuild builds each
 * function in a directory of os.tmpdir() (about 4.6 MB each) and leaves it there: the child's
 * TMPDIR is `<scratch>/tmp`, next to the package directory (which osls empties first).
 */
export async function packageStack(params: Record<string, string> = {}): Promise<PackagedStack> {
  const scratch = await mkdtemp(join(tmpdir(), 'skiff-package-'));
  const dir = join(scratch, 'package');
  await mkdir(join(scratch, 'tmp'));
  const env: Record<string, string> = {
    PATH: process.env.PATH!,
    HOME: scratch,
    TMPDIR: join(scratch, 'tmp'),
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    SLS_TELEMETRY_DISABLED: '1',
    SLS_NOTIFICATIONS_MODE: 'off',
  };
  const paramArgs = Object.entries(params).map(([k, v]) => `--param=${k}=${v}`);
  try {
    await run(join(root, 'node_modules/.bin/osls'), ['package', '--stage', 'ci', '--region', 'eu-west-1', '--package', dir, ...paramArgs], { cwd: root, env, timeout: 240_000 });
  } catch (err) {
    await rm(scratch, { recursive: true, force: true });
    const { stdout = '', stderr = '' } = err as { stdout?: string; stderr?: string };
    throw new Error(`osls package ${paramArgs.join(' ')} failed:\n${stdout}${stderr}`);
  }
  const template = JSON.parse(await readFile(join(dir, 'cloudformation-template-update-stack.json'), 'utf8'));
  return { dir, scratch, template };
}
