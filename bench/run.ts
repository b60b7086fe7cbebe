/**
 * `npm run bench`: Skiff's speed claims, measured in one run on this machine against baselines
 * measured in the same run. Not part of the tests.
 *
 *   1. finish latency (the closing PUT after the bytes are in) at 1 MiB, 64 MiB and 512 MiB, and
 *      the ratio 512 MiB / 1 MiB                                       target <= 1.5
 *   2. streamed-upload MB/s (one PATCH; and the body of the finishing PUT) next to a raw
 *      multipart upload of the same bytes straight to the same S3 server (lib-storage, same
 *      part size and concurrency)                                      target >= 0.7 of raw
 *   3. resumable SHA-256 (@noble/hashes, and the hash threads' WebAssembly; state saved per part)
 *      MiB/s next to node:crypto
 *   4. HEAD latency p50 / p99 over 1,000 requests
 *   5. each Lambda function's bundle size (target <= 1 MB) and cold initialisation: a fresh Node
 *      process loading the bundle and answering one event (target <= 150 ms)
 *   6. an authorized blob GET during a burst of made-up-name logins, next to the same GET idle
 *      (bench/logins.ts)
 *   7. the upload host (SKIFF_SERVE=uploads, its own process): a 1 GiB layer pushed through it
 *      (POST on the registry, one streamed PATCH and the PUT on the host) next to a raw multipart
 *      upload of the same bytes (target >= 0.8 of raw), with the host's peak RSS; four such
 *      pushes at once next to four raw uploads at once (aggregate MB/s), with the host's CPU
 *      per thread (hashing on one thread per core, not one per process)
 *   8. a streamed blob GET through the registry next to a raw GetObject of the same object, on
 *      shared cores (with a bare Node proxy on the same path as the floor) and with the registry
 *      on a core of its own, as deployed (target >= 0.9)
 *   9. a garbage collection run over 10,000 manifests and 50,000 links with 10 % garbage: time,
 *      DynamoDB capacity units and S3 requests next to what it deleted (bench/gc.ts)
 *
 * The registry runs as its own process (the real `npm start` entry point) on the S3 path, against
 * Ceph RGW and DynamoDB Local started for the run (or S3_ENDPOINT / DYNAMODB_ENDPOINT).
 * BENCH_QUICK=1 shrinks the sizes for a smoke run. BENCH_ONLY=host runs figures 7 and 8 alone (to
 * iterate on the upload host), BENCH_ONLY=get figure 8 alone, BENCH_ROUNDS sets their rounds (default 2; medians are printed),
 * BENCH_HOST_MIB their blob size (default 1024),
 * and BENCH_HOST_PROF=<dir> (BENCH_REG_PROF=<dir>) runs the upload host (the registry) under
 * `node --cpu-prof` into that directory.
 * With figures 7 and 8 the upload host's CPU is shown per thread (Linux /proc), so a run says
 * whether hashing spread over threads and how many cores the host used.
 */
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { DeleteObjectCommand, GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { ResumableSha256 } from '../lib/hash/sha256-state.js';
import { WasmSha256, loadWasmSha256 } from '../lib/hash/sha256-wasm.js';
import { createS3Client } from '../lib/storage/s3/client.js';
import { startBackends } from '../test/backends/start.js';
import { MiB, asyncStream, bytes, sha256, stream } from '../test/helpers/data.js';
import { call, resolve } from '../test/helpers/http.js';
import { withDigest } from '../test/helpers/oci.js';
import { glibcTunables, nodeFlags, processEnv, spawnRegistry, type RegistryProcess } from '../test/helpers/process.js';
import { UPLOAD_HOST, freePort } from '../test/helpers/registry.js';
import { keys } from '../lib/storage/types.js';
import { type BundleFigures, measureBundles } from './bundles.js';
import { measureLoginBurst } from './logins.js';
import { describe, spent, threadTimes } from './threads.js';
import { pinned, twoCores } from './cores.js';
import { measureGc } from './gc.js';

const quick = process.env.BENCH_QUICK === '1';
/** BENCH_ONLY: `host` runs figures 7 and 8, `get` figure 8 alone. */
const only = process.env.BENCH_ONLY;
const rounds = Number(process.env.BENCH_ROUNDS ?? (quick ? 1 : 2));
/** Size of figure 7's pushes (and of figure 8's blob), MiB. */
const hostMiB = Number(process.env.BENCH_HOST_MIB ?? (quick ? 128 : 1024));
const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const PART_SIZE = 8 * MiB;
const CONCURRENCY = 4;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;
const mbps = (size: number, ms: number) => size / 1e6 / (ms / 1000);

const digestOf = (size: number, seed: number) => sha256(stream(size, seed));

async function startUpload(reg: RegistryProcess, repo: string): Promise<string> {
  const res = await call(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  if (res.status !== 202) throw new Error(`POST: ${res.status} ${res.body}`);
  return resolve(reg.url, res.header('location'));
}

/** PATCHes `size` streamed bytes; returns the new Location and the time the PATCH took. */
async function patchStream(location: string, size: number, seed: number): Promise<{ location: string; ms: number }> {
  const t = performance.now();
  const res = await call(location, { method: 'PATCH', body: asyncStream(size, seed) });
  const ms = performance.now() - t;
  if (res.status !== 202) throw new Error(`PATCH: ${res.status} ${res.body}`);
  return { location: resolve(location, res.header('location')), ms };
}

/** For `.catch()`: the error again, its message prefixed with the step that failed. */
const failed = (step: string) => (err: Error): never => {
  throw new Error(`${step}: ${err.message}`, { cause: err });
};

/** Bytes of a stream, read with 'data' events and dropped. */
function countBytes(stream: Readable): Promise<number> {
  return new Promise((done, fail) => {
    let n = 0;
    stream.on('data', (c: Buffer) => (n += c.length));
    stream.on('end', () => done(n));
    stream.on('error', fail);
  });
}

/** Every blob of the run is distinct: a repeated digest would take the dedupe path instead. */
let nextSeed = 1;

async function finishLatency(reg: RegistryProcess, size: number, rounds: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const seed = nextSeed++;
    const digest = digestOf(size, seed);
    const { location } = await patchStream(await startUpload(reg, 'bench/finish'), size, seed);
    const t = performance.now();
    const put = await call(withDigest(location, digest), { method: 'PUT' });
    times.push(performance.now() - t);
    if (put.status !== 201) throw new Error(`PUT: ${put.status} ${put.body}`);
  }
  return times;
}

/** A raw multipart upload (lib-storage) of `size` bytes; MB/s. The object is deleted after. */
async function rawUpload(s3: S3Client, bucket: string, key: string, size: number, seed: number): Promise<number> {
  const t = performance.now();
  await new Upload({ client: s3, params: { Bucket: bucket, Key: key, Body: Readable.from(asyncStream(size, seed)) }, partSize: PART_SIZE, queueSize: CONCURRENCY }).done();
  const rate = mbps(size, performance.now() - t);
  await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  return rate;
}

/**
 * A push as docker, podman and skopeo make it, through the upload host: POST on the registry,
 * the whole blob in one PATCH and the closing PUT on the host (the Location's path and capability
 * on `host`'s address). Returns the blob's storage key.
 */
async function pushThroughHost(starter: RegistryProcess, host: RegistryProcess, repo: string, size: number, seed: number): Promise<string> {
  // The digest first, as a client knows it before it pushes: hashing 1 GiB between the PATCH's
  // answer and the PUT blocks this process for seconds, past the host's keep-alive timeout, and
  // the PUT then goes out on a connection the host has closed ("socket hang up").
  const digest = digestOf(size, seed);
  const res = await call(`${starter.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' }).catch(failed('POST'));
  if (res.status !== 202) throw new Error(`POST: ${res.status} ${res.body}`);
  const onHost = (location: string) => host.url + location.replace(/^https?:\/\/[^/]+/, '');
  const id = res.header('docker-upload-uuid')!;
  const patched = await call(onHost(res.header('location')!), { method: 'PATCH', body: asyncStream(size, seed), headers: { 'Content-Length': size } }).catch(failed('PATCH'));
  if (patched.status !== 202) throw new Error(`PATCH: ${patched.status} ${patched.body}`);
  const put = await call(withDigest(onHost(patched.header('location')!), digest), { method: 'PUT' }).catch(failed('PUT'));
  if (put.status !== 201) throw new Error(`PUT: ${put.status} ${put.body}`);
  return keys.blob(id);
}

/** Bytes of a GET, read and dropped. */
async function drain(url: string): Promise<number> {
  const { request } = await import('node:http');
  return new Promise((done, fail) => {
    request(url, (res) => {
      if (res.statusCode !== 200) return fail(new Error(`GET ${url}: ${res.statusCode}`));
      countBytes(res).then(done, fail);
    })
      .on('error', fail)
      .end();
  });
}

type Row = [string, string, string];

/** Figures 1-6: the registry itself. */
async function registryFigures(reg: RegistryProcess, s3: S3Client, bucket: string): Promise<Row[]> {
  // 1. Finish latency.
  const sizes = quick ? [1 * MiB, 16 * MiB, 64 * MiB] : [1 * MiB, 64 * MiB, 512 * MiB];
  const finish: Record<number, number> = {};
  for (const size of sizes) {
    const times = await finishLatency(reg, size, 3);
    finish[size] = median(times);
    log(`finish ${size / MiB} MiB: ${times.map((t) => t.toFixed(1)).join(', ')} ms`);
  }

  // 2. Streamed upload throughput vs raw multipart, alternating to share the machine's noise.
  const size = quick ? 64 * MiB : 256 * MiB;
  const raw: number[] = [];
  const viaPatch: number[] = [];
  const viaPut: number[] = [];
  for (let round = 0; round < 3; round++) {
    const seed = nextSeed;
    nextSeed += 2;
    let t = performance.now();
    const key = `bench/raw-${round}`;
    await new Upload({
      client: s3,
      params: { Bucket: bucket, Key: key, Body: Readable.from(asyncStream(size, seed)) },
      partSize: PART_SIZE,
      queueSize: CONCURRENCY,
    }).done();
    raw.push(mbps(size, performance.now() - t));
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));

    const patchDigest = digestOf(size, seed); // before the PATCH: see pushThroughHost
    const p = await patchStream(await startUpload(reg, 'bench/patch'), size, seed);
    viaPatch.push(mbps(size, p.ms));
    await call(withDigest(p.location, patchDigest), { method: 'PUT' });

    const location = await startUpload(reg, 'bench/put');
    t = performance.now();
    const put = await call(withDigest(location, digestOf(size, seed + 1)), { method: 'PUT', body: asyncStream(size, seed + 1), headers: { 'Content-Length': size } });
    viaPut.push(mbps(size, performance.now() - t));
    if (put.status !== 201) throw new Error(`PUT body: ${put.status} ${put.body}`);
    log(`round ${round}: raw ${raw.at(-1)!.toFixed(0)} MB/s, PATCH ${viaPatch.at(-1)!.toFixed(0)} MB/s, PUT body ${viaPut.at(-1)!.toFixed(0)} MB/s`);
  }

  // 3. Hashing speed on the same bytes.
  const hashSize = quick ? 64 * MiB : 256 * MiB;
  const data = bytes(hashSize, 7);
  const chunk = 1 * MiB;
  let t = performance.now();
  const noble = new ResumableSha256();
  for (let o = 0; o < data.length; o += chunk) {
    noble.update(data.subarray(o, o + chunk));
    if ((o + chunk) % PART_SIZE === 0) noble.marshal();
  }
  const nobleDigest = Buffer.from(noble.digest()).toString('hex');
  const nobleRate = hashSize / MiB / ((performance.now() - t) / 1000);
  t = performance.now();
  const native = createHash('sha256');
  for (let o = 0; o < data.length; o += chunk) native.update(data.subarray(o, o + chunk));
  const nativeDigest = native.digest('hex');
  const nativeRate = hashSize / MiB / ((performance.now() - t) / 1000);
  if (!(await loadWasmSha256())) throw new Error('WebAssembly SHA-256 does not load');
  t = performance.now();
  const wasm = new WasmSha256();
  for (let o = 0; o < data.length; o += chunk) {
    wasm.update(data.subarray(o, o + chunk));
    if ((o + chunk) % PART_SIZE === 0) wasm.marshal();
  }
  const wasmDigest = Buffer.from(wasm.digest()).toString('hex');
  const wasmRate = hashSize / MiB / ((performance.now() - t) / 1000);
  if (nobleDigest !== nativeDigest || wasmDigest !== nativeDigest) throw new Error('hash mismatch between @noble/hashes, WebAssembly and node:crypto');

  // 4. HEAD latency.
  const headData = bytes(4096, 3);
  const headDigest = sha256(headData);
  const up = await startUpload(reg, 'bench/head');
  await call(withDigest(up, headDigest), { method: 'PUT', body: headData });
  const heads: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const t0 = performance.now();
    const res = await call(`${reg.url}/v2/bench/head/blobs/${headDigest}`, { method: 'HEAD' });
    heads.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`HEAD: ${res.status}`);
  }

  // 6. Logins under attack.
  const logins = await measureLoginBurst(log);

  const [small, , large] = sizes as [number, number, number];
  return [
    ...sizes.map((s) => [`finish latency, ${s / MiB} MiB`, `${finish[s]!.toFixed(1)} ms`, ''] as Row),
    [`finish ratio ${large / MiB} MiB / ${small / MiB} MiB`, (finish[large]! / finish[small]!).toFixed(2), 'target <= 1.5'],
    [`raw multipart upload (lib-storage), ${size / MiB} MiB`, `${median(raw).toFixed(0)} MB/s`, 'baseline'],
    ['streamed PATCH through Skiff', `${median(viaPatch).toFixed(0)} MB/s`, `${(median(viaPatch) / median(raw)).toFixed(2)} of raw (target >= 0.7)`],
    ['streamed finishing-PUT body through Skiff', `${median(viaPut).toFixed(0)} MB/s`, `${(median(viaPut) / median(raw)).toFixed(2)} of raw (target >= 0.7)`],
    [`node:crypto sha256, ${hashSize / MiB} MiB`, `${nativeRate.toFixed(0)} MiB/s`, 'baseline'],
    ['resumable sha256 (@noble/hashes; inline, small bodies)', `${nobleRate.toFixed(0)} MiB/s`, `${(nobleRate / nativeRate).toFixed(2)} of node:crypto`],
    ['resumable sha256 (WebAssembly; hash threads)', `${wasmRate.toFixed(0)} MiB/s`, `${(wasmRate / nativeRate).toFixed(2)} of node:crypto`],
    ['HEAD p50 / p99 (1,000 requests)', `${percentile(heads, 50).toFixed(2)} / ${percentile(heads, 99).toFixed(2)} ms`, ''],
    ...logins,
  ];
}

interface StoredBlob {
  repo: string;
  digest: string;
  key: string;
  size: number;
}

/** Figure 7: the upload host. Returns its rows and the last blob pushed (for figure 8). */
async function hostFigures(starter: RegistryProcess, uploadHost: RegistryProcess, s3: S3Client, bucket: string): Promise<{ rows: Row[]; blob: StoredBlob }> {
  // 7. The upload host, alternating with the raw baseline so both share the machine's noise.
  const hostSize = hostMiB * MiB;
  const hostRaw: number[] = [];
  const viaHost: number[] = [];
  let peakRss = 0;
  let lastKey = '';
  let lastSeed = 0;
  let oneCpu = '';
  let idleRss = 0;
  for (let round = 0; round < rounds; round++) {
    const seed = nextSeed;
    nextSeed += 1;
    hostRaw.push(await rawUpload(s3, bucket, `bench/raw-host-${round}`, hostSize, seed));
    await uploadHost.resetPeak();
    // Right after the reset the peak is the resident memory now: the host between pushes.
    idleRss = await uploadHost.peakRss();
    const cpu0 = await threadTimes(uploadHost.pid);
    const t0 = performance.now();
    lastKey = await pushThroughHost(starter, uploadHost, 'bench/host', hostSize, seed);
    const ms = performance.now() - t0;
    oneCpu = describe(spent(uploadHost.pid, cpu0, await threadTimes(uploadHost.pid)), ms);
    lastSeed = seed;
    viaHost.push(mbps(hostSize, ms));
    peakRss = Math.max(peakRss, await uploadHost.peakRss());
    log(`upload host round ${round}: raw ${hostRaw.at(-1)!.toFixed(0)} MB/s, through the host ${viaHost.at(-1)!.toFixed(0)} MB/s (${(viaHost.at(-1)! / hostRaw.at(-1)!).toFixed(2)}), peak RSS ${(peakRss / MiB).toFixed(0)} MiB; host ${oneCpu}`);
  }
  // Four at once, next to four raw multipart uploads at once.
  const fourSize = quick ? hostSize / 2 : hostSize;
  let t = performance.now();
  await Promise.all([0, 1, 2, 3].map((i) => rawUpload(s3, bucket, `bench/raw-four-${i}`, fourSize, nextSeed + i))).catch(failed('four raw uploads at once'));
  const fourRaw = mbps(4 * fourSize, performance.now() - t);
  await uploadHost.resetPeak();
  const cpu0 = await threadTimes(uploadHost.pid);
  t = performance.now();
  await Promise.all([0, 1, 2, 3].map((i) => pushThroughHost(starter, uploadHost, 'bench/four', fourSize, nextSeed + i))).catch(failed('four pushes at once through the upload host'));
  const fourMs = performance.now() - t;
  nextSeed += 4;
  const fourCpu = describe(spent(uploadHost.pid, cpu0, await threadTimes(uploadHost.pid)), fourMs);
  const fourRate = mbps(4 * fourSize, fourMs);
  const fourRss = await uploadHost.peakRss();
  log(`four pushes at once: ${fourRate.toFixed(0)} MB/s aggregate (raw four at once ${fourRaw.toFixed(0)} MB/s), peak RSS ${(fourRss / MiB).toFixed(0)} MiB; host ${fourCpu}`);

  const blob = { repo: 'bench/host', digest: digestOf(hostSize, lastSeed), key: lastKey, size: hostSize };
  const rows: Row[] = [
    [`raw multipart upload, ${hostSize / MiB} MiB`, `${median(hostRaw).toFixed(0)} MB/s`, 'baseline'],
    [`push through the upload host (POST, PATCH, PUT), ${hostSize / MiB} MiB`, `${median(viaHost).toFixed(0)} MB/s`, `${median(viaHost.map((x, i) => x / hostRaw[i]!)).toFixed(2)} of raw (target >= 0.8, the median of the rounds' ratios); host peak RSS ${(peakRss / MiB).toFixed(0)} MiB (${(idleRss / MiB).toFixed(0)} MiB before it)`],
    ['  upload host CPU, last push', '', oneCpu],
    [`four raw multipart uploads at once, ${fourSize / MiB} MiB each`, `${fourRaw.toFixed(0)} MB/s`, 'baseline (aggregate)'],
    [`four pushes at once through the upload host`, `${fourRate.toFixed(0)} MB/s`, `${(fourRate / fourRaw).toFixed(2)} of raw; host peak RSS ${(fourRss / MiB).toFixed(0)} MiB`],
    ['  upload host CPU, four pushes', '', fourCpu],
  ];
  return { rows, blob };
}

/**
 * MB/s of a raw GetObject of `blob`, read and dropped in this process. The body is read as
 * drain() reads the registry's ('data' events: `for await` costs the reader 3-12 % more here),
 * so that both sides of the ratio have the same client.
 */
async function rawGet(s3: S3Client, bucket: string, blob: StoredBlob): Promise<number> {
  const t = performance.now();
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: blob.key }));
  const n = await countBytes(res.Body as Readable);
  if (n !== blob.size) throw new Error(`GetObject size ${n}, expected ${blob.size}`);
  return mbps(n, performance.now() - t);
}

/** MB/s of a GET of `url` (the whole blob), read and dropped in this process. */
async function timedGet(url: string, size: number): Promise<number> {
  const t = performance.now();
  const got = await drain(url);
  if (got !== size) throw new Error(`GET ${url}: ${got} bytes, expected ${size}`);
  return mbps(got, performance.now() - t);
}

/** bench/floor-proxy.ts as its own process, started as npm start starts the registry. */
async function spawnFloorProxy(upstream: string): Promise<{ url: string; pid: number; kill(): void }> {
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['--import', 'tsx', ...nodeFlags, 'bench/floor-proxy.ts'], {
    env: { PATH: process.env.PATH, GLIBC_TUNABLES: process.env.GLIBC_TUNABLES ?? glibcTunables, FLOOR_UPSTREAM: upstream },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((ok, fail) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) ok(m[1]!);
    });
    child.once('exit', (code) => fail(new Error(`floor proxy exited with ${code}`)));
  });
  return { url, pid: child.pid!, kill: () => child.kill() };
}

/** CPU seconds per GiB that `pid` spent while `fn` moved `bytes`. */
async function cpuPerGiB(pid: number, bytes: number, fn: () => Promise<void>): Promise<number> {
  const before = await threadTimes(pid);
  await fn();
  return spent(pid, before, await threadTimes(pid)).reduce((n, x) => n + x.seconds, 0) / (bytes / 2 ** 30);
}

/**
 * Figure 8: a streamed blob GET through the registry next to a raw GetObject of the same object,
 * measured two ways.
 * - On the machine's cores shared by all: here Ceph RGW, the registry and the client (this
 *   process) compete for two cores, so the ratio says what the registry's CPU costs the whole
 *   machine. Next to it, a bare Node proxy on the same path (bench/floor-proxy.ts): the least
 *   any Node process in the middle costs.
 * - As deployed, where the registry does not share a machine with S3 or the client: Ceph RGW
 *   and this process pinned to one core for both the raw GET and the GET through the registry,
 *   the registry alone on another. The ratio says whether the registry keeps up with the S3
 *   stream it relays (target >= 0.9). Not measured, and said so, with one core, without taskset,
 *   or with an S3 this run did not start.
 * Every ratio printed is the median of the rounds' ratios (each round's GETs ran back to back).
 */
async function getFigures(reg: RegistryProcess, s3: S3Client, bucket: string, blob: StoredBlob, s3Pids: number[]): Promise<Row[]> {
  const url = `${reg.url}/v2/${blob.repo}/blobs/${blob.digest}`;
  const shared = { skiff: [] as number[], raw: [] as number[], floor: [] as number[], cpu: [] as number[], floorCpu: [] as number[] };
  const pinnedRates = { skiff: [] as number[], raw: [] as number[] };
  const cores = s3Pids.length > 0 ? twoCores() : undefined;
  const floor = await spawnFloorProxy(await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: blob.key }), { expiresIn: 3600 }));
  const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!);
  try {
    for (let round = 0; round < Math.max(2, rounds); round++) {
      // The order turns every round, so that no GET always follows the same one.
      const steps = [
        async () => shared.cpu.push(await cpuPerGiB(reg.pid, blob.size, async () => void shared.skiff.push(await timedGet(url, blob.size)))),
        async () => shared.raw.push(await rawGet(s3, bucket, blob)),
        async () => shared.floorCpu.push(await cpuPerGiB(floor.pid, blob.size, async () => void shared.floor.push(await timedGet(floor.url, blob.size)))),
      ];
      for (let i = 0; i < steps.length; i++) await steps[(i + round) % steps.length]!();
      let line = `GET round ${round}, shared cores: through Skiff ${shared.skiff.at(-1)!.toFixed(0)} MB/s, raw ${shared.raw.at(-1)!.toFixed(0)} MB/s (${(shared.skiff.at(-1)! / shared.raw.at(-1)!).toFixed(2)}), bare Node proxy ${shared.floor.at(-1)!.toFixed(0)} MB/s (${(shared.floor.at(-1)! / shared.raw.at(-1)!).toFixed(2)}); CPU per GiB: registry ${shared.cpu.at(-1)!.toFixed(2)} s, proxy ${shared.floorCpu.at(-1)!.toFixed(2)} s`;
      if (cores) {
        await pinned(
          [
            { pids: [...s3Pids, process.pid], core: cores[0] },
            { pids: [reg.pid], core: cores[1] },
          ],
          async () => {
            if (round % 2) pinnedRates.raw.push(await rawGet(s3, bucket, blob));
            pinnedRates.skiff.push(await timedGet(url, blob.size));
            if (!(round % 2)) pinnedRates.raw.push(await rawGet(s3, bucket, blob));
          },
          log,
        );
        line += `; pinned: through Skiff ${pinnedRates.skiff.at(-1)!.toFixed(0)} MB/s, raw ${pinnedRates.raw.at(-1)!.toFixed(0)} MB/s (${(pinnedRates.skiff.at(-1)! / pinnedRates.raw.at(-1)!).toFixed(2)})`;
      }
      log(line);
    }
  } finally {
    floor.kill();
  }
  const ratio = (a: number[], b: number[]) => median(ratios(a, b)).toFixed(2);
  return [
    [`raw GetObject, ${blob.size / MiB} MiB, all cores shared`, `${median(shared.raw).toFixed(0)} MB/s`, 'baseline'],
    ['streamed blob GET through Skiff, all cores shared', `${median(shared.skiff).toFixed(0)} MB/s`, `${ratio(shared.skiff, shared.raw)} of raw; registry CPU ${median(shared.cpu).toFixed(2)} s/GiB`],
    ['the same GET through a bare Node proxy (the floor)', `${median(shared.floor).toFixed(0)} MB/s`, `${ratio(shared.floor, shared.raw)} of raw; proxy CPU ${median(shared.floorCpu).toFixed(2)} s/GiB`],
    ...(cores
      ? ([
          [`raw GetObject, S3 and client on core ${cores[0]}`, `${median(pinnedRates.raw).toFixed(0)} MB/s`, 'baseline'],
          [`streamed blob GET through Skiff on core ${cores[1]}`, `${median(pinnedRates.skiff).toFixed(0)} MB/s`, `${ratio(pinnedRates.skiff, pinnedRates.raw)} of raw (target >= 0.9)`],
        ] as Row[])
      : ([['streamed blob GET, registry on a core of its own', 'not measured', 'needs two cores, taskset and the Ceph RGW this run started']] as Row[])),
  ];
}

/** A blob for figure 8 alone (BENCH_ONLY=get): one streamed finishing PUT through the registry. */
async function putBlob(reg: RegistryProcess, size: number): Promise<StoredBlob> {
  const seed = nextSeed++;
  const digest = digestOf(size, seed);
  const res = await call(`${reg.url}/v2/bench/get/blobs/uploads/`, { method: 'POST' });
  const location = resolve(reg.url, res.header('location'));
  const id = res.header('docker-upload-uuid')!;
  const put = await call(withDigest(location, digest), { method: 'PUT', body: asyncStream(size, seed), headers: { 'Content-Length': size } });
  if (put.status !== 201) throw new Error(`PUT body: ${put.status} ${put.body}`);
  return { repo: 'bench/get', digest, key: keys.blob(id), size };
}

async function hostAndGet(reg: RegistryProcess, starter: RegistryProcess, uploadHost: RegistryProcess, s3: S3Client, bucket: string, s3Pids: number[]): Promise<Row[]> {
  const { rows, blob } = await hostFigures(starter, uploadHost, s3, bucket);
  return [...rows, ...(await getFigures(reg, s3, bucket, blob, s3Pids))];
}

async function main() {
  let bundles: BundleFigures[] = [];
  if (!only) {
    log('packaging the stack and timing cold starts');
    bundles = await measureBundles();
  }
  const backends = await startBackends(log);
  Object.assign(process.env, backends.env);
  let reg: RegistryProcess | undefined;
  let uploadHost: RegistryProcess | undefined;
  let starter: RegistryProcess | undefined;
  let dataDir: string | undefined;
  try {
    const env = processEnv('s3', { S3_PART_SIZE: String(PART_SIZE), S3_UPLOAD_CONCURRENCY: String(CONCURRENCY), SKIFF_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'ERROR' });
    dataDir = env.SKIFF_DATA_DIR;
    const regProf = process.env.BENCH_REG_PROF;
    reg = await spawnRegistry(env, regProf ? ['--cpu-prof', `--cpu-prof-dir=${regProf}`] : []);
    // The upload host alone, as the container runs it, on the same table and bucket. The registry
    // above stays without SKIFF_UPLOAD_ORIGIN (figures 1-4 measure it as before); figure 7 starts
    // uploads with a registry process that hands out this host's Locations.
    const tokenKeys = `bench=${randomBytes(32).toString('base64url')}`;
    const hostPort = await freePort(UPLOAD_HOST);
    const prof = process.env.BENCH_HOST_PROF;
    uploadHost = await spawnRegistry(
      { ...env, SKIFF_SERVE: 'uploads', SKIFF_TOKEN_KEYS: tokenKeys, SKIFF_HOST: UPLOAD_HOST, SKIFF_PORT: String(hostPort) },
      prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : [],
    );
    starter = await spawnRegistry({ ...env, SKIFF_TOKEN_KEYS: tokenKeys, SKIFF_UPLOAD_ORIGIN: `https://${UPLOAD_HOST}:${hostPort}` });
    log(`registry ${reg.url} (pid ${reg.pid}), upload host pid ${uploadHost.pid}, bucket ${env.S3_BUCKET}`);
    const bucket = env.S3_BUCKET!;
    const s3 = createS3Client({
      bucket,
      region: 'us-east-1',
      endpoint: env.S3_ENDPOINT,
      forcePathStyle: true,
      checksums: 'WHEN_REQUIRED',
      credentials: { accessKeyId: env.S3_ACCESS_KEY_ID!, secretAccessKey: env.S3_SECRET_ACCESS_KEY! },
    });
    // Warm-up: first requests pay for connection setup and JIT.
    await finishLatency(reg, 1 * MiB, 2);

    const rows: Row[] = [
      ...(only ? [] : await registryFigures(reg, s3, bucket)),
      ...(only === 'get' ? await getFigures(reg, s3, bucket, await putBlob(reg, hostMiB * MiB), backends.s3Pids()) : await hostAndGet(reg, starter, uploadHost, s3, bucket, backends.s3Pids())),
      // 9. Garbage collection (a table and bucket of its own).
      ...(only ? [] : await measureGc(log, quick ? 0.1 : 1)),
      ...bundles.map(
        (b) =>
          [
            `Lambda ${b.name}: bundle / cold init`,
            `${(b.jsBytes / 1024).toFixed(0)} KiB / ${b.initMs.toFixed(0)} ms`,
            `targets <= 1024 KiB, <= 150 ms (zip ${(b.zipBytes / 1024).toFixed(0)} KiB with source maps)`,
          ] as Row,
      ),
    ];
    const w0 = Math.max(...rows.map((r) => r[0].length));
    const w1 = Math.max(...rows.map((r) => r[1].length));
    process.stdout.write(`\nSkiff benchmark (${new Date().toISOString()}, node ${process.version}, S3 = Ceph RGW, part ${PART_SIZE / MiB} MiB x ${CONCURRENCY})\n\n`);
    for (const [a, b, c] of rows) process.stdout.write(`  ${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}\n`);
    process.stdout.write('\n');
  } catch (err) {
    // What the processes said last: a failed run should say which of them went wrong and why.
    for (const [name, p] of [['registry', reg], ['upload host', uploadHost], ['starter', starter]] as const) {
      const said = p?.output().trim().split('\n').slice(-15).join('\n');
      if (said) log(`${name} (pid ${p!.pid}, exit ${p!.child.exitCode ?? p!.child.signalCode ?? 'running'}) said last:\n${said}`);
    }
    throw err;
  } finally {
    await Promise.all([uploadHost?.kill(), starter?.kill()]);
    await reg?.kill();
    await backends.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
