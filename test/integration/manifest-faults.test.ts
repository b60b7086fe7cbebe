/**
 * Fault sweep of the manifest flows: PUT of an image (moving a tag, and as a repository's first
 * push) and of an index (moving a tag), DELETE of a manifest, DELETE of a tag. For every DynamoDB call a flow makes, each fault of
 * test/helpers/dynamo-faults.ts that can happen to that call is injected there, once per run,
 * on fresh data; the client then retries as real clients do (after 429/503, with the
 * Retry-After the answer must carry), and the invariants are checked:
 *
 *   - the flow's final answer is its success (201 / 202): a fault the client can retry never
 *     ends in a 500, and a retried delete never turns into a 404 for work that was done;
 *   - what it stored or deleted is exactly so: the tag points at the new manifest, or is gone;
 *   - no tag is lost or dangling: every listed tag answers HEAD and GET alike, with one digest;
 *   - no stored manifest misses a reference: its blobs and child manifests are all there.
 *
 * Manifests here are small (inline in DynamoDB), so the storage driver plays no part: fs only.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { sha256 } from '../helpers/data.js';
import { call, type Received } from '../helpers/http.js';
import { manifestClient } from '../helpers/manifests.js';
import { useRegistry } from '../helpers/registry.js';
import { DYNAMO_FAULTS, type DynamoFault, WRITES, injectDynamoFaults } from '../helpers/dynamo-faults.js';
import { MediaTypes } from '../../lib/oci/manifest.js';

interface Flow {
  name: string;
  /** Fresh data for run `i`; returns the request under test and the check of its outcome. */
  setup(i: number): Promise<{ send(): Promise<Received>; status: number; check(): Promise<void> }>;
}

describe('manifest fault sweep (fs)', () => {
  const r = useRegistry('fs');
  const { image, put, get } = manifestClient(r, 64000, { configSize: 100, layerSizes: [300, 200] });
  const repo = 'faults/m';
  const url = (ref: string) => `${r.url}/v2/${repo}/manifests/${ref}`;
  let base: Awaited<ReturnType<typeof image>>;
  let children: { mediaType: string; digest: string; size: number }[];

  /** An image manifest over the shared blobs, distinct per `label`. */
  const imageText = (label: string) => JSON.stringify({ ...JSON.parse(base.text), annotations: { run: label } });
  const indexText = (label: string) => JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: children, annotations: { run: label } });
  const digestOf = (text: string) => sha256(Buffer.from(text));

  async function stored(ref: string, text: string, type: string = MediaTypes.ociManifest): Promise<void> {
    const res = await put(repo, ref, text, type);
    assert.equal(res.status, 201, res.body.toString());
  }

  /** The tag answers HEAD and GET alike: `digest`, or 404 MANIFEST_UNKNOWN for both. */
  async function tagIs(tag: string, digest: string | undefined, context: string): Promise<void> {
    const head = await get(repo, tag, {}, 'HEAD');
    const got = await get(repo, tag);
    assert.equal(head.status, got.status, `${context}: HEAD and GET of ${tag} agree`);
    assert.equal(got.status, digest ? 200 : 404, `${context}: ${tag} -> ${got.status} ${got.body.toString().slice(0, 200)}`);
    if (digest) {
      assert.equal(got.header('docker-content-digest'), digest, `${context}: ${tag}`);
      assert.equal(head.header('docker-content-digest'), digest, `${context}: ${tag}`);
    }
  }

  /** Every listed tag resolves on HEAD and GET to one manifest, whose references are all there. */
  async function consistent(context: string): Promise<void> {
    const tags: string[] = (await call(`${r.url}/v2/${repo}/tags/list`)).json().tags;
    for (const tag of tags) {
      const got = await get(repo, tag);
      assert.equal(got.status, 200, `${context}: listed tag ${tag} dangles`);
      await tagIs(tag, got.header('docker-content-digest'), context);
      const manifest = JSON.parse(got.body.toString());
      for (const blob of [manifest.config, ...(manifest.layers ?? [])].filter(Boolean)) {
        assert.equal((await call(`${r.url}/v2/${repo}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 200, `${context}: ${tag} misses blob ${blob.digest}`);
      }
      for (const child of manifest.manifests ?? []) assert.equal((await call(url(child.digest), { method: 'HEAD' })).status, 200, `${context}: ${tag} misses child ${child.digest}`);
    }
  }

  const flows: Flow[] = [
    {
      name: 'PUT image (tag moves)',
      async setup(i) {
        const tag = `img-${i}`;
        await stored(tag, imageText(`old-${i}`));
        const text = imageText(`new-${i}`);
        return { send: () => put(repo, tag, text), status: 201, check: () => tagIs(tag, digestOf(text), tag) };
      },
    },
    {
      name: "PUT image (a repository's first)",
      async setup(i) {
        const fresh = `faults/new-${i}`;
        const m = await image(fresh);
        return {
          send: () => put(fresh, 'v1', m.text),
          status: 201,
          async check() {
            const got = await get(fresh, 'v1');
            assert.equal(got.status, 200, `${fresh}:v1`);
            assert.equal(got.header('docker-content-digest'), m.digest);
            assert.equal((await get(fresh, 'v1', {}, 'HEAD')).header('docker-content-digest'), m.digest);
            assert.ok((await call(`${r.url}/v2/_catalog`)).json().repositories.includes(fresh), `${fresh} is listed`);
          },
        };
      },
    },
    {
      name: 'PUT index (tag moves)',
      async setup(i) {
        const tag = `idx-${i}`;
        await stored(tag, indexText(`old-${i}`), MediaTypes.ociIndex);
        const text = indexText(`new-${i}`);
        return { send: () => put(repo, tag, text, MediaTypes.ociIndex), status: 201, check: () => tagIs(tag, digestOf(text), tag) };
      },
    },
    {
      name: 'DELETE manifest',
      async setup(i) {
        const text = imageText(`del-${i}`);
        const other = imageText(`keep-${i}`);
        for (const tag of [`a-${i}`, `b-${i}`]) await stored(tag, text);
        await stored(`keep-${i}`, other);
        return {
          send: () => call(url(digestOf(text)), { method: 'DELETE' }),
          status: 202,
          async check() {
            assert.equal((await get(repo, digestOf(text))).status, 404, 'the manifest is gone');
            await tagIs(`a-${i}`, undefined, 'DELETE manifest');
            await tagIs(`b-${i}`, undefined, 'DELETE manifest');
            await tagIs(`keep-${i}`, digestOf(other), 'DELETE manifest');
          },
        };
      },
    },
    {
      name: 'DELETE tag',
      async setup(i) {
        const text = imageText(`tag-${i}`);
        for (const tag of [`x-${i}`, `y-${i}`]) await stored(tag, text);
        return {
          send: () => call(url(`x-${i}`), { method: 'DELETE' }),
          status: 202,
          async check() {
            await tagIs(`x-${i}`, undefined, 'DELETE tag');
            await tagIs(`y-${i}`, digestOf(text), 'DELETE tag');
            assert.equal((await get(repo, digestOf(text))).status, 200, 'the manifest stays');
          },
        };
      },
    },
  ];

  before(async () => {
    base = await image(repo);
    await stored(base.digest, base.text);
    children = [];
    for (const label of ['amd64', 'arm64']) {
      const text = imageText(label);
      await stored(digestOf(text), text);
      children.push({ mediaType: MediaTypes.ociManifest, digest: digestOf(text), size: Buffer.byteLength(text) });
    }
  });

  it('answers every flow right, with no tag lost or dangling and no image missing a part, under every fault at every call', async (t) => {
    const faults = injectDynamoFaults(r.db);
    t.after(() => faults.remove());
    let run = 0;
    let runs = 0;
    let sites = 0;
    for (const flow of flows) {
      // A clean run tells the flow's calls.
      const clean = await flow.setup(run++);
      faults.count();
      assert.equal((await clean.send()).status, clean.status, `${flow.name}: without faults`);
      const calls = [...faults.calls];
      await clean.check();
      sites += calls.length;
      for (const [at, command] of calls.entries()) {
        const kinds: DynamoFault[] = DYNAMO_FAULTS.filter((f) => WRITES.has(command) || (f !== 'lose-app' && f !== 'conflict'));
        for (const fault of kinds) {
          const context = `${flow.name}, call ${at} (${command}), ${fault}`;
          const errors = r.serverErrors.length;
          const step = await flow.setup(run++);
          faults.arm(at, fault);
          let res = await step.send();
          assert.ok(faults.fired, `${context}: the fault acted`);
          faults.disarm();
          // As clients do: come back after a 429 or 503, which must say when.
          for (let retry = 0; (res.status === 429 || res.status === 503) && retry < 3; retry++) {
            assert.ok(res.header('retry-after'), `${context}: ${res.status} without Retry-After`);
            res = await step.send();
          }
          assert.equal(res.status, step.status, `${context}: ${res.body.toString().slice(0, 300)}`);
          assert.equal(r.serverErrors.length, errors, `${context}: no server fault`);
          await step.check().catch((err: Error) => assert.fail(`${context}: ${err.message}`));
          runs++;
        }
      }
    }
    await consistent('after the sweep');
    console.log(`manifest fault sweep: ${flows.length} flows x ${sites} call sites x up to ${DYNAMO_FAULTS.length} faults = ${runs} runs`);
  });
});
