/**
 * Crash safety of the filesystem driver: objects are written under tmp/, fsynced, renamed into
 * place and their directory fsynced (checked on the system calls, with strace); an upload's
 * bytes accumulate in a scratch file that only a commit renames to the blob key, so aborting a
 * write never deletes a blob; bytes lost under an upload are refused, never filled with zeros.
 */
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { call } from '../helpers/http.js';
import { expectError, patch, startUpload, withDigest } from '../helpers/oci.js';
import { useRegistry } from '../helpers/registry.js';
import { formatRun, run } from '../helpers/clients.js';
import { tempDir } from '../helpers/oci-layout.js';
import { FsObjectStore } from '../../lib/storage/fs/objects.js';
import { FsIngester } from '../../lib/storage/fs/ingester.js';
import type { AppendContext } from '../../lib/storage/types.js';

const root = join(import.meta.dirname, '..', '..');

function context(uploadId: string): AppendContext {
  return { uploadId, attempt: 'a1', ledger: { record() {}, list: async () => [] } };
}

async function* body(data: Uint8Array): AsyncIterable<Uint8Array> {
  yield data;
}

describe('filesystem crash safety: system calls', () => {
  it('fsyncs an object under tmp/ before renaming it into place, then fsyncs its directory; the same for a committed blob', async () => {
    const dir = await tempDir('fs-crash');
    const trace = join(dir, 'strace.txt');
    const script = `
      const { FsObjectStore } = await import(${JSON.stringify(join(root, 'lib/storage/fs/objects.ts'))});
      const { FsIngester } = await import(${JSON.stringify(join(root, 'lib/storage/fs/ingester.ts'))});
      const store = new FsObjectStore(${JSON.stringify(join(dir, 'storage'))});
      await store.put('uploads/u1/hashstates/sha256/5', new Uint8Array([1, 2, 3, 4, 5]));
      const ingester = new FsIngester(store);
      const ctx = { uploadId: 'u1', attempt: 'a1', ledger: { record() {}, list: async () => [] } };
      const written = await ingester.append(ingester.create('u1'), (async function* () { yield new Uint8Array([1, 2, 3]); })(), ctx);
      await ingester.commit(written, undefined, ctx);
      // A contended finish: the committed bytes are copied into a file of its own first.
      const ctx2 = { uploadId: 'u2', attempt: 'b1', ledger: ctx.ledger };
      const w2 = await ingester.append(ingester.create('u2'), (async function* () { yield new Uint8Array([4, 5]); })(), ctx2);
      await ingester.commit(w2, (async function* () { yield new Uint8Array([6]); })(), { ...ctx2, attempt: 'b2', contended: true });
    `;
    const traced = await run('strace', ['-f', '-y', '-o', trace, '-e', 'trace=fsync,fdatasync,rename,renameat,renameat2', process.execPath, '--import', 'tsx', '--input-type=module', '-e', script]);
    assert.equal(traced.code, 0, formatRun(traced));
    const lines = (await readFile(trace, 'utf8')).split('\n');
    const storage = join(dir, 'storage');

    /** Index of the rename whose target is `to`, and its source. */
    function renameTo(to: string): { at: number; from: string } {
      for (const [at, line] of lines.entries()) {
        const m = /rename\w*\(.*?"([^"]+)".*?"([^"]+)"/.exec(line);
        if (m && m[2] === to) return { at, from: m[1]! };
      }
      assert.fail(`no rename to ${to} in:\n${lines.join('\n')}`);
    }
    const synced = (path: string, from: number, to: number) =>
      lines.slice(from, to).some((l) => new RegExp(`f(data)?sync\\(\\d+<${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}>`).test(l));

    const hashState = join(storage, 'uploads/u1/hashstates/sha256/5');
    const put = renameTo(hashState);
    assert.match(put.from, new RegExp(`^${join(storage, 'tmp')}/uploads_u1_hashstates_sha256_5\\.[0-9a-f-]{36}\\.tmp$`), 'written under tmp/, named after the key and the attempt');
    assert.ok(synced(put.from, 0, put.at), 'the object is fsynced before the rename');
    assert.ok(synced(join(storage, 'uploads/u1/hashstates/sha256'), put.at + 1, lines.length), 'its directory is fsynced after the rename');

    const blob = renameTo(join(storage, 'blobs/u1.a1'));
    assert.equal(blob.from, join(storage, 'uploads/u1/data.a1'), 'the blob is renamed from the scratch file of the attempt that created it');
    assert.ok(synced(blob.from, 0, blob.at), 'the blob file is fsynced before the rename');
    assert.ok(synced(join(storage, 'blobs'), blob.at + 1, lines.length), 'blobs/ is fsynced after the rename');

    const copied = renameTo(join(storage, 'blobs/u2.b2'));
    assert.equal(copied.from, join(storage, 'uploads/u2/data.b2'), 'a contended finish renames its own copy');
    assert.ok(synced(copied.from, 0, copied.at), 'the copy is fsynced before the rename');
    const dirSyncs = lines.slice(0, copied.at).filter((l) => new RegExp(`f(data)?sync\\(\\d+<${join(storage, 'uploads/u2')}>`).test(l)).length;
    assert.ok(dirSyncs >= 2, `the copy's directory entry is made durable, as the first file's was (${dirSyncs} fsyncs of uploads/u2)`);
    assert.ok(synced(join(storage, 'blobs'), copied.at + 1, lines.length), 'blobs/ is fsynced after the rename');
    await rm(dir, { recursive: true, force: true });
  });

  it('leaves a failed write as a recognisable tmp/ file, and nothing next to the key', async () => {
    const dir = await tempDir('fs-crash');
    const store = new FsObjectStore(dir);
    // The rename fails (a directory sits at the key): the write stops where a crash would.
    await mkdir(join(dir, 'uploads/u2/hashstates/sha256/7'), { recursive: true });
    await assert.rejects(store.put('uploads/u2/hashstates/sha256/7', new Uint8Array([7])));
    assert.deepEqual(await readdir(join(dir, 'uploads/u2/hashstates/sha256')), ['7']);
    const scratch = await readdir(join(dir, 'tmp'));
    assert.equal(scratch.length, 1);
    assert.match(scratch[0]!, /^uploads_u2_hashstates_sha256_7\.[0-9a-f-]{36}\.tmp$/);
    await rm(dir, { recursive: true, force: true });
  });

  it('aborting the write of an upload that was finished leaves the blob', async () => {
    const dir = await tempDir('fs-crash');
    const store = new FsObjectStore(dir);
    const ingester = new FsIngester(store);
    const data = bytes(1000, 3);
    const written = await ingester.append(ingester.create('u3'), body(data), context('u3'));
    const committed = await ingester.commit(written, undefined, context('u3'));
    // What a request that lost its lease to this finish, or a cancel or purge racing it, does.
    await ingester.abort(written);
    assert.ok((await readFile(store.path(committed.key))).equals(data));
    await rm(dir, { recursive: true, force: true });
  });
});

describe('filesystem uploads: racing attempts never share a file', () => {
  const ctx = (attempt: string, contended = false): AppendContext => ({ ...context('u5'), attempt, contended });

  it('continues in place, unless contended: then it copies the committed bytes into a file of its own', async () => {
    const dir = await tempDir('fs-crash');
    const store = new FsObjectStore(dir);
    const ingester = new FsIngester(store);
    const [a, b, stale] = [bytes(1000, 4), bytes(2000, 5), bytes(3000, 6)];
    const first = await ingester.append(ingester.create('u5'), body(a), ctx('a1'));
    assert.equal(first.scratchKey, 'uploads/u5/data.a1');
    const inPlace = await ingester.append(first, body(b), ctx('a2'));
    assert.equal(inPlace.scratchKey, first.scratchKey, 'an uncontended request continues the same file');

    // A stale request writing past the committed bytes of `first`, before and after the takeover.
    const file = store.path(first.scratchKey!);
    await writeFile(file, Buffer.concat([a, stale]));
    const own = await ingester.append(first, body(b), ctx('a3', true));
    assert.equal(own.scratchKey, 'uploads/u5/data.a3');
    await writeFile(file, Buffer.concat([a, stale, stale]));
    assert.ok((await readFile(store.path(own.scratchKey!))).equals(Buffer.concat([a, b])), 'the new file holds the committed bytes and this request\'s');
    const committed = await ingester.commit(own, undefined, ctx('a4'));
    assert.equal(committed.key, 'blobs/u5.a3', 'each scratch file becomes its own blob key');
    assert.ok((await readFile(store.path(committed.key))).equals(Buffer.concat([a, b])));
    await ingester.release(first, own);
    await assert.rejects(readFile(file), { code: 'ENOENT' }, 'the superseded file is freed');
    await rm(dir, { recursive: true, force: true });
  });

  it('continues from the blob a commit renamed the file to, without writing into it', async () => {
    const dir = await tempDir('fs-crash');
    const store = new FsObjectStore(dir);
    const ingester = new FsIngester(store);
    const [a, b] = [bytes(1000, 7), bytes(500, 8)];
    const written = await ingester.append(ingester.create('u5'), body(a), ctx('a1'));
    // A finish that renamed it and then failed (or a stale finish): the record still names it.
    const finished = await ingester.commit(written, undefined, ctx('a2'));
    const next = await ingester.commit(written, body(b), ctx('a3'));
    assert.notEqual(next.key, finished.key);
    assert.ok((await readFile(store.path(finished.key))).equals(a), 'the first blob is unchanged');
    assert.ok((await readFile(store.path(next.key))).equals(Buffer.concat([a, b])));
    await rm(dir, { recursive: true, force: true });
  });
});

describe('filesystem crash safety: an upload whose written bytes were lost', () => {
  const r = useRegistry('fs');

  for (const loss of ['deleted', 'cut short'] as const) {
    it(`refuses to continue when the bytes written so far were ${loss}, instead of filling them with zeros`, async () => {
      const repo = 'crash/lost';
      const first = bytes(MiB, 10);
      const second = bytes(MiB, 11);
      const location = await startUpload(r.url, repo);
      const id = new URL(location).pathname.split('/').pop()!;
      assert.equal((await patch(location, first, 0)).status, 202);
      const upload = await r.registry.meta.uploads.get(id, repo);
      const file = r.registry.storage.objects instanceof FsObjectStore ? r.registry.storage.objects.path(upload!.write.scratchKey ?? upload!.write.key) : assert.fail();
      if (loss === 'deleted') await rm(file);
      else await truncate(file, 1000);

      expectError(await patch(location, second, first.length), 400, 'BLOB_UPLOAD_INVALID');
      assert.deepEqual(r.integrityErrors.splice(0).map((f) => f.kind), ['upload-data-missing']);
      expectError(await call(withDigest(location, sha256(Buffer.concat([first, second]))), { method: 'PUT', body: second, headers: { 'Content-Range': `${first.length}-${2 * MiB - 1}` } }), 400, 'BLOB_UPLOAD_INVALID');
      assert.equal(r.integrityErrors.splice(0).length, 1);
      assert.equal((await call(`${r.url}/v2/${repo}/blobs/${sha256(Buffer.concat([first, second]))}`, { method: 'HEAD' })).status, 404, 'nothing was stored');
    });
  }
});
