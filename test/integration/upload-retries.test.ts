/**
 * Upload writes whose answer is lost: the create (POST), the lease (PATCH's first write) and the
 * commit of a chunk. Each write carries its attempt, so a retry that meets its own applied write
 * (the SDK's retry answered "condition failed") or code that looks after a timeout recognises
 * it as success instead of failing, and nothing the committed record points at is deleted.
 * Also: a stale attempt (its lease taken over, still running) never overwrites or deletes the
 * hash state of the attempt that committed, nor the bytes it committed, nor the blob it finished.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { setTimeout as sleep } from 'node:timers/promises';
import { key } from '../../lib/metadata/dynamo/table.js';
import { MiB, bytes, chunked, gated, sha256 } from '../helpers/data.js';
import { type FaultKind, holdBefore, injectFaults, nth } from '../helpers/faults.js';
import { call, resolve } from '../helpers/http.js';
import { getBlob, patch, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, useRegistry } from '../helpers/registry.js';

const isCommit = (input: { UpdateExpression?: string }) => input.UpdateExpression?.includes('#offset = :offset') ?? false;
const isAcquire = (input: { UpdateExpression?: string }) => input.UpdateExpression?.includes('#seq = #seq') ?? false;
const LOST: FaultKind[] = ['lose-retried', 'lose'];

for (const driver of DRIVERS) {
  describe(`upload writes whose answer is lost (${driver})`, () => {
    const r = useRegistry(driver);

    for (const fault of LOST) {
      it(`a PATCH commit that landed (${fault}) is success, and the upload finishes (issue 11's reproduction)`, async () => {
        const faults = injectFaults(r);
        const data = bytes(3_000_000, 11);
        const location = await startUpload(r.url, 'retries/commit');
        assert.equal((await patch(location, data.subarray(0, 1048576), 0)).status, 202);
        faults.arm(nth('UpdateItemCommand', 0, isCommit), fault);
        const second = await patch(location, data.subarray(1048576), 1048576);
        assert.ok(faults.fired, 'the commit was hit');
        faults.disarm();
        assert.equal(second.status, 202, second.body.toString());
        assert.equal(second.header('range'), '0-2999999');
        const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
        assert.equal(put.status, 201, put.body.toString());
        assert.ok((await getBlob(r.url, 'retries/commit', sha256(data))).body.equals(data), 'the blob reads back');
      });

      it(`a lease taken although its answer was lost (${fault}) is held by the request that took it`, async () => {
        const faults = injectFaults(r);
        const data = bytes(70_000, 12);
        const location = await startUpload(r.url, 'retries/lease');
        faults.arm(nth('UpdateItemCommand', 0, isAcquire), fault);
        const res = await patch(location, data, 0);
        assert.ok(faults.fired);
        faults.disarm();
        assert.equal(res.status, 202, res.body.toString());
        const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
        assert.equal(put.status, 201, put.body.toString());
      });

      it(`a POST whose create landed (${fault}) answers 202 with a Location that works`, async () => {
        const faults = injectFaults(r);
        const data = bytes(1000, 13);
        faults.arm(nth('PutItemCommand', 0), fault);
        const res = await call(`${r.url}/v2/retries/create/blobs/uploads/`, { method: 'POST' });
        assert.ok(faults.fired);
        faults.disarm();
        assert.equal(res.status, 202, res.body.toString());
        const location = resolve(r.url, res.header('location'));
        assert.equal((await patch(location, data, 0)).status, 202);
        assert.equal((await call(withDigest(location, sha256(data)), { method: 'PUT' })).status, 201);
      });
    }

    it('a stale attempt neither overwrites nor deletes the hash state the winner committed', async () => {
      // Both requests send the same 6 MiB (a client retrying a chunk): on S3 that is a sealed
      // part, so a lost hash state cannot be rebuilt from stored data.
      const data = bytes(6 * MiB, 14);
      const location = await startUpload(r.url, 'retries/stale');
      const id = location.split('/').pop()!;
      const { body, release } = gated(data, MiB);
      const stale = call(location, { method: 'PATCH', body, headers: { 'Content-Range': `0-${data.length - 1}` } });
      await sleep(300); // the stale request holds the lease, waiting on the gate
      // Its lease runs out (a stall whose renewals did not arrive): expire it in the record.
      await r.db.send(
        new UpdateCommand({ TableName: r.config.dynamo.table, Key: key.upload(id), UpdateExpression: 'SET leaseUntil = :past', ExpressionAttributeValues: { ':past': 1 } }),
      );
      const winner = await patch(location, data, 0);
      assert.equal(winner.status, 202, winner.body.toString());
      release();
      const late = await stale;
      assert.equal(late.status, 416, late.body.toString());
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, 'retries/stale', sha256(data))).body.equals(data));
    });

    it('a stale attempt sending other bytes does not change what the winner committed', async () => {
      const winnerData = bytes(2 * MiB, 15);
      const staleData = bytes(2 * MiB, 16);
      const location = await startUpload(r.url, 'retries/other');
      const id = location.split('/').pop()!;
      const { body, release } = gated(staleData, MiB);
      const stale = call(location, { method: 'PATCH', body, headers: { 'Content-Range': `0-${staleData.length - 1}` } });
      await sleep(300);
      await r.db.send(
        new UpdateCommand({ TableName: r.config.dynamo.table, Key: key.upload(id), UpdateExpression: 'SET leaseUntil = :past', ExpressionAttributeValues: { ':past': 1 } }),
      );
      assert.equal((await patch(location, winnerData, 0)).status, 202);
      release();
      assert.equal((await stale).status, 416);
      const put = await call(withDigest(location, sha256(winnerData)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, 'retries/other', sha256(winnerData))).body.equals(winnerData), 'the blob is the winner\'s bytes');
    });

    /** Makes the upload's current lease run out in the record, as time would for a stalled writer. */
    async function expireLease(id: string): Promise<void> {
      await r.db.send(
        new UpdateCommand({ TableName: r.config.dynamo.table, Key: key.upload(id), UpdateExpression: 'SET leaseUntil = :past', ExpressionAttributeValues: { ':past': 1 } }),
      );
    }

    it('a stale attempt past committed bytes does not change what the winner committed there', async () => {
      // The stale request and the winner both continue the committed first MiB: on the
      // filesystem that is the file the record names, which the winner must not share.
      const head = bytes(MiB, 17);
      const winnerData = bytes(2 * MiB, 18);
      const staleData = bytes(2 * MiB, 19);
      const location = await startUpload(r.url, 'retries/past');
      const id = location.split('/').pop()!;
      assert.equal((await patch(location, head, 0)).status, 202);
      const { body, release } = gated(staleData, MiB);
      const stale = call(location, { method: 'PATCH', body, headers: { 'Content-Range': `${MiB}-${MiB + staleData.length - 1}` } });
      await sleep(300);
      await expireLease(id);
      assert.equal((await patch(location, winnerData, MiB)).status, 202);
      release();
      assert.equal((await stale).status, 416);
      const data = Buffer.concat([head, winnerData]);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, 'retries/past', sha256(data))).body.equals(data), 'the blob is the winner\'s bytes');
    });

    it('a stale attempt stays fenced off after the request that took over fails without committing', async () => {
      // The one that took the lease over gives up (its body ends short of its Content-Range)
      // and releases; the next request must still not continue where the stale one writes.
      const head = bytes(MiB, 20);
      const winnerData = bytes(2 * MiB, 21);
      const staleData = bytes(2 * MiB, 22);
      const location = await startUpload(r.url, 'retries/fenced');
      const id = location.split('/').pop()!;
      assert.equal((await patch(location, head, 0)).status, 202);
      const { body, release } = gated(staleData, MiB);
      const stale = call(location, { method: 'PATCH', body, headers: { 'Content-Range': `${MiB}-${MiB + staleData.length - 1}` } });
      await sleep(300);
      await expireLease(id);
      const short = await call(location, { method: 'PATCH', body: chunked(winnerData.subarray(0, MiB), 256 * 1024), headers: { 'Content-Range': `${MiB}-${3 * MiB - 1}` } });
      assert.equal(short.status, 400, short.body.toString());
      assert.equal((await patch(location, winnerData, MiB)).status, 202);
      release();
      assert.equal((await stale).status, 416);
      const data = Buffer.concat([head, winnerData]);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, 'retries/fenced', sha256(data))).body.equals(data), 'the blob is the winner\'s bytes');
    });

    it('a stale finish refused at its link transaction (its lease taken over) leaves the upload to the request that took it', async () => {
      // The finish assembled its bytes and is about to link them; meanwhile its lease runs out
      // and a PATCH takes the upload over and commits more. The stale transaction is refused: it
      // must not end the upload the winner goes on with.
      const head = bytes(MiB, 26);
      const more = bytes(MiB, 27);
      const location = await startUpload(r.url, 'retries/stale-link');
      const id = location.split('/').pop()!;
      assert.equal((await patch(location, head, 0)).status, 202);
      const takeover = holdBefore(r.db, (command, input) => command === 'TransactWriteItemsCommand' && JSON.stringify(input).includes(`UPLOAD#${id}`), async () => {
        await expireLease(id);
        return patch(location, more, MiB);
      });
      const stale = await call(withDigest(location, sha256(head)), { method: 'PUT' });
      assert.ok(stale.status >= 400 && stale.status < 500, `the stale finish is refused: ${stale.status} ${stale.body.toString()}`);
      const took = await takeover;
      if (driver === 's3' && took.status === 400) {
        // On S3 the stale finish had completed the upload's multipart upload before its link
        // transaction: nothing can continue it, and the client is told so (it pushes again).
        assert.equal((await call(withDigest(location, sha256(Buffer.concat([head, more]))), { method: 'PUT' })).status < 500, true);
        return;
      }
      assert.equal(took.status, 202, `the PATCH that took the upload over: ${took.body.toString()}`);
      const data = Buffer.concat([head, more]);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, 'retries/stale-link', sha256(data))).body.equals(data), 'the blob is the winner\'s bytes');
      assert.equal((await getBlob(r.url, 'retries/stale-link', sha256(head))).status, 404, 'the stale bytes are linked nowhere');
    });

    it('a stale one-PUT finish landing late does not overwrite the blob the winner finished', async () => {
      // Both finish a small blob in one PUT (no PATCH before). The stale one's PutObject is held
      // while its lease runs out and the winner finishes other bytes; then it lands. On S3 the
      // two used to share the key blobs/<id>, so the late PUT replaced the winner's bytes.
      const winner = bytes(200_000, 28);
      const late = bytes(200_000, 29);
      const location = await startUpload(r.url, 'retries/late-put');
      const id = location.split('/').pop()!;
      const held = driver === 's3'
        ? holdBefore(r.s3, (command) => command === 'PutObjectCommand', async () => {
            await expireLease(id);
            return call(withDigest(location, sha256(winner)), { method: 'PUT', body: winner, headers: { 'Content-Type': 'application/octet-stream' } });
          })
        : undefined;
      const stale = await call(withDigest(location, sha256(late)), { method: 'PUT', body: late, headers: { 'Content-Type': 'application/octet-stream' } });
      if (held) {
        const won = await held;
        assert.equal(won.status, 201, won.body.toString());
        assert.ok(stale.status >= 400 && stale.status < 500, `the stale finish is refused: ${stale.status} ${stale.body.toString()}`);
        assert.ok((await getBlob(r.url, 'retries/late-put', sha256(winner))).body.equals(winner), 'the winner\'s blob keeps its bytes');
        assert.equal((await getBlob(r.url, 'retries/late-put', sha256(late))).status, 404);
      } else assert.equal(stale.status, 201, 'the filesystem writes each attempt to a file of its own: shown by the tests above');
    });

    it('a stale finish whose digest does not match ends nothing of the request that took the upload over', async () => {
      const head = bytes(MiB, 30);
      const more = bytes(MiB, 31);
      const staleFinal = bytes(MiB, 32);
      const location = await startUpload(r.url, 'retries/stale-reject');
      const id = location.split('/').pop()!;
      assert.equal((await patch(location, head, 0)).status, 202);
      const { body, release } = gated(staleFinal, MiB / 2);
      // A digest its bytes do not have: it is refused once assembled.
      const stale = call(withDigest(location, sha256(bytes(10, 33))), { method: 'PUT', body, headers: { 'Content-Range': `${MiB}-${2 * MiB - 1}` } });
      await sleep(300);
      await expireLease(id);
      const took = await patch(location, more, MiB);
      release();
      const refused = await stale;
      assert.ok(refused.status >= 400 && refused.status < 500, `the stale finish is refused: ${refused.status} ${refused.body.toString()}`);
      if (driver === 's3' && took.status !== 202) {
        // On S3 a contended request cannot continue a multipart upload the stale one may complete.
        assert.ok(took.status >= 400 && took.status < 500, `${took.status} ${took.body.toString()}`);
        return;
      }
      assert.equal(took.status, 202, took.body.toString());
      const data = Buffer.concat([head, more]);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT' });
      if (driver === 's3' && put.status === 400) {
        // The stale request completed the upload's one multipart upload before its digest was
        // refused: nothing can finish it any more, and the client is told so (it pushes again).
        assert.match(put.body.toString(), /BLOB_UPLOAD_INVALID/);
        return;
      }
      assert.equal(put.status, 201, put.body.toString());
      assert.ok((await getBlob(r.url, 'retries/stale-reject', sha256(data))).body.equals(data), 'the blob is the winner\'s bytes');
    });

    it('a stale finish with another final chunk does not replace the blob the winner finished', async () => {
      const head = bytes(MiB, 23);
      const winnerFinal = bytes(2 * MiB, 24);
      const staleFinal = bytes(2 * MiB, 25);
      const location = await startUpload(r.url, 'retries/finish');
      const id = location.split('/').pop()!;
      assert.equal((await patch(location, head, 0)).status, 202);
      const staleBlob = Buffer.concat([head, staleFinal]);
      const { body, release } = gated(staleFinal, MiB);
      const stale = call(withDigest(location, sha256(staleBlob)), { method: 'PUT', body, headers: { 'Content-Range': `${MiB}-${3 * MiB - 1}` } });
      await sleep(300);
      await expireLease(id);
      const data = Buffer.concat([head, winnerFinal]);
      const put = await call(withDigest(location, sha256(data)), { method: 'PUT', body: winnerFinal, headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${MiB}-${3 * MiB - 1}` } });
      assert.equal(put.status, 201, put.body.toString());
      release();
      const late = await stale;
      assert.ok(late.status >= 400 && late.status < 500, `the stale finish is refused: ${late.status} ${late.body.toString()}`);
      assert.ok((await getBlob(r.url, 'retries/finish', sha256(data))).body.equals(data), 'the blob is the winner\'s bytes');
      assert.equal((await getBlob(r.url, 'retries/finish', sha256(staleBlob))).status, 404, 'the stale bytes are linked nowhere');
    });
  });
}
