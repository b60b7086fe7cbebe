/**
 * skopeo and podman as the tests run them: child processes with a timeout (never blocking the
 * event loop, since the registry under test may run in this very process), their output kept
 * for the failure message. podman gets a store of its own under a temporary directory.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Ran {
  stdout: string;
  stderr: string;
  code: number;
}

export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { timeout: opts.timeoutMs ?? 180_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, HOME: process.env.HOME ?? tmpdir() } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      if (err && (err as { killed?: boolean }).killed) return reject(new Error(`${cmd} ${args.join(' ')} timed out\n${stderr}`));
      resolve({ stdout, stderr, code });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}

/** Runs and insists on success, failing with everything the tool said. */
export async function ok(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** Installs the Debian packages when their commands are missing (as root), else says what to install. */
export function ensureTools(commands: Record<string, string>): void {
  const missing = Object.entries(commands).filter(([cmd]) => {
    try {
      execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (!missing.length) return;
  const packages = [...new Set(missing.map(([, pkg]) => pkg))];
  if (process.getuid?.() !== 0) throw new Error(`the real-client tests need ${packages.join(' ')} (apt-get install ${packages.join(' ')})`);
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

export interface Podman {
  (args: string[], input?: string): Promise<string>;
  raw(args: string[], input?: string): Promise<Ran>;
  dispose(): Promise<void>;
}

/** podman with its own store, registries.conf and auth file: nothing on the machine is touched. */
export async function podman(): Promise<Podman> {
  const base = await mkdtemp(join(tmpdir(), 'skiff-podman-'));
  await writeFile(join(base, 'auth.json'), '{"auths":{}}');
  const global = ['--root', join(base, 'root'), '--runroot', join(base, 'run'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'none'];
  const withAuth = (args: string[]) => (['login', 'logout', 'push', 'pull'].includes(args[0]!) ? [...args, '--authfile', join(base, 'auth.json')] : args);
  const fn = ((args: string[], input?: string) => ok('podman', [...global, ...withAuth(args)], { input })) as Podman;
  fn.raw = (args, input) => run('podman', [...global, ...withAuth(args)], { input });
  fn.dispose = async () => {
    await run('podman', [...global, 'system', 'reset', '--force']).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  };
  return fn;
}
