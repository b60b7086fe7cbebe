/**
 * Password hashes: scrypt (node:crypto), salted, slow on purpose, compared in constant time.
 * Stored as `scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>` so parameters can be raised later
 * without breaking existing hashes.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

const N = 1 << 15;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;

function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, KEY_LENGTH, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(password, salt, N, R, P);
  return ['scrypt', N, R, P, salt.toString('base64'), hash.toString('base64')].join('$');
}

/**
 * Constant-time check. Passing no stored hash still costs one derivation (no user enumeration).
 * A stored hash whose parameters are weaker than the ones hashPassword writes (or absurdly
 * costlier) is refused after the same derivation: whoever could write such an item must not
 * get a cheap password, and a planted one must not make every login expensive.
 */
export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const parsed = parseHash(stored);
  if (!parsed) {
    await derive(password, Buffer.alloc(16), N, R, P);
    return false;
  }
  const got = await derive(password, parsed.salt, parsed.n, parsed.r, parsed.p);
  return got.length === parsed.hash.length && timingSafeEqual(got, parsed.hash);
}

/** The stored form, if it is one we accept: parameters at least ours and at most 8 times the work. */
function parseHash(stored: string | undefined): { n: number; r: number; p: number; salt: Buffer; hash: Buffer } | undefined {
  const parts = stored?.split('$');
  if (!parts || parts.length !== 6 || parts[0] !== 'scrypt') return undefined;
  const [n, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64');
  const hash = Buffer.from(parts[5]!, 'base64');
  if (![n, r, p].every(Number.isSafeInteger) || n < N || r < R || p < P || n * r * p > 8 * N * R * P) return undefined;
  if ((n & (n - 1)) !== 0 || salt.length < 16 || hash.length < KEY_LENGTH) return undefined;
  return { n, r, p, salt, hash };
}
