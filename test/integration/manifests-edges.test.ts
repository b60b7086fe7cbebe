/**
 * Edges of the manifest API found by an audit: encoding, required fields, artifactType, item
 * sizes with large annotations, index children, page limits on every listing, and tags that
 * must agree between HEAD and GET. On the real backends, for each storage driver.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BatchWriteCommand, DeleteCommand, QueryCommand } from '@aws-sdk/lib-dynamodb';
import { sha256, sha512 } from '../helpers/data.js';
import { CONFIG_TYPE, LAYER_TYPE, manifestClient } from '../helpers/manifests.js';
import { call, type Received } from '../helpers/http.js';
import { expectError } from '../helpers/oci.js';
import { DRIVERS, type TestRegistry, useRegistry } from '../helpers/registry.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { MAX_MANIFEST_REFERENCES } from '../../lib/metadata/types.js';

/** Follows Link headers from `first`, returning each page's parsed body and Link. */
async function walk(base: string, first: string): Promise<{ body: any; link?: string; res: Received }[]> {
  const pages: { body: any; link?: string; res: Received }[] = [];
  let next: string | undefined = first;
  while (next) {
    const res = await call(`${base}${next}`);
    assert.equal(res.status, 200, res.body.toString().slice(0, 500));
    const link = res.header('link');
    pages.push({ body: res.json(), link, res });
    if (link !== undefined) assert.match(link, /^<[^>]+>; rel="next"$/);
    next = link === undefined ? undefined : /^<([^>]+)>/.exec(link)![1];
    assert.ok(pages.length < 100, 'pagination ends');
  }
  return pages;
}

/** Rough DynamoDB item size: attribute names plus values (binary and strings by byte length). */
function itemSize(item: Record<string, unknown>): number {
  const size = (v: unknown): number =>
    v instanceof Uint8Array ? v.length : typeof v === 'string' ? Buffer.byteLength(v) : typeof v === 'number' ? 21 : Buffer.byteLength(JSON.stringify(v));
  return Object.entries(item).reduce((n, [k, v]) => n + Buffer.byteLength(k) + size(v), 0);
}

function helpers(r: TestRegistry) {
  const { image, put, get } = manifestClient(r, 7000, { configSize: 100, layerSizes: [300] });
  async function items(repo: string): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const res = await r.db.send(new QueryCommand({ TableName: r.config.dynamo.table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': `REPO#${repo}` }, ExclusiveStartKey: start }));
      out.push(...(res.Items ?? []));
      start = res.LastEvaluatedKey;
    } while (start);
    return out;
  }
  return { image, put, get, items };
}

/** ~`total` bytes of annotations in values of 1000 characters. */
function bigAnnotations(total: number, tag = 'a'): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i * 1000 < total; i++) out[`org.example.${tag}.${i}`] = String.fromCharCode(97 + (i % 26)).repeat(1000);
  return out;
}

for (const driver of DRIVERS) {
  describe(`manifest edges (${driver})`, () => {
    const r = useRegistry(driver);
    const { image, put, get, items } = helpers(r);

    it('refuses a manifest that is not valid UTF-8 (400 MANIFEST_INVALID) and stores nothing', async () => {
      const m = await image('enc/latin1', { annotations: { 'org.example.note': 'caf_' } });
      const body = Buffer.from(m.text, 'latin1');
      body[body.indexOf('caf_') + 3] = 0xe9; // "é" in Latin-1
      const digest = sha256(body);
      expectError(await put('enc/latin1', 'v1', body), 400, 'MANIFEST_INVALID');
      expectError(await put('enc/latin1', digest, body), 400, 'MANIFEST_INVALID');
      expectError(await get('enc/latin1', 'v1'), 404, 'MANIFEST_UNKNOWN');
      expectError(await get('enc/latin1', digest), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('enc/latin1', 'v1', {}, 'HEAD')).status, 404);
      expectError(await call(`${r.url}/v2/enc/latin1/tags/list`), 404, 'NAME_UNKNOWN');
    });

    it('refuses an OCI image manifest without layers (400 MANIFEST_INVALID); an empty array is fine', async () => {
      const m = await image('req/layers');
      const { layers: _, ...noLayers } = JSON.parse(m.text);
      expectError(await put('req/layers', 'none', JSON.stringify(noLayers)), 400, 'MANIFEST_INVALID');
      expectError(await put('req/layers', 'none', JSON.stringify(noLayers), 'application/json'), 400, 'MANIFEST_INVALID');
      expectError(await put('req/layers', 'none', JSON.stringify({ ...noLayers, layers: null })), 400, 'MANIFEST_INVALID');
      expectError(await get('req/layers', 'none'), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await put('req/layers', 'empty', JSON.stringify({ ...noLayers, layers: [] }))).status, 201);
    });

    it('checks the size an index gives each child against the stored child (400 MANIFEST_INVALID)', async () => {
      const a = await image('idx/size');
      assert.equal((await put('idx/size', a.digest, a.text)).status, 201);
      for (const size of [a.desc.size + 1, a.desc.size - 1, 0]) {
        const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ ...a.desc, size }] });
        expectError(await put('idx/size', 'bad', index, MediaTypes.ociIndex), 400, 'MANIFEST_INVALID');
      }
      const dockerList = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.dockerList, manifests: [{ ...a.desc, size: a.desc.size + 10 }] });
      expectError(await put('idx/size', 'bad', dockerList, MediaTypes.dockerList), 400, 'MANIFEST_INVALID');
      expectError(await get('idx/size', 'bad'), 404, 'MANIFEST_UNKNOWN');
      const good = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [a.desc] });
      assert.equal((await put('idx/size', 'good', good, MediaTypes.ociIndex)).status, 201);
    });

    it('reports artifactType in referrers per the image spec ("" is unset), and answers OCI-Subject for an index with a subject', async () => {
      const subject = await image('art/type');
      assert.equal((await put('art/type', 'subject', subject.text)).status, 201);
      const emptyType = await image('art/type', { artifactType: '', subject: subject.desc });
      assert.equal((await put('art/type', emptyType.digest, emptyType.text)).status, 201);
      const indexes: Record<string, string> = {};
      for (const artifactType of [undefined, '', 'application/vnd.example.bundle.v1']) {
        const text = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, artifactType, manifests: [], subject: subject.desc });
        const res = await put('art/type', sha256(Buffer.from(text)), text, MediaTypes.ociIndex);
        assert.equal(res.status, 201, res.body.toString());
        assert.equal(res.header('oci-subject'), subject.digest, 'an index with a subject answers OCI-Subject');
        indexes[String(artifactType)] = sha256(Buffer.from(text));
      }
      const res = await call(`${r.url}/v2/art/type/referrers/${subject.digest}`);
      assert.equal(res.status, 200);
      const byDigest = new Map<string, any>(res.json().manifests.map((d: any) => [d.digest, d]));
      assert.equal(byDigest.size, 4);
      assert.equal(byDigest.get(emptyType.digest).artifactType, CONFIG_TYPE, 'an empty artifactType falls back to the config media type');
      assert.ok(!('artifactType' in byDigest.get(indexes['undefined']!)));
      assert.ok(!('artifactType' in byDigest.get(indexes['']!)), 'an index with an empty artifactType has none');
      assert.equal(byDigest.get(indexes['application/vnd.example.bundle.v1']!).artifactType, 'application/vnd.example.bundle.v1');
      const filtered = await call(`${r.url}/v2/art/type/referrers/${subject.digest}?artifactType=application/vnd.example.bundle.v1`);
      assert.deepEqual(filtered.json().manifests.map((d: any) => d.digest), [indexes['application/vnd.example.bundle.v1']]);
      const none = await call(`${r.url}/v2/art/type/referrers/${subject.digest}?artifactType=`);
      assert.equal(none.status, 200);
    });

    it(`stores a manifest with ${MAX_MANIFEST_REFERENCES} distinct references in the largest write there is, and refuses one more with 400 MANIFEST_INVALID`, async () => {
      const repo = 'refs/max';
      const subject = await image(repo);
      assert.equal((await put(repo, 'v', subject.text)).status, 201);
      // Links to MAX_MANIFEST_REFERENCES layers, written directly: a manifest PUT checks links only.
      const layers = Array.from({ length: MAX_MANIFEST_REFERENCES }, (_, i) => ({ mediaType: LAYER_TYPE, digest: sha256(Buffer.from(`layer ${i}`)), size: 10 + i }));
      for (let i = 0; i < layers.length; i += 25) {
        const items = layers.slice(i, i + 25).map((l) => ({ PutRequest: { Item: { pk: `REPO#${repo}`, sk: `BLOB#${l.digest}`, repo, digest: l.digest, size: l.size, key: `blobs/${l.digest}`, mediaType: LAYER_TYPE, createdAt: 1 } } }));
        await r.db.send(new BatchWriteCommand({ RequestItems: { [r.config.dynamo.table]: items } }));
      }
      // A repository from before the catalog marker: its next push lists it again. With a subject
      // and a tag that moves, that push writes every item a push can.
      await r.db.send(new DeleteCommand({ TableName: r.config.dynamo.table, Key: { pk: `REPO#${repo}`, sk: 'REPOSITORY' } }));
      const base = JSON.parse(subject.text);
      // The config is one of the references too.
      const atLimit = JSON.stringify({ ...base, layers: layers.slice(0, MAX_MANIFEST_REFERENCES - 1), subject: subject.desc });
      const res = await put(repo, 'v', atLimit);
      assert.equal(res.status, 201, res.body.toString());
      assert.equal((await get(repo, 'v')).body.toString(), atLimit);
      const over = JSON.stringify({ ...base, layers, subject: subject.desc });
      const refused = await put(repo, 'over', over);
      expectError(refused, 400, 'MANIFEST_INVALID');
      assert.equal(refused.json().errors[0].detail.max, MAX_MANIFEST_REFERENCES);
      expectError(await get(repo, 'over'), 404, 'MANIFEST_UNKNOWN');
      // Repeats of one blob count once.
      const repeated = JSON.stringify({ ...base, layers: [...layers.slice(0, MAX_MANIFEST_REFERENCES - 1), layers[0]] });
      assert.equal((await put(repo, 'repeated', repeated)).status, 201);
    });

    it('deletes every tag of manifests stored before the reverse index existed, whether or not the repository was pushed to since', async () => {
      // The layout before TAGGED# entries and the repository marker: manifest (no attempt),
      // tags, catalog entry. Written directly, as the earlier version did.
      const legacy = async (repo: string, tags: string[]) => {
        const m = await image(repo);
        const table = r.config.dynamo.table;
        const base = { mediaType: MediaTypes.ociManifest, size: m.desc.size };
        const items = [
          { pk: `REPO#${repo}`, sk: `MANIFEST#${m.digest}`, repo, digest: m.digest, ...base, body: Buffer.from(m.text), createdAt: 1 },
          { pk: 'CATALOG', sk: `REPO#${repo}`, name: repo, createdAt: 1 },
          ...tags.map((tag) => ({ pk: `REPO#${repo}`, sk: `TAG#${tag}#${tag}`, tag, digest: m.digest, ...base, updatedAt: 1 })),
        ];
        await r.db.send(new BatchWriteCommand({ RequestItems: { [table]: items.map((Item) => ({ PutRequest: { Item } })) } }));
        for (const tag of tags) assert.equal((await get(repo, tag, {}, 'HEAD')).status, 200);
        return m;
      };
      const untouched = await legacy('legacy/untouched', ['a', 'b']);
      const pushed = await legacy('legacy/pushed', ['a', 'b']);
      // The first push since: the same manifest under a new tag, and another manifest.
      assert.equal((await put('legacy/pushed', 'c', pushed.text)).status, 201);
      const other = await image('legacy/pushed');
      assert.equal((await put('legacy/pushed', 'other', other.text)).status, 201);
      for (const [repo, m, tags] of [['legacy/untouched', untouched, ['a', 'b']], ['legacy/pushed', pushed, ['a', 'b', 'c']]] as const) {
        assert.equal((await call(`${r.url}/v2/${repo}/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
        for (const tag of tags) {
          assert.equal((await get(repo, tag, {}, 'HEAD')).status, 404, `${repo}:${tag} HEAD`);
          expectError(await get(repo, tag), 404, 'MANIFEST_UNKNOWN');
        }
      }
      assert.deepEqual((await call(`${r.url}/v2/legacy/pushed/tags/list`)).json().tags, ['other']);
      assert.deepEqual((await call(`${r.url}/v2/legacy/untouched/tags/list`)).json().tags, []);
    });

    it('stores a referrer with ~1 MB of annotations: 201, exact bytes back, listed with its annotations, every item small', async () => {
      const subject = await image('big/ann');
      assert.equal((await put('big/ann', 'subject', subject.text)).status, 201);
      const annotations = bigAnnotations(1024 * 1024);
      const m = await image('big/ann', { artifactType: 'application/vnd.example.big.v1', subject: subject.desc, annotations });
      assert.ok(m.desc.size > 1024 * 1024 && m.desc.size < 4 * 1024 * 1024);
      const res = await put('big/ann', 'big', m.text);
      assert.equal(res.status, 201, res.body.toString());
      assert.equal(res.header('docker-content-digest'), m.digest);
      assert.equal(res.header('oci-subject'), subject.digest);
      for (const ref of ['big', m.digest]) {
        const got = await get('big/ann', ref);
        assert.equal(got.status, 200);
        assert.equal(got.header('docker-content-digest'), m.digest);
        assert.equal(sha256(got.body), m.digest);
        assert.equal(got.body.toString(), m.text);
      }
      // Without a subject, too.
      const plain = await image('big/ann', { annotations: bigAnnotations(1024 * 1024, 'p') });
      assert.equal((await put('big/ann', 'plain', plain.text)).status, 201);
      assert.equal(sha256((await get('big/ann', 'plain')).body), plain.digest);

      for (const item of await items('big/ann')) assert.ok(itemSize(item) < 100 * 1024, `${item.sk}: ${itemSize(item)} bytes`);

      const list = await call(`${r.url}/v2/big/ann/referrers/${subject.digest}`);
      assert.equal(list.status, 200);
      assert.deepEqual(list.json().manifests, [{ mediaType: MediaTypes.ociManifest, digest: m.digest, size: m.desc.size, artifactType: 'application/vnd.example.big.v1', annotations }]);
      const filtered = await call(`${r.url}/v2/big/ann/referrers/${subject.digest}?artifactType=application/vnd.example.big.v1`);
      assert.equal(filtered.json().manifests.length, 1);
      assert.equal(filtered.header('oci-filters-applied'), 'artifactType');
      const other = await call(`${r.url}/v2/big/ann/referrers/${subject.digest}?artifactType=application/other`);
      assert.deepEqual(other.json().manifests, []);

      // Deleting it removes the referrer, whichever way its annotations were stored.
      assert.equal((await call(`${r.url}/v2/big/ann/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
      assert.deepEqual((await call(`${r.url}/v2/big/ann/referrers/${subject.digest}`)).json().manifests, []);
    });

    it('pages referrers whose annotations together would make too large a response, with a Link header', async () => {
      const subject = await image('big/pages');
      const pushed: string[] = [];
      for (let i = 0; i < 3; i++) {
        const m = await image('big/pages', { artifactType: 'application/vnd.example.big.v1', subject: subject.desc, annotations: bigAnnotations(900 * 1024, `r${i}`) });
        assert.equal((await put('big/pages', m.digest, m.text)).status, 201);
        pushed.push(m.digest);
      }
      const pages = await walk(r.url, `/v2/big/pages/referrers/${subject.digest}`);
      assert.ok(pages.length >= 2, 'more than one page');
      for (const p of pages) {
        assert.equal(p.res.header('content-type'), MediaTypes.ociIndex);
        assert.ok(p.res.body.length < 3 * 1024 * 1024, `a page of ${p.res.body.length} bytes`);
        assert.equal(p.body.mediaType, MediaTypes.ociIndex);
      }
      const seen = pages.flatMap((p) => p.body.manifests.map((d: any) => d.digest));
      assert.deepEqual([...seen].sort(), [...pushed].sort());
      for (const d of pages.flatMap((p) => p.body.manifests)) assert.ok(Object.keys(d.annotations).length > 800);
    });

    it('follows a tag moved to another manifest on GET and HEAD; the old manifest stays by digest', async () => {
      const a = await image('tag/move');
      const b = await image('tag/move');
      assert.equal((await put('tag/move', 'latest', a.text)).status, 201);
      assert.equal((await get('tag/move', 'latest')).body.toString(), a.text);
      assert.equal((await put('tag/move', 'latest', b.text)).status, 201);
      for (const method of ['GET', 'HEAD']) {
        const res = await get('tag/move', 'latest', {}, method);
        assert.equal(res.status, 200);
        assert.equal(res.header('docker-content-digest'), b.digest, method);
        assert.equal(res.header('content-length'), String(b.desc.size), method);
      }
      assert.equal((await get('tag/move', 'latest')).body.toString(), b.text);
      const old = await get('tag/move', a.digest);
      assert.equal(old.status, 200);
      assert.equal(old.body.toString(), a.text);
      assert.deepEqual((await call(`${r.url}/v2/tag/move/tags/list`)).json().tags, ['latest']);
      // Deleting the old manifest leaves the moved tag alone.
      assert.equal((await call(`${r.url}/v2/tag/move/manifests/${a.digest}`, { method: 'DELETE' })).status, 202);
      assert.equal((await get('tag/move', 'latest', {}, 'HEAD')).header('docker-content-digest'), b.digest);
      assert.equal((await get('tag/move', 'latest')).body.toString(), b.text);
    });

    it('stores a manifest pushed by a sha512 digest and serves it by that digest', async () => {
      const m = await image('sha512/repo');
      const digest = sha512(Buffer.from(m.text));
      const res = await put('sha512/repo', digest, m.text);
      assert.equal(res.status, 201, res.body.toString());
      assert.equal(res.header('docker-content-digest'), digest);
      assert.equal(res.header('location'), `/v2/sha512/repo/manifests/${digest}`);
      for (const method of ['GET', 'HEAD']) {
        const got = await get('sha512/repo', digest, {}, method);
        assert.equal(got.status, 200, method);
        assert.equal(got.header('docker-content-digest'), digest);
      }
      assert.equal((await get('sha512/repo', digest)).body.toString(), m.text);
      const other = `sha512:${'0'.repeat(128)}`;
      expectError(await put('sha512/repo', other, m.text), 400, 'DIGEST_INVALID');
      expectError(await get('sha512/repo', other), 404, 'MANIFEST_UNKNOWN');
    });

    it('refuses an oversize manifest streamed without Content-Length with 413, storing nothing', async () => {
      const total = 4 * 1024 * 1024 + 1;
      async function* body() {
        const chunk = Buffer.alloc(64 * 1024, ' ');
        let sent = 0;
        yield Buffer.from('{"schemaVersion":2,');
        sent += 19;
        while (sent < total) {
          const part = chunk.subarray(0, Math.min(chunk.length, total - sent));
          sent += part.length;
          yield part;
        }
      }
      const res = await call(`${r.url}/v2/stream/big/manifests/huge`, { method: 'PUT', headers: { 'Content-Type': MediaTypes.ociManifest }, body: body() });
      expectError(res, 413, 'SIZE_INVALID');
      expectError(await get('stream/big', 'huge'), 404, 'MANIFEST_UNKNOWN');
    });

    it('answers tags/list?n=0 for an unknown repository with 404 NAME_UNKNOWN', async () => {
      expectError(await call(`${r.url}/v2/no/such/repo/tags/list?n=0`), 404, 'NAME_UNKNOWN');
      const m = await image('known/repo');
      assert.equal((await put('known/repo', 'v', m.text)).status, 201);
      const zero = await call(`${r.url}/v2/known/repo/tags/list?n=0`);
      assert.equal(zero.status, 200);
      assert.deepEqual(zero.json(), { name: 'known/repo', tags: [] });
    });

    it('agrees on HEAD and GET by tag after the manifest was deleted by digest, even with a tag pushed during the delete', async () => {
      const m = await image('race/del');
      assert.equal((await put('race/del', 'one', m.text)).status, 201);
      assert.equal((await call(`${r.url}/v2/race/del/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
      expectError(await get('race/del', 'one'), 404, 'MANIFEST_UNKNOWN');
      assert.equal((await get('race/del', 'one', {}, 'HEAD')).status, 404);

      // The same manifest pushed again under a new tag while a delete runs: between the delete's
      // read of the tags on the digest and its removal of the manifest.
      assert.equal((await put('race/del', 'one', m.text)).status, 201);
      let armed = true;
      let racedPut: Received | undefined;
      r.db.middlewareStack.add(
        (next, ctx) => async (args) => {
          const result = await next(args);
          if (armed && ctx.commandName === 'QueryCommand' && JSON.stringify(args.input).includes(`TAGGED#${m.digest}#`)) {
            armed = false;
            racedPut = await put('race/del', 'late', m.text);
          }
          return result;
        },
        { step: 'initialize', name: 'raceTagPut' },
      );
      try {
        assert.equal((await call(`${r.url}/v2/race/del/manifests/${m.digest}`, { method: 'DELETE' })).status, 202);
      } finally {
        r.db.middlewareStack.remove('raceTagPut');
      }
      assert.equal(racedPut?.status, 201, 'the racing push happened');
      const head = await get('race/del', 'late', {}, 'HEAD');
      const got = await get('race/del', 'late');
      assert.equal(head.status, got.status, 'HEAD and GET by tag agree');
      expectError(got, 404, 'MANIFEST_UNKNOWN');
      expectError(await get('race/del', m.digest), 404, 'MANIFEST_UNKNOWN');
      assert.deepEqual((await call(`${r.url}/v2/race/del/tags/list`)).json().tags, []);
    });
  });
}

describe('page limits (SKIFF_MAX_PAGE=3)', () => {
  const r = useRegistry('fs', { env: { SKIFF_MAX_PAGE: '3' } });
  const { image, put } = helpers(r);

  it('pages tags/list without n, and with n above the limit, with a Link header', async () => {
    const m = await image('lim/tags');
    const tags = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    for (const t of tags) assert.equal((await put('lim/tags', t, m.text)).status, 201);
    for (const first of ['/v2/lim/tags/tags/list', '/v2/lim/tags/tags/list?n=100']) {
      const pages = await walk(r.url, first);
      assert.deepEqual(pages.map((p) => p.body.tags.length), [3, 3, 1], first);
      assert.deepEqual(pages.flatMap((p) => p.body.tags), tags);
      assert.equal(pages[0]!.link, '</v2/lim/tags/tags/list?n=3&last=c>; rel="next"');
      assert.equal(pages[2]!.link, undefined);
    }
    const small = await walk(r.url, '/v2/lim/tags/tags/list?n=2');
    assert.deepEqual(small.map((p) => p.body.tags.length), [2, 2, 2, 1], 'a smaller n is kept');
    const exact = await call(`${r.url}/v2/lim/tags/tags/list?last=d`);
    assert.deepEqual(exact.json().tags, ['e', 'f', 'g']);
    assert.equal(exact.header('link'), undefined, 'no Link when nothing follows');
  });

  it('pages the catalog without n, and with n above the limit', async () => {
    const names = ['lim/cat/a', 'lim/cat/b', 'lim/cat/c', 'lim/cat/d', 'lim/cat/e'];
    for (const name of names) assert.equal((await put(name, 'v', (await image(name)).text)).status, 201);
    for (const first of ['/v2/_catalog', '/v2/_catalog?n=50']) {
      const pages = await walk(r.url, first);
      assert.ok(pages.every((p) => p.body.repositories.length <= 3));
      assert.ok(pages.length >= 2);
      assert.deepEqual(pages.flatMap((p) => p.body.repositories).filter((x: string) => x.startsWith('lim/cat/')), names);
    }
  });

  it('pages referrers past the limit, keeping the artifactType filter on every page', async () => {
    const subject = await image('lim/ref');
    const all: string[] = [];
    const sboms: string[] = [];
    for (let i = 0; i < 7; i++) {
      const artifactType = i % 2 ? 'application/vnd.example.sig' : 'application/vnd.example.sbom';
      const m = await image('lim/ref', { artifactType, subject: subject.desc, annotations: { n: String(i) } });
      assert.equal((await put('lim/ref', m.digest, m.text)).status, 201);
      all.push(m.digest);
      if (i % 2 === 0) sboms.push(m.digest);
    }
    const pages = await walk(r.url, `/v2/lim/ref/referrers/${subject.digest}`);
    assert.deepEqual(pages.map((p) => p.body.manifests.length), [3, 3, 1]);
    assert.deepEqual(pages.flatMap((p) => p.body.manifests.map((d: any) => d.digest)).sort(), [...all].sort());
    for (const p of pages) assert.equal(p.res.header('oci-filters-applied'), undefined);

    const filtered = await walk(r.url, `/v2/lim/ref/referrers/${subject.digest}?artifactType=application/vnd.example.sbom`);
    assert.deepEqual(filtered.flatMap((p) => p.body.manifests.map((d: any) => d.digest)).sort(), [...sboms].sort());
    assert.ok(filtered.length >= 2, 'four matches take two pages');
    for (const p of filtered) {
      assert.equal(p.res.header('oci-filters-applied'), 'artifactType');
      assert.ok(p.body.manifests.every((d: any) => d.artifactType === 'application/vnd.example.sbom'));
      if (p.link) assert.match(p.link, /artifactType=application%2Fvnd\.example\.sbom/);
    }
    expectError(await call(`${r.url}/v2/lim/ref/referrers/${subject.digest}?last=nonsense`), 400, 'DIGEST_INVALID');
  });
});
