/**
 * Container daemons for the real-client tests: a containerd and a dockerd of the test's own
 * (Debian's containerd 1.6 and docker.io 20.10), each with everything it writes under one
 * temporary directory, started and stopped by PID, and their clients (`ctr`, `/usr/bin/docker`)
 * run with a timeout like the other clients (test/helpers/clients.ts).
 *
 * What each daemon would write outside its directory, and how that is prevented (found by
 * starting them here as root, snapshotting the file system before and after):
 *
 *   - containerd: root, state, the gRPC socket and the ttrpc socket come from the config file
 *     (`containerd --config`); the `opt` plugin creates /opt/containerd/{bin,lib} unless its
 *     path is set too. The CRI plugin is disabled (it would want CNI, /etc/cni, /opt/cni and a
 *     sandbox image). No socket or state in /run/containerd, /var/lib/containerd.
 *   - dockerd: --data-root, --exec-root, --pidfile, -H unix://... and --containerd (ours: it
 *     starts no containerd of its own). Two paths have no flag: the trust key (/etc/docker/key.json)
 *     is moved by the daemon.json key `deprecated-key-path`; the plugin directory
 *     /run/docker/plugins is hard-coded in 20.10 (daemon_unix.go getPluginExecRoot), so dockerd
 *     runs in a private mount namespace (`unshare --mount`) with a directory of ours bind-mounted
 *     over /run (it reads nothing there: no systemd, cgroupfs, our containerd socket is elsewhere).
 *     --iptables=false --ip-forward=false --ip-masq=false --bridge=none: no network set-up at all;
 *     --storage-driver=vfs: no mounts. The docker CLI keeps its login under DOCKER_CONFIG.
 *
 * Neither daemon runs a container here: pushing and pulling only need the content store, the
 * image store and (for docker) vfs layer directories. test/helpers/footprint.ts lists the system
 * paths they would use by default, so a test can assert that nothing appeared there.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClientFailed, type RecordingProxy, type RunOptions, type RunResult, run } from './clients.js';

/** Debian's docker.io client: /usr/local/bin/docker may be another (newer) client that comes first in PATH. */
export const DOCKER = '/usr/bin/docker';

/** The last `bytes` of a log file, for an error message. */
async function tail(path: string, bytes = 6000): Promise<string> {
  const text = await readFile(path, 'utf8').catch((err: Error) => `(no log: ${err.message})`);
  return text.length > bytes ? `...${text.slice(-bytes)}` : text;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A long-running process with its output in a log file, stopped by its PID. */
class DaemonProcess {
  private exited: Promise<void>;
  exitStatus: string | undefined;

  constructor(
    readonly name: string,
    readonly argv: string[],
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitStatus = signal ? `killed by ${signal}` : `exited ${code}`;
        resolve();
      });
    });
  }

  static async start(name: string, cmd: string, args: string[], logFile: string, env: Record<string, string> = {}): Promise<DaemonProcess> {
    const log = createWriteStream(logFile);
    await new Promise((resolve, reject) => log.once('open', resolve).once('error', reject));
    const child = spawn(cmd, args, { stdio: ['ignore', log, log], env: { ...process.env, ...env } });
    const daemon = new DaemonProcess(name, [cmd, ...args], child, logFile);
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) => reject(new Error(`${name}: cannot start ${cmd}: ${err.message}`)));
    });
    log.close();
    return daemon;
  }

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.exitStatus === undefined;
  }

  /** Why the daemon did not come up: its command, how it ended (if it did) and the end of its log. */
  async failure(what: string): Promise<Error> {
    return new Error(`${this.name} ${what}${this.running ? '' : ` (${this.exitStatus})`}\n$ ${this.argv.join(' ')}\n--- ${this.logFile} ---\n${await tail(this.logFile)}`);
  }

  /** Polls `ready` until it is true, the process exits, or `timeoutMs` passes. */
  async waitReady(ready: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw await this.failure('exited while starting');
      if (await ready().catch(() => false)) return;
      await sleep(200);
    }
    throw await this.failure(`was not ready after ${timeoutMs} ms`);
  }

  /** SIGTERM to the PID, SIGKILL after `graceMs`; resolves when the process has exited. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export interface DaemonOptions {
  /** Per client command. Default 300 s. */
  timeoutMs?: number;
  /** Requests through this proxy are added to a failing command's error. */
  requestLog?: RecordingProxy;
}

/** Runs a client command; throws ClientFailed (with the requests it made through the proxy) unless allowFailure. */
async function runClient(cmd: string, args: string[], opts: RunOptions & { timeoutMs: number }, requestLog: RecordingProxy | undefined, allowFailure: boolean, daemonLog?: string): Promise<RunResult> {
  const mark = requestLog?.requests.length ?? 0;
  const r = await run(cmd, args, opts);
  if (r.code !== 0 && !allowFailure) {
    const context = [
      requestLog ? `--- requests the command made (through ${requestLog.url}) ---\n${requestLog.log(mark)}` : '',
      daemonLog ? `--- end of ${daemonLog} ---\n${await tail(daemonLog, 3000)}` : '',
    ];
    throw new ClientFailed(r, context.filter(Boolean).join('\n'));
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// containerd

export class Containerd {
  private constructor(
    readonly dir: string,
    /** The gRPC socket (`ctr --address`, `dockerd --containerd`). */
    readonly address: string,
    private readonly daemon: DaemonProcess,
    private readonly opts: DaemonOptions,
  ) {}

  /** A containerd under a new temporary directory, CRI off; resolves once it answers `ctr version`. */
  static async start(opts: DaemonOptions = {}): Promise<Containerd> {
    // Short: the socket paths must stay under the 108-byte limit of a unix socket address.
    const dir = await mkdtemp(join(tmpdir(), 'ctd-'));
    const address = join(dir, 'c.sock');
    const config = [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${join(dir, 'state')}"`,
      // CRI would want CNI, /etc/cni, /opt/cni and a pause image; pushing and pulling need none of it.
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${address}.ttrpc"`,
      '[debug]',
      '  address = ""',
      '[metrics]',
      '  address = ""',
      // Without this the opt plugin creates /opt/containerd/{bin,lib}.
      '[plugins."io.containerd.internal.v1.opt"]',
      `  path = "${join(dir, 'opt')}"`,
      '',
    ].join('\n');
    await writeFile(join(dir, 'config.toml'), config);
    const daemon = await DaemonProcess.start('containerd', 'containerd', ['--config', join(dir, 'config.toml')], join(dir, 'containerd.log'));
    const c = new Containerd(dir, address, daemon, opts);
    try {
      await daemon.waitReady(async () => (await run('ctr', ['--address', address, 'version'], { timeoutMs: 5_000 })).code === 0, 30_000);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  get pid(): number {
    return this.daemon.pid;
  }

  get logFile(): string {
    return this.daemon.logFile;
  }

  /** ctr against this daemon; resolves whatever the exit status. */
  ctrRaw(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runClient('ctr', ['--address', this.address, ...args], { timeoutMs: this.opts.timeoutMs ?? 300_000, ...opts }, this.opts.requestLog, true);
  }

  /** ctr, insisting on success. */
  ctr(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runClient('ctr', ['--address', this.address, ...args], { timeoutMs: this.opts.timeoutMs ?? 300_000, ...opts }, this.opts.requestLog, false, this.daemon.logFile);
  }

  /** Stops the daemon by its PID and removes its directory. */
  async stop(): Promise<void> {
    await this.daemon.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// dockerd

/** Mounts $0 over /run in the private mount namespace `unshare` made, then runs the command (`-n`: no /run/mount utab on the host). */
const BIND_RUN = 'mount -n --bind "$0" /run && exec "$@"';

export class Dockerd {
  private constructor(
    readonly dir: string,
    /** unix://<socket> for `docker --host`. */
    readonly host: string,
    private readonly daemon: DaemonProcess,
    readonly containerd: Containerd,
    private readonly opts: DaemonOptions,
  ) {}

  /**
   * A dockerd under a new temporary directory on `containerd`, in a private mount namespace (see
   * the file comment); resolves once the CLI reaches it. Needs root (unshare, mount).
   */
  static async start(containerd: Containerd, opts: DaemonOptions = {}): Promise<Dockerd> {
    const dir = await mkdtemp(join(tmpdir(), 'dkd-'));
    for (const sub of ['data', 'exec', 'run', 'config']) await mkdir(join(dir, sub));
    await writeFile(join(dir, 'daemon.json'), JSON.stringify({ 'deprecated-key-path': join(dir, 'key.json') }));
    const socket = join(dir, 'docker.sock');
    const args = [
      '--config-file', join(dir, 'daemon.json'),
      '--data-root', join(dir, 'data'),
      '--exec-root', join(dir, 'exec'),
      '--pidfile', join(dir, 'docker.pid'),
      '--host', `unix://${socket}`,
      '--containerd', containerd.address,
      '--containerd-namespace', 'skiff-docker',
      '--containerd-plugins-namespace', 'skiff-docker-plugins',
      '--storage-driver', 'vfs',
      '--iptables=false', '--ip-forward=false', '--ip-masq=false', '--bridge=none',
      '--userland-proxy=false',
    ];
    const daemon = await DaemonProcess.start('dockerd', 'unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', BIND_RUN, join(dir, 'run'), 'dockerd', ...args], join(dir, 'dockerd.log'));
    const d = new Dockerd(dir, `unix://${socket}`, daemon, containerd, opts);
    try {
      await daemon.waitReady(async () => (await run(DOCKER, ['--host', d.host, 'version', '--format', '{{.Server.Version}}'], { timeoutMs: 5_000, env: d.env })).code === 0, 60_000);
    } catch (err) {
      await d.stop();
      throw err;
    }
    return d;
  }

  get pid(): number {
    return this.daemon.pid;
  }

  get logFile(): string {
    return this.daemon.logFile;
  }

  /** The CLI's environment: its own config directory (logins), no proxy or context from the machine. */
  get env(): Record<string, string> {
    return { DOCKER_CONFIG: join(this.dir, 'config'), HOME: this.dir, DOCKER_CONTEXT: 'default', DOCKER_HOST: this.host };
  }

  /** docker (Debian's client) against this daemon; resolves whatever the exit status. */
  dockerRaw(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runClient(DOCKER, ['--host', this.host, ...args], { timeoutMs: this.opts.timeoutMs ?? 300_000, ...opts, env: { ...this.env, ...opts.env } }, this.opts.requestLog, true);
  }

  /** docker, insisting on success. */
  docker(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runClient(DOCKER, ['--host', this.host, ...args], { timeoutMs: this.opts.timeoutMs ?? 300_000, ...opts, env: { ...this.env, ...opts.env } }, this.opts.requestLog, false, this.daemon.logFile);
  }

  /** Stops the daemon by its PID (its containerd stays up) and removes its directory. */
  async stop(): Promise<void> {
    await this.daemon.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
