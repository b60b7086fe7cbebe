/**
 * Fault sweep of the manifest flows (`npm test -- faults`), on both drivers: PUT of an image
 * (moving a tag, and as a repository's first push), of an index (moving a tag) and of an image
 * large enough to be stored as an object (moving a tag), DELETE of a manifest, DELETE of a tag.
 * For every call a flow makes, of DynamoDB and of storage (S3 or the filesystem), each fault of
 * test/helpers/faults.ts that can happen to that call is injected there, once per run, on
 * fresh data; the client then does what real clients do, and the invariants are checked:
 *
 *   - after 429 or 503 (which must carry Retry-After) and after a 5xx the client sends the
 *     request again, up to three times; its final answer is the flow's success (201 / 202):
 *     a retried delete that finds its work done is a success, never a 404;
 *   - a lost DynamoDB answer changes nothing the client hears: the first answer is the
 *     unfaulted one (a lost storage answer may cost a 500 that the retry repairs; listed);
 *   - a throttled call (S3 SlowDown, DynamoDB throughput or transaction conflicts) is answered
 *     429 or 503 with Retry-After, never 500; the client's retries never meet a server fault;
 *   - what the flow stored or deleted is exactly so: the tag points at the new manifest (HEAD
 *     and GET agree, GET's bytes have the digest), or is gone for both, and nothing else moved;
 *   - no tag is lost or dangling and no stored manifest misses a reference: every listed tag
 *     answers HEAD and GET alike, and its blobs and child manifests are all there.
 *
 * `delay` holds the call while the client, having given up on the request, sends it again next
 * to it; then the held call goes on, a stale writer, whose answer nobody reads (it must not be
 * a 5xx all the same).
 *
 * Where the first answer differs from the unfaulted one (a lost answer that ends in a 500 the
 * retry repairs, say), the sweep lists it: what a client that does not retry would have seen.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { INLINE_MANIFEST_BYTES } from '../../lib/registry/manifests.js';
import { sha256 } from '../helpers/data.js';
import { type CallRecord, type FaultKind, type FaultLayer, faultsFor, injectFaults, isWrite, nth } from '../helpers/faults.js';
import { type Received, call } from '../helpers/http.js';
import { manifestClient } from '../helpers/manifests.js';
import { DRIVERS, type DriverKind, useRegistry } from '../helpers/registry.js';

interface Step {
  /** The request under test; sent again as the client's retry. */
  send(): Promise<Received>;
  /** Its answer without faults. */
  status: number;
  /** The state it leaves: throws what is wrong. */
  check(): Promise<void>;
}

interface Flow {
  name: string;
  /** Fresh data for run `i`; no faults. */
  setup(i: number): Promise<Step>;
}

interface Result {
  flows: number;
  runs: number;
  sites: number;
  byKind: Partial<Record<FaultKind, number>>;
  problems: string[];
  /** Runs whose first (or stale) answer was not the unfaulted one: the fault, and the run in words. */
  divergences: { kind: FaultKind; first?: number; line: string }[];
  summary: string[];
  seconds: number;
}

/** Reads are idempotent: losing an answer is then a plain failure, and holding one back only slows. */
function sweepFaults(site: CallRecord): FaultKind[] {
  return faultsFor(site).filter((f) => isWrite(site) || f === 'fail' || f === 'throttle');
}

const RETRIES = 3;

/**
 * One share of the sweep: `only` of the flows, on a registry of its own (calls are counted per
 * registry), with the blobs and manifests every run builds on.
 */
function manifestSweep(driver: DriverKind, only: string[]) {
  const r = useRegistry(driver);
  const { image, put, get } = manifestClient(r, driver === 'fs' ? 64000 : 65000, { configSize: 100, layerSizes: [300, 200] });
  const repo = 'faults/m';
  const url = (name: string, ref: string) => `${r.url}/v2/${name}/manifests/${ref}`;
  let base: Awaited<ReturnType<typeof image>>;
  let children: { mediaType: string; digest: string; size: number }[];

  /** An image manifest over the shared blobs, distinct per `label`; `pad` bytes of annotation make it large. */
  const imageText = (label: string, pad = 0) => JSON.stringify({ ...JSON.parse(base.text), annotations: { run: label, ...(pad ? { pad: 'x'.repeat(pad) } : {}) } });
  const indexText = (label: string) => JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: children, annotations: { run: label } });
  const digestOf = (text: string) => sha256(Buffer.from(text));
  const LARGE = INLINE_MANIFEST_BYTES + 4096;

  async function stored(ref: string, text: string, type: string = MediaTypes.ociManifest, name = repo): Promise<void> {
    const res = await put(name, ref, text, type);
    assert.equal(res.status, 201, res.body.toString());
  }

  /**
   * The tag answers HEAD and GET alike: `digest` (with bytes that have it, and every reference
   * of the manifest there), or 404 MANIFEST_UNKNOWN for both.
   */
  async function tagIs(tag: string, digest: string | undefined, context: string, name = repo): Promise<void> {
    const head = await get(name, tag, {}, 'HEAD');
    const got = await get(name, tag);
    assert.equal(head.status, got.status, `${context}: HEAD (${head.status}) and GET (${got.status}) of ${tag} agree`);
    assert.equal(got.status, digest ? 200 : 404, `${context}: ${tag} -> ${got.status} ${got.body.toString().slice(0, 200)}`);
    if (!digest) return;
    assert.equal(got.header('docker-content-digest'), digest, `${context}: GET ${tag}`);
    assert.equal(head.header('docker-content-digest'), digest, `${context}: HEAD ${tag}`);
    assert.equal(sha256(got.body), digest, `${context}: ${tag}'s bytes have its digest`);
    await complete(name, digest, got.body, context);
  }

  /** Manifests whose references were seen complete: nothing in this sweep deletes a blob, so once is enough. */
  const completed = new Set<string>();

  /** Every blob and child manifest the manifest references is in the repository. */
  async function complete(name: string, digest: string, body: Buffer, context: string): Promise<void> {
    if (completed.has(`${name}@${digest}`)) return;
    const tag = digest;
    const manifest = JSON.parse(body.toString());
    for (const blob of [manifest.config, ...(manifest.layers ?? [])].filter(Boolean)) {
      assert.equal((await call(`${r.url}/v2/${name}/blobs/${blob.digest}`, { method: 'HEAD' })).status, 200, `${context}: ${tag} misses blob ${blob.digest}`);
    }
    for (const child of manifest.manifests ?? []) assert.equal((await call(url(name, child.digest), { method: 'HEAD' })).status, 200, `${context}: ${tag} misses child ${child.digest}`);
    completed.add(`${name}@${digest}`);
  }

  /** Every listed tag of the repository resolves on HEAD and GET to one manifest, whose references are all there. */
  async function consistent(context: string): Promise<void> {
    const tags: string[] = (await call(`${r.url}/v2/${repo}/tags/list`)).json().tags;
    for (const tag of tags) {
      const head = await get(repo, tag, {}, 'HEAD');
      const got = await get(repo, tag);
      assert.equal(got.status, 200, `${context}: listed tag ${tag} dangles`);
      assert.equal(head.status, 200, `${context}: listed tag ${tag} dangles on HEAD`);
      const digest = got.header('docker-content-digest')!;
      assert.equal(head.header('docker-content-digest'), digest, `${context}: HEAD and GET of ${tag} agree`);
      assert.equal(sha256(got.body), digest, `${context}: ${tag}'s bytes have its digest`);
      await complete(repo, digest, got.body, context);
    }
  }

  const all: Flow[] = [
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
            await tagIs('v1', m.digest, fresh, fresh);
            assert.deepEqual((await call(`${r.url}/v2/${fresh}/tags/list`)).json().tags, ['v1'], `${fresh}: its tags`);
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
      name: 'PUT large image, stored as an object (tag moves)',
      async setup(i) {
        const tag = `big-${i}`;
        await stored(tag, imageText(`old-${i}`));
        const text = imageText(`big-${i}`, LARGE);
        assert.ok(Buffer.byteLength(text) > INLINE_MANIFEST_BYTES, 'stored as an object');
        return { send: () => put(repo, tag, text), status: 201, check: () => tagIs(tag, digestOf(text), tag) };
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
          send: () => call(url(repo, digestOf(text)), { method: 'DELETE' }),
          status: 202,
          async check() {
            assert.equal((await get(repo, digestOf(text))).status, 404, 'the manifest is gone');
            assert.equal((await get(repo, digestOf(text), {}, 'HEAD')).status, 404, 'the manifest is gone for HEAD too');
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
          send: () => call(url(repo, `x-${i}`), { method: 'DELETE' }),
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

  const flows = all.filter((f) => only.includes(f.name));
  assert.equal(flows.length, only.length, `flows ${only.join(', ')}`);

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

  let run = 0;

  /** The client: the request again after 429/503 (which must say when) or a 5xx, up to RETRIES times. */
  async function retried(step: Step, first: Received | undefined, problems: string[]): Promise<Received> {
    let res = first;
    for (let n = 0; n < RETRIES && (res === undefined || res.status >= 500 || res.status === 429); n++) {
      if (res && (res.status === 429 || res.status === 503) && !res.header('retry-after')) problems.push(`${res.status} without Retry-After`);
      const errors = r.serverErrors.length;
      res = await step.send();
      if (r.serverErrors.length > errors) problems.push(`retry met a server fault: ${JSON.stringify(r.serverErrors.slice(errors)).slice(0, 300)}`);
      if (res.status >= 500) problems.push(`retry answered ${res.status}: ${res.body.toString().slice(0, 200)}`);
    }
    return res!;
  }

  /** One run of `flow`: clean (no `fault`), or with `fault` at the `occurrence`-th call named `site`. */
  async function runCase(faults: FaultLayer, flow: Flow, fault?: { kind: FaultKind; site: CallRecord; occurrence: number }) {
    const problems: string[] = [];
    const step = await flow.setup(run++);
    r.serverErrors.length = 0;
    if (fault) faults.arm(nth(fault.site.name, fault.occurrence), fault.kind);
    else faults.record();
    let first: Received | undefined;
    let final: Received;
    let stale: Received | undefined;
    if (fault?.kind === 'delay') {
      const pending = step.send();
      const held = await Promise.race([faults.whenHeld().then(() => true), pending.then(() => false)]);
      if (held) {
        // The client gave up on the held request: it sends it again, next to it; then the held call goes on.
        final = await retried(step, undefined, problems);
        faults.release();
        stale = await pending;
        if (stale.status >= 500) problems.push(`the stale request answered ${stale.status}: ${stale.body.toString().slice(0, 200)}`);
      } else {
        first = await pending;
      }
    } else {
      first = await step.send();
    }
    const calls = faults.disarm();
    if (fault && !calls.some((c) => c.fault)) problems.push('the fault was not reached');
    if (first) {
      if ((fault?.kind === 'throttle' || fault?.kind === 'conflict') && first.status >= 500 && first.status !== 503) {
        problems.push(`throttled call answered ${first.status}: ${first.body.toString().slice(0, 200)}`);
      }
      // A call of S3 or DynamoDB that failed or lost its answer is the client's to retry: 503 with Retry-After, never 500.
      if ((fault?.kind === 'fail' || fault?.kind === 'lose' || fault?.kind === 'lose-retried') && fault.site.backend !== 'fs' && first.status === 500) {
        problems.push(`a ${fault.kind} of ${fault.site.backend} ${fault.site.name} answered 500: ${first.body.toString().slice(0, 200)}`);
      }
      // DynamoDB writes are resent and recognised (transact()): a lost answer changes nothing the client hears.
      if ((fault?.kind === 'lose' || fault?.kind === 'lose-retried') && fault.site.backend === 'dynamodb' && first.status !== step.status) {
        problems.push(`a lost DynamoDB answer changed the answer to ${first.status}: ${first.body.toString().slice(0, 200)}`);
      }
      final = await retried(step, first, problems);
    }
    if (final!.status !== step.status) problems.push(`final answer ${final!.status}, not ${step.status}: ${final!.body.toString().slice(0, 200)}`);
    await step.check().catch((err: Error) => problems.push(err.message));
    r.serverErrors.length = 0;
    const where = fault ? `${driver} ${flow.name} / call ${fault.site.index} ${fault.site.backend}:${fault.site.name.replace(/Command$/, '')} / ${fault.kind}` : `${driver} ${flow.name} (no fault)`;
    const answers = [first && `first ${first.status}${first.status >= 400 ? ` ${errorOf(first)}` : ''}`, `final ${final!.status}`, stale && `stale ${stale.status}${stale.status >= 400 ? ` ${errorOf(stale)}` : ''}`].filter(Boolean).join(', ');
    const diverged =
      fault && ((first && first.status !== step.status) || (stale && stale.status !== step.status))
        ? { kind: fault.kind, first: first?.status, line: `${where}: ${answers} (unfaulted ${step.status})` }
        : undefined;
    return { calls, problems: problems.map((p) => `${where} (${answers}): ${p}`), diverged };
  }

  async function sweep(): Promise<Result> {
    const started = Date.now();
    const faults = injectFaults(r, { delayMs: 30_000 });
    const out: Result = { flows: flows.length, runs: 0, sites: 0, byKind: {}, problems: [], divergences: [], summary: [], seconds: 0 };
    for (const flow of flows) {
      // A run without faults: it must pass, and it tells the call sites.
      const clean = await runCase(faults, flow);
      out.problems.push(...clean.problems);
      out.sites += clean.calls.length;
      out.summary.push(`${driver} ${flow.name}: ${clean.calls.map((x) => `${x.backend}:${x.name.replace(/Command$/, '')}`).join(' ')}`);
      for (const [at, site] of clean.calls.entries()) {
        const occurrence = clean.calls.slice(0, at).filter((x) => x.name === site.name).length;
        for (const kind of sweepFaults(site)) {
          const res = await runCase(faults, flow, { kind, site, occurrence });
          out.runs++;
          out.byKind[kind] = (out.byKind[kind] ?? 0) + 1;
          out.problems.push(...res.problems);
          if (res.diverged) out.divergences.push(res.diverged);
        }
      }
    }
    await consistent(`${driver}: after the sweep`).catch((err: Error) => out.problems.push(err.message));
    out.seconds = (Date.now() - started) / 1000;
    return out;
  }

  return { flows, sweep };
}

function errorOf(res: Received): string {
  try {
    return res.json().errors?.[0]?.code ?? '';
  } catch {
    return '';
  }
}

/** Shares of the sweep that run side by side, each on its own registry, per driver. */
const GROUPS = [
  ['PUT image (tag moves)', "PUT image (a repository's first)"],
  ['PUT index (tag moves)', 'PUT large image, stored as an object (tag moves)'],
  ['DELETE manifest', 'DELETE tag'],
];

describe('manifest fault sweep: every call of every manifest flow, every fault, both drivers', { concurrency: true }, () => {
  const started = Date.now();
  const results: Result[] = [];

  // SKIFF_SWEEP_ONLY=<text>: only the flows whose name contains it (to work on one).
  const only = process.env.SKIFF_SWEEP_ONLY;
  for (const driver of DRIVERS) {
    for (const group of GROUPS.map((g) => g.filter((name) => !only || name.includes(only))).filter((g) => g.length)) {
      const { sweep } = manifestSweep(driver, group);
      it(`keeps every invariant (${driver}: ${group.join(', ')})`, async () => {
        const result = await sweep();
        results.push(result);
        for (const p of result.problems) console.log(`  PROBLEM ${p}`);
        assert.deepEqual(result.problems, []);
      });
    }
  }

  after(() => {
    const sum = (f: (x: Result) => number) => results.reduce((n, x) => n + f(x), 0);
    const byKind: Partial<Record<FaultKind, number>> = {};
    for (const x of results) for (const [k, n] of Object.entries(x.byKind)) byKind[k as FaultKind] = (byKind[k as FaultKind] ?? 0) + n;
    for (const line of results.flatMap((x) => x.summary).sort()) console.log(`  calls: ${line}`);
    console.log(
      `  manifest sweep: ${sum((x) => x.flows) / DRIVERS.length} flows x ${DRIVERS.length} drivers, ${sum((x) => x.sites)} call sites x faults ` +
        `(${Object.entries(byKind).map(([k, n]) => `${k} ${n}`).join(', ')}) = ${sum((x) => x.runs)} runs in ${((Date.now() - started) / 1000).toFixed(0)} s, ` +
        `${sum((x) => x.problems.length)} problems`,
    );
    const divergences = results.flatMap((x) => x.divergences);
    console.log('  first answers other than the unfaulted one (the client\'s retry then answered as unfaulted):');
    for (const d of divergences.filter((x) => x.kind === 'lose' || x.kind === 'lose-retried' || x.kind === 'delay').map((x) => x.line).sort()) console.log(`    ${d}`);
    const counts = new Map<string, number>();
    for (const d of divergences.filter((x) => x.kind === 'fail' || x.kind === 'throttle' || x.kind === 'conflict')) counts.set(`${d.kind} -> ${d.first}`, (counts.get(`${d.kind} -> ${d.first}`) ?? 0) + 1);
    console.log(`    and, as expected: ${[...counts].map(([k, n]) => `${k} in ${n} runs`).join(', ')}`);
  });
});
