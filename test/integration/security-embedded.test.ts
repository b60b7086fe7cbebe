/**
 * The embedded default of `npm start` (issue 12, findings 1 and 6): its DynamoDB Local listens
 * on every interface and checks no signature, so whoever reaches the port must find nothing
 * there but an empty database of their own; the java process gets no secret in its
 * environment; a data directory from before (-sharedDb) keeps its users; and the data
 * directory is its owner's alone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateTableCommand, DynamoDBClient, ListTablesCommand, ResourceNotFoundException, ScanCommand } from '@aws-sdk/client-dynamodb';
import { run as admin } from '../../lib/admin/cli.js';
import { hashPassword } from '../../lib/auth/passwords.js';
import { ACCESS_KEY_FILE, answers, dynamoDbLocalJarDir } from '../../lib/local/dynamodb-local.js';
import { createDocumentClient, ensureTable } from '../../lib/metadata/dynamo/table.js';
import { DynamoUserStore } from '../../lib/metadata/dynamo/users.js';
import { freePort } from '../backends/start.js';
import { bytes, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { assertPrivateTree } from '../helpers/modes.js';
import { type Started, npmStart, stop } from '../helpers/npm-start.js';

const KEYS = `k1=${randomBytes(32).toString('base64url')}`;
const PASSWORD = 'ivy-password-1';
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** Users in the table `skiff` of the DynamoDB Local at `endpoint`, as a client signing with `accessKeyId` sees it. */
function usersAs(endpoint: string, accessKeyId: string): DynamoUserStore {
  return new DynamoUserStore(createDocumentClient({ table: 'skiff', region: 'us-east-1', endpoint, credentials: { accessKeyId, secretAccessKey: 'x' } }), 'skiff');
}

async function addUser(users: DynamoUserStore, name: string, password: string, pattern: string): Promise<void> {
  const io = { out: () => undefined, err: (l: string) => assert.fail(l), readSecret: async () => password };
  assert.equal(await admin(['user', 'add', name], () => users, io), 0);
  assert.equal(await admin(['grant', name, pattern, 'pull,push'], () => users, io), 0);
}

/** A data directory as Skiff made them before the access key: one -sharedDb database holding ivy. */
async function legacyDataDir(dataDir: string): Promise<void> {
  const dbPath = join(dataDir, 'dynamodb');
  const jar = dynamoDbLocalJarDir();
  const port = await freePort();
  await mkdir(dbPath, { recursive: true, mode: 0o755 });
  const java = spawn('java', [`-Djava.library.path=${join(jar, 'DynamoDBLocal_lib')}`, '-jar', join(jar, 'DynamoDBLocal.jar'), '-sharedDb', '-disableTelemetry', '-port', String(port), '-dbPath', dbPath], { stdio: 'ignore' });
  try {
    for (const end = Date.now() + 60_000; !(await answers(port)); ) {
      assert.ok(Date.now() < end, 'DynamoDB Local did not start');
      await new Promise((r) => setTimeout(r, 200));
    }
    const endpoint = `http://127.0.0.1:${port}`;
    await ensureTable(createDocumentClient({ table: 'skiff', region: 'us-east-1', endpoint, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } }), 'skiff');
    await addUser(usersAs(endpoint, 'local'), 'ivy', PASSWORD, 'ivy/*');
  } finally {
    await new Promise<void>((ok) => {
      java.once('exit', () => ok());
      java.kill('SIGTERM');
    });
  }
}

/** The java process listening on `port`, found by its command line. */
async function javaPid(port: number): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmd = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('DynamoDBLocal.jar') && cmd.includes(`-port\0${port}\0`)) return Number(entry);
  }
  throw new Error(`no DynamoDB Local on port ${port}`);
}

describe('the embedded store of npm start', () => {
  let dataDir = '';
  let ddbPort = 0;
  let running: Started | undefined;
  const endpoint = () => `http://127.0.0.1:${ddbPort}`;
  /** npm start on this data directory with authentication required, plus `extra`. */
  const start = (extra: Record<string, string>) =>
    npmStart({ SKIFF_DATA_DIR: dataDir, SKIFF_PORT: '0', SKIFF_DYNAMODB_LOCAL_PORT: String(ddbPort), SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: KEYS, ...extra });

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'skiff-embedded-sec-'));
    await legacyDataDir(dataDir);
    await chmod(dataDir, 0o755); // as a data directory made before this fix
    ddbPort = await freePort();
    running = await start({ AWS_SECRET_ACCESS_KEY: 'an-aws-secret-from-the-environment' });
  });
  after(async () => {
    await stop(running);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('keeps the users of a -sharedDb data directory, moved once into its own key\'s database', async () => {
    assert.equal((await call(`${running!.url}/v2/`, { headers: { Authorization: basic('ivy', PASSWORD) } })).status, 200);
    const key = (await readFile(join(dataDir, 'dynamodb', ACCESS_KEY_FILE), 'utf8')).trim();
    assert.match(key, /^[A-Za-z0-9]{32,}$/);
    const files = await readdir(join(dataDir, 'dynamodb'));
    assert.ok(!files.includes('shared-local-instance.db'), files.join(' '));
    assert.ok(files.includes(`${key}_us-east-1.db`), files.join(' '));
  });

  it('shows any other credentials an empty database of their own: they read nothing and change nothing', async () => {
    for (const accessKeyId of ['local', 'AKIAMADEUP0000000000']) {
      const raw = new DynamoDBClient({ region: 'us-east-1', endpoint: endpoint(), credentials: { accessKeyId, secretAccessKey: 'x' } });
      assert.deepEqual((await raw.send(new ListTablesCommand({}))).TableNames, [], accessKeyId);
      await assert.rejects(raw.send(new ScanCommand({ TableName: 'skiff' })), ResourceNotFoundException);
      // What they write lands in their own database: a user of theirs with a grant on everything.
      await raw.send(new CreateTableCommand({ TableName: 'skiff', KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }, { AttributeName: 'sk', KeyType: 'RANGE' }], AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }, { AttributeName: 'sk', AttributeType: 'S' }], BillingMode: 'PAY_PER_REQUEST' }));
      const theirs = usersAs(endpoint(), accessKeyId);
      const now = Date.now();
      await theirs.putUser({ name: 'mallory', passwordHash: await hashPassword('mallory-password'), createdAt: now, updatedAt: now });
      await theirs.putGrant('mallory', { pattern: '*', actions: ['pull', 'push', 'delete'] });
      const res = await call(`${running!.url}/v2/ivy/app/tags/list`, { headers: { Authorization: basic('mallory', 'mallory-password') } });
      assert.equal(res.status, 401, `${accessKeyId}: ${res.body.toString()}`);
      raw.destroy();
    }
    // The store's own key (what the admin tool is given) sees the registry's users, and only those.
    const key = (await readFile(join(dataDir, 'dynamodb', ACCESS_KEY_FILE), 'utf8')).trim();
    assert.deepEqual(await usersAs(endpoint(), key).listUsers(), ['ivy']);
  });

  it('gives DynamoDB Local no secret of the registry in its environment', async () => {
    const environ = (await readFile(`/proc/${await javaPid(ddbPort)}/environ`, 'utf8')).split('\0');
    const names = environ.map((e) => e.slice(0, e.indexOf('=')));
    for (const secret of ['SKIFF_TOKEN_KEYS', 'AWS_SECRET_ACCESS_KEY']) assert.ok(!names.includes(secret), `${secret} reached java`);
    assert.ok(!environ.join('\n').includes(KEYS.split('=')[1]!));
  });

  it('keeps the data directory to its owner: directories 0700, files 0600', async () => {
    const blob = bytes(5000, 9);
    const post = await call(`${running!.url}/v2/ivy/app/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob, headers: { Authorization: basic('ivy', PASSWORD) } });
    assert.equal(post.status, 201, post.body.toString());
    const seen = await assertPrivateTree(dataDir);
    assert.ok(seen.some((s) => s.endsWith('.db')) && seen.includes(ACCESS_KEY_FILE), seen.join(' '));
    assert.ok((await readdir(join(dataDir, 'storage'))).length > 0, 'the blob is under storage/');
  });

  it('serves Lambda mode from the same store: the handler signs with the store\'s key, whatever AWS_* says', async () => {
    await stop(running);
    running = await start({ SKIFF_LAMBDA_MODE: 'true', AWS_ACCESS_KEY_ID: 'AKIAFROMTHEENVIRONMENT', AWS_SECRET_ACCESS_KEY: 'an-aws-secret-from-the-environment' });
    assert.match(running.banner, /mode: Lambda/);
    assert.equal((await call(`${running.url}/v2/`, { headers: { Authorization: basic('ivy', PASSWORD) } })).status, 200);
  });
});
