/**
 * Retention policies and the catalog's removal of empty repositories, on the real backends: the
 * admin commands, what a run deletes and keeps (untagged expiry, keep-last-N, protected tags,
 * referrers with their subject, an index's children with the index), the dry run, the scheduled
 * function, and the races with pushes as deterministic interleavings (one side held at its
 * exact DynamoDB call while the other runs).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { PutCommand } from '@aws-sdk/lib-dynamodb';
import { type RetentionWiring, run } from '../../lib/admin/cli.js';
import { DynamoCollectorStore } from '../../lib/metadata/dynamo/gc.js';
import { DynamoPolicyStore } from '../../lib/metadata/dynamo/policies.js';
import { type CollectOptions, type CollectReport, collectGarbage } from '../../lib/registry/gc.js';
import { type RetentionOptions, type RetentionReport, applyRetention } from '../../lib/registry/retention.js';
import { MediaTypes } from '../../lib/oci/manifest.js';
import { sha256 } from '../helpers/data.js';
import { holdBefore } from '../helpers/faults.js';
import { call } from '../helpers/http.js';
import { expectError } from '../helpers/oci.js';
import { manifestClient } from '../helpers/manifests.js';
import { DRIVERS, useRegistry, tableItems } from '../helpers/registry.js';
import { processEnv } from '../helpers/process.js';
import { root } from '../deploy/package.js';

const DAY = 86_400_000;

for (const driver of DRIVERS) {
  describe(`retention policies and the catalog (${driver})`, () => {
    const r = useRegistry(driver);
    const { image, put, get } = manifestClient(r, 81000, { configSize: 90, layerSizes: [150] });
    let repoCount = 0;
    const fresh = (name: string) => `ret${repoCount++}/${name}`;

    const policies = () => new DynamoPolicyStore(r.db, r.config.dynamo.table);
    const retain = (options: Partial<RetentionOptions> = {}): Promise<RetentionReport> =>
      applyRetention({ manifests: r.registry.meta.manifests, policies: policies(), storage: r.registry.storage }, { dryRun: false, ...options });
    const wiring = (now?: number): RetentionWiring => ({ policies, retain: (o) => retain({ ...o, now }) });
    const collect = (options: Partial<CollectOptions> = {}): Promise<CollectReport> =>
      collectGarbage(new DynamoCollectorStore(r.db, r.config.dynamo.table), r.registry.storage, { dryRun: false, graceMs: 0, budgetMs: 60_000, ...options });
    async function admin(argv: string[], now?: number): Promise<{ code: number; out: string[] }> {
      const out: string[] = [];
      const io = { out: (l: string) => void out.push(l), err: (l: string) => void out.push(`ERR ${l}`), readSecret: async () => '' };
      const code = await run(argv, () => assert.fail('no user store'), io, collect, wiring(now));
      return { code, out };
    }
    /** Policies are global: each test removes those it set, so the others' runs do not see them. */
    async function withPolicy<T>(argv: string[], body: () => Promise<T>): Promise<T> {
      const set = await admin(['policy', 'set', ...argv]);
      assert.equal(set.code, 0, set.out.join('\n'));
      try {
        return await body();
      } finally {
        await policies().remove(argv[0]!);
      }
    }

    const catalog = async () => (await call(`${r.url}/v2/_catalog`)).json().repositories as string[];
    const tagsOf = async (repo: string) => (await call(`${r.url}/v2/${repo}/tags/list`)).json().tags as string[];
    const exists = async (repo: string, ref: string) => (await get(repo, ref, {}, 'HEAD')).status === 200;
    const del = (repo: string, ref: string) => call(`${r.url}/v2/${repo}/manifests/${ref}`, { method: 'DELETE' });
    async function pushed(repo: string, tag: string, extra: Record<string, unknown> = {}) {
      const m = await image(repo, extra);
      const res = await put(repo, tag, m.text);
      assert.equal(res.status, 201, res.body.toString());
      return m;
    }
    const table = () => tableItems(r);

    it('policy set, list and remove through the admin command; bad policies are refused with a usage error', async () => {
      const pattern = fresh('admin') + '/*';
      const set = await admin(['policy', 'set', pattern, '--untagged-days', '14', '--keep', 'pr-*=10', '--protect', 'v*', '--protect', 'latest']);
      assert.equal(set.code, 0, set.out.join('\n'));
      const list = await admin(['policy', 'list']);
      assert.ok(list.out.includes(`${pattern}: untagged manifests expire after 14 days; keep the 10 most recent pr-* tags; protect v*, latest`), list.out.join('\n'));
      const stored = (await policies().list()).find((p) => p.pattern === pattern);
      assert.deepEqual({ ...stored, updatedAt: undefined }, { pattern, untaggedDays: 14, keep: [{ tags: 'pr-*', last: 10 }], protect: ['v*', 'latest'], updatedAt: undefined });
      for (const bad of [[pattern], ['Bad/*', '--untagged-days', '1'], [pattern, '--keep', 'pr-*'], [pattern, '--keep', 'a/b=1'], [pattern, '--untagged-days', '-3'], [pattern, '--frobnicate', '1'], [pattern, '--protect']]) {
        assert.equal((await admin(['policy', 'set', ...bad])).code, 2, bad.join(' '));
      }
      assert.equal((await admin(['retention', '--now'])).code, 2);
      assert.equal((await admin(['policy', 'remove', pattern])).code, 0);
      assert.equal((await admin(['policy', 'remove', pattern])).code, 1, 'no such policy any more');
      assert.ok(!(await admin(['policy', 'list'])).out.some((l) => l.startsWith(pattern)));
    });

    it('keeps the N most recent matching tags and every protected one, deletes the rest with the manifests nothing else tags; the dry run lists exactly that and changes nothing', async () => {
      const repo = fresh('app');
      const v1 = await pushed(repo, 'v1.0');
      const prs: Awaited<ReturnType<typeof pushed>>[] = [];
      for (let i = 1; i <= 4; i++) prs.push(await pushed(repo, `pr-${i}`));
      assert.equal((await put(repo, 'pr-0', v1.text)).status, 201, 'pr-0 shares its manifest with the protected v1.0');
      assert.equal((await put(repo, 'pr-1b', prs[0]!.text)).status, 201, 'pr-1 and pr-1b: the same manifest');
      const shared = await pushed(repo, 'main');
      assert.equal((await put(repo, 'pr-5', shared.text)).status, 201);
      // Newest first: pr-5, pr-1b, pr-0, pr-4, pr-3, pr-2, pr-1. Keep 3 of pr-*: pr-5, pr-1b, pr-0.
      await withPolicy([repo, '--keep', 'pr-*=3', '--protect', 'v*'], async () => {
        const before = await table();
        const dry = await admin(['retention', '--dry-run']);
        assert.equal(dry.code, 0, dry.out.join('\n'));
        const mine = dry.out.filter((l) => l.startsWith(`${repo} `));
        assert.deepEqual(
          mine.map((l) => l.replace(/ \(policy [^)]*\)/, '').replace(/:[^:]*$/, '')).sort(),
          [
            `${repo}: would delete tag pr-2 (${prs[1]!.digest})`,
            `${repo}: would delete tag pr-3 (${prs[2]!.digest})`,
            `${repo}: would delete tag pr-4 (${prs[3]!.digest})`,
            `${repo}: would delete tag pr-1 (${prs[0]!.digest})`,
            `${repo}: would delete manifest ${prs[1]!.digest}`,
            `${repo}: would delete manifest ${prs[2]!.digest}`,
            `${repo}: would delete manifest ${prs[3]!.digest}`,
          ].sort(),
          dry.out.join('\n'),
        );
        assert.deepEqual(await table(), before, 'the dry run changed nothing');

        const report = await retain();
        const entry = report.repositories.find((e) => e.repo === repo)!;
        assert.deepEqual(entry.tags.map((t) => [t.tag, t.deleted]).sort(), [['pr-1', true], ['pr-2', true], ['pr-3', true], ['pr-4', true]]);
        assert.deepEqual(entry.manifests.map((m) => [m.digest, m.deleted]).sort(), prs.slice(1).map((m) => [m.digest, true]).sort());
        assert.deepEqual((await tagsOf(repo)).sort(), ['main', 'pr-0', 'pr-1b', 'pr-5', 'v1.0']);
        for (const m of prs.slice(1)) expectError(await get(repo, m.digest), 404, 'MANIFEST_UNKNOWN');
        for (const m of [v1, prs[0]!, shared]) assert.ok(await exists(repo, m.digest), 'kept: still tagged');
        // A second run finds nothing more.
        assert.equal((await retain()).repositories.filter((e) => e.repo === repo).length, 0);
      });
    });

    it('expires untagged manifests older than N days, a referrer with its subject, and an index with its children; keeps what a kept manifest needs', async () => {
      const repo = fresh('untagged');
      const keeper = await pushed(repo, 'stable');
      const keptSignature = await image(repo, { subject: keeper.desc, artifactType: 'application/vnd.example.signature' });
      assert.equal((await put(repo, keptSignature.digest, keptSignature.text)).status, 201);
      const old = await image(repo);
      assert.equal((await put(repo, old.digest, old.text)).status, 201);
      const signature = await image(repo, { subject: old.desc, artifactType: 'application/vnd.example.signature' });
      assert.equal((await put(repo, signature.digest, signature.text)).status, 201);
      const child = await image(repo);
      assert.equal((await put(repo, child.digest, child.text)).status, 201);
      const keptChild = await image(repo);
      assert.equal((await put(repo, keptChild.digest, keptChild.text)).status, 201);
      const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [child.desc] });
      const indexRes = await put(repo, sha256(Buffer.from(index)), index, MediaTypes.ociIndex);
      assert.equal(indexRes.status, 201, indexRes.body.toString());
      const indexDigest = indexRes.header('docker-content-digest')!;
      const keptIndex = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [keptChild.desc] });
      assert.equal((await put(repo, 'multi', keptIndex, MediaTypes.ociIndex)).status, 201);

      await withPolicy([repo, '--untagged-days', '7'], async () => {
        // Nothing is 7 days old yet.
        assert.equal((await retain()).repositories.filter((e) => e.repo === repo).length, 0);
        const report = await retain({ now: Date.now() + 8 * DAY });
        const entry = report.repositories.find((e) => e.repo === repo)!;
        const gone = entry.manifests.map((m) => m.digest);
        assert.deepEqual([...gone].sort(), [old.digest, signature.digest, indexDigest, child.digest].sort(), JSON.stringify(entry));
        assert.ok(entry.manifests.every((m) => m.deleted));
        assert.ok(gone.indexOf(old.digest) < gone.indexOf(signature.digest), 'the subject before its referrer');
        assert.ok(gone.indexOf(indexDigest) < gone.indexOf(child.digest), 'the index before its child');
        for (const d of gone) expectError(await get(repo, d), 404, 'MANIFEST_UNKNOWN');
        for (const d of [keeper.digest, keptSignature.digest, keptChild.digest]) assert.ok(await exists(repo, d), `${d} is kept`);
        const referrers = (await call(`${r.url}/v2/${repo}/referrers/${old.digest}`)).json().manifests;
        assert.deepEqual(referrers, [], 'the referrer left the referrers index with its manifest');
        assert.deepEqual((await call(`${r.url}/v2/${repo}/referrers/${keeper.digest}`)).json().manifests.map((m: { digest: string }) => m.digest), [keptSignature.digest]);
      });
    });

    it('a repository whose last manifest is deleted leaves the catalog at the next GC (`gc --grace 0`, its repository mark); one still holding a manifest stays; its next push lists it again', async () => {
      const repo = fresh('emptied');
      const other = fresh('stays');
      const m = await pushed(repo, 'v1');
      const o1 = await pushed(other, 'v1');
      await pushed(other, 'v2');
      assert.equal((await del(repo, m.digest)).status, 202);
      assert.equal((await del(other, o1.digest)).status, 202, 'marked too, but it still holds v2');
      assert.ok((await catalog()).includes(repo), 'listed until GC handles the mark');
      const removedLine = (out: string[], prefix: string) => out.find((l) => l.startsWith(`${prefix} from the catalog (no manifest left): `))?.split(': ')[1]?.split(' ') ?? [];
      const dry = await admin(['gc', '--dry-run', '--grace', '0']);
      assert.equal(dry.code, 0, dry.out.join('\n'));
      assert.ok(removedLine(dry.out, 'would remove').includes(repo), dry.out.join('\n'));
      assert.ok(!removedLine(dry.out, 'would remove').includes(other), dry.out.join('\n'));
      assert.ok((await catalog()).includes(repo), 'the dry run unlisted nothing');
      const gc = await admin(['gc', '--grace', '0']);
      assert.equal(gc.code, 0, gc.out.join('\n'));
      assert.ok(removedLine(gc.out, 'removed').includes(repo) && !removedLine(gc.out, 'removed').includes(other), gc.out.join('\n'));
      const listed = await catalog();
      assert.ok(!listed.includes(repo) && listed.includes(other), JSON.stringify(listed));
      expectError(await call(`${r.url}/v2/${repo}/tags/list`), 404, 'NAME_UNKNOWN');
      assert.deepEqual((await collect()).unlisted, [], 'its mark is handled: the next run removes nothing');
      await pushed(repo, 'v2');
      assert.ok((await catalog()).includes(repo), 'listed again');
      assert.deepEqual(await tagsOf(repo), ['v2']);
    });

    it('retention removes a repository its policy covers that holds no manifest (the fallback for data without a mark), and one it empties; GC then finds them gone', async () => {
      const base = fresh('fallback');
      const [found, emptied] = [`${base}/found`, `${base}/emptied`];
      const m = await pushed(found, 'v1');
      assert.equal((await del(found, m.digest)).status, 202);
      await pushed(emptied, 'pr-1');
      await withPolicy([`${base}/*`, '--keep', 'pr-*=0'], async () => {
        const dry = await admin(['retention', '--dry-run']);
        for (const repo of [found, emptied]) assert.ok(dry.out.includes(`${repo}: would leave the catalog (no manifest left)`), dry.out.join('\n'));
        assert.ok((await catalog()).includes(found), 'the dry run unlisted nothing');
        const report = await retain();
        assert.deepEqual(report.unlisted.filter((u) => u.startsWith(`${base}/`)).sort(), [emptied, found].sort());
        const listed = await catalog();
        assert.ok(!listed.includes(found) && !listed.includes(emptied), JSON.stringify(listed));
        // Both left marks (the DELETE, the expiry): GC finds them no longer listed and says nothing.
        const gc = await collect();
        assert.ok(!gc.unlisted.includes(found) && !gc.unlisted.includes(emptied), JSON.stringify(gc.unlisted));
      });
    });

    it('a run stopped at its deadline resumes after the last repository it finished: the runs together delete exactly what one run would, nothing twice; a complete pass starts over; one run at a time', async () => {
      const base = fresh('resume');
      const repos = ['a', 'b', 'c', 'd'].map((x) => `${base}/${x}`);
      for (const repo of repos) for (const tag of ['pr-1', 'pr-2', 'pr-3']) await pushed(repo, tag);
      assert.ok((await retain()).complete, 'a complete pass: no position left by earlier tests');
      const all = (await r.registry.meta.manifests.listRepositories(undefined, undefined)).items;
      const at = all.indexOf(repos[0]!);
      assert.deepEqual(all.slice(at, at + 4), repos, 'in catalog order');
      type Line = string;
      const deletions = (report: RetentionReport): Line[] =>
        report.repositories
          .filter((e) => e.repo.startsWith(`${base}/`))
          .flatMap((e) => [...e.tags.filter((t) => report.dryRun || t.deleted).map((t) => `${e.repo} tag ${t.tag}`), ...e.manifests.filter((m) => report.dryRun || m.deleted).map((m) => `${e.repo} manifest ${m.digest}`)]);
      await withPolicy([`${base}/*`, '--keep', 'pr-*=1'], async () => {
        const once = deletions(await retain({ dryRun: true }));
        assert.equal(once.length, 16, `two tags and their manifests in each repository: ${once.join('\n')}`);
        // A budget of nothing: stopped before the first repository, nothing done.
        const none = await retain({ deadline: Date.now() });
        assert.deepEqual([none.complete, none.stopped, none.examined, none.resumed], [false, 'deadline', 0, false]);
        assert.deepEqual(none.deleted, { tags: 0, manifests: 0 });
        // Stopped (deterministically, by count) after the first two of them.
        const first = await retain({ maxRepositories: at + 2 });
        assert.deepEqual([first.complete, first.stopped, first.examined, first.resumed], [false, 'deadline', at + 2, false]);
        assert.deepEqual([...new Set(first.repositories.map((e) => e.repo).filter((x) => x.startsWith(`${base}/`)))], repos.slice(0, 2));
        const second = await retain();
        assert.deepEqual([second.complete, second.resumed, second.from, second.examined], [true, true, repos[1], all.length - at - 2]);
        assert.deepEqual([...new Set(second.repositories.map((e) => e.repo).filter((x) => x.startsWith(`${base}/`)))], repos.slice(2));
        const [d1, d2] = [deletions(first), deletions(second)];
        assert.deepEqual(d1.filter((d) => d2.includes(d)), [], 'nothing twice');
        assert.deepEqual([...d1, ...d2].sort(), [...once].sort(), 'together: what one run would delete');
        assert.equal(first.raced.tags + first.raced.manifests + second.raced.tags + second.raced.manifests, 0);
        for (const repo of repos) assert.equal((await tagsOf(repo)).length, 1);
        // The complete pass cleared the position: the next run starts from the beginning.
        const third = await retain();
        assert.deepEqual([third.complete, third.resumed, third.examined], [true, false, all.length]);
        assert.deepEqual(deletions(third), []);

        // One run at a time: while another holds the lease, a run does nothing and says so.
        assert.ok('cursor' in (await policies().lease('another-run', Date.now() + 60_000, Date.now())));
        const busy = await retain();
        assert.deepEqual([busy.complete, busy.stopped, busy.examined], [false, 'busy', 0]);
        const refused = await admin(['retention']);
        assert.equal(refused.code, 1);
        assert.ok(refused.out.some((l) => l.includes('another retention run holds the lease')), refused.out.join('\n'));
        assert.ok(await policies().release('another-run', repos[2]));
        const after = await retain();
        assert.deepEqual([after.resumed, after.from, after.complete], [true, repos[2], true], 'it resumes from the position the holder saved');
      });
    });

    it('pushes of different images to one listed repository at once all land, though each updates the marker', async () => {
      const repo = fresh('busy');
      await pushed(repo, 'first');
      const images = await Promise.all(Array.from({ length: 12 }, () => image(repo)));
      const results = await Promise.all(images.map((m, i) => put(repo, `t${i}`, m.text)));
      assert.deepEqual(results.map((res) => res.status), images.map(() => 201), results.map((res) => res.body.toString()).join('\n'));
      assert.equal((await tagsOf(repo)).length, 13);
    });

    describe('races, held at the exact DynamoDB call', () => {
      const transactionOn = (pk: string, sk: (s: string) => boolean) => (command: string, input: Record<string, unknown>) =>
        command === 'TransactWriteItemsCommand' &&
        ((input.TransactItems as Record<string, { Key?: { pk: string; sk: string }; Item?: { pk: string; sk: string } }>[]) ?? []).some((t) =>
          Object.values(t).some((op) => {
            const k = op.Key ?? op.Item;
            return k?.pk === pk && sk(k.sk);
          }),
        );

      for (const target of ['the same manifest', 'another manifest'] as const) {
        it(`a tag pushed again (to ${target}) while retention deletes it stays, with its manifest`, async () => {
          const repo = fresh('repushed');
          const a = await pushed(repo, 'pr-1');
          await pushed(repo, 'pr-2');
          const b = await image(repo);
          await withPolicy([repo, '--keep', 'pr-*=1'], async () => {
            // Retention read pr-1 -> a; at its tag delete, the tag is pushed again.
            const repush = holdBefore(r.db, transactionOn(`REPO#${repo}`, (sk) => sk === 'TAG#pr-1#pr-1'), () => put(repo, 'pr-1', target === 'the same manifest' ? a.text : b.text));
            const report = await retain();
            assert.equal((await repush).status, 201, 'the push landed');
            const entry = report.repositories.find((e) => e.repo === repo)!;
            assert.deepEqual(entry.tags.map((t) => [t.tag, t.deleted]), [['pr-1', false]], 'the tag delete found it changed');
            const want = target === 'the same manifest' ? a.digest : b.digest;
            assert.equal((await get(repo, 'pr-1', {}, 'HEAD')).header('docker-content-digest'), want, 'the newer tag is kept');
            assert.ok(await exists(repo, want));
            if (target === 'the same manifest') assert.deepEqual(entry.manifests.map((m) => [m.digest, m.deleted]), [[a.digest, false]], 'its manifest is kept too');
            assert.deepEqual((await tagsOf(repo)).sort(), ['pr-1', 'pr-2']);
          });
        });
      }

      it('an index pushed while retention deletes its child keeps the child', async () => {
        const repo = fresh('child');
        const child = await image(repo);
        assert.equal((await put(repo, child.digest, child.text)).status, 201);
        const index = JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [child.desc] });
        await withPolicy([repo, '--untagged-days', '1'], async () => {
          const pushing = holdBefore(r.db, transactionOn(`REPO#${repo}`, (sk) => sk === `MANIFEST#${child.digest}`), () => put(repo, 'multi', index, MediaTypes.ociIndex));
          const report = await retain({ now: Date.now() + 2 * DAY });
          assert.equal((await pushing).status, 201, 'the index push landed');
          const entry = report.repositories.find((e) => e.repo === repo)!;
          assert.deepEqual(entry.manifests.map((m) => [m.digest, m.deleted]), [[child.digest, false]], 'the delete found the child marked by the index push');
          assert.ok(await exists(repo, child.digest), 'the child of the new index is kept');
          assert.equal((await get(repo, 'multi')).status, 200);
        });
      });

      // GC removes a repository at its repository mark, retention one its policy covers (the
      // fallback): the same removal, conditioned on the marker a push updates.
      for (const remover of ['GC', 'retention'] as const) {
        it(`a push racing ${remover}'s removal of its repository from the catalog ends with the repository listed (removal first, or push first)`, async () => {
          for (const first of ['removal', 'push'] as const) {
            const repo = fresh(`relisted-${remover.toLowerCase()}-${first}`);
            const m = await pushed(repo, 'v1');
            assert.equal((await del(repo, m.digest)).status, 202);
            const next = await image(repo);
            // GC with a grace period that keeps the links just pushed for `next` (the removal does not depend on it).
            const remove = async (): Promise<{ unlisted: string[] }> => (remover === 'GC' ? collect({ graceMs: 600_000 }) : retain());
            await withPolicy([repo, '--untagged-days', '365'], async () => {
              if (first === 'push') {
                // The removal read the marker and found no manifest; the push lands before its delete.
                const pushing = holdBefore(r.db, transactionOn(`REPO#${repo}`, (sk) => sk === 'REPOSITORY'), () => put(repo, 'v2', next.text));
                const report = await remove();
                assert.equal((await pushing).status, 201);
                assert.ok(!report.unlisted.includes(repo), 'the removal found the marker touched and kept the repository');
              } else {
                // The push read the marker (listed); the removal lands before the push's transaction.
                const removing = holdBefore(r.db, transactionOn(`REPO#${repo}`, (sk) => sk.startsWith('MANIFEST#')), () => remove());
                assert.equal((await put(repo, 'v2', next.text)).status, 201);
                assert.ok((await removing).unlisted.includes(repo), 'the removal ran in between');
              }
              assert.ok((await catalog()).includes(repo), `${first} first: listed`);
              assert.equal((await get(repo, 'v2')).status, 200);
              assert.deepEqual(await tagsOf(repo), ['v2']);
              // And the next run keeps it: it holds a manifest.
              assert.ok(!(await remove()).unlisted.includes(repo));
            });
          }
        });
      }
    });

    it('the scheduled function (the gc handler, in a process of its own) applies the policies before collecting garbage, logs both reports and emits them as metrics', async () => {
      const repo = fresh('scheduled');
      await pushed(repo, 'pr-1');
      await pushed(repo, 'pr-2');
      const emptied = fresh('scheduled-emptied');
      const m = await pushed(emptied, 'v1');
      assert.equal((await del(emptied, m.digest)).status, 202);
      const env = { ...processEnv(driver), PATH: process.env.PATH!, NODE_NO_WARNINGS: '1', SKIFF_DATA_DIR: r.config.dataDir, S3_BUCKET: r.config.s3.bucket, DYNAMODB_TABLE: r.config.dynamo.table, SKIFF_AUTH: 'open', SKIFF_LOG_LEVEL: 'INFO', POWERTOOLS_METRICS_DISABLED: 'false' };
      await withPolicy([repo, '--keep', 'pr-*=1'], async () => {
        const script = `const { gc } = await import('./functions/handlers.ts'); await gc({ graceSeconds: 0 }, { getRemainingTimeInMillis: () => 900_000 });`;
        const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env });
        const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
        const retention = lines.find((l) => l.message === 'retention');
        const gc = lines.find((l) => l.message === 'gc');
        assert.ok(retention && gc && lines.indexOf(retention) < lines.indexOf(gc), 'retention, then gc');
        assert.deepEqual(retention.repositories.find((e: { repo: string }) => e.repo === repo).tags.map((t: { tag: string }) => t.tag), ['pr-1']);
        assert.ok(gc.freed.links >= 2, `GC freed the expired manifest's blobs in the same run: ${JSON.stringify(gc.freed)}`);
        assert.deepEqual(await tagsOf(repo), ['pr-2']);
        assert.ok(gc.unlisted.includes(emptied), `GC removed the emptied repository from the catalog: ${JSON.stringify(gc.unlisted)}`);
        assert.ok(!(await catalog()).includes(emptied));
        // The reports as metrics (EMF documents, one per report), value for value.
        const retentionMetrics = lines.find((l) => l._aws && 'RetentionExpiredTags' in l);
        const gcMetrics = lines.find((l) => l._aws && 'GcFreedLinks' in l);
        assert.ok(retentionMetrics && gcMetrics, stdout);
        assert.deepEqual(
          {
            RetentionExpiredTags: retentionMetrics.RetentionExpiredTags,
            RetentionExpiredManifests: retentionMetrics.RetentionExpiredManifests,
            RetentionRepositoriesExamined: retentionMetrics.RetentionRepositoriesExamined,
            RetentionUnlistedRepositories: retentionMetrics.RetentionUnlistedRepositories,
            RetentionIncompleteRuns: retentionMetrics.RetentionIncompleteRuns,
            RetentionFailedRuns: retentionMetrics.RetentionFailedRuns,
          },
          {
            RetentionExpiredTags: retention.deleted.tags,
            RetentionExpiredManifests: retention.deleted.manifests,
            RetentionRepositoriesExamined: retention.examined,
            RetentionUnlistedRepositories: retention.unlisted.length,
            RetentionIncompleteRuns: 0,
            RetentionFailedRuns: 0,
          },
        );
        assert.ok(retention.deleted.tags >= 1 && retention.deleted.manifests >= 1 && retention.examined >= 2 && retention.complete, JSON.stringify(retention));
        assert.equal(gcMetrics.GcUnlistedRepositories, gc.unlisted.length);
        assert.equal(gcMetrics.GcFreedLinks, gc.freed.links);
        // A retention run that fails (here: a policy that does not validate, written behind the
        // admin tool's back) still lets GC run, and then fails the invocation.
        const bad = fresh('bad') + '/*';
        await r.db.send(new PutCommand({ TableName: r.config.dynamo.table, Item: { pk: 'POLICIES', sk: `POLICY#${bad}`, pattern: bad, untaggedDays: -1 } }));
        try {
          const failed = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env }).then(
            () => assert.fail('the invocation must fail'),
            (err: { stdout: string; stderr: string }) => err.stdout + err.stderr,
          );
          assert.ok(failed.includes('"message":"retention failed"'), failed);
          assert.ok(failed.includes('"message":"gc"'), 'GC ran after the failed retention');
          const failure = failed.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((l) => l._aws && 'RetentionFailedRuns' in l);
          assert.equal(failure?.RetentionFailedRuns, 1, failed);
        } finally {
          await policies().remove(bad);
        }
      });
    });
  });
}
