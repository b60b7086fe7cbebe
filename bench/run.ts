/**
 * `npm run bench`: Skiff's speed claims, measured in one run on this machine against baselines
 * measured in the same run. Not part of the tests.
 *
 *   1. finish latency (the closing PUT after the bytes are in) at 1 MiB, 64 MiB and 512 MiB, and
 *      the ratio 512 MiB / 1 MiB                                       target <= 1.5
 *   2. streamed-upload MB/s (one PATCH; and the body of the finishing PUT) next to a raw
 *      multipart upload of the same bytes straight to the same S3 server (lib-storage, same
 *      part size and concurrency)                                      target >= 0.7 of raw
 *   3. resumable SHA-256 (@noble/hashes, state saved per part) MiB/s next to node:crypto
 *   4. HEAD latency p50 / p99 over 1,000 requests
 *   5. each Lambda function's bundle size (target <= 1 MB) and cold initialisation: a fresh Node
 *      process loading the bundle and answering one event (target <= 150 ms)
 *   6. an authorized blob GET during a burst of made-up-name logins, next to the same GET idle
 *      (bench/logins.ts)
 *
 * The registry runs as its own process (the real `npm start` entry point) on the S3 path, against
 * Ceph RGW and DynamoDB Local started for the run (or S3_ENDPOINT / DYNAMODB_ENDPOINT).
 * BENCH_QUICK=1 shrinks the sizes for a smoke run.
 */
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { ResumableSha256 } from '../lib/hash/sha256-state.js';
import { createS3Client } from '../lib/storage/s3/client.js';
import { startBackends } from '../test/backends/start.js';
import { MiB, asyncStream, bytes, sha256, stream } from '../test/helpers/data.js';
import { call, resolve } from '../test/helpers/http.js';
import { withDigest } from '../test/helpers/oci.js';
import { processEnv, spawnRegistry, type RegistryProcess } from '../test/helpers/process.js';
import { type BundleFigures, measureBundles } from './bundles.js';
import { measureLoginBurst } from './logins.js';

const quick = process.env.BENCH_QUICK === '1';
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

async function main() {
  log('packaging the stack and timing cold starts');
  const bundles: BundleFigures[] = await measureBundles();
  const backends = await startBackends(log);
  Object.assign(process.env, backends.env);
  let reg: RegistryProcess | undefined;
  let dataDir: string | undefined;
  try {
    const env = processEnv('s3', { S3_PART_SIZE: String(PART_SIZE), S3_UPLOAD_CONCURRENCY: String(CONCURRENCY), SKIFF_LOG_LEVEL: 'ERROR' });
    dataDir = env.SKIFF_DATA_DIR;
    reg = await spawnRegistry(env);
    log(`registry ${reg.url} (pid ${reg.pid}), bucket ${env.S3_BUCKET}`);
    // Warm-up: first requests pay for connection setup and JIT.
    await finishLatency(reg, 1 * MiB, 2);

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
    const s3 = createS3Client({
      bucket: env.S3_BUCKET!,
      region: 'us-east-1',
      endpoint: env.S3_ENDPOINT,
      forcePathStyle: true,
      checksums: 'WHEN_REQUIRED',
      credentials: { accessKeyId: env.S3_ACCESS_KEY_ID!, secretAccessKey: env.S3_SECRET_ACCESS_KEY! },
    });
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
        params: { Bucket: env.S3_BUCKET!, Key: key, Body: Readable.from(asyncStream(size, seed)) },
        partSize: PART_SIZE,
        queueSize: CONCURRENCY,
      }).done();
      raw.push(mbps(size, performance.now() - t));
      await s3.send(new DeleteObjectCommand({ Bucket: env.S3_BUCKET!, Key: key }));

      const p = await patchStream(await startUpload(reg, 'bench/patch'), size, seed);
      viaPatch.push(mbps(size, p.ms));
      await call(withDigest(p.location, digestOf(size, seed)), { method: 'PUT' });

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
    if (nobleDigest !== nativeDigest) throw new Error('hash mismatch between @noble/hashes and node:crypto');

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
    const rows: [string, string, string][] = [
      ...sizes.map((s) => [`finish latency, ${s / MiB} MiB`, `${finish[s]!.toFixed(1)} ms`, ''] as [string, string, string]),
      [`finish ratio ${large / MiB} MiB / ${small / MiB} MiB`, (finish[large]! / finish[small]!).toFixed(2), 'target <= 1.5'],
      [`raw multipart upload (lib-storage), ${size / MiB} MiB`, `${median(raw).toFixed(0)} MB/s`, 'baseline'],
      ['streamed PATCH through Skiff', `${median(viaPatch).toFixed(0)} MB/s`, `${(median(viaPatch) / median(raw)).toFixed(2)} of raw (target >= 0.7)`],
      ['streamed finishing-PUT body through Skiff', `${median(viaPut).toFixed(0)} MB/s`, `${(median(viaPut) / median(raw)).toFixed(2)} of raw (target >= 0.7)`],
      [`node:crypto sha256, ${hashSize / MiB} MiB`, `${nativeRate.toFixed(0)} MiB/s`, 'baseline'],
      ['resumable sha256 (@noble/hashes)', `${nobleRate.toFixed(0)} MiB/s`, `${(nobleRate / nativeRate).toFixed(2)} of node:crypto`],
      ['HEAD p50 / p99 (1,000 requests)', `${percentile(heads, 50).toFixed(2)} / ${percentile(heads, 99).toFixed(2)} ms`, ''],
      ...logins,
      ...bundles.map(
        (b) =>
          [
            `Lambda ${b.name}: bundle / cold init`,
            `${(b.jsBytes / 1024).toFixed(0)} KiB / ${b.initMs.toFixed(0)} ms`,
            `targets <= 1024 KiB, <= 150 ms (zip ${(b.zipBytes / 1024).toFixed(0)} KiB with source maps)`,
          ] as [string, string, string],
      ),
    ];
    const w0 = Math.max(...rows.map((r) => r[0].length));
    const w1 = Math.max(...rows.map((r) => r[1].length));
    process.stdout.write(`\nSkiff benchmark (${new Date().toISOString()}, node ${process.version}, S3 = Ceph RGW, part ${PART_SIZE / MiB} MiB x ${CONCURRENCY})\n\n`);
    for (const [a, b, c] of rows) process.stdout.write(`  ${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}\n`);
    process.stdout.write('\n');
  } finally {
    await reg?.kill();
    await backends.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
