/**
 * The README's run command, `npm start`, on the embedded default: no outside service, blobs on
 * the filesystem, metadata in a DynamoDB Local it starts itself and keeps under the data
 * directory. Only the ports and the data directory are chosen here (so the test never collides
 * with a registry already on 5000); everything else is the default a newcomer gets.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort } from '../backends/start.js';
import { bytes, sha256 } from '../helpers/data.js';
import { call, resolve } from '../helpers/http.js';
import { type Started, npmStart, stop, waitClosed } from '../helpers/npm-start.js';
import { patch, pushInPut, withDigest } from '../helpers/oci.js';

describe('npm start on the embedded default', () => {
  let dataDir = '';
  let env: Record<string, string> = {};
  let ddbPort = 0;
  let running: Started | undefined;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'skiff-embedded-'));
    ddbPort = await freePort();
    env = { SKIFF_DATA_DIR: dataDir, SKIFF_PORT: '0', SKIFF_DYNAMODB_LOCAL_PORT: String(ddbPort) };
  });
  after(async () => {
    await stop(running);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('starts with no outside service, says where it serves and that it is open, and serves the blob API', async () => {
    running = await npmStart(env);
    assert.match(running.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'binds 127.0.0.1 by default');
    assert.match(running.banner, /\(open: no authentication\)/);
    assert.match(running.banner, /blobs: filesystem /);
    assert.match(running.banner, /metadata: embedded DynamoDB Local/);
    const base = await call(`${running.url}/v2/`);
    assert.equal(base.status, 200);
    assert.equal(base.header('docker-distribution-api-version'), 'registry/2.0');
  });

  it('keeps blobs and an upload in progress across a stop and a start, and stops its DynamoDB Local', async () => {
    const blob = bytes(300_000, 1);
    const { digest } = await pushInPut(running!.url, 'embedded/app', blob);
    const partial = bytes(200_000, 2);
    const post = await call(`${running!.url}/v2/embedded/app/blobs/uploads/`, { method: 'POST' });
    const path = post.header('location')!;
    assert.equal((await patch(resolve(running!.url, path), partial.subarray(0, 120_000), 0)).status, 202);

    await stop(running);
    assert.ok(await waitClosed(ddbPort), 'the embedded DynamoDB Local stops with the registry');

    running = await npmStart(env);
    const got = await call(`${running.url}/v2/embedded/app/blobs/${digest}`);
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(blob), 'the blob survived the restart');
    const location = resolve(running.url, path);
    assert.equal((await call(location)).header('range'), '0-119999', 'the upload survived the restart');
    assert.equal((await patch(location, partial.subarray(120_000), 120_000)).status, 202);
    const put = await call(withDigest(location, sha256(partial)), { method: 'PUT' });
    assert.equal(put.status, 201, put.body.toString());
  });
});
