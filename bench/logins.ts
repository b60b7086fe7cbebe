/**
 * `npm run bench`, logins under attack: an authorized blob GET's latency while a burst of
 * made-up-name Basic logins (each one scrypt) is in flight, next to the same GET idle. Password
 * checks are bounded (SKIFF_AUTH_VERIFY_CONCURRENCY), so the GET should wait for at most about
 * one round of them, not the whole burst. The registry runs as its own process on the
 * filesystem path, where blob reads share libuv's thread pool with scrypt.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { run as admin } from '../lib/admin/cli.js';
import { loadConfig } from '../lib/config.js';
import { DynamoUserStore } from '../lib/metadata/dynamo/users.js';
import { createDynamo } from '../lib/registry/index.js';
import { bytes, sha256 } from '../test/helpers/data.js';
import { call } from '../test/helpers/http.js';
import { processEnv, spawnRegistry } from '../test/helpers/process.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function measureLoginBurst(log: (msg: string) => void, burstSize = 32): Promise<[string, string, string][]> {
  const env = processEnv('fs', { SKIFF_AUTH: 'required', SKIFF_TOKEN_KEYS: `k1=${randomBytes(32).toString('base64url')}`, SKIFF_LOG_LEVEL: 'ERROR' });
  const reg = await spawnRegistry(env);
  try {
    const users = new DynamoUserStore(createDynamo(loadConfig(env), { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! }), env.DYNAMODB_TABLE!);
    const io = { out: () => undefined, err: (l: string) => log(l), readSecret: async () => 'bench-password-1' };
    await admin(['user', 'add', 'bench'], () => users, io);
    await admin(['grant', 'bench', 'bench/*', 'pull,push'], () => users, io);
    const basic = `Basic ${Buffer.from('bench:bench-password-1').toString('base64')}`;
    const token = (await call(`${reg.url}/auth/token?service=skiff&scope=repository:bench/logins:pull,push`, { headers: { Authorization: basic } })).json().token;
    const auth = { Authorization: `Bearer ${token}` };
    const blob = bytes(1024 * 1024, 11);
    const put = await call(`${reg.url}/v2/bench/logins/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob, headers: auth });
    if (put.status !== 201) throw new Error(`push: ${put.status} ${put.body}`);
    const get = async () => {
      const t = performance.now();
      const res = await call(`${reg.url}/v2/bench/logins/blobs/${sha256(blob)}`, { headers: auth });
      if (res.status !== 200) throw new Error(`GET: ${res.status}`);
      return performance.now() - t;
    };

    const idle: number[] = [];
    for (let i = 0; i < 20; i++) idle.push(await get());
    const loaded: number[] = [];
    for (let round = 0; round < 5; round++) {
      // Each login from an address of its own, so that no per-source budget cuts the burst short.
      const burst = Array.from({ length: burstSize }, (_, i) =>
        call(`${reg.url}/v2/`, { headers: { Authorization: `Basic ${Buffer.from(`nobody-${round}-${i}:guess`).toString('base64')}` }, from: `127.0.2.${round * burstSize + i + 1}` }),
      );
      await new Promise((r) => setTimeout(r, 50)); // let the burst reach its password checks
      loaded.push(await get());
      await Promise.all(burst);
    }
    log(`blob GET idle ${idle.map((t) => t.toFixed(1)).join(', ')} ms; during a login burst ${loaded.map((t) => t.toFixed(1)).join(', ')} ms`);
    return [
      ['authorized 1 MiB blob GET, idle (fs)', `${median(idle).toFixed(1)} ms`, 'baseline'],
      [`the same GET during ${burstSize} made-up-name logins`, `${median(loaded).toFixed(1)} ms`, `${(median(loaded) / median(idle)).toFixed(1)}x idle`],
    ];
  } finally {
    await reg.kill();
    await rm(env.SKIFF_DATA_DIR!, { recursive: true, force: true });
  }
}
