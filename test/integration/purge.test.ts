/**
 * The purge of abandoned uploads, on both drivers and the real backends: expired uploads lose
 * their record, their partial data (multipart upload and tail, or partial file) and their hash
 * state; finished blobs and live uploads are untouched.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExpiredUpload } from '../../lib/metadata/types.js';
import { purgeExpiredUploads } from '../../lib/registry/purge.js';
import { MiB, bytes } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { patch, pushInPut, startUpload } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, useRegistry } from '../helpers/registry.js';

const TTL = 60;

async function leftovers(r: TestRegistry, id: string): Promise<string[]> {
  if (r.config.storage === 's3') {
    const bucket = r.config.s3.bucket;
    const objects = await r.s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    const mpus = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    return [...(objects.Contents ?? []).map((o) => o.Key!), ...(mpus.Uploads ?? []).map((u) => `mpu:${u.Key}`)].filter((k) => k.includes(id));
  }
  const found: string[] = [];
  for (const dir of ['blobs', 'uploads']) {
    const entries = await readdir(join(r.config.dataDir, 'storage', dir), { recursive: true }).catch(() => []);
    found.push(...entries.map(String).filter((e) => e.includes(id)).map((e) => `${dir}/${e}`));
  }
  return found;
}

for (const driver of DRIVERS) {
  describe(`purge of abandoned uploads (${driver})`, () => {
    const r = useRegistry(driver, { env: { SKIFF_UPLOAD_TTL_SECONDS: String(TTL) } });

    it('frees what expired uploads hold, and nothing else', async () => {
      const finished = bytes(6 * MiB, 1);
      const { digest } = await pushInPut(r.url, 'purge/repo', finished);
      const abandoned = await startUpload(r.url, 'purge/repo');
      assert.equal((await patch(abandoned, bytes(6 * MiB + 5, 2), 0)).status, 202); // a part and a tail
      const empty = await startUpload(r.url, 'purge/repo');
      const id = (l: string) => l.split('/').pop()!;
      assert.ok((await leftovers(r, id(abandoned))).length > 0, 'the abandoned upload holds storage');

      // Nothing has expired yet.
      assert.deepEqual(await purgeExpiredUploads(r.registry.meta, r.registry.storage), { purged: 0, skipped: 0, failed: 0, more: false });
      assert.equal((await call(abandoned)).status, 204);

      const later = Date.now() + (TTL + 5) * 1000;
      const result = await purgeExpiredUploads(r.registry.meta, r.registry.storage, { now: later });
      assert.equal(result.purged, 2);
      for (const location of [abandoned, empty]) {
        assert.deepEqual(await leftovers(r, id(location)), [], `nothing left of ${id(location)}`);
        assert.equal((await call(location)).status, 404);
      }
      const got = await call(`${r.url}/v2/purge/repo/blobs/${digest}`);
      assert.ok(got.body.equals(finished), 'finished blobs are untouched');
    });

    it('leaves an upload alone when a request wrote to it after the scan', async () => {
      const location = await startUpload(r.url, 'purge/busy');
      const later = Date.now() + (TTL + 5) * 1000;
      const expired: ExpiredUpload[] = [];
      let cursor: string | undefined;
      do {
        const page = await r.registry.meta.uploads.expired(later, cursor);
        expired.push(...page.uploads);
        cursor = page.cursor;
      } while (cursor);
      const [stale] = expired.filter((u) => location.endsWith(u.id));
      assert.ok(stale);
      assert.equal((await patch(location, bytes(100, 3), 0)).status, 202);
      assert.equal(await r.registry.meta.uploads.claimExpired(stale, later), undefined);
      assert.equal((await call(location)).header('range'), '0-99');
    });
  });
}
