/**
 * Real clients with authentication required, on the real backends: skopeo with --creds and
 * podman with login push and pull what their grants allow, and are refused what they do not.
 * (The clients without authentication: clients.test.ts; the attacks over HTTP: auth.test.ts.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hashPassword } from '../../lib/auth/passwords.js';
import { MiB } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { ClientSandbox, ensureClients } from '../helpers/clients.js';
import { type ImageInfo, OciLayout } from '../helpers/oci-layout.js';
import { useRegistry } from '../helpers/registry.js';
import { Footprint } from '../helpers/footprint.js';

ensureClients(['skopeo', 'podman']);

describe('real clients with authentication (s3)', () => {
  const r = useRegistry('s3', { env: { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: `k1=${Buffer.alloc(32, 7).toString('base64url')}` } });
  let layout: OciLayout;
  let image: ImageInfo;
  const host = () => new URL(r.url).host;
  /** The system before any client ran (test/helpers/footprint.ts). */
  let footprint: Footprint;

  before(async () => {
    footprint = await Footprint.take();
    const users = r.registry.meta.users;
    const now = Date.now();
    await users.putUser({ name: 'alice', passwordHash: await hashPassword('alice-password'), createdAt: now, updatedAt: now });
    await users.putUser({ name: 'bob', passwordHash: await hashPassword('bob-password'), createdAt: now, updatedAt: now });
    await users.putGrant('alice', { pattern: 'team/*', actions: ['pull', 'push'] });
    await users.putGrant('bob', { pattern: 'team/app', actions: ['pull'] });
    layout = await OciLayout.create();
    image = await layout.image({ seed: 9, layerSizes: [100_000, 6 * MiB] });
    await layout.tag('v1', image.descriptor);
  });
  after(() => layout.remove());

  it('skopeo pushes and pulls with --creds, and is refused without the right ones', async () => {
    const sb = await ClientSandbox.create();
    try {
      const target = `docker://${host()}/team/app`;
      await sb.copy(`oci:${layout.dir}:v1`, `${target}:v1`, { extra: ['--dest-creds', 'alice:alice-password'] });
      const info = JSON.parse((await sb.skopeo(['inspect', '--tls-verify=false', '--creds', 'bob:bob-password', `${target}:v1`])).stdout);
      assert.equal(info.Digest, image.descriptor.digest);
      const denied = await sb.skopeoRaw(sb.copyArgs(`oci:${layout.dir}:v1`, `${target}:v2`, { extra: ['--dest-creds', 'bob:bob-password'] }));
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /denied|unauthorized|authentication required/i);
      const anonymous = await sb.skopeoRaw(['inspect', '--tls-verify=false', `${target}:v1`]);
      assert.notEqual(anonymous.code, 0);
      assert.match(anonymous.stderr, /unauthorized|authentication required/i);
      const wrong = await sb.skopeoRaw(['inspect', '--tls-verify=false', '--creds', 'alice:not-her-password', `${target}:v1`]);
      assert.notEqual(wrong.code, 0);
      const tags = await call(`${r.url}/v2/team/app/tags/list`, { headers: { Authorization: `Basic ${Buffer.from('alice:alice-password').toString('base64')}` } });
      assert.deepEqual(tags.json().tags, ['v1'], 'the refused push stored no tag');
    } finally {
      await sb.dispose();
    }
  });

  it('podman logs in, pushes and pulls, and is refused a push it has no grant for', async () => {
    const alice = await ClientSandbox.create();
    const bob = await ClientSandbox.create();
    try {
      await alice.podman(['login', '--tls-verify=false', '-u', 'alice', '--password-stdin', host()], { input: 'alice-password\n' });
      const id = await alice.podmanPull(`oci:${layout.dir}:v1`);
      await alice.podman(['tag', id, `${host()}/team/podman:v1`]);
      await alice.podmanPush(`${host()}/team/podman:v1`, `${host()}/team/podman:v1`);

      await bob.podman(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host()], { input: 'bob-password\n' });
      assert.equal(await bob.podmanPull(`${host()}/team/app:v1`), image.config.digest.slice(7), 'the image bob pulled is the one pushed');
      await bob.podman(['tag', image.config.digest.slice(7), `${host()}/team/app:bob`]);
      const denied = await bob.podmanRaw(['push', '--tls-verify=false', `${host()}/team/app:bob`]);
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /denied|unauthorized/i);
      const badLogin = await bob.podmanRaw(['login', '--tls-verify=false', '-u', 'bob', '--password-stdin', host()], { input: 'wrong-password\n' });
      assert.notEqual(badLogin.code, 0);
    } finally {
      await alice.dispose();
      await bob.dispose();
    }
  });

  it('skopeo and podman left nothing in /var/lib or /run (their blob-info cache, auth file and state are the sandbox\'s)', async () => {
    await footprint.assertNothingAdded('skopeo and podman');
  });
});
