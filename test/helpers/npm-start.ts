/**
 * `npm start` as a user runs it (the README's command), in its own process group, for the tests
 * of the embedded default.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', '..');

export interface Started {
  child: ChildProcess;
  url: string;
  banner: string;
}

/** `npm start` in its own process group, as a user runs it; resolves with the start-up line. */
export async function npmStart(env: Record<string, string>): Promise<Started> {
  const child = spawn('npm', ['start', '--silent'], { cwd: root, env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? root, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`npm start printed no URL in 60 s:\n${out}`)), 60_000);
    child.stdout!.on('data', () => {
      const m = /listening on (http:\/\/[\d.]+:\d+)\//.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`npm start exited with ${code}:\n${out}`));
    });
  });
  return { child, url, banner: out };
}

/** SIGTERM to the whole group (npm, tsx, node, java), then wait for npm to exit. */
export async function stop(s: Started | undefined): Promise<void> {
  if (!s || s.child.exitCode !== null || s.child.signalCode !== null) return;
  const exited = new Promise<void>((ok) => s.child.once('exit', () => ok()));
  process.kill(-s.child.pid!, 'SIGTERM');
  await exited;
}

export function portOpen(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), ok(true)));
    socket.once('error', () => ok(false));
  });
}

export async function waitClosed(port: number, ms = 15_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    if (!(await portOpen(port))) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

