/**
 * The hash threads' WebAssembly SHA-256 (lib/hash/sha256-wasm.ts, over hash-wasm): the same digests as
 * node:crypto, the same saved state as Go and ResumableSha256 at every position, and states
 * that pass between the two implementations in both directions (a hash saved by a Lambda
 * request continues on the upload host's thread, and the other way round).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { hex, nodeSha, pattern } from '../helpers/sha256.js';
import { ResumableSha256 } from '../../lib/hash/sha256-state.js';
import { WasmSha256, loadWasmSha256 } from '../../lib/hash/sha256-wasm.js';


/** Go 1.19.8's MarshalBinary after 100 bytes of pattern() (as in sha256-state.test.ts). */
const GO_100 =
  '7368610387d3682079c2222a8039477026607b7157078ea559d4782e4c32ddabd890c96bc8cfd6dde4ebf2f9050c131a21282f363d444b525960676e757c838a91989fa6adb4bbc2000000000000000000000000000000000000000000000000000000000000000000000064';

describe('WasmSha256', () => {
  before(async () => assert.ok(await loadWasmSha256(), 'hash-wasm instantiates here'));

  it('digests every length around the block and padding boundaries like node:crypto', () => {
    const data = pattern(300);
    for (let n = 0; n <= data.length; n++) assert.equal(hex(new WasmSha256().update(data.subarray(0, n)).digest()), nodeSha(data.subarray(0, n)), `${n} bytes`);
  });

  it('digests large inputs fed in uneven pieces, past its 1 MiB input area', () => {
    const data = randomBytes(3 * 1024 * 1024 + 12_345);
    const h = new WasmSha256();
    for (let off = 0, step = 1; off < data.length; off += step, step = (step * 7 + 13) % 1_500_000) h.update(data.subarray(off, off + step));
    assert.equal(hex(h.digest()), nodeSha(data));
    // digest() leaves the hash usable.
    h.update(data);
    assert.equal(hex(h.digest()), nodeSha(Buffer.concat([data, data])));
  });

  it('saves what Go saves and resumes from it', () => {
    const h = new WasmSha256().update(pattern(100));
    assert.equal(hex(h.marshal()), GO_100);
    const data = pattern(2500);
    const resumed = WasmSha256.unmarshal(Buffer.from(GO_100, 'hex')).update(data.subarray(100));
    assert.equal(hex(resumed.digest()), nodeSha(data));
  });

  it('hands states to ResumableSha256 and back at every position in and around a block', () => {
    const data = pattern(300);
    for (let cut = 0; cut <= data.length; cut += 1) {
      const wasm = new WasmSha256().update(data.subarray(0, cut));
      const js = new ResumableSha256();
      js.update(data.subarray(0, cut));
      assert.equal(hex(wasm.marshal()), hex(js.marshal()), `state at ${cut}`);
      const toJs = ResumableSha256.unmarshal(wasm.marshal());
      toJs.update(data.subarray(cut));
      assert.equal(hex(toJs.digest()), nodeSha(data), `wasm to js at ${cut}`);
      const toWasm = WasmSha256.unmarshal(js.marshal()).update(data.subarray(cut));
      assert.equal(hex(toWasm.digest()), nodeSha(data), `js to wasm at ${cut}`);
    }
  });

  it('keeps hashes that share the module apart', () => {
    const a = pattern(5000);
    const b = randomBytes(5000);
    const ha = new WasmSha256();
    const hb = new WasmSha256();
    for (let off = 0; off < 5000; off += 700) {
      ha.update(a.subarray(off, off + 700));
      hb.update(b.subarray(off, off + 700));
    }
    assert.equal(hex(ha.digest()), nodeSha(a));
    assert.equal(hex(hb.digest()), nodeSha(b));
  });

  it('refuses a state of another format', () => {
    assert.throws(() => WasmSha256.unmarshal(new Uint8Array(10)), /108 bytes/);
    const bad = Buffer.from(GO_100, 'hex');
    bad[0] = 0;
    assert.throws(() => WasmSha256.unmarshal(bad), /bad magic/);
  });
});

describe('hash threads', () => {
  it('continue a saved state on the thread and give the digest and state the JavaScript hash gives', async () => {
    const { threadedSha256, hashThreadEngines } = await import('../../lib/hash/thread.js');
    const data = randomBytes(9 * 1024 * 1024 + 77);
    const cut = 1234567;
    const start = new ResumableSha256();
    start.update(data.subarray(0, cut));
    const h = threadedSha256(start.marshal());
    assert.ok(h, 'a hash thread starts here');
    try {
      for (let off = cut; off < data.length; off += 65_536) await h.update(data.subarray(off, Math.min(off + 65_536, data.length)));
      assert.equal(hex(await h.digest()), nodeSha(data));
      const js = new ResumableSha256();
      js.update(data);
      assert.equal(hex(await h.marshal()), hex(js.marshal()));
      // The thread said which hash it runs before it answered: the WebAssembly one.
      assert.deepEqual(hashThreadEngines(), ['wasm']);
    } finally {
      h.close();
    }
  });
});
