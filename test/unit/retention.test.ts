/**
 * The retention rules engine's selection (lib/registry/retention.ts), pure: which tags and
 * manifests a policy expires, in which order, and what it keeps because something kept needs it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RetentionPolicy, TagRecord } from '../../lib/metadata/types.js';
import { PolicyError, type RetainedManifest, childrenOf, policyFor, selectExpired, tagMatches, validatePolicy } from '../../lib/registry/retention.js';

const DAY = 86_400_000;
const NOW = 100 * DAY;
const repo = 'team/app';

const d = (name: string) => `sha256:${name.padEnd(64, '0')}`;
function manifest(name: string, ageDays: number, extra: Partial<RetainedManifest> = {}): RetainedManifest {
  return { repo, digest: d(name), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100, createdAt: NOW - ageDays * DAY, attempt: `push-${name}`, children: [], ...extra };
}
function tag(name: string, target: string, ageDays: number): TagRecord {
  return { repo, tag: name, digest: d(target), mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100, updatedAt: NOW - ageDays * DAY, attempt: `push-${name}` };
}
const policy = (rules: Omit<RetentionPolicy, 'pattern'>): RetentionPolicy => ({ pattern: '*', ...rules });
const names = (plan: ReturnType<typeof selectExpired>) => ({ tags: plan.tags.map((t) => t.tag.tag), manifests: plan.manifests.map((m) => m.manifest.digest.slice(7, 8)) });

describe('retention selection', () => {
  it('expires untagged manifests last pushed more than N days ago, and only those', () => {
    const manifests = [manifest('a', 10), manifest('b', 2), manifest('c', 30)];
    const plan = selectExpired(manifests, [tag('v1', 'c', 30)], policy({ untaggedDays: 7 }), NOW);
    assert.deepEqual(names(plan), { tags: [], manifests: ['a'] });
    assert.match(plan.manifests[0]!.reason, /untagged, last pushed more than 7 days ago/);
    // Without the rule nothing untagged expires.
    assert.deepEqual(names(selectExpired(manifests, [], policy({ keep: [{ tags: 'x-*', last: 1 }] }), NOW)), { tags: [], manifests: [] });
  });

  it('keeps only the N most recently pushed tags of a pattern, deleting the others and the manifests nothing else tags', () => {
    const manifests = [manifest('a', 1), manifest('b', 1), manifest('c', 1), manifest('e', 1)];
    const tags = [tag('pr-1', 'a', 5), tag('pr-2', 'b', 3), tag('pr-3', 'c', 1), tag('pr-4', 'e', 4), tag('main', 'e', 9)];
    const plan = selectExpired(manifests, tags, policy({ keep: [{ tags: 'pr-*', last: 2 }] }), NOW);
    // pr-3 and pr-2 are the two newest; pr-4's manifest is also tagged main, so it stays.
    assert.deepEqual(names(plan), { tags: ['pr-1', 'pr-4'], manifests: ['a'] });
    assert.match(plan.tags[0]!.reason, /not among the 2 most recently pushed pr-\* tags/);
    assert.match(plan.manifests[0]!.reason, /every tag of it expires/);
    // keep 0: every matching tag goes.
    assert.deepEqual(names(selectExpired(manifests, tags, policy({ keep: [{ tags: 'pr-*', last: 0 }] }), NOW)), { tags: ['pr-1', 'pr-2', 'pr-3', 'pr-4'], manifests: ['a', 'b', 'c'] });
  });

  it('a tag belongs to the first keep rule it matches', () => {
    const manifests = [manifest('a', 1), manifest('b', 1), manifest('c', 1)];
    const tags = [tag('pr-old', 'a', 5), tag('pr-1', 'b', 3), tag('pr-2', 'c', 1)];
    const plan = selectExpired(manifests, tags, policy({ keep: [{ tags: 'pr-old', last: 5 }, { tags: 'pr-*', last: 1 }] }), NOW);
    assert.deepEqual(names(plan), { tags: ['pr-1'], manifests: ['b'] });
  });

  it('never expires a protected tag, nor the manifest it points at, whatever the other rules say', () => {
    const manifests = [manifest('a', 50), manifest('b', 50), manifest('c', 50)];
    const tags = [tag('v1.0', 'a', 50), tag('pr-1', 'b', 40), tag('pr-2', 'c', 30), tag('pr-release', 'b', 45)];
    const plan = selectExpired(manifests, tags, policy({ untaggedDays: 1, keep: [{ tags: '*', last: 0 }], protect: ['v*', 'pr-rel*'] }), NOW);
    assert.deepEqual(names(plan), { tags: ['pr-1', 'pr-2'], manifests: ['c'] }, 'b keeps its protected tag pr-release, so it stays (losing pr-1)');
  });

  it('a referrer goes with its subject and only with it; one whose subject is not in the repository is an ordinary untagged manifest', () => {
    const subject = manifest('s', 40);
    const signature = manifest('g', 40, { subject: d('s') });
    const sbom = manifest('m', 40, { subject: d('s') });
    const sbomSignature = manifest('n', 40, { subject: d('m') });
    const orphan = manifest('o', 40, { subject: d('x') });
    const kept = manifest('k', 40);
    const keptSig = manifest('l', 40, { subject: d('k') });
    const all = [subject, signature, sbom, sbomSignature, orphan, kept, keptSig];
    const tags = [tag('pr-1', 's', 10), tag('v1', 'k', 20)];
    const plan = selectExpired(all, tags, policy({ untaggedDays: 7, keep: [{ tags: 'pr-*', last: 0 }] }), NOW);
    assert.deepEqual(names(plan).manifests.sort(), ['g', 'm', 'n', 'o', 's']);
    const order = plan.manifests.map((m) => m.manifest.digest);
    for (const m of plan.manifests) for (const first of m.after) assert.ok(order.indexOf(first) < order.indexOf(m.manifest.digest), 'a subject goes before its referrers');
    assert.deepEqual(plan.manifests.find((m) => m.manifest.digest === d('n'))!.after, [d('m')]);
    // Referrers of a kept subject stay, however old and untagged.
    const young = selectExpired(all, [tag('pr-1', 's', 1), tag('v1', 'k', 20)], policy({ untaggedDays: 7 }), NOW);
    assert.deepEqual(names(young).manifests, ['o']);
  });

  it("an index's children go only with the index; a child another kept index lists, or a tag keeps, stays", () => {
    const c1 = manifest('1', 60);
    const c2 = manifest('2', 60);
    const c3 = manifest('3', 60);
    const oldIndex = manifest('i', 60, { mediaType: 'application/vnd.oci.image.index.v1+json', children: [d('1'), d('2'), d('3')] });
    const newIndex = manifest('j', 1, { mediaType: 'application/vnd.oci.image.index.v1+json', children: [d('2')] });
    const tags = [tag('pr-1', 'i', 30), tag('pr-2', 'j', 1), tag('arm', '3', 60)];
    const plan = selectExpired([c1, c2, c3, oldIndex, newIndex], tags, policy({ untaggedDays: 7, keep: [{ tags: 'pr-*', last: 1 }] }), NOW);
    assert.deepEqual(names(plan), { tags: ['pr-1'], manifests: ['i', '1'] });
    const child = plan.manifests.find((m) => m.manifest.digest === d('1'))!;
    assert.deepEqual(child.after, [d('i')], 'the child follows its index');
    assert.match(child.reason, /child only of expiring indexes/);
    // The index kept (its tag young): every child stays, untagged and old as they are.
    assert.deepEqual(names(selectExpired([c1, c2, c3, oldIndex], [tag('pr-1', 'i', 30)], policy({ untaggedDays: 7 }), NOW)).manifests, []);
  });

  it('picks the most specific policy: exact name, then the longest prefix, then *', () => {
    const policies = [{ pattern: '*' }, { pattern: 'team/*' }, { pattern: 'team/app' }, { pattern: 'team/sub/*' }].map((p) => ({ ...p, untaggedDays: 1 }));
    assert.equal(policyFor(policies, 'team/app')?.pattern, 'team/app');
    assert.equal(policyFor(policies, 'team/sub/x')?.pattern, 'team/sub/*');
    assert.equal(policyFor(policies, 'team/other')?.pattern, 'team/*');
    assert.equal(policyFor(policies, 'elsewhere')?.pattern, '*');
    assert.equal(policyFor(policies.slice(1), 'elsewhere'), undefined);
  });

  it('matches tag patterns with * and ? only, whole tags, dots literal', () => {
    assert.ok(tagMatches('pr-*', 'pr-12'));
    assert.ok(!tagMatches('pr-*', 'xpr-12'));
    assert.ok(tagMatches('v?.*', 'v1.2.3'));
    assert.ok(!tagMatches('v1.0', 'v1x0'));
    assert.ok(tagMatches('*', 'anything'));
  });

  it('refuses malformed policies and policies without a rule', () => {
    for (const bad of [
      { pattern: 'Team/*', untaggedDays: 1 },
      { pattern: '*' },
      { pattern: '*', untaggedDays: -1 },
      { pattern: '*', untaggedDays: 1.5 },
      { pattern: '*', keep: [{ tags: 'a/b', last: 1 }] },
      { pattern: '*', keep: [{ tags: 'pr-*', last: -2 }] },
      { pattern: '*', protect: ['(x)'] },
    ] as RetentionPolicy[]) {
      assert.throws(() => validatePolicy(bad), PolicyError, JSON.stringify(bad));
    }
    assert.deepEqual(validatePolicy({ pattern: 'team/*', keep: [{ tags: 'pr-*', last: 3 }], protect: [] }), { pattern: 'team/*', keep: [{ tags: 'pr-*', last: 3 }] });
  });

  it("reads an index's children leniently: none for an image, unknown for unreadable bytes", () => {
    const index = { schemaVersion: 2, manifests: [{ digest: d('1') }, { digest: d('2') }, { nope: 1 }] };
    assert.deepEqual(childrenOf(Buffer.from(JSON.stringify(index))), [d('1'), d('2')]);
    assert.deepEqual(childrenOf(Buffer.from('{"layers":[]}')), []);
    assert.equal(childrenOf(Buffer.from('not json')), undefined);
    assert.equal(childrenOf(undefined), undefined);
  });
});
