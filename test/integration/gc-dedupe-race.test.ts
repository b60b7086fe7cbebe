/**
 * Issue #13: nothing a record names is deleted by the orphan sweep, whatever runs next to it.
 * A deduplicating finish whose digest's stored copy is gone (or short) keeps its own copy
 * instead, and must name that copy in the same commit that ends its upload: between "the
 * upload record is gone" and "a descriptor names our object", the sweep's contract (an object
 * no record names and no live upload holds may be deleted) lets it delete our object, after
 * which the descriptor would name missing bytes.
 *
 * Each case holds the finish right after the DynamoDB write that deleted its upload record has
 * applied (before its answer reaches the registry) and runs the orphan sweep there, as if our
 * object were old: the upload started days ago and finishes now (its object may carry that
 * date: a scratch file keeps its first write's mtime; an S3 multipart object possibly its
 * start). The sweep is run through its public entry point only (lib/registry/orphans.ts), with
 * `now` days ahead and the default grace period; a stray unnamed object proves it deleted what
 * it was allowed to.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { MiddlewareStack } from '@smithy/types';
import { DynamoCollectorStore } from '../../lib/metadata/dynamo/gc.js';
import { DynamoOrphanStore } from '../../lib/metadata/dynamo/orphans.js';
import { collectGarbage } from '../../lib/registry/gc.js';
import { type OrphanReport, sweepOrphans } from '../../lib/registry/orphans.js';
import { bytes, sha256 } from '../helpers/data.js';
import { holdBefore, injectFaults, nth } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { patch, pushInPut, startUpload, withDigest } from '../helpers/oci.js';
import { DRIVERS, useRegistry } from '../helpers/registry.js';

const DAY = 24 * 3600 * 1000;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyStack = { middlewareStack: MiddlewareStack<any, any> };

/**
 * Runs `during` once the first call matching `match` has applied, before its answer goes back
 * to the caller (a call that failed does not count), then lets the answer go on. Resolves with
 * `during`'s result.
 */
function holdAfter<T>(client: AnyStack, match: (command: string, input: Record<string, unknown>) => boolean, during: () => Promise<T>): Promise<T> {
  const name = `hold-after-${randomUUID()}`;
  return new Promise<T>((resolve, reject) => {
    client.middlewareStack.add(
      (next, ctx) => async (args) => {
        const installed = () => client.middlewareStack.identify().some((m) => m.startsWith(name));
        if (!installed() || !match(ctx.commandName!, args.input as Record<string, unknown>)) return next(args);
        const answer = await next(args);
        if (installed()) {
          client.middlewareStack.remove(name);
          try {
            resolve(await during());
          } catch (err) {
            reject(err);
          }
        }
        return answer;
      },
      { step: 'initialize', priority: 'high', name },
    );
  });
}

/** A DynamoDB write that deletes the upload record of `id` (alone, or in a transaction). */
function deletesUpload(id: string): (command: string, input: Record<string, unknown>) => boolean {
  const isRecord = (k: unknown) => (k as { pk?: string; sk?: string } | undefined)?.pk === `UPLOAD#${id}` && (k as { sk?: string }).sk === 'UPLOAD';
  return (command, input) => {
    if (command === 'DeleteItemCommand') return isRecord(input.Key);
    if (command === 'TransactWriteItemsCommand') return ((input.TransactItems ?? []) as { Delete?: { Key?: unknown } }[]).some((i) => isRecord(i.Delete?.Key));
    return false;
  };
}

for (const driver of DRIVERS) {
  describe(`orphan sweep vs a deduplicating finish that repairs its digest (${driver})`, () => {
    const r = useRegistry(driver);
    let seed = 131000;
    let repoCount = 0;
    const fresh = (name: string) => `dedupe${repoCount++}/${name}`;

    /**
     * The sweep as a scheduled run would do it days later, with the default grace period of a
     * day: run until the stray object is gone (at most three runs, a day apart), so it is proven
     * to have deleted what no record names.
     */
    const RECHECK_MS = 100;
    async function sweepDaysLater(stray: string): Promise<OrphanReport[]> {
      const reports: OrphanReport[] = [];
      const start = Date.now();
      for (let day = 2; day <= 4 && (await r.registry.storage.objects.stat(stray)) !== undefined; day++) {
        // The sweep frees in two phases: a run notes, a run at least `recheckAfterMs` later (real
        // time: the index's lag) frees. DynamoDB Local's index has no lag, so a short wait will do.
        if (day > 2) await new Promise((done) => setTimeout(done, RECHECK_MS + 50));
        const store = new DynamoOrphanStore(r.db, r.config.dynamo.table, { recheckAfterMs: RECHECK_MS });
        reports.push(await sweepOrphans(store, r.registry.storage, { dryRun: false, graceMs: DAY, now: start + day * DAY, deadline: Date.now() + 60_000 }));
      }
      assert.equal(await r.registry.storage.objects.stat(stray), undefined, `the sweep freed the stray object: ${JSON.stringify(reports)}`);
      return reports;
    }

    /**
     * Holds the upload's finish right after the write that deletes its record, and sweeps there.
     * done(), once the finish answered: the sweep's reports (the hold was reached by then: it
     * runs before the answer goes back).
     */
    function sweepWhenEnded(id: string, stray: string): { done(): Promise<OrphanReport[]> } {
      let reached = false;
      const swept = holdAfter(r.db, deletesUpload(id), () => ((reached = true), sweepDaysLater(stray)));
      return {
        done() {
          assert.ok(reached, 'the finish deleted its upload record');
          return swept;
        },
      };
    }

    /** Pushes `data` to `repo`, then damages the stored copy: gone, or cut short. */
    async function damagedDigest(repo: string, data: Buffer, damage: 'missing' | 'truncated'): Promise<string> {
      await pushInPut(r.url, repo, data);
      const key = (await r.registry.meta.blobs.getDescriptor(sha256(data)))!.key;
      if (damage === 'missing') await r.registry.storage.objects.delete([key]);
      else if (driver === 'fs') await r.registry.storage.objects.put(key, new Uint8Array(0));
      else await r.s3.send(new PutObjectCommand({ Bucket: r.config.s3.bucket, Key: key, Body: data.subarray(0, 1000) }));
      return key;
    }

    /** An upload of `data` in `repo`, written but not finished; its Location and id. */
    async function written(repo: string, data: Buffer): Promise<{ location: string; id: string }> {
      const location = await startUpload(r.url, repo);
      const res = await patch(location, data, 0);
      assert.equal(res.status, 202, res.body.toString());
      return { location: new URL(res.header('location')!, r.url).href, id: new URL(location).pathname.split('/').pop()! };
    }

    /** The digest's descriptor names an object holding its bytes, and every repository reads them. */
    async function intact(data: Buffer, repos: string[], dead: string): Promise<string> {
      const descriptor = await r.registry.meta.blobs.getDescriptor(sha256(data));
      assert.ok(descriptor, 'the digest has a descriptor');
      assert.notEqual(descriptor.key, dead, 'the descriptor was repaired');
      assert.equal(await r.registry.storage.objects.stat(descriptor.key), data.length, `the descriptor names ${descriptor.key}, which must hold the bytes`);
      for (const repo of repos) {
        const got = await call(`${r.url}/v2/${repo}/blobs/${sha256(data)}`);
        assert.equal(got.status, 200, `${repo}: ${got.body.toString().slice(0, 300)}`);
        assert.ok(got.body.equals(data), `${repo}: the bytes read back`);
      }
      return descriptor.key;
    }

    const strayObject = async () => {
      const key = `blobs/${randomUUID()}`;
      await r.registry.storage.objects.put(key, bytes(100, seed++));
      return key;
    };

    for (const damage of ['missing', 'truncated'] as const) {
      it(`a finish repairing a ${damage} copy names its own copy in the commit that ends its upload: a sweep right after keeps it`, async () => {
        const [first, second] = [fresh('first'), fresh('second')];
        const data = bytes(300_000 + seed, seed++);
        const dead = await damagedDigest(first, data, damage);
        const upload = await written(second, data);
        const stray = await strayObject();

        const sweep = sweepWhenEnded(upload.id, stray);
        const res = await call(withDigest(upload.location, sha256(data)), { method: 'PUT' });
        assert.equal(res.status, 201, res.body.toString());
        await sweep.done();
        await intact(data, [second, first], dead);
        const kinds = r.integrityErrors.filter((f) => f.digest === sha256(data)).map((f) => f.kind);
        assert.ok(kinds.includes('descriptor-repaired'), kinds.join(' '));
      });
    }

    it('a finish whose repairing transaction failed (not applied) still ends its upload only in the commit that names its copy', async () => {
      const [first, second] = [fresh('first'), fresh('second')];
      const data = bytes(300_000 + seed, seed++);
      const dead = await damagedDigest(first, data, 'missing');
      const upload = await written(second, data);
      const stray = await strayObject();

      // The finish's first transaction is refused (the digest is stored); the second, which
      // ends the upload, fails before it applies.
      const faults = injectFaults(r);
      faults.arm(nth('TransactWriteItemsCommand', 1), 'fail');
      const sweep = sweepWhenEnded(upload.id, stray);
      let res;
      try {
        res = await call(withDigest(upload.location, sha256(data)), { method: 'PUT' });
      } finally {
        assert.ok(faults.fired, 'the fault was injected');
        faults.disarm();
      }
      assert.equal(res.status, 201, res.body.toString());
      await sweep.done();
      await intact(data, [second, first], dead);
    });

    it('a finish whose stored copy GC collects between the judgement and the commit stores its own copy as the new descriptor', async () => {
      const [source, target] = [fresh('source'), fresh('target')];
      const data = bytes(200_000 + seed, seed++);
      const digest = sha256(data);
      await pushInPut(r.url, source, data);
      const collectedKey = (await r.registry.meta.blobs.getDescriptor(digest))!.key;
      assert.equal((await call(`${r.url}/v2/${source}/blobs/${digest}`, { method: 'DELETE' })).status, 202);
      const upload = await written(target, data);
      await new Promise((res) => setTimeout(res, 5)); // the link GC judges is older than a grace of 0
      // The finish found the stored copy whole and is about to link it (the transaction that
      // marks the descriptor linked); GC collects it first.
      const keeps = (command: string, input: Record<string, unknown>) => command === 'TransactWriteItemsCommand' && JSON.stringify(input).includes(digest) && JSON.stringify(input).includes('SET linkedAt');
      const collected = holdBefore(r.db, keeps, () => collectGarbage(new DynamoCollectorStore(r.db, r.config.dynamo.table), r.registry.storage, { dryRun: false, graceMs: 0, budgetMs: 60_000 }));
      const res = await call(withDigest(upload.location, digest), { method: 'PUT' });
      const report = await collected;
      assert.ok(report.freed.descriptors >= 1, JSON.stringify(report)); // (earlier tests' unreferenced blobs go too)
      assert.equal(await r.registry.storage.objects.stat(collectedKey), undefined, 'GC freed the stored copy');
      assert.equal(res.status, 201, res.body.toString());
      const now = await r.registry.meta.blobs.getDescriptor(digest);
      assert.ok(now && now.key !== collectedKey && now.key.includes(upload.id), `the descriptor names the finish's own copy: ${now?.key}`);
      const got = await call(`${r.url}/v2/${target}/blobs/${digest}`);
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(data));
    });
  });
}
