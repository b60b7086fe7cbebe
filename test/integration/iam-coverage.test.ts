/**
 * IAM coverage (issue 11, item 5): DynamoDB Local and Ceph RGW ignore IAM, so a role missing an
 * action only shows on AWS, as a 500. Here the registry runs in Lambda mode (the real handler)
 * with authentication required and a recorder on its SDK clients (test/helpers/record-calls.ts);
 * representative flows of every function run against it, each AWS call is attributed to the
 * function API Gateway would route its request to, and each must be allowed by that function's
 * role in the packaged template: action, resource (bucket, objects, table) and conditions
 * (dynamodb:LeadingKeys, s3:prefix) included. The stack is packaged with the upload host, and
 * upload sessions also run on an upload host process (SKIFF_SERVE=uploads, the container's
 * command) whose calls must be allowed by the task role.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { run as admin } from '../../lib/admin/cli.js';
import { DeleteCommand } from '@aws-sdk/lib-dynamodb';
import { createDocumentClient } from '../../lib/metadata/dynamo/table.js';
import { DynamoUserStore } from '../../lib/metadata/dynamo/users.js';
import { DynamoPolicyStore } from '../../lib/metadata/dynamo/policies.js';
import { MiB, bytes, sha256, sha512 } from '../helpers/data.js';
import { call, type Received } from '../helpers/http.js';
import { withDigest } from '../helpers/oci.js';
import { type RegistryProcess, processEnv, spawnRegistry } from '../helpers/process.js';
import type { Needed, RecordedCall } from '../helpers/record-calls.js';
import { CONFIG_TYPE, LAYER_TYPE } from '../helpers/manifests.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { type PackagedStack, type Resource, packageStack, root } from '../deploy/package.js';

const RECORDER = ['--import', './test/helpers/record-calls.ts'];
/** The function API Gateway routes a request to (serverless.yml, `functions`). */
const FUNCTION_OF_METHOD: Record<string, string> = { GET: 'Read', HEAD: 'Read', POST: 'Upload', PATCH: 'Chunk', PUT: 'Finish', DELETE: 'Delete' };
/** The roles whose calls are checked: the functions', and the upload host's task role. */
const ROLES = ['Read', 'Upload', 'Chunk', 'Finish', 'Delete', 'Purge', 'Gc', 'UploadHostTask'];
const UPLOAD_IMAGE = `123456789012.dkr.ecr.eu-west-1.amazonaws.com/skiff-ci-upload-host@sha256:${'cd'.repeat(32)}`;
/** Where the API hands out upload Locations: https, so the API process does not serve it itself. */
const UPLOAD_ORIGIN = 'https://uploads.invalid';

// --- the policy, evaluated as IAM would for these statements ---

const glob = (pattern: string) => new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);

function resourceCovers(resource: unknown, need: Needed): boolean {
  const text = JSON.stringify(resource);
  // A query of an index needs the index's ARN: the table's does not cover it.
  if (need.action.startsWith('dynamodb:')) return need.index ? text === `{"Fn::Sub":"\${MetadataTable.Arn}/index/${need.index}"}` : text === '{"Fn::GetAtt":["MetadataTable","Arn"]}';
  if (need.on === 'object') return text === '{"Fn::Sub":"${BlobBucket.Arn}/*"}';
  return text === '{"Fn::GetAtt":["BlobBucket","Arn"]}';
}

/** Conditions this stack uses; any other is not understood, so not taken to allow anything. */
function conditionHolds(condition: Record<string, Record<string, string[]>> | undefined, need: Needed): boolean {
  return Object.entries(condition ?? {}).every(([op, entries]) =>
    Object.entries(entries).every(([key, patterns]) => {
      const match = (v: string) => [patterns].flat().some((p) => glob(p).test(v));
      // ForAllValues over no values holds, as in IAM (a Scan carries no leading keys).
      if (op === 'ForAllValues:StringLike' && key === 'dynamodb:LeadingKeys') return (need.leadingKeys ?? []).every(match);
      if (op === 'StringLike' && key === 's3:prefix') return need.prefix !== undefined && match(need.prefix);
      return false;
    }),
  );
}

function allowedBy(role: Resource, need: Needed): boolean {
  const statements = role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
  return statements.some(
    (st: any) => st.Effect === 'Allow' && [st.Action].flat().includes(need.action) && [st.Resource].flat().some((r) => resourceCovers(r, need)) && conditionHolds(st.Condition, need),
  );
}

// --- the flows ---

describe('IAM coverage: every AWS call of every function is allowed by its role (Lambda mode, s3, auth required)', () => {
  let stack: PackagedStack & { scratch: string };
  let reg: RegistryProcess;
  let uploadHost: RegistryProcess;
  let record: string;
  let calls: RecordedCall[] = [];
  const password = 'iam-coverage-password';
  const auth = { Authorization: `Basic ${Buffer.from(`iam:${password}`).toString('base64')}` };
  const req = (path: string, method = 'GET', body?: Buffer | string, headers: Record<string, string> = {}): Promise<Received> =>
    call(path.startsWith('http') ? path : `${reg.url}${path}`, { method, headers: { ...auth, ...headers }, ...(body !== undefined ? { body } : {}) });
  const ok = (res: Received, status: number, what: string) => assert.equal(res.status, status, `${what}: ${res.status} ${res.body.toString().slice(0, 300)}`);

  async function pushBlob(repo: string, data: Buffer): Promise<{ mediaType: string; digest: string; size: number }> {
    ok(await req(`/v2/${repo}/blobs/uploads/?digest=${sha256(data)}`, 'POST', data), 201, 'monolithic POST');
    return { mediaType: LAYER_TYPE, digest: sha256(data), size: data.length };
  }
  const putManifest = (repo: string, ref: string, manifest: object) =>
    req(`/v2/${repo}/manifests/${ref}`, 'PUT', JSON.stringify(manifest), { 'Content-Type': (manifest as { mediaType: string }).mediaType });

  /** A Location handed out by the API, sent to the API (Lambda) or to the upload host process. */
  const onApi = (location: string | undefined) => `${reg.url}${new URL(location!, UPLOAD_ORIGIN).pathname}${new URL(location!, UPLOAD_ORIGIN).search}`;
  const onHost = (location: string | undefined) => `${uploadHost.url}${new URL(location!, UPLOAD_ORIGIN).pathname}${new URL(location!, UPLOAD_ORIGIN).search}`;

  before(async () => {
    stack = await packageStack({ uploadImage: UPLOAD_IMAGE });
    record = join(tmpdir(), `skiff-iam-calls-${randomBytes(4).toString('hex')}.jsonl`);
    await writeFile(record, '');
    const env = processEnv('s3', {
      SKIFF_LAMBDA_MODE: 'true',
      SKIFF_AUTH: 'required',
      SKIFF_TOKEN_KEYS: `k1=${randomBytes(32).toString('base64url')}`,
      SKIFF_AUTH_CACHE_SECONDS: '0',
      SKIFF_RECORD_CALLS: record,
      SKIFF_RECORD_HOLD: 'dynamodb:DeleteItem MANIFEST#',
      SKIFF_UPLOAD_ORIGIN: UPLOAD_ORIGIN,
    });
    reg = await spawnRegistry(env, RECORDER);
    // The upload host as the container runs it, on the same table, bucket and keys.
    uploadHost = await spawnRegistry(
      { ...processEnv('s3'), S3_BUCKET: env.S3_BUCKET!, DYNAMODB_TABLE: env.DYNAMODB_TABLE!, SKIFF_TOKEN_KEYS: env.SKIFF_TOKEN_KEYS!, SKIFF_AUTH: 'required', SKIFF_SERVE: 'uploads', SKIFF_RECORD_CALLS: record, SKIFF_RECORD_ORIGIN: 'upload host process' },
      RECORDER,
    );
    const db = createDocumentClient({ table: env.DYNAMODB_TABLE!, region: 'us-east-1', endpoint: env.DYNAMODB_ENDPOINT!, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
    const io = { out: () => undefined, err: (l: string) => assert.fail(l), readSecret: async () => password };
    for (const argv of [['user', 'add', 'iam'], ['grant', 'iam', '*', 'pull,push,delete']]) assert.equal(await admin(argv, () => new DynamoUserStore(db, env.DYNAMODB_TABLE!), io), 0);

    // Version check, and the token endpoint: Basic GET, OAuth2 password POST, failed logins
    // (counted) and the good login that clears them, then a Bearer request.
    ok(await req('/v2/'), 200, 'GET /v2/');
    ok(await call(`${reg.url}/auth/token?service=skiff&scope=repository:iam/a:pull`, { headers: { Authorization: 'Basic ' + Buffer.from('iam:wrong').toString('base64') } }), 401, 'wrong password');
    const token = await req('/auth/token?service=skiff&scope=repository:iam/a:pull,push');
    ok(token, 200, 'token by GET');
    const form = new URLSearchParams({ grant_type: 'password', username: 'iam', password: 'wrong', service: 'skiff', client_id: 't' });
    ok(await call(`${reg.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), 401, 'wrong password by POST');
    form.set('password', password);
    ok(await call(`${reg.url}/auth/token`, { method: 'POST', body: form.toString(), headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), 200, 'token by POST');
    ok(await call(`${reg.url}/v2/iam/a/tags/list`, { headers: { Authorization: `Bearer ${token.json().token}` } }), 404, 'Bearer read of an empty repository');

    // Chunked push whose chunks complete an S3 part (the 5 MiB minimum), with a status check,
    // then a finish with a final chunk in the PUT.
    const layer = bytes(9 * MiB + 11, 1);
    let start = await req('/v2/iam/a/blobs/uploads/', 'POST');
    ok(start, 202, 'start');
    let location = onApi(start.header('location'));
    for (let offset = 0; offset < layer.length - 1000; ) {
      const chunk = layer.subarray(offset, Math.min(offset + 3 * MiB, layer.length - 1000));
      const res = await req(location, 'PATCH', chunk, { 'Content-Range': `${offset}-${offset + chunk.length - 1}`, 'Content-Type': 'application/octet-stream' });
      ok(res, 202, `PATCH at ${offset}`);
      offset += chunk.length;
      location = onApi(res.header('location'));
    }
    ok(await req(location), 204, 'upload status');
    ok(await req(withDigest(location, sha256(layer)), 'PUT', layer.subarray(layer.length - 1000), { 'Content-Type': 'application/octet-stream' }), 201, 'finish with a final chunk');
    ok(await req(`/v2/iam/a/blobs/${sha256(layer)}`, 'HEAD'), 200, 'HEAD blob');
    ok(await req(`/v2/iam/a/blobs/${sha256(layer)}`), 307, 'GET blob (presigned redirect)');

    // Monolithic POST, a finish with the whole blob in the PUT, a sha512 finish (reads back),
    // a mount (201) and a mount that falls back to an upload, cancelled.
    const config = { ...(await pushBlob('iam/a', bytes(300, 2))), mediaType: CONFIG_TYPE };
    start = await req('/v2/iam/a/blobs/uploads/', 'POST');
    const small = bytes(2000, 3);
    ok(await req(withDigest(onApi(start.header('location')), sha256(small)), 'PUT', small, { 'Content-Type': 'application/octet-stream' }), 201, 'finish with the whole blob');
    ok(await req(`/v2/iam/b/blobs/uploads/?mount=${sha256(layer)}&from=iam/a`, 'POST'), 201, 'mount');
    const fallback = await req(`/v2/iam/b/blobs/uploads/?mount=sha256:${'0'.repeat(64)}&from=iam/a`, 'POST');
    ok(fallback, 202, 'mount of an unknown blob');
    ok(await req(onApi(fallback.header('location')), 'DELETE'), 204, 'cancel');

    // Manifests: an image by tag, an index over it, a referrer; reads of each kind; catalog.
    const image = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers: [{ mediaType: LAYER_TYPE, digest: sha256(layer), size: layer.length }] };
    const imageDesc = { mediaType: MediaTypes.ociManifest, digest: sha256(Buffer.from(JSON.stringify(image))), size: Buffer.byteLength(JSON.stringify(image)) };
    ok(await putManifest('iam/a', 'v1', image), 201, 'PUT image');
    ok(await putManifest('iam/a', 'index', { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [imageDesc] }), 201, 'PUT index');
    const referrer = { ...image, artifactType: 'application/vnd.example.sig', subject: imageDesc, layers: [] };
    ok(await putManifest('iam/a', sha256(Buffer.from(JSON.stringify(referrer))), referrer), 201, 'PUT referrer');
    ok(await req('/v2/iam/a/manifests/v1'), 200, 'GET by tag');
    ok(await req(`/v2/iam/a/manifests/${imageDesc.digest}`, 'HEAD'), 200, 'HEAD by digest');
    ok(await req('/v2/iam/a/tags/list'), 200, 'tags');
    ok(await req(`/v2/iam/a/referrers/${imageDesc.digest}?artifactType=application/vnd.example.sig`), 200, 'referrers');
    ok(await req('/v2/_catalog'), 200, 'catalog');

    // Deletes: a tag, a manifest with its tags, a blob link.
    ok(await putManifest('iam/a', 'v2', image), 201, 'another tag');
    ok(await req('/v2/iam/a/manifests/v2', 'DELETE'), 202, 'DELETE tag');
    ok(await req('/v2/iam/a/manifests/index', 'DELETE'), 202, 'DELETE the index by tag');
    ok(await req(`/v2/iam/b/blobs/${sha256(layer)}`, 'DELETE'), 202, 'DELETE blob');

    // A DELETE racing a push of its manifest: the push lands under a new tag while the DELETE
    // is about to delete the manifest item (held there by the recorder); the DELETE's
    // transaction, conditional on what it read, fails and it starts over, taking the new tag too.
    reg.child.kill('SIGUSR1');
    const deleting = req(`/v2/iam/a/manifests/${imageDesc.digest}`, 'DELETE');
    for (let i = 0; !(await readFile(record, 'utf8')).includes('"held"'); i++) {
      assert.ok(i < 600, 'the DELETE reached the manifest item');
      await new Promise((r) => setTimeout(r, 50));
    }
    ok(await putManifest('iam/a', 'racer', image), 201, 'PUT under a new tag during the DELETE');
    reg.child.kill('SIGUSR2');
    ok(await deleting, 202, 'DELETE manifest');
    ok(await req('/v2/iam/a/manifests/racer', 'HEAD'), 404, 'no tag is left pointing at the deleted manifest');

    // Upload sessions on the upload host: chunks completing a part, status, a finish with a
    // final chunk, a finish with a sha512 digest (read back), and a cancel; the blob is then
    // served by the API.
    const big = bytes(11 * MiB + 5, 5);
    let hosted = onHost((await req('/v2/iam/host/blobs/uploads/', 'POST')).header('location'));
    for (let offset = 0; offset < 10 * MiB; offset += 5 * MiB) {
      const res = await call(hosted, { method: 'PATCH', body: big.subarray(offset, offset + 5 * MiB), headers: { 'Content-Type': 'application/octet-stream' } });
      ok(res, 202, `upload host PATCH at ${offset}`);
      hosted = onHost(res.header('location'));
    }
    ok(await call(hosted), 204, 'upload host status');
    ok(await call(withDigest(hosted, sha256(big)), { method: 'PUT', body: big.subarray(10 * MiB) }), 201, 'upload host finish');
    ok(await req(`/v2/iam/host/blobs/${sha256(big)}`, 'HEAD'), 200, 'the blob is linked');
    const small512 = bytes(1000, 6);
    hosted = onHost((await req('/v2/iam/host/blobs/uploads/', 'POST')).header('location'));
    ok(await call(withDigest(hosted, sha512(small512)), { method: 'PUT', body: small512 }), 201, 'upload host finish, sha512');
    hosted = onHost((await req('/v2/iam/host/blobs/uploads/', 'POST')).header('location'));
    ok(await call(hosted, { method: 'PATCH', body: bytes(1000, 7) }), 202, 'upload host PATCH');
    ok(await call(hosted, { method: 'DELETE' }), 204, 'upload host cancel');

    // The purge, as the scheduled function runs it (the handler, in a process of its own),
    // with its clock past the upload TTL so that an upload left half-written has expired.
    const abandoned = await req('/v2/iam/old/blobs/uploads/', 'POST');
    ok(await req(onApi(abandoned.header('location')), 'PATCH', bytes(MiB, 4)), 202, 'PATCH of the abandoned upload');
    const script = `const now = Date.now; Date.now = () => now() + 8 * 86400_000;
      const { purge } = await import('./functions/handlers.ts'); await purge();`;
    const purged = await promisify(execFile)(process.execPath, ['--import', 'tsx', ...RECORDER, '--input-type=module', '-e', script], {
      cwd: root,
      env: { PATH: process.env.PATH, NODE_NO_WARNINGS: '1', ...env, SKIFF_RECORD_ORIGIN: 'purge', SKIFF_LOG_LEVEL: 'INFO', POWERTOOLS_METRICS_DISABLED: 'true' },
    });
    assert.match(purged.stdout, /"purged":1\b/, 'the purge freed the abandoned upload');

    // Garbage collection, as the scheduled function runs it, after a manifest DELETE left its
    // blobs unreferenced; a manifest over 64 KiB (kept in S3) makes it read a manifest object.
    const gcConfig = { ...(await pushBlob('iam/gc', bytes(200, 8))), mediaType: CONFIG_TYPE };
    const dropped = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: gcConfig, layers: [await pushBlob('iam/gc', bytes(300, 9))] };
    ok(await putManifest('iam/gc', 'dropped', dropped), 201, 'manifest PUT before GC');
    const large = { ...dropped, layers: [await pushBlob('iam/gc', bytes(300, 10))], annotations: { pad: 'x'.repeat(70_000) } };
    ok(await putManifest('iam/gc', 'large', large), 201, 'large manifest PUT before GC');
    ok(await req(`/v2/iam/gc/manifests/${sha256(Buffer.from(JSON.stringify(dropped)))}`, 'DELETE'), 202, 'manifest DELETE before GC');
    // A repository whose only manifest is deleted: GC removes it from the catalog at its mark.
    const only = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { ...(await pushBlob('iam/emptied', bytes(200, 12))), mediaType: CONFIG_TYPE }, layers: [] };
    ok(await putManifest('iam/emptied', 'v1', only), 201, 'manifest PUT before GC');
    ok(await req(`/v2/iam/emptied/manifests/${sha256(Buffer.from(JSON.stringify(only)))}`, 'DELETE'), 202, 'DELETE of the only manifest before GC');
    // A large manifest deleted leaves its object named by nothing: the orphan sweep reads the
    // key index and notes it (BatchWriteItem), for a later run to free.
    const deletedLarge = { ...large, annotations: { pad: 'y'.repeat(70_000) } };
    ok(await putManifest('iam/gc', 'deleted-large', deletedLarge), 201, 'large manifest PUT before GC');
    ok(await req(`/v2/iam/gc/manifests/${sha256(Buffer.from(JSON.stringify(deletedLarge)))}`, 'DELETE'), 202, 'large manifest DELETE before GC');
    // Retention runs in the same function first: a policy that expires a tag and its manifest
    // (which empties the repository, so it also leaves the catalog).
    const retained = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config: { ...(await pushBlob('iam/retained', bytes(200, 11))), mediaType: CONFIG_TYPE }, layers: [] };
    ok(await putManifest('iam/retained', 'pr-1', retained), 201, 'manifest PUT before retention');
    const policyIo = { out: () => undefined, err: (l: string) => assert.fail(l), readSecret: async () => '' };
    const policies = () => new DynamoPolicyStore(db, env.DYNAMODB_TABLE!);
    assert.equal(await admin(['policy', 'set', 'iam/retained', '--keep', 'pr-*=0'], () => assert.fail('no users'), policyIo, undefined, { policies, retain: () => assert.fail('not run here') }), 0);
    // An upload whose record is gone (as DynamoDB's TTL drops it) leaves an orphaned multipart
    // upload and scratch objects for GC's orphan sweep.
    const orphaned = await req('/v2/iam/gc/blobs/uploads/', 'POST');
    ok(await req(onApi(orphaned.header('location')), 'PATCH', bytes(1000, 11)), 202, 'PATCH of an upload GC finds orphaned');
    await db.send(new DeleteCommand({ TableName: env.DYNAMODB_TABLE!, Key: { pk: `UPLOAD#${new URL(orphaned.header('location')!, UPLOAD_ORIGIN).pathname.split('/').at(-1)}`, sk: 'UPLOAD' } }));
    const collected = await promisify(execFile)(process.execPath, ['--import', 'tsx', ...RECORDER, '--input-type=module', '-e', `const { gc } = await import('./functions/handlers.ts'); await gc({ graceSeconds: 0 });`], {
      cwd: root,
      env: { PATH: process.env.PATH, NODE_NO_WARNINGS: '1', ...env, SKIFF_RECORD_ORIGIN: 'gc', SKIFF_LOG_LEVEL: 'INFO', POWERTOOLS_METRICS_DISABLED: 'true' },
    });
    const gcLog = JSON.parse(collected.stdout.split('\n').find((l) => l.includes('"message":"gc"'))!);
    assert.ok(gcLog.complete && gcLog.freed.objects >= 2, `GC freed the dropped manifest's blobs: ${JSON.stringify(gcLog.freed)}`);
    assert.deepEqual(gcLog.unlisted, ['iam/emptied'], 'GC removed the emptied repository from the catalog');
    const retentionLog = JSON.parse(collected.stdout.split('\n').find((l) => l.includes('"message":"retention"'))!);
    assert.ok(retentionLog.deleted.tags === 1 && retentionLog.deleted.manifests === 1 && retentionLog.unlisted.includes('iam/retained'), `retention ran first: ${JSON.stringify(retentionLog)}`);
    assert.ok(gcLog.orphans.freed.writes === 1 && gcLog.orphans.freed.objects >= 2, `GC freed the orphaned upload: ${JSON.stringify(gcLog.orphans)}`);
    assert.ok(gcLog.orphans.noted.objects >= 1, `GC noted the deleted large manifest's object: ${JSON.stringify(gcLog.orphans)}`);

    calls = (await readFile(record, 'utf8'))
      .split('\n')
      .filter((l) => l.startsWith('{"origin"'))
      .map((l) => JSON.parse(l));
  });
  after(async () => {
    await reg?.kill();
    await uploadHost?.kill();
    await rm(record, { force: true });
    if (stack) await rm(stack.scratch, { recursive: true, force: true });
  });

  /** The role a call runs under: the upload host's for requests it served, else the function's. */
  const functionOf = (c: RecordedCall) => {
    if (typeof c.origin === 'string') return ({ purge: 'Purge', gc: 'Gc' } as Record<string, string>)[c.origin];
    return `http://${c.origin.local}` === uploadHost.url ? 'UploadHostTask' : FUNCTION_OF_METHOD[c.origin.method];
  };

  it('exercised every function, the S3 multipart path, a DELETE racing a push and the purge', () => {
    const seen = (fn: string, action: string) => calls.some((c) => functionOf(c) === fn && c.needs.some((n) => n.action === action));
    for (const fn of ROLES) assert.ok(calls.some((c) => functionOf(c) === fn), `${fn} made AWS calls`);
    assert.ok(seen('UploadHostTask', 's3:PutObject') && seen('UploadHostTask', 'dynamodb:UpdateItem'), 'the upload host wrote parts and committed them');
    assert.ok(seen('Chunk', 's3:PutObject') && seen('Finish', 's3:PutObject'), 'parts and completion');
    assert.ok(calls.some((c) => functionOf(c) === 'Delete' && c.needs.some((n) => n.action === 'dynamodb:DeleteItem' && n.sortKeys?.some((k) => k.startsWith('MANIFEST#')))), 'the manifest delete ran');
    assert.ok(seen('Purge', 'dynamodb:Query') && seen('Purge', 's3:AbortMultipartUpload'), 'the purge freed an upload');
    assert.ok(seen('Gc', 's3:GetObject') && seen('Gc', 's3:DeleteObject') && seen('Gc', 'dynamodb:DeleteItem'), 'GC read a large manifest and freed links, descriptors and bytes');
    assert.ok(seen('Gc', 's3:ListBucket') && seen('Gc', 's3:AbortMultipartUpload') && seen('Gc', 'dynamodb:BatchGetItem') && seen('Gc', 'dynamodb:BatchWriteItem'), 'GC swept orphans');
    assert.ok(calls.some((c) => functionOf(c) === 'Gc' && c.needs.some((n) => n.index === 'key')), 'GC read the key index');
    assert.ok(!seen('Gc', 'dynamodb:Scan'), 'GC scans nothing');
  });

  it('GcRole allows exactly what GC calls (besides its logs), nothing more', () => {
    const statements = stack.template.Resources.GcRole!.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
    const granted = new Set<string>(statements.flatMap((st: any) => [st.Action].flat()).filter((a: string) => !a.startsWith('logs:')));
    const used = new Set(calls.filter((c) => functionOf(c) === 'Gc').flatMap((c) => c.needs.map((n) => n.action)));
    assert.deepEqual([...granted].sort(), [...used].sort());
  });

  const denials = (role: Resource, recorded: RecordedCall[]) => {
    const denied = new Set<string>();
    for (const c of recorded) {
      for (const need of c.needs) {
        if (!allowedBy(role, need)) denied.add(`${need.action} ${JSON.stringify({ ...need, action: undefined, sortKeys: undefined })} (${c.command} for ${typeof c.origin === 'string' ? c.origin : `${c.origin.method} ${c.origin.path.split('?')[0]}`})`);
      }
    }
    return [...denied];
  };

  for (const fn of ROLES) {
    it(`${fn}: every call is allowed by ${fn}Role`, () => {
      assert.deepEqual(denials(stack.template.Resources[`${fn}Role`]!, calls.filter((c) => functionOf(c) === fn)), []);
    });
  }

  // The upload host process starts under its task role without a single AWS call: it uses the
  // stack's table and bucket as they are (lib/local/main.ts), so a missing one is never created
  // with permissions the role does not have.
  it('UploadHostTask: the upload host process starts without any AWS call', () => {
    assert.deepEqual(calls.filter((c) => c.origin === 'upload host process'), []);
  });
});
