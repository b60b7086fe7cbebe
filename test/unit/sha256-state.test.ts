/**
 * The resumable SHA-256 state: round trips at every block position agree with node:crypto,
 * and the byte format is exactly Go's crypto/sha256 MarshalBinary (what distribution stores).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hex, nodeSha, pattern } from '../helpers/sha256.js';
import { ResumableSha256, SHA256_STATE_SIZE } from '../../lib/hash/sha256-state.js';


/**
 * Produced by Go 1.19.8 (Debian golang-go) with:
 *   data[i] = byte((i*7 + 3) % 251); h := sha256.New(); h.Write(data)
 *   state, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
 */
const GO_STATES: Record<number, string> = {
  0: '736861036a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000',
  3: '736861036a09e667bb67ae853c6ef372a54ff53a510e527f9b05688c1f83d9ab5be0cd19030a11000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000003',
  64: '7368610387d3682079c2222a8039477026607b7157078ea559d4782e4c32ddabd890c96b000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000040',
  100: '7368610387d3682079c2222a8039477026607b7157078ea559d4782e4c32ddabd890c96bc8cfd6dde4ebf2f9050c131a21282f363d444b525960676e757c838a91989fa6adb4bbc2000000000000000000000000000000000000000000000000000000000000000000000064',
  1000: '736861036ef2670e5cdacc6de54e19e8254a5aad5c73a6c4c360e191431c70c698f539a1c5ccd3dae1e8eff6020910171e252c333a41484f565d646b727980878e959ca3aab1b8bfc6cdd4db00000000000000000000000000000000000000000000000000000000000003e8',
};

describe('ResumableSha256', () => {
  it('marshals exactly what Go marshals', () => {
    for (const [n, expected] of Object.entries(GO_STATES)) {
      const h = new ResumableSha256();
      h.update(pattern(Number(n)));
      assert.equal(hex(h.marshal()), expected, `after ${n} bytes`);
    }
  });

  it('resumes from a state Go marshalled and reaches the right digest', () => {
    const data = pattern(2500);
    for (const n of Object.keys(GO_STATES).map(Number)) {
      const h = ResumableSha256.unmarshal(Buffer.from(GO_STATES[n]!, 'hex'));
      assert.equal(h.bytesHashed, n);
      h.update(data.subarray(n));
      assert.equal(hex(h.digest()), nodeSha(data), `resumed at ${n}`);
    }
  });

  it('round-trips at every position in and around a block', () => {
    const data = pattern(300);
    for (let cut = 0; cut <= data.length; cut++) {
      const h = new ResumableSha256();
      h.update(data.subarray(0, cut));
      const state = h.marshal();
      assert.equal(state.length, SHA256_STATE_SIZE);
      const resumed = ResumableSha256.unmarshal(state);
      resumed.update(data.subarray(cut));
      assert.equal(hex(resumed.digest()), nodeSha(data), `cut at ${cut}`);
    }
  });

  it('survives many resumptions in a row, as an upload of many chunks does', () => {
    const data = pattern(100_000);
    let state = new ResumableSha256().marshal();
    for (let o = 0; o < data.length; ) {
      const n = 1 + ((o * 31) % 4096);
      const h = ResumableSha256.unmarshal(state);
      h.update(data.subarray(o, o + n));
      state = h.marshal();
      o += n;
    }
    assert.equal(hex(ResumableSha256.unmarshal(state).digest()), nodeSha(data));
  });

  it('peeks at the digest without ending the hash', () => {
    const h = new ResumableSha256();
    h.update(pattern(70));
    assert.equal(hex(h.peekDigest()), nodeSha(pattern(70)));
    h.update(pattern(5));
    assert.equal(hex(h.digest()), nodeSha(Buffer.concat([pattern(70), pattern(5)])));
  });

  it('rejects states of the wrong size or format', () => {
    assert.throws(() => ResumableSha256.unmarshal(new Uint8Array(107)), /108 bytes/);
    const bad = Buffer.from(GO_STATES[3]!, 'hex');
    bad[3] = 0x02; // sha224's magic
    assert.throws(() => ResumableSha256.unmarshal(bad), /magic/);
  });
});
