/**
 * Configuration, read from the environment once at start-up. Every variable is documented in
 * the README with its default; a malformed value stops the process with a clear message rather
 * than running with a surprise.
 */
import { isIP } from 'node:net';
import { resolve } from 'node:path';

export interface Config {
  storage: 'fs' | 's3';
  /** Embedded default: blob files and the DynamoDB Local database live here. */
  dataDir: string;
  region: string;
  s3: {
    bucket: string;
    endpoint?: string;
    forcePathStyle: boolean;
    partSize: number;
    concurrency: number;
    checksums: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';
    credentials?: { accessKeyId: string; secretAccessKey: string };
  };
  dynamo: {
    table: string;
    endpoint?: string;
    /** Local server only: where the embedded DynamoDB Local listens when no endpoint is given. */
    localPort: number;
  };
  uploads: {
    ttlSeconds: number;
    leaseSeconds: number;
    maxChunkBytes: number;
    hashThread: boolean;
  };
  blobs: {
    deleteEnabled: boolean;
    redirect: boolean;
    redirectSeconds: number;
  };
  auth: {
    /** `open`: anyone may do anything. `required`: every request is authorized per repository. */
    mode: 'open' | 'required';
    tokenKeys?: string;
    tokenKeysParameter?: string;
    tokenSeconds: number;
    service: string;
    realm?: string;
    failureLimit: number;
    sourceFailureLimit: number;
    failureWindowSeconds: number;
    verifyConcurrency: number;
    verifyQueue: number;
    /** CIDRs of the proxies in front of the registry, whose forwarding headers are believed. */
    trustedProxies: string[];
    /** How long a verified password and the grants read with it are reused. */
    cacheSeconds: number;
  };
  listings: {
    /** The most entries one page of tags, repositories or referrers holds. */
    maxPage: number;
  };
  http: {
    host: string;
    port: number;
    /** Local server only: serve through the Lambda handler with API Gateway's limits. */
    lambdaMode: boolean;
  };
  /** The upload host (README "The upload host"). */
  uploadHost: {
    /** Absolute origin of the upload host; when set, started uploads are sent there. */
    origin?: string;
    /** What `npm start` serves: the registry (and the upload host when `origin` is set), or only the upload host. */
    serve: 'all' | 'uploads';
    /** A request body with no bytes for this long ends its request (and frees its upload's lease). */
    stallSeconds: number;
    /** Concurrent streaming upload requests per process; past it 503. */
    maxStreams: number;
  };
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): Config {
  const str = (name: string, fallback: string) => {
    const v = env[name];
    return v === undefined || v === '' ? fallback : v;
  };
  const opt = (name: string) => (env[name] ? env[name] : undefined);
  const int = (name: string, fallback: number, min = 0) => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min}, got "${raw}"`);
    return n;
  };
  const bool = (name: string, fallback: boolean) => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    throw new ConfigError(`${name} must be true or false, got "${raw}"`);
  };
  const oneOf = <T extends string>(name: string, values: readonly T[], fallback: T): T => {
    const raw = str(name, fallback);
    if (!(values as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${raw}"`);
    return raw as T;
  };

  const cidrs = (name: string) => {
    const list = (env[name] ?? '').split(',').map((c) => c.trim()).filter(Boolean);
    for (const c of list) if (!isCidr(c)) throw new ConfigError(`${name} must be a comma-separated list of addresses or CIDRs (10.0.0.0/8, ::1), got "${c}"`);
    return list;
  };

  const s3Endpoint = opt('S3_ENDPOINT');
  const s3Key = opt('S3_ACCESS_KEY_ID');
  const s3Secret = opt('S3_SECRET_ACCESS_KEY');
  if (Boolean(s3Key) !== Boolean(s3Secret)) throw new ConfigError('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together');

  const maxPage = int('SKIFF_MAX_PAGE', 1000, 1);
  if (maxPage > 10000) throw new ConfigError(`SKIFF_MAX_PAGE must be at most 10000, got "${maxPage}"`);

  const authMode = oneOf('SKIFF_AUTH', ['open', 'required'] as const, 'open');
  if (authMode === 'required' && !opt('SKIFF_TOKEN_KEYS') && !opt('SKIFF_TOKEN_KEYS_PARAMETER')) {
    throw new ConfigError('SKIFF_AUTH=required needs SKIFF_TOKEN_KEYS (kid=base64url-secret,...) or SKIFF_TOKEN_KEYS_PARAMETER (an SSM parameter holding them)');
  }
  const uploadOrigin = opt('SKIFF_UPLOAD_ORIGIN');
  const serve = oneOf('SKIFF_SERVE', ['all', 'uploads'] as const, 'all');
  if ((uploadOrigin || serve === 'uploads') && !opt('SKIFF_TOKEN_KEYS') && !opt('SKIFF_TOKEN_KEYS_PARAMETER')) {
    throw new ConfigError(`${uploadOrigin ? 'SKIFF_UPLOAD_ORIGIN' : 'SKIFF_SERVE=uploads'} needs SKIFF_TOKEN_KEYS or SKIFF_TOKEN_KEYS_PARAMETER: upload capabilities are signed with the token keys`);
  }
  return {
    storage: oneOf('SKIFF_STORAGE', ['fs', 's3'] as const, 'fs'),
    dataDir: resolve(str('SKIFF_DATA_DIR', '.skiff')),
    region: str('AWS_REGION', str('AWS_DEFAULT_REGION', 'us-east-1')),
    s3: {
      bucket: str('S3_BUCKET', 'skiff'),
      endpoint: s3Endpoint,
      forcePathStyle: bool('S3_FORCE_PATH_STYLE', Boolean(s3Endpoint)),
      partSize: int('S3_PART_SIZE', 8 * 1024 * 1024, 5 * 1024 * 1024),
      concurrency: int('S3_UPLOAD_CONCURRENCY', 4, 1),
      checksums: oneOf('S3_CHECKSUMS', ['WHEN_REQUIRED', 'WHEN_SUPPORTED'] as const, 'WHEN_REQUIRED'),
      credentials: s3Key && s3Secret ? { accessKeyId: s3Key, secretAccessKey: s3Secret } : undefined,
    },
    dynamo: {
      table: str('DYNAMODB_TABLE', 'skiff'),
      endpoint: opt('DYNAMODB_ENDPOINT'),
      localPort: int('SKIFF_DYNAMODB_LOCAL_PORT', 5002, 1),
    },
    uploads: {
      ttlSeconds: int('SKIFF_UPLOAD_TTL_SECONDS', 7 * 24 * 3600, 60),
      leaseSeconds: int('SKIFF_LEASE_SECONDS', 60, 1),
      maxChunkBytes: int('SKIFF_MAX_CHUNK_BYTES', 0),
      hashThread: bool('SKIFF_HASH_THREAD', true),
    },
    blobs: {
      deleteEnabled: bool('SKIFF_DELETE_ENABLED', true),
      redirect: bool('SKIFF_REDIRECT', false),
      redirectSeconds: int('SKIFF_REDIRECT_SECONDS', 300, 1),
    },
    auth: {
      mode: authMode,
      tokenKeys: opt('SKIFF_TOKEN_KEYS'),
      tokenKeysParameter: opt('SKIFF_TOKEN_KEYS_PARAMETER'),
      tokenSeconds: int('SKIFF_TOKEN_SECONDS', 300, 10),
      service: str('SKIFF_AUTH_SERVICE', 'skiff'),
      realm: opt('SKIFF_AUTH_REALM'),
      failureLimit: int('SKIFF_AUTH_FAILURE_LIMIT', 10, 1),
      sourceFailureLimit: int('SKIFF_AUTH_SOURCE_FAILURE_LIMIT', 100, 1),
      failureWindowSeconds: int('SKIFF_AUTH_FAILURE_WINDOW_SECONDS', 900, 1),
      verifyConcurrency: int('SKIFF_AUTH_VERIFY_CONCURRENCY', 2, 1),
      verifyQueue: int('SKIFF_AUTH_VERIFY_QUEUE', 32, 0),
      trustedProxies: cidrs('SKIFF_TRUSTED_PROXIES'),
      cacheSeconds: int('SKIFF_AUTH_CACHE_SECONDS', 10),
    },
    listings: { maxPage },
    http: {
      host: str('SKIFF_HOST', '127.0.0.1'),
      port: int('SKIFF_PORT', 5000, 0),
      lambdaMode: bool('SKIFF_LAMBDA_MODE', false),
    },
    uploadHost: {
      origin: uploadOrigin && parseOrigin('SKIFF_UPLOAD_ORIGIN', uploadOrigin),
      serve,
      stallSeconds: int('SKIFF_STALL_SECONDS', 60, 1),
      maxStreams: int('SKIFF_MAX_STREAMS', 64, 1),
    },
  };
}

/** An absolute http(s) origin (scheme, host, optional port; no path, query or credentials), normalized. */
function parseOrigin(name: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be an absolute origin such as https://uploads.example.com, got "${raw}"`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) {
    throw new ConfigError(`${name} must be an http(s) origin without path, query or credentials, got "${raw}"`);
  }
  return url.origin;
}

/** An address, or an address and a prefix length that fits it (`10.0.0.0/8`, `fd00::/8`). */
export function isCidr(value: string): boolean {
  const [address, prefix, extra] = value.split('/');
  const family = isIP(address ?? '');
  if (!family || extra !== undefined) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}
