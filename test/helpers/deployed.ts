/**
 * The deployed shape of Skiff on one machine, for the real-client tests (issue 10): the registry
 * API in Lambda mode (API Gateway's and Lambda's limits: 6 MB payloads, no streaming) with
 * authentication required, handing out upload Locations on the upload host (SKIFF_UPLOAD_ORIGIN
 * on 127.0.0.2), both served by one `npm start` as the README tells a user to run it.
 *
 * Recording proxies stand in front of the registry API and of the upload host, so a test sees
 * how each client sent its layers and where. The proxy in front of the API passes the upload
 * host's Locations on with the other proxy's origin (127.0.0.2, another port) in place of the
 * upload host's; nothing else the clients see is changed.
 *
 * Pulls: on S3, blob GETs on the Lambda-mode API answer 307 to presigned S3 URLs, which every
 * client follows. The filesystem driver has no presigned URLs and Lambda cannot answer with more
 * than 6 MB, so on fs the clients pull back from a second `npm start` (not in Lambda mode) on the
 * same table and data directory (`pull`); pushes still go through the deployed shape.
 *
 * close() stops the processes and proxies, fails if any request ended in a server fault (an
 * ERROR line in a process's log), and removes the bucket and data directory: a run pushes
 * several GiB of layers, and Ceph stops taking writes when its device fills.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { createS3Client } from '../../lib/storage/s3/client.js';
import { backends, removeBucket } from './backends.js';
import { type RecordingProxy, recordingProxy } from './clients.js';
import { type RegistryProcess, processEnv, spawnRegistry } from './process.js';
import { type DriverKind, UPLOAD_HOST, freePort } from './registry.js';
import { addUser } from './users.js';

/** A user put in the registry's table before any client runs: pull and push on `pattern`. */
export interface DeployedUser {
  name: string;
  password: string;
  pattern: string;
}

/** Where clients talk to a registry API: its own URL, and the recording proxy they are given. */
export interface Endpoint {
  /** The registry's own address, for checks that do not go through the proxy. */
  url: string;
  /** host:port the clients are given (the proxy). */
  host: string;
  /** Every request the clients made there. */
  api: RecordingProxy;
  /** Whether a blob GET answers 307 (to S3) instead of the bytes. */
  redirects: boolean;
}

/** A registry API the test started: the endpoint, its environment, and how to stop it. */
export interface Started extends Endpoint {
  driver: DriverKind;
  /** The registry process's environment (table, bucket, data directory). */
  env: Record<string, string>;
  /** Every `npm start` of this registry (the API, and on fs the reader), for their logs. */
  processes: RegistryProcess[];
  close(): Promise<void>;
}

export interface Deployed extends Started {
  /** The upload host's own origin (SKIFF_UPLOAD_ORIGIN), as the registry hands it out. */
  origin: string;
  /** Where upload requests (PATCH, the finishing PUT) go: the proxy in front of the upload host. */
  uploads: RecordingProxy;
  /** Where the clients pull back from: this endpoint, except on fs (see the file comment). */
  pull: Endpoint;
}

export interface DeployedOptions {
  users: DeployedUser[];
  /** SKIFF_TOKEN_KEYS; default a random key. */
  tokenKeys?: string;
}

/** Starts `npm start` with `env` and checks its start-up lines. */
async function startProcess(env: Record<string, string>, expect: RegExp[]): Promise<RegistryProcess> {
  const reg = await spawnRegistry(env);
  try {
    for (const line of expect) assert.match(reg.output(), line);
  } catch (err) {
    await reg.kill();
    throw err;
  }
  return reg;
}

/**
 * Stops the processes and proxies, removes the data directory and the bucket, then fails if a
 * request ended in a server fault (after the clean-up, so a failure leaves nothing behind).
 */
async function shutDown(env: Record<string, string>, processes: RegistryProcess[], proxies: RecordingProxy[]): Promise<void> {
  for (const p of proxies) await p.close();
  for (const p of processes) await p.kill();
  await rm(env.SKIFF_DATA_DIR!, { recursive: true, force: true });
  const b = backends();
  const s3 = createS3Client({ bucket: env.S3_BUCKET!, region: 'us-east-1', endpoint: b.s3Endpoint, forcePathStyle: true, checksums: 'WHEN_REQUIRED', credentials: b.s3Credentials });
  try {
    await removeBucket(s3, env.S3_BUCKET!);
  } finally {
    s3.destroy();
  }
  for (const p of processes) assert.doesNotMatch(p.output(), /"level":"ERROR"/, `a request ended in a server fault:\n${p.output()}`);
}

/** The registry API in Lambda mode, authentication required, with `users`; `extra` added to its environment. */
async function startApi(driver: DriverKind, opts: DeployedOptions, extra: Record<string, string>, expect: RegExp[], more: (s: Started, proxies: RecordingProxy[]) => Promise<Partial<Deployed>>): Promise<Started & Partial<Deployed>> {
  const tokenKeys = opts.tokenKeys ?? `k1=${randomBytes(32).toString('base64url')}`;
  const env = processEnv(driver, { SKIFF_LAMBDA_MODE: 'true', SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: tokenKeys, ...extra });
  const processes: RegistryProcess[] = [];
  const proxies: RecordingProxy[] = [];
  const close = () => shutDown(env, processes, proxies);
  try {
    const reg = await startProcess(env, [/mode: Lambda/, /authentication required/, ...expect]);
    processes.push(reg);
    for (const u of opts.users) await addUser(env, u.name, u.password, u.pattern);
    const started: Started = { driver, env, processes, url: reg.url, host: '', api: undefined!, redirects: driver === 's3', close };
    return Object.assign(started, await more(started, proxies));
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** Lambda-mode registry API + upload host on 127.0.0.2, one `npm start`, authentication required. */
export async function startDeployed(driver: DriverKind, opts: DeployedOptions): Promise<Deployed> {
  const origin = `http://${UPLOAD_HOST}:${await freePort(UPLOAD_HOST)}`;
  const started = await startApi(driver, opts, { SKIFF_UPLOAD_ORIGIN: origin }, [new RegExp(`upload host: listening on ${origin}/`)], async (s, proxies) => {
    const uploads = await recordingProxy(origin, { listen: UPLOAD_HOST, rewriteLocation: { from: origin } });
    proxies.push(uploads);
    const api = await recordingProxy(s.url, { rewriteLocation: { from: origin, to: uploads.url } });
    proxies.push(api);
    const endpoint: Endpoint = { url: s.url, host: api.host, api, redirects: driver === 's3' };
    let pull = endpoint;
    if (driver === 'fs') {
      const { SKIFF_LAMBDA_MODE: _lambda, SKIFF_UPLOAD_ORIGIN: _origin, ...same } = s.env;
      const reader = await startProcess(same, [/authentication required/]);
      s.processes.push(reader);
      const readerApi = await recordingProxy(reader.url);
      proxies.push(readerApi);
      pull = { url: reader.url, host: readerApi.host, api: readerApi, redirects: false };
    }
    return { ...endpoint, origin, uploads, pull };
  });
  return started as Deployed;
}

/** The same registry API in Lambda mode WITHOUT an upload host (what issue 10 fixes): uploads go through Lambda's limits. */
export async function startLambdaOnly(driver: DriverKind, opts: DeployedOptions): Promise<Started> {
  return startApi(driver, opts, {}, [], async (s, proxies) => {
    assert.doesNotMatch(s.processes[0]!.output(), /upload host/);
    const api = await recordingProxy(s.url);
    proxies.push(api);
    return { host: api.host, api };
  });
}
