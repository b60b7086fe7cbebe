/**
 * The registry as its own process (the real `npm start` entry point), for tests that kill and
 * restart it or measure its memory.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backends, uniqueName } from './backends.js';
import type { DriverKind } from './registry.js';

const root = join(import.meta.dirname, '..', '..');
/** The malloc settings and Node flags `npm start` gives the registry (package.json's config; see the README). */
const config: { glibcTunables: string; nodeFlags: string } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).config;
export const glibcTunables = config.glibcTunables;
export const nodeFlags = config.nodeFlags.split(' ').filter(Boolean);

export interface RegistryProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  output(): string;
  /** Peak resident memory of the process since start or the last resetPeak(), in bytes (VmHWM). */
  peakRss(): Promise<number>;
  /** Resets the peak to the current resident memory (Linux: "5" > /proc/<pid>/clear_refs). */
  resetPeak(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Environment for a registry process with a table, bucket and data directory of its own. */
export function processEnv(storage: DriverKind, extra: Record<string, string> = {}): Record<string, string> {
  const b = backends();
  return {
    SKIFF_STORAGE: storage,
    SKIFF_DATA_DIR: mkdtempSync(join(tmpdir(), 'skiff-proc-')),
    SKIFF_HOST: '127.0.0.1',
    SKIFF_PORT: '0',
    S3_ENDPOINT: b.s3Endpoint,
    S3_BUCKET: uniqueName('skiff'),
    S3_ACCESS_KEY_ID: b.s3Credentials.accessKeyId,
    S3_SECRET_ACCESS_KEY: b.s3Credentials.secretAccessKey,
    DYNAMODB_ENDPOINT: b.dynamoEndpoint,
    DYNAMODB_TABLE: uniqueName('skiff'),
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
    SKIFF_LOG_LEVEL: 'WARN',
    ...extra,
  };
}

/**
 * `nodeArgs` go before the entry point (e.g. `--import` of a test-only module, after tsx). The
 * process gets what `npm start` sets around the entry point (GLIBC_TUNABLES unless `env` says
 * otherwise, and the Node flags).
 */
export async function spawnRegistry(env: Record<string, string>, nodeArgs: string[] = []): Promise<RegistryProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...nodeFlags, ...nodeArgs, 'lib/local/main.ts'], {
    cwd: root,
    // As `npm start`: the caller's GLIBC_TUNABLES wins (empty: glibc's defaults), else the package's.
    env: { PATH: process.env.PATH, NODE_NO_WARNINGS: '1', GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? glibcTunables, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`registry did not start:\n${out}`)), 30_000);
    const check = () => {
      const m = /listening on (http:\/\/[\d.]+:\d+)\//.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`registry exited with ${code}:\n${out}`));
    });
  });
  return {
    url,
    pid: child.pid!,
    child,
    output: () => out,
    async peakRss() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
      return kb * 1024;
    },
    async resetPeak() {
      await writeFile(`/proc/${child.pid}/clear_refs`, '5');
    },
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill(signal);
      });
    },
  };
}
