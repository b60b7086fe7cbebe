/**
 * Content digests (`algorithm:encoded`) as the OCI image-spec defines them.
 *
 * Only algorithms we can verify are accepted: a digest we cannot check is a digest we would
 * have to trust, and a registry must never store bytes under a name it did not verify.
 */
import { RegistryError } from './errors.js';

export type Algorithm = 'sha256' | 'sha512';

const ENCODED: Record<Algorithm, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};

/** The spec's general grammar; used to tell "malformed" from "well-formed but unsupported". */
const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface Digest {
  readonly algorithm: Algorithm;
  readonly encoded: string;
  /** The canonical string form, `algorithm:encoded`. */
  readonly value: string;
}

/** Parses a digest or returns undefined; never throws. */
export function tryParseDigest(input: string | null | undefined): Digest | undefined {
  if (!input) return undefined;
  const colon = input.indexOf(':');
  if (colon < 0) return undefined;
  const algorithm = input.slice(0, colon);
  const encoded = input.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return undefined;
  if (!ENCODED[algorithm].test(encoded)) return undefined;
  return { algorithm, encoded, value: input };
}

/** Parses a digest a client sent; a bad one is a 400 DIGEST_INVALID with the reason. */
export function parseDigest(input: string | null | undefined, what = 'digest'): Digest {
  const digest = tryParseDigest(input);
  if (digest) return digest;
  let reason: string;
  if (!input) reason = `${what} is missing`;
  else if (!GRAMMAR.test(input)) reason = `${what} is not of the form algorithm:hex`;
  else if (!input.startsWith('sha256:') && !input.startsWith('sha512:')) reason = `${what} uses an unsupported algorithm (sha256 and sha512 are supported)`;
  else reason = `${what} has an encoded part of the wrong length or case (lowercase hex expected)`;
  throw new RegistryError('DIGEST_INVALID', reason, { detail: { digest: input ?? null } });
}

export function digestOf(algorithm: Algorithm, hash: Uint8Array): Digest {
  const encoded = Buffer.from(hash.buffer, hash.byteOffset, hash.byteLength).toString('hex');
  return { algorithm, encoded, value: `${algorithm}:${encoded}` };
}

/** sha256 of the empty string: the digest of a zero-length blob. */
export const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
