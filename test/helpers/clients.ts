/**
 * Real registry clients for the tests: skopeo, podman and buildah (Debian packages) run as child processes
 * with a timeout, never blocking the event loop (the registry under test runs in this very
 * process), their whole output kept for the failure message.
 *
 * Each ClientSandbox gives both tools a configuration of their own under a temporary directory,
 * so nothing on the machine is read or written that a test could depend on or disturb: an empty
 * auth file, a registries.conf without search registries or mirrors, an accept-anything
 * signature policy, a containers.conf and storage.conf of its own, TMPDIR, and for podman an
 * isolated store (`--root/--runroot --storage-driver vfs`) and libpod state (`--tmpdir`), with
 * `--events-backend none` and `--cgroup-manager cgroupfs`; buildah uses the same store and files.
 * (docker and containerd are daemons: test/helpers/daemons.ts.)
 *
 * The blob-info cache (which layer lives in which repository, compressed and uncompressed digests:
 * what makes skopeo and podman try cross-repository mounts and reuse blobs) has no flag, variable
 * or configuration key in these versions (c/image 5.23: only the library's
 * SystemContext.BlobInfoCacheDir, which skopeo 1.9, podman 4.3 and buildah 1.28 do not set): run as
 * root, every copy, pull and push opens /var/lib/containers/cache/blob-info-cache-v1.boltdb,
 * creating the directory, shared by every run on the machine. So, as root, each command runs in a
 * private mount namespace (`unshare --mount`) in which the sandbox's own `sys/var-lib` and
 * `sys/run` directories are bind-mounted over /var/lib and /run: the cache lives in the sandbox,
 * as does anything else a client would write there (runc's state of a `podman run`, say), and the
 * machine's /var/lib and /run are neither read nor written. (Binding over /var/lib/containers/cache
 * itself would need that directory to exist: creating it is the very leftover, as a `mkdir` is not
 * undone by the namespace.) Commands of one sandbox share its directories, also when they run at
 * the same time or leave a process behind (podman's conmon). Without root the clients keep the
 * cache under $XDG_DATA_HOME, the sandbox's too. Tests must not depend on what the cache holds
 * beyond what the same sandbox pushed. test/helpers/footprint.ts checks that nothing appeared.
 *
 * podman needs nothing special here (found by experiment as root in a container without systemd,
 * cgroups v1, podman 4.3.1): pull and push work with only --root/--runroot/--storage-driver vfs;
 * without --tmpdir it creates /run/libpod (alive lock, exits/, events/), without
 * --events-backend none it writes an events file there. No user namespace, fuse-overlayfs or
 * runtime is involved in pulling and pushing images.
 *
 * Also here: recordingProxy(), an HTTP pass-through in front of the registry that records what a
 * client sent, so a test can assert on client behaviour (a cross-repository mount) and a failure
 * can show the requests that led to it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { Agent, type IncomingHttpHeaders, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

// ---------------------------------------------------------------------------------------------
// Running a command

export interface RunOptions {
  /** Kill the command (its whole process group) after this long. Default 120 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  /** Instead of `input`: streamed to the command's stdin (with backpressure), which is then closed. */
  stdin?: Iterable<Buffer> | AsyncIterable<Buffer>;
  /** Environment added to (and overriding) this process's. */
  env?: Record<string, string>;
}

export interface RunResult {
  argv: string[];
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Everything a run said, for an assertion message. */
export function formatRun(r: RunResult): string {
  const how = r.timedOut ? `timed out after ${r.ms} ms` : r.signal ? `killed by ${r.signal}` : `exited ${r.code} after ${r.ms} ms`;
  return `$ ${r.argv.map(quote).join(' ')}\n${how}\n--- stdout ---\n${r.stdout.trimEnd()}\n--- stderr ---\n${r.stderr.trimEnd()}`;
}

const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

export class ClientFailed extends Error {
  constructor(
    readonly result: RunResult,
    context = '',
  ) {
    super(`${formatRun(result)}${context ? `\n${context}` : ''}`);
    this.name = 'ClientFailed';
  }
}

/** Runs a command to its end; resolves whatever its exit status. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      // Its own process group, so a timeout can stop it and anything it started.
      child = spawn(cmd, args, { detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    } catch (err) {
      return reject(err);
    }
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const kill = (signal: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        /* already gone */
      }
    };
    let hardKill: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      kill('SIGTERM');
      hardKill = setTimeout(() => kill('SIGKILL'), 5_000);
    }, opts.timeoutMs ?? 120_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      clearTimeout(hardKill);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(hardKill);
      resolve({ argv: [cmd, ...args], code, signal, timedOut, stdout, stderr, ms: Date.now() - started });
    });
    child.stdin!.on('error', () => undefined);
    // A command that exits before reading all of it (EPIPE) says why in its exit status and output.
    if (opts.stdin) pipeline(Readable.from(opts.stdin), child.stdin!).catch(() => undefined);
    else child.stdin!.end(opts.input ?? '');
  });
}

// ---------------------------------------------------------------------------------------------
// Installing the clients

/** Debian package of each command (docker: Debian's client by path, see daemons.ts). */
const PACKAGES: Record<string, string> = {
  skopeo: 'skopeo',
  podman: 'podman',
  buildah: 'buildah',
  dockerd: 'docker.io',
  '/usr/bin/docker': 'docker.io',
  containerd: 'containerd',
  ctr: 'containerd',
};

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes sure the commands exist: installs their Debian packages with apt-get when missing and
 * running as root, otherwise throws naming the packages to install.
 */
export function ensureClients(commands: string[] = ['skopeo', 'podman']): void {
  const missing = commands.filter((c) => !hasCommand(c));
  if (!missing.length) return;
  const packages = [...new Set(missing.map((c) => PACKAGES[c] ?? c))];
  const advice = `apt-get install -y --no-install-recommends ${packages.join(' ')}`;
  if (process.getuid?.() !== 0 || !hasCommand('apt-get')) {
    throw new Error(`the real-client tests need ${missing.join(' and ')}: install the Debian package(s) ${packages.join(', ')} (${advice})`);
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  // docker.io and containerd would start the system's daemons (/var/lib/docker, /run/containerd);
  // the tests run their own. policy-rc.d answering 101 tells invoke-rc.d not to start anything.
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  try {
    if (ownPolicy) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 });
    execFileSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'inherit', 'inherit'], env });
    execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], { stdio: ['ignore', 'inherit', 'inherit'], env });
  } catch (err) {
    throw new Error(`installing ${packages.join(' ')} failed (${advice}): ${(err as Error).message}`);
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
  }
  const still = missing.filter((c) => !hasCommand(c));
  if (still.length) throw new Error(`${still.join(', ')} still missing after ${advice}`);
}

// ---------------------------------------------------------------------------------------------
// skopeo and podman, sandboxed

export interface CopyOptions {
  /** --all: every image of an index, not only the one for this platform. */
  all?: boolean;
  /** --preserve-digests (default true): fail rather than rewrite a manifest. */
  preserveDigests?: boolean;
  digestFile?: string;
  extra?: string[];
}

/**
 * Run as `sh -c BIND_SYSTEM sandbox <var-lib> <run> <command> <args...>` in a new mount namespace:
 * mounts the two directories over /var/lib and /run there, then runs the command. `-n`: mount
 * would otherwise create /run/mount (its utab) on the host, before /run is the sandbox's.
 */
const BIND_SYSTEM = 'mount -n --bind "$1" /var/lib && mount -n --bind "$2" /run && shift 2 && exec "$@"';
const UNSHARE = ['--mount', '--propagation', 'private', '--', 'sh', '-c', BIND_SYSTEM, 'sandbox'];
let isolation: Promise<boolean> | undefined;

/**
 * Whether commands must run in a namespace of their own (as root; see the file comment). Throws
 * when they must and cannot: the clients would write into the machine's /var/lib.
 */
function mustIsolate(probeDir: string): Promise<boolean> {
  if (process.getuid?.() !== 0) return Promise.resolve(false);
  isolation ??= (async () => {
    const r = await run('unshare', [...UNSHARE, join(probeDir, 'var-lib'), join(probeDir, 'run'), 'true'], { timeoutMs: 10_000 }).catch((err: Error) => err);
    if (r instanceof Error || r.code !== 0) {
      const why = r instanceof Error ? r.message : formatRun(r);
      throw new Error(`running as root, the clients would write into /var/lib/containers; they run in a private mount namespace, which needs unshare (util-linux) and mount (CAP_SYS_ADMIN):\n${why}`);
    }
    return true;
  })();
  return isolation;
}

export interface SandboxOptions {
  /** Per command. Default 120 s. */
  timeoutMs?: number;
  /** Requests through this proxy are added to a failing command's error. */
  requestLog?: RecordingProxy;
}

export class ClientSandbox {
  private constructor(
    readonly dir: string,
    readonly env: Record<string, string>,
    readonly timeoutMs: number,
    /** Whether each command runs in a mount namespace with the sandbox's /var/lib and /run (as root; see the file comment). */
    readonly isolated: boolean,
    private readonly requestLog?: RecordingProxy,
  ) {}

  static async create(opts: SandboxOptions = {}): Promise<ClientSandbox> {
    const dir = await mkdtemp(join(tmpdir(), 'skiff-clients-'));
    // Not under /var/lib or /run, which the commands see replaced (see the file comment).
    if (/^\/(var\/lib|run|var\/run)(\/|$)/.test(dir)) throw new Error(`the client sandbox ${dir} must not be under /var/lib or /run: set TMPDIR elsewhere`);
    await mkdir(join(dir, 'sys', 'var-lib'), { recursive: true });
    await mkdir(join(dir, 'sys', 'run'), { recursive: true });
    // Where /etc/resolv.conf links into /run (systemd-resolved, resolvconf), the sandbox's /run
    // must hold it too, or name lookups (npm pack in `npm run image`) fail inside the namespace.
    const resolver = await realpath('/etc/resolv.conf').catch(() => undefined);
    if (resolver?.startsWith('/run/')) {
      const copy = join(dir, 'sys', 'run', resolver.slice('/run/'.length));
      await mkdir(dirname(copy), { recursive: true });
      await copyFile(resolver, copy);
    }
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await mkdir(join(dir, 'podman-tmp'), { recursive: true });
    await writeFile(join(dir, 'auth.json'), '{"auths":{}}\n');
    await writeFile(join(dir, 'registries.conf'), 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n');
    await writeFile(join(dir, 'policy.json'), '{"default":[{"type":"insecureAcceptAnything"}]}\n');
    await writeFile(join(dir, 'containers.conf'), '[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n');
    await writeFile(join(dir, 'storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${join(dir, 'root')}"\nrunroot = "${join(dir, 'rr')}"\n`);
    const env = {
      TMPDIR: join(dir, 'tmp'),
      REGISTRY_AUTH_FILE: join(dir, 'auth.json'),
      CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'),
      CONTAINERS_CONF: join(dir, 'containers.conf'),
      CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
      XDG_RUNTIME_DIR: join(dir, 'tmp'),
      XDG_CONFIG_HOME: join(dir, 'config'),
      XDG_DATA_HOME: join(dir, 'data'),
      HOME: dir,
    };
    const isolated = await mustIsolate(join(dir, 'sys')).catch(async (err) => {
      await rm(dir, { recursive: true, force: true });
      throw err;
    });
    return new ClientSandbox(dir, env, opts.timeoutMs ?? 120_000, isolated, opts.requestLog);
  }

  /** Runs a client command in the sandbox; throws ClientFailed (with the requests it made) unless allowFailure. */
  private async exec(cmd: string, args: string[], opts: RunOptions, allowFailure: boolean): Promise<RunResult> {
    const mark = this.requestLog?.requests.length ?? 0;
    const argv = this.isolated ? (['unshare', [...UNSHARE, join(this.dir, 'sys', 'var-lib'), join(this.dir, 'sys', 'run'), cmd, ...args]] as const) : ([cmd, args] as const);
    const r = await run(argv[0], [...argv[1]], { timeoutMs: this.timeoutMs, ...opts, env: { ...this.env, ...opts.env } });
    if (r.code !== 0 && !allowFailure) {
      throw new ClientFailed(r, this.requestLog ? `--- requests the command made (through ${this.requestLog.url}) ---\n${this.requestLog.log(mark)}` : '');
    }
    return r;
  }

  /**
   * Any command (a script that calls buildah, say) with the sandbox's environment and, as root,
   * in a mount namespace with its /var/lib and /run; resolves whatever the exit status.
   */
  runRaw(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec(cmd, args, opts, true);
  }

  // --- skopeo ---

  private skopeoArgs(args: string[]): string[] {
    return ['--policy', join(this.dir, 'policy.json'), '--tmpdir', join(this.dir, 'tmp'), ...args];
  }

  /** skopeo with the sandbox's configuration; resolves whatever the exit status. */
  skopeoRaw(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec('skopeo', this.skopeoArgs(args), opts, true);
  }

  /** skopeo, insisting on success. */
  skopeo(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec('skopeo', this.skopeoArgs(args), opts, false);
  }

  /** skopeo copy; TLS verification is turned off for each side that is a docker:// reference. */
  copy(src: string, dest: string, opts: CopyOptions = {}): Promise<RunResult> {
    return this.skopeo(this.copyArgs(src, dest, opts));
  }

  copyArgs(src: string, dest: string, opts: CopyOptions = {}): string[] {
    return [
      'copy',
      ...(src.startsWith('docker://') ? ['--src-tls-verify=false'] : []),
      ...(dest.startsWith('docker://') ? ['--dest-tls-verify=false'] : []),
      ...(opts.preserveDigests === false ? [] : ['--preserve-digests']),
      ...(opts.all ? ['--all'] : []),
      ...(opts.digestFile ? ['--digestfile', opts.digestFile] : []),
      ...(opts.extra ?? []),
      src,
      dest,
    ];
  }

  /** skopeo inspect of a docker:// reference: the manifest as stored (raw) or skopeo's summary. */
  async inspect(ref: string, opts: { raw?: boolean; config?: boolean } = {}): Promise<string> {
    const args = ['inspect', ...(ref.startsWith('docker://') ? ['--tls-verify=false'] : []), ...(opts.raw ? ['--raw'] : []), ...(opts.config ? ['--config'] : []), ref];
    return (await this.skopeo(args)).stdout;
  }

  async listTags(ref: string): Promise<{ Repository: string; Tags: string[] }> {
    return JSON.parse((await this.skopeo(['list-tags', '--tls-verify=false', ref])).stdout);
  }

  // --- podman ---

  private podmanArgs(args: string[]): string[] {
    return [
      '--root', join(this.dir, 'root'),
      // podman refuses a runroot path longer than 50 characters (it holds sockets): keep it short.
      '--runroot', join(this.dir, 'rr'),
      '--storage-driver', 'vfs',
      '--tmpdir', join(this.dir, 'podman-tmp'),
      '--cgroup-manager', 'cgroupfs',
      '--events-backend', 'none',
      ...args,
    ];
  }

  /** podman with the sandbox's store and configuration; resolves whatever the exit status. */
  podmanRaw(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec('podman', this.podmanArgs(args), opts, true);
  }

  /** podman, insisting on success. */
  podman(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec('podman', this.podmanArgs(args), opts, false);
  }

  /** podman pull; --tls-verify=false for registry references. Returns the image ID (no sha256: prefix). */
  async podmanPull(ref: string): Promise<string> {
    const registry = !/^(oci|oci-archive|dir|docker-archive|containers-storage):/.test(ref);
    const r = await this.podman(['pull', '--quiet', ...(registry ? ['--tls-verify=false'] : []), ref]);
    const id = r.stdout.trim().split('\n').pop() ?? '';
    if (!/^[0-9a-f]{64}$/.test(id)) throw new ClientFailed(r, 'expected the image ID on the last line of stdout');
    return id;
  }

  /** podman push to a registry; returns the manifest digest podman wrote to its --digestfile. */
  async podmanPush(image: string, dest: string, extra: string[] = []): Promise<string> {
    const digestFile = join(this.dir, `digest-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    await this.podman(['push', '--tls-verify=false', '--digestfile', digestFile, ...extra, image, dest]);
    return (await readFile(digestFile, 'utf8')).trim();
  }

  /** `podman image inspect` of one image, parsed. */
  async podmanInspect(image: string): Promise<PodmanImage> {
    const out = JSON.parse((await this.podman(['image', 'inspect', image])).stdout);
    return out[0];
  }

  // --- buildah ---

  private buildahArgs(args: string[]): string[] {
    // The same store as podman's (one containers/storage, as on a real machine).
    return ['--root', join(this.dir, 'root'), '--runroot', join(this.dir, 'rr'), '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', ...args];
  }

  /** buildah with the sandbox's store and configuration; resolves whatever the exit status. */
  buildahRaw(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec('buildah', this.buildahArgs(args), opts, true);
  }

  /** buildah, insisting on success. */
  buildah(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.exec('buildah', this.buildahArgs(args), opts, false);
  }

  /**
   * buildah push to a registry (--tls-verify=false, and --retry 0: buildah retries three times by
   * default; 1.28 still retries a layer upload cut by a network error, seen here); returns the
   * manifest digest it wrote.
   */
  async buildahPush(image: string, dest: string, extra: string[] = []): Promise<string> {
    const digestFile = join(this.dir, `digest-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    await this.buildah(['push', '--tls-verify=false', '--retry', '0', '--digestfile', digestFile, ...extra, image, dest]);
    return (await readFile(digestFile, 'utf8')).trim();
  }

  async dispose(): Promise<void> {
    // vfs keeps layers as plain directories and nothing was mounted: removing the tree is enough.
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The fields of `podman image inspect` the tests read. */
export interface PodmanImage {
  Id: string;
  Digest: string;
  RepoDigests: string[];
  RepoTags: string[];
  Architecture: string;
  Os: string;
  ManifestType?: string;
  RootFS: { Type: string; Layers: string[] };
}

// ---------------------------------------------------------------------------------------------
// Recording what a client sends

export interface RecordedRequest {
  method: string;
  /** Path and query as sent. */
  url: string;
  headers: IncomingHttpHeaders;
  /** Request body bytes seen. */
  bytesIn: number;
  /** Response body bytes passed back. */
  bytesOut: number;
  status?: number;
  responseHeaders?: IncomingHttpHeaders;
}

export interface RecordingProxy {
  /** http://<listen address>:<port>: point clients here instead of at the registry. */
  url: string;
  host: string;
  requests: RecordedRequest[];
  /** The requests recorded since `mark` (an earlier requests.length), one line each. */
  log(mark?: number): string;
  close(): Promise<void>;
}

/** One line per request: method, path, status, body bytes and the headers that matter here. */
export function formatRequest(r: RecordedRequest): string {
  const h = r.headers;
  // Query values over 100 characters (an upload capability) shortened: the line is for reading.
  const url = r.url.replace(/([?&][^=&]+=)([^&]{12})[^&]{100,}/g, '$1$2...');
  const parts = [`${r.method} ${url} -> ${r.status ?? '(no answer)'}`];
  if (r.bytesIn) parts.push(`body=${r.bytesIn}`);
  if (r.bytesOut) parts.push(`answered ${r.bytesOut} bytes`);
  for (const name of ['accept', 'content-type', 'content-length', 'content-range', 'transfer-encoding']) if (h[name]) parts.push(`${name}: ${h[name]}`);
  // The scheme only: the credential itself stays out of test output.
  if (h.authorization) parts.push(`authorization: ${h.authorization.split(' ')[0]} ...`);
  const loc = r.responseHeaders?.location;
  if (loc) parts.push(`=> location: ${loc}`);
  return parts.join(' | ');
}

export interface ProxyOptions {
  /** Address to listen on. Default 127.0.0.1. */
  listen?: string;
  /**
   * Locations in responses that start with `from` (an origin the registry hands out, e.g. its
   * upload host's) are passed on starting with `to` (default: this proxy) instead, so that the
   * client's requests there go through a recording proxy too. What is recorded is the original.
   */
  rewriteLocation?: { from: string; to?: string };
}

/**
 * An HTTP pass-through to `target` (the registry) that records each request and its status.
 * Bodies stream through in both directions; headers, Host included, pass unchanged (except a
 * Location named in `rewriteLocation`).
 */
export async function recordingProxy(target: string, opts: ProxyOptions = {}): Promise<RecordingProxy> {
  const t = new URL(target);
  const listen = opts.listen ?? '127.0.0.1';
  const agent = new Agent({ keepAlive: true });
  const requests: RecordedRequest[] = [];
  let self = '';
  const rewrite = (rawHeaders: string[]) => {
    const r = opts.rewriteLocation;
    if (!r) return rawHeaders;
    return rawHeaders.map((v, i) => (i % 2 === 1 && rawHeaders[i - 1]!.toLowerCase() === 'location' && v.startsWith(r.from) ? (r.to ?? self) + v.slice(r.from.length) : v));
  };
  const server = createServer((req, res) => {
    const rec: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytesIn: 0, bytesOut: 0 };
    requests.push(rec);
    req.on('data', (c: Buffer) => (rec.bytesIn += c.length));
    const up = httpRequest({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers, agent }, (ures) => {
      rec.status = ures.statusCode;
      rec.responseHeaders = ures.headers;
      res.writeHead(ures.statusCode ?? 502, rewrite(ures.rawHeaders));
      ures.on('data', (c: Buffer) => (rec.bytesOut += c.length));
      ures.pipe(res);
    });
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${err.message}`);
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, listen, resolve));
  const port = (server.address() as AddressInfo).port;
  self = `http://${listen}:${port}`;
  return {
    url: self,
    host: `${listen}:${port}`,
    requests,
    log: (mark = 0) => requests.slice(mark).map(formatRequest).join('\n'),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
