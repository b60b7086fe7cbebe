/**
 * The fault sweep (`npm test -- faults`): every call of every blob write path, on both drivers,
 * under every fault of test/helpers/faults.ts, then the client's retry as real clients do it,
 * then the invariants:
 *
 *   - every blob the flow pushed (or linked) reads back with its digest, and its descriptor's
 *     key holds exactly those bytes: no descriptor points at missing bytes, and a 201 is never
 *     given for bytes that are not stored;
 *   - an upload either finishes on retry or answers a clear 4xx, after which starting over works;
 *     the retry never meets a 5xx;
 *   - a throttled call (S3 SlowDown, DynamoDB throughput, a transaction conflict on every
 *     attempt) is answered 429 or 503 with Retry-After, never 500;
 *   - what the flow deletes (a blob link, an expired upload) is gone, and nothing else is.
 *
 * Retry styles: `restart` (skopeo: on any failure, push the blob again from scratch) and
 * `resume` (docker, containerd, the spec: ask the Location for its Range and continue from it).
 * A `delay` fault holds a call while the upload's lease runs out (expired in the record, as
 * time would) and the client, having given up on the request, retries next to it; then the
 * held call goes on, a stale writer.
 */
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ScanCommand, type ScanCommandOutput, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { purgeExpiredUploads } from '../../lib/registry/purge.js';
import { ObjectNotFound, keys } from '../../lib/storage/types.js';
import { MiB, bytes, sha256 } from '../helpers/data.js';
import { type CallRecord, FAULT_KINDS, type FaultKind, type FaultLayer, faultsFor, injectFaults, nth } from '../helpers/faults.js';
import { type Received, call, resolve } from '../helpers/http.js';
import { errorCode } from '../helpers/oci.js';
import { pushInPut, withDigest } from '../helpers/oci.js';
import { DRIVERS, type DriverKind, type TestRegistry, startRegistry } from '../helpers/registry.js';

type Style = 'restart' | 'resume' | 'again';
const TTL_SECONDS = 60;

interface Run {
  r: TestRegistry;
  faults: FaultLayer;
  repo: string;
  seed: number;
  style: Style;
  /** Violations of the invariants, in words. */
  problems: string[];
}

interface Flow {
  name: string;
  styles: Style[];
  /** Brings the registry to where the faulted step starts; no faults. */
  setup(run: Run): Promise<State>;
  /** The faulted step: one request (or one purge). */
  step(run: Run, state: State): Promise<Received>;
  /** What the client does next (`first`: the step's answer, undefined if it gave up on it). No faults. */
  finish(run: Run, state: State, first: Received | undefined): Promise<void>;
  /** The invariants, once everything (a held call too) has run. */
  check(run: Run, state: State): Promise<void>;
  /** A background job rather than a request: its failure is its next run's to repair. */
  job?: true;
}

interface State {
  data?: Buffer;
  digest?: string;
  location?: string;
  /** Bytes the upload holds before the step. */
  offset?: number;
  /** Bytes the step sends (from offset). */
  sends?: number;
  uploadId?: string;
}

// ---------------------------------------------------------------------------------------------
// The client, as real clients behave.

/** One request of the retry phase: a 5xx here is a violation. */
async function retryCall(run: Run, what: string, url: string, sent: Parameters<typeof call>[1] = {}): Promise<Received> {
  const res = await call(url, sent);
  if (res.status >= 500) run.problems.push(`retry ${what} answered ${res.status}: ${res.body.toString().slice(0, 200)}`);
  return res;
}

async function startUpload(run: Run, what = 'POST'): Promise<string | undefined> {
  const res = await retryCall(run, what, `${run.r.url}/v2/${run.repo}/blobs/uploads/`, { method: 'POST' });
  if (res.status !== 202) {
    run.problems.push(`${what} answered ${res.status}`);
    return undefined;
  }
  return resolve(run.r.url, res.header('location'));
}

/** skopeo after a failure: the whole blob again in a new upload (POST, PATCH, PUT). */
async function restart(run: Run, data: Buffer, digest: string): Promise<void> {
  const location = await startUpload(run, 'restart POST');
  if (!location) return;
  const p = await retryCall(run, 'restart PATCH', location, { method: 'PATCH', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
  if (p.status !== 202) return void run.problems.push(`restart PATCH answered ${p.status}: ${p.body.toString().slice(0, 200)}`);
  const put = await retryCall(run, 'restart PUT', withDigest(resolve(run.r.url, p.header('location')), digest), { method: 'PUT' });
  if (put.status !== 201) run.problems.push(`restart PUT answered ${put.status}: ${put.body.toString().slice(0, 200)}`);
}

/**
 * Continues an upload to its end: from the Range the Location reports (resume), or, for
 * skopeo, from where the last answer left it. A clear 4xx ends the upload for the client,
 * which then pushes the blob again from scratch.
 */
async function complete(run: Run, state: State, from: number | undefined): Promise<void> {
  const { data, digest } = state as Required<State>;
  let location = state.location!;
  for (let round = 0; round < 4; round++) {
    let offset = from;
    from = undefined;
    if (offset === undefined) {
      const status = await retryCall(run, 'GET upload', location);
      if (status.status !== 204) break; // 404: the upload is gone
      offset = Number(status.header('range')!.split('-')[1]) + (status.header('range') === '0-0' ? 0 : 1);
    }
    if (offset > data.length) {
      run.problems.push(`upload reports ${offset} bytes, more than the ${data.length} sent`);
      break;
    }
    if (offset < data.length) {
      const p = await retryCall(run, 'PATCH rest', location, {
        method: 'PATCH',
        body: data.subarray(offset),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${data.length - 1}` },
      });
      if (p.status === 416 && run.style === 'resume') continue;
      if (p.status !== 202) break;
      location = resolve(run.r.url, p.header('location'));
    }
    const put = await retryCall(run, 'PUT', withDigest(location, digest), { method: 'PUT' });
    if (put.status === 201) return;
    if (put.status === 416 && run.style === 'resume') continue;
    break;
  }
  await restart(run, data, digest);
}

/** After the step of an upload flow: done, or continue as the client's style does. */
async function afterUploadStep(run: Run, state: State, first: Received | undefined, finishing: boolean): Promise<void> {
  if (first?.status === 201 && finishing) return;
  if (first?.status === 202) {
    // The step worked: continue from the Range it reported.
    state.location = resolve(run.r.url, first.header('location'));
    const range = first.header('range')!;
    return complete(run, state, range === '0-0' ? 0 : Number(range.split('-')[1]) + 1);
  }
  if (run.style === 'restart') return restart(run, state.data!, state.digest!);
  return complete(run, state, undefined);
}

// ---------------------------------------------------------------------------------------------
// Invariants.

async function digestOfObject(r: TestRegistry, key: string): Promise<{ digest: string; size: number } | undefined> {
  try {
    const h = createHash('sha256');
    let size = 0;
    for await (const chunk of await r.registry.storage.objects.open(key)) {
      h.update(chunk);
      size += chunk.length;
    }
    return { digest: `sha256:${h.digest('hex')}`, size };
  } catch (err) {
    if (err instanceof ObjectNotFound || (err as { name?: string }).name === 'NoSuchKey') return undefined;
    throw err;
  }
}

/** The blob reads back in `repo` with its digest, and its descriptor holds those bytes. */
async function checkLinked(run: Run, repo: string, digest: string, data: Buffer): Promise<void> {
  const got = await call(`${run.r.url}/v2/${repo}/blobs/${digest}`);
  if (got.status !== 200 || !got.body.equals(data)) run.problems.push(`${repo}@${digest.slice(7, 19)} reads back ${got.status} with ${got.body.length} bytes`);
  await checkDescriptor(run, digest);
}

async function checkDescriptor(run: Run, digest: string): Promise<void> {
  const descriptor = await run.r.registry.meta.blobs.getDescriptor(digest);
  if (!descriptor) return;
  const stored = await digestOfObject(run.r, descriptor.key);
  if (stored?.digest !== digest || stored.size !== descriptor.size) {
    run.problems.push(`descriptor ${digest.slice(7, 19)} -> ${descriptor.key}: ${stored ? `${stored.size} bytes of ${stored.digest.slice(7, 19)}` : 'missing'}`);
  }
}

/** Every descriptor and link in the table points at bytes with its digest. */
async function checkWholeTable(r: TestRegistry): Promise<string[]> {
  const problems: string[] = [];
  let start: Record<string, unknown> | undefined;
  const checked = new Map<string, string | undefined>();
  do {
    const page: ScanCommandOutput = await r.db.send(new ScanCommand({ TableName: r.config.dynamo.table, ExclusiveStartKey: start }));
    for (const item of page.Items ?? []) {
      if (!(item.sk as string).startsWith('BLOB')) continue;
      const key = item.key as string;
      if (!checked.has(key)) checked.set(key, (await digestOfObject(r, key))?.digest);
      if (checked.get(key) !== item.digest) problems.push(`${item.pk} ${item.sk} -> ${key}: holds ${checked.get(key) ?? 'nothing'}`);
    }
    start = page.LastEvaluatedKey;
  } while (start);
  return problems;
}

async function uploadLeftovers(r: TestRegistry, id: string): Promise<string[]> {
  const found = await r.registry.storage.objects.list(keys.uploadPrefix(id));
  if ((await digestOfObject(r, keys.blob(id))) !== undefined) found.push(keys.blob(id));
  if (r.config.storage === 's3') {
    const mpus = await r.s3.send(new ListMultipartUploadsCommand({ Bucket: r.config.s3.bucket, Prefix: keys.blob(id) }));
    found.push(...(mpus.Uploads ?? []).map((u) => `multipart ${u.Key}`));
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// The flows.

const KiB = 1024;

function blob(run: Run, size: number): State {
  const data = bytes(size, run.seed);
  return { data, digest: sha256(data) };
}

async function uploadWith(run: Run, state: State, first: number): Promise<State> {
  const location = await startUpload(run, 'setup POST');
  assert.ok(location, 'setup POST');
  if (first > 0) {
    const res = await call(location, { method: 'PATCH', body: state.data!.subarray(0, first), headers: { 'Content-Range': `0-${first - 1}` } });
    assert.equal(res.status, 202, `setup PATCH: ${res.body.toString()}`);
  }
  return { ...state, location, offset: first };
}

const checkPushed = (run: Run, s: State) => checkLinked(run, run.repo, s.digest!, s.data!);

const FLOWS: Flow[] = [
  {
    name: 'chunked PATCH',
    styles: ['restart', 'resume'],
    setup: (run) => uploadWith(run, blob(run, 1500 * KiB), 600 * KiB),
    step: (_run, s) => call(s.location!, { method: 'PATCH', body: s.data!.subarray(s.offset!, 1200 * KiB), headers: { 'Content-Range': `${s.offset}-${1200 * KiB - 1}` } }),
    finish: (run, s, first) => afterUploadStep(run, s, first, false),
    check: checkPushed,
  },
  {
    name: 'whole-layer PATCH',
    styles: ['restart', 'resume'],
    // Past S3's 5 MiB part minimum: a sealed part and a tail.
    setup: (run) => uploadWith(run, blob(run, 6 * MiB + 3), 0),
    step: (_run, s) => call(s.location!, { method: 'PATCH', body: s.data!, headers: { 'Content-Type': 'application/octet-stream' } }),
    finish: (run, s, first) => afterUploadStep(run, s, first, false),
    check: checkPushed,
  },
  {
    name: 'finish without a final chunk',
    styles: ['restart', 'resume'],
    setup: (run) => uploadWith(run, blob(run, 1200 * KiB), 1200 * KiB),
    step: (_run, s) => call(withDigest(s.location!, s.digest!), { method: 'PUT' }),
    finish: (run, s, first) => afterUploadStep(run, s, first, true),
    check: checkPushed,
  },
  {
    name: 'finish with a final chunk',
    styles: ['restart', 'resume'],
    setup: (run) => uploadWith(run, blob(run, 1200 * KiB), 700 * KiB),
    step: (_run, s) =>
      call(withDigest(s.location!, s.digest!), {
        method: 'PUT',
        body: s.data!.subarray(s.offset!),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${s.offset}-${s.data!.length - 1}` },
      }),
    finish: (run, s, first) => afterUploadStep(run, s, first, true),
    check: checkPushed,
  },
  {
    name: 'monolithic POST',
    styles: ['again'],
    setup: async (run) => blob(run, 900 * KiB),
    step: (run, s) => call(`${run.r.url}/v2/${run.repo}/blobs/uploads/?digest=${s.digest}`, { method: 'POST', body: s.data! }),
    async finish(run, s, first) {
      if (first?.status !== 201) {
        const again = await retryCall(run, 'POST again', `${run.r.url}/v2/${run.repo}/blobs/uploads/?digest=${s.digest}`, { method: 'POST', body: s.data! });
        if (again.status !== 201) run.problems.push(`POST again answered ${again.status}`);
      }
    },
    check: checkPushed,
  },
  {
    name: 'mount',
    styles: ['again'],
    async setup(run) {
      const s = blob(run, 300 * KiB);
      await pushInPut(run.r.url, `${run.repo}-src`, s.data!);
      return s;
    },
    step: (run, s) => call(`${run.r.url}/v2/${run.repo}/blobs/uploads/?mount=${s.digest}&from=${run.repo}-src`, { method: 'POST' }),
    async finish(run, s, first) {
      let res = first;
      if (res?.status !== 201 && res?.status !== 202) {
        res = await retryCall(run, 'mount again', `${run.r.url}/v2/${run.repo}/blobs/uploads/?mount=${s.digest}&from=${run.repo}-src`, { method: 'POST' });
      }
      if (res.status === 202) {
        // Not mounted: the client uploads the blob into the new upload instead.
        const put = await retryCall(run, 'PUT after mount', withDigest(resolve(run.r.url, res.header('location')), s.digest!), { method: 'PUT', body: s.data! });
        if (put.status !== 201) run.problems.push(`PUT after a refused mount answered ${put.status}`);
      } else if (res.status !== 201) {
        run.problems.push(`mount answered ${res.status}`);
      }
    },
    async check(run, s) {
      await checkLinked(run, run.repo, s.digest!, s.data!);
      await checkLinked(run, `${run.repo}-src`, s.digest!, s.data!);
    },
  },
  {
    name: 'DELETE blob',
    styles: ['again'],
    async setup(run) {
      const s = blob(run, 200 * KiB);
      await pushInPut(run.r.url, run.repo, s.data!);
      await pushInPut(run.r.url, `${run.repo}-keep`, s.data!);
      return s;
    },
    step: (run, s) => call(`${run.r.url}/v2/${run.repo}/blobs/${s.digest}`, { method: 'DELETE' }),
    async finish(run, s, first) {
      if (first?.status !== 202) {
        const again = await retryCall(run, 'DELETE again', `${run.r.url}/v2/${run.repo}/blobs/${s.digest}`, { method: 'DELETE' });
        // A retried delete may find its own work done: gone is gone.
        if (again.status !== 202 && again.status !== 404) run.problems.push(`DELETE again answered ${again.status}`);
      }
    },
    async check(run, s) {
      const head = await call(`${run.r.url}/v2/${run.repo}/blobs/${s.digest}`, { method: 'HEAD' });
      if (head.status !== 404) run.problems.push(`deleted blob answers HEAD ${head.status}`);
      await checkLinked(run, `${run.repo}-keep`, s.digest!, s.data!);
    },
  },
  {
    name: 'purge',
    styles: ['again'],
    job: true,
    async setup(run) {
      // Only this run's upload is expired when the step runs: earlier runs' uploads go first.
      await purgeExpiredUploads(run.r.registry.meta, run.r.registry.storage, { now: later() });
      const s = await uploadWith(run, blob(run, 700 * KiB), 700 * KiB);
      return { ...s, uploadId: s.location!.split('/').pop()! };
    },
    step: (run) => purged(run),
    async finish(run) {
      // The next hourly run, whatever this one did.
      const again = await purged(run);
      if (again.status !== 200) run.problems.push(`purge again failed: ${again.body.toString()}`);
    },
    async check(run, s) {
      const status = await call(s.location!);
      if (status.status !== 404) run.problems.push(`purged upload answers ${status.status}`);
      const left = await uploadLeftovers(run.r, s.uploadId!);
      if (left.length) run.problems.push(`purge left ${left.join(', ')}`);
    },
  },
];

/** As if the upload's lease had run out: its holder stalled past SKIFF_LEASE_SECONDS. */
async function expireLease(r: TestRegistry, id: string): Promise<void> {
  await r.db
    .send(
      new UpdateCommand({
        TableName: r.config.dynamo.table,
        Key: { pk: `UPLOAD#${id}`, sk: 'UPLOAD' },
        UpdateExpression: 'SET leaseUntil = :past',
        ConditionExpression: 'attribute_exists(writer)',
        ExpressionAttributeValues: { ':past': 1 },
      }),
    )
    .catch(() => undefined); // not held: nothing to expire
}

function later(): number {
  return Date.now() + (TTL_SECONDS + 5) * 1000;
}

/** The purge, as a response: 200, or 500 with the error. */
async function purged(run: Run): Promise<Received> {
  return purgeExpiredUploads(run.r.registry.meta, run.r.registry.storage, { now: later() }).then(
    (result) => fakeResponse(200, JSON.stringify(result)),
    (err: Error) => fakeResponse(500, `${err.name}: ${err.message}`),
  );
}

function fakeResponse(status: number, body: string): Received {
  const buf = Buffer.from(body);
  return { status, headers: {}, body: buf, json: () => JSON.parse(body), header: () => undefined };
}

// ---------------------------------------------------------------------------------------------
// The sweep.

interface Case {
  flow: Flow;
  /** The call: the `occurrence`-th call of command/method `name` (call order varies, e.g. by index shard). */
  name: string;
  occurrence: number;
  at: number;
  site: string;
  fault: FaultKind;
  style: Style;
}

let seed = 1000;

async function runCase(r: TestRegistry, faults: FaultLayer, c: Case | undefined, flow: Flow, style: Style): Promise<{ problems: string[]; calls: CallRecord[]; status: number; answer: string; where: string }> {
  const run: Run = { r, faults, repo: `sweep/${flow.name.toLowerCase().replace(/[^a-z]+/g, '-')}/${seed}`, seed: seed++, style, problems: [] };
  trace(`${r.config.storage} ${flow.name} ${c?.at} ${c?.fault} setup`);
  const state = await flow.setup(run);
  trace(`${r.config.storage} ${flow.name} ${c?.at} ${c?.fault} step`);
  if (c) faults.arm(nth(c.name, c.occurrence), c.fault);
  else faults.record();
  let first: Received | undefined;
  let calls: CallRecord[];
  let retried = false;
  if (c?.fault === 'delay') {
    const pending = flow.step(run, state);
    if ((await Promise.race([faults.whenHeld().then(() => 'held'), pending.then(() => 'done')])) === 'held') {
      // The held request's lease runs out; the client gives up on it and retries next to it;
      // then the held call goes on.
      if (state.location) await expireLease(r, state.location.split('/').pop()!);
      await flow.finish(run, state, undefined);
      retried = true;
      faults.release();
    }
    first = await pending;
    calls = faults.disarm();
  } else {
    first = await flow.step(run, state);
    calls = faults.disarm();
  }
  if ((c?.fault === 'throttle' || c?.fault === 'conflict') && !flow.job && first.status >= 500 && first.status !== 503) run.problems.push(`throttled step answered ${first.status}: ${first.body.toString().slice(0, 200)}`);
  // A call of S3 or DynamoDB that failed or lost its answer is the client's to retry: 503 with Retry-After, never 500.
  if ((c?.fault === 'fail' || c?.fault === 'lose' || c?.fault === 'lose-retried') && !c.site.startsWith('fs ') && !flow.job && first.status === 500) {
    run.problems.push(`a ${c.fault} of ${c.site} answered 500: ${first.body.toString().slice(0, 200)}`);
  }
  if ((first.status === 429 || first.status === 503) && !first.header('retry-after')) {
    run.problems.push(`${first.status} without Retry-After`);
  }
  const errorsBefore = r.serverErrors.length;
  if (!retried) await flow.finish(run, state, first);
  await flow.check(run, state);
  if (r.serverErrors.length > errorsBefore) run.problems.push(`server faults while retrying: ${JSON.stringify(r.serverErrors.slice(errorsBefore)).slice(0, 300)}`);
  if (state.digest) await checkDescriptor(run, state.digest);
  // A lost DynamoDB answer to the delete is resent and recognised: the client hears 202 at once.
  if (flow.name === 'DELETE blob' && (c?.fault === 'lose' || c?.fault === 'lose-retried') && first.status !== 202) {
    run.problems.push(`a delete whose answer was lost answered ${first.status}, not 202: ${first.body.toString().slice(0, 200)}`);
  }
  const hit = calls.find((x) => x.fault);
  trace(`${r.config.storage} ${flow.name} ${c?.at} ${c?.fault} ${first.status}`);
  const where = c ? `${c.flow.name} / call ${c.at} ${hit ? `${hit.backend} ${hit.name}` : `(not reached; recorded ${c.site})`} / ${c.fault} / ${style}` : `${flow.name} (no fault)`;
  const answer = `${first.status}${first.status >= 400 ? ` ${errorCode(first) ?? ''}` : ''}`.trim();
  return { problems: run.problems.map((p) => `${r.config.storage}: ${where} (step answered ${first!.status}): ${p}`), calls, status: first.status, answer, where: `${r.config.storage}: ${where}` };
}

/** Reads are idempotent: losing an answer is then a plain failure, and holding one back only slows. */
const READ = /^(Get|Head|List|Query|Scan|BatchGet)|\.(get|open|list|readWritten)$/;

function sweepFaults(site: CallRecord): FaultKind[] {
  return faultsFor(site).filter((f) => !READ.test(site.name) || f === 'fail' || f === 'throttle');
}

/** SKIFF_SWEEP_TRACE=<file>: a line per run as it goes, to follow a long sweep. */
function trace(line: string): void {
  if (process.env.SKIFF_SWEEP_TRACE) appendFileSync(process.env.SKIFF_SWEEP_TRACE, `${new Date().toISOString()} ${line}\n`);
}

interface SweepResult {
  cases: number;
  sites: number;
  byKind: Partial<Record<FaultKind, number>>;
  /** Runs whose step answered other than without faults, under a lost answer. */
  divergences: string[];
  problems: string[];
  summary: string[];
}

/** SKIFF_SWEEP_ONLY=<text>: only the flows whose name contains it (to work on one). */
function chosen(name: string): boolean {
  return !process.env.SKIFF_SWEEP_ONLY || name.includes(process.env.SKIFF_SWEEP_ONLY);
}

/** One registry's share of the sweep: `kinds` at every call site of every flow. */
async function sweep(driver: DriverKind, kinds: FaultKind[], flows: Flow[]): Promise<SweepResult> {
  const r = await startRegistry(driver, { env: { SKIFF_UPLOAD_TTL_SECONDS: String(TTL_SECONDS), S3_PART_SIZE: String(5 * MiB) } });
  const faults = injectFaults(r, { delayMs: 30_000 });
  const out: SweepResult = { cases: 0, sites: 0, byKind: {}, divergences: [], problems: [], summary: [] };
  try {
    for (const flow of flows) {
      // A run without faults: it must pass, and it tells the call sites.
      const clean = await runCase(r, faults, undefined, flow, flow.styles[0]!);
      out.problems.push(...clean.problems);
      out.sites += clean.calls.length;
      out.summary.push(`${driver} ${flow.name}: ${clean.calls.map((x) => `${x.backend}:${x.name.replace(/Command$/, '')}`).join(' ')}`);
      let turn = 0;
      for (const [at, site] of clean.calls.entries()) {
        for (const fault of sweepFaults(site).filter((f) => kinds.includes(f))) {
          // One retry style per case, taking turns: every flow meets both over its call sites.
          const style = flow.styles[turn++ % flow.styles.length]!;
          out.cases++;
          const occurrence = clean.calls.slice(0, at).filter((x) => x.name === site.name).length;
          const res = await runCase(r, faults, { flow, name: site.name, occurrence, at, site: `${site.backend} ${site.name}`, fault, style }, flow, style);
          for (const p of res.problems) console.log(`  PROBLEM ${p}`);
          out.problems.push(...res.problems);
          out.byKind[fault] = (out.byKind[fault] ?? 0) + 1;
          if ((fault === 'lose' || fault === 'lose-retried') && res.status !== clean.status) out.divergences.push(`${res.where}: step answered ${res.answer} (unfaulted ${clean.status})`);
        }
      }
    }
    out.problems.push(...(await checkWholeTable(r)).map((p) => `${driver}: after the sweep: ${p}`));
  } finally {
    await r.close();
  }
  return out;
}


const PARALLEL = 6;

/** Runs the jobs, at most `n` at a time; settles like Promise.allSettled. */
async function inParallel<T>(jobs: (() => Promise<T>)[], n: number): Promise<PromiseSettledResult<T>[]> {
  const out: PromiseSettledResult<T>[] = new Array(jobs.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]!().then(
        (value) => ({ status: 'fulfilled', value }) as const,
        (reason: unknown) => ({ status: 'rejected', reason }) as const,
      );
    }
  }
  await Promise.all(Array.from({ length: n }, worker));
  return out;
}

describe('fault sweep: every call of every blob write path, every fault, both drivers', () => {
  it('keeps every invariant', async () => {
    const started = Date.now();
    // A registry per driver and flow, several side by side; within one, one run at a time
    // (calls are counted per registry).
    const flows = FLOWS.filter((f) => chosen(f.name));
    const jobs = DRIVERS.flatMap((driver) => flows.map((flow) => () => sweep(driver, FAULT_KINDS, [flow])));
    const settled = await inParallel(jobs, PARALLEL);
    const results = settled.map((x) => {
      if (x.status === 'rejected') throw x.reason;
      return x.value;
    });
    const cases = results.reduce((n, x) => n + x.cases, 0);
    const sites = results.reduce((n, x) => n + x.sites, 0);
    const byKind: Partial<Record<FaultKind, number>> = {};
    for (const x of results) for (const [k, n] of Object.entries(x.byKind)) byKind[k as FaultKind] = (byKind[k as FaultKind] ?? 0) + n;
    const problems = results.flatMap((x) => x.problems);
    for (const line of results.flatMap((x) => x.summary)) console.log(`  calls: ${line}`);
    console.log(
      `  blob sweep: ${flows.length} flows x ${DRIVERS.length} drivers, ${sites} call sites x faults (${Object.entries(byKind).map(([k, n]) => `${k} ${n}`).join(', ')}) = ${cases} runs ` +
        `(fail and throttle on every SDK call, fail on every filesystem call; lose, lose-retried (SDK) and delay (held while the lease runs out) on every write, conflict on every DynamoDB write; ` +
        `upload retries take turns restarting and resuming) in ${((Date.now() - started) / 1000).toFixed(0)} s, ${problems.length} problems`,
    );
    console.log('  lost answers whose step answered other than without faults (the client\'s retry then went on):');
    for (const line of results.flatMap((x) => x.divergences)) console.log(`    ${line}`);
    assert.deepEqual(problems, []);
  });
});
