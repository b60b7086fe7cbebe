/**
 * Load on the S3 path with a real client: skopeo pushes, all at once, the same image 10 times
 * to one repository and tag, and 10 distinct images to 10 repositories. Every image pulls back
 * byte for byte, and each digest is stored once (racing finishes of one digest keep one copy).
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { MiB } from '../helpers/data.js';
import { ClientSandbox, ensureClients } from '../helpers/clients.js';
import { Footprint } from '../helpers/footprint.js';
import { type ImageInfo, OciLayout, readLayout, tempDir } from '../helpers/oci-layout.js';
import { blobObjects, useRegistry } from '../helpers/registry.js';

ensureClients(['skopeo']);

const PUSHES_OF_ONE = 10;
const DISTINCT = 10;

describe('load: concurrent skopeo pushes (s3)', () => {
  const r = useRegistry('s3');
  let layout: OciLayout;
  let same: ImageInfo;
  const distinct: ImageInfo[] = [];
  const sandboxes: ClientSandbox[] = [];
  const temporary: string[] = [];

  /** Each client its own sandbox (and blob-info cache): ten skopeo processes share nothing. */
  async function sandbox(): Promise<ClientSandbox> {
    const sb = await ClientSandbox.create({ timeoutMs: 180_000 });
    sandboxes.push(sb);
    return sb;
  }

  const remote = (ref: string) => `docker://${new URL(r.url).host}/${ref}`;

  /** The system before any client ran (test/helpers/footprint.ts). */
  let footprint: Footprint;

  before(async () => {
    footprint = await Footprint.take();
    layout = await OciLayout.create();
    same = await layout.image({ seed: 301, layerSizes: [2 * MiB, 256 * 1024] });
    await layout.tag('same', same.descriptor);
    for (let i = 0; i < DISTINCT; i++) {
      const image = await layout.image({ seed: 310 + i, layerSizes: [MiB, 64 * 1024] });
      await layout.tag(`img${i}`, image.descriptor);
      distinct.push(image);
    }
  });

  after(async () => {
    await layout?.remove();
    for (const sb of sandboxes) await sb.dispose();
    for (const dir of temporary) await rm(dir, { recursive: true, force: true });
  });

  /** skopeo copies the image back out of the registry; every blob is the one generated. */
  async function pullsBack(ref: string, image: ImageInfo): Promise<void> {
    const dir = await tempDir('skiff-load');
    temporary.push(dir);
    await (await sandbox()).copy(remote(ref), `oci:${join(dir, 'layout')}:pulled`);
    const pulled = await readLayout(join(dir, 'layout'));
    assert.equal(pulled.ref('pulled').digest, image.manifest.digest, `${ref}: the manifest pulled is the one pushed`);
    assert.deepEqual(await pulled.digests(), [...new Set(image.blobs.map((b) => b.digest))].sort(), `${ref}: exactly the blobs pushed`);
    for (const b of image.blobs) assert.ok((await pulled.blob(b.digest)).equals(await readFile(b.path)), `${ref}: ${b.digest} differs after the round trip`);
  }

  it('pushes one image 10 times to one tag and 10 images to 10 repositories at once; all pull back, each digest stored once', async () => {
    const pushes = [
      ...Array.from({ length: PUSHES_OF_ONE }, async () => (await sandbox()).copy(`oci:${layout.dir}:same`, remote('load/same:latest'))),
      ...distinct.map(async (_, i) => (await sandbox()).copy(`oci:${layout.dir}:img${i}`, remote(`load/repo${i}:latest`))),
    ];
    const results = await Promise.allSettled(pushes);
    const failures = results.filter((x): x is PromiseRejectedResult => x.status === 'rejected').map((x) => String(x.reason).slice(0, 2000));
    assert.deepEqual(failures, [], 'every push succeeds');

    await Promise.all([pullsBack('load/same:latest', same), ...distinct.map((image, i) => pullsBack(`load/repo${i}:latest`, image))]);

    // Blob bytes are objects under blobs/ (manifests this small live in DynamoDB).
    const digests = new Set([same, ...distinct].flatMap((image) => [image.config, ...image.layers]).map((b) => b.digest));
    const stored = await blobObjects(r);
    assert.equal(stored.length, digests.size, `one object per digest: ${stored.length} objects for ${digests.size} digests`);
    const keys = new Set<string>();
    for (const digest of digests) {
      const descriptor = await r.registry.meta.blobs.getDescriptor(digest);
      assert.ok(descriptor, `${digest} has a descriptor`);
      assert.equal(await r.registry.storage.objects.stat(descriptor.key), descriptor.size, `${digest}: its object holds its bytes`);
      keys.add(descriptor.key);
    }
    assert.deepEqual([...keys].sort(), [...stored].sort(), 'every stored object is the one copy of a digest');
    assert.deepEqual(await r.registry.storage.objects.list('uploads/'), [], 'no upload scratch left');
    const open = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket }));
    assert.deepEqual(open.Uploads ?? [], [], 'no multipart upload left open');
    assert.deepEqual(r.integrityErrors, []);
  });

  it('left nothing in /var/lib or /run', async () => {
    await footprint.assertNothingAdded('ten skopeo processes');
  });
});
