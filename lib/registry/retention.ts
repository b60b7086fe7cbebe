/**
 * Retention policies: which manifests and tags of a repository expire, and the run that deletes
 * them (the scheduled gc function runs it before garbage collection; `npm run admin -- retention`).
 *
 * A policy applies to the repositories its pattern covers (the most specific pattern wins: an
 * exact name, then the longest `prefix/*`, then `*`). Its rules:
 *   - untaggedDays: an untagged manifest last pushed more than N days ago expires;
 *   - keep: of the tags matching a rule's pattern (a tag belongs to the first rule it matches),
 *     only the `last` most recently pushed stay; the others expire, and so does a manifest
 *     all of whose tags expire;
 *   - protect: tags matching these never expire, and so neither do their manifests.
 * What a kept manifest needs is kept: an index's children go only with the index, and a
 * referrer (a manifest with a `subject` in the repository: a signature, an SBOM) goes with its
 * subject and only with it, as the OCI spec suggests for deletions. A referrer whose subject is
 * not in the repository is an ordinary untagged manifest.
 *
 * Safety against concurrent pushes comes from the deletes, each conditioned on the item being
 * exactly as read (lib/metadata/dynamo/manifests.ts): a tag goes only while it is the same push's
 * (same digest and attempt), so a tag pushed again meanwhile stays; a manifest goes only while
 * it is not pushed again (attempt), not referenced by an index pushed since (usedBy) and not
 * tagged. A manifest is deleted only after everything that would keep it was: its parents
 * (indexes) and its subject; if one of those stays (it changed meanwhile), so does it.
 */
import { randomUUID } from 'node:crypto';
import { covers, isValidPattern } from '../auth/access.js';
import type { ManifestIndex, ManifestRecord, PolicyStore, RetentionPolicy, TagRecord } from '../metadata/types.js';
import type { StorageDriver } from '../storage/types.js';
import { readReferences } from '../oci/manifest.js';

const DAY_MS = 86_400_000;

/** A tag pattern: tag characters, `*` (any run) and `?` (any one). */
const TAG_PATTERN = /^[A-Za-z0-9._*?-]{1,128}$/;

export class PolicyError extends Error {}

/** Refuses a policy that is malformed or says nothing; returns it without empty parts. */
export function validatePolicy(policy: RetentionPolicy): RetentionPolicy {
  if (!isValidPattern(policy.pattern)) throw new PolicyError(`invalid repository pattern: ${policy.pattern}`);
  const out: RetentionPolicy = { pattern: policy.pattern };
  if (policy.untaggedDays !== undefined) {
    if (!Number.isSafeInteger(policy.untaggedDays) || policy.untaggedDays < 0) throw new PolicyError('untagged days must be a whole number, 0 or more');
    out.untaggedDays = policy.untaggedDays;
  }
  for (const rule of policy.keep ?? []) {
    if (!TAG_PATTERN.test(rule.tags)) throw new PolicyError(`invalid tag pattern: ${rule.tags}`);
    if (!Number.isSafeInteger(rule.last) || rule.last < 0) throw new PolicyError(`the number of ${rule.tags} tags to keep must be a whole number, 0 or more`);
    (out.keep ??= []).push({ tags: rule.tags, last: rule.last });
  }
  for (const tags of policy.protect ?? []) {
    if (!TAG_PATTERN.test(tags)) throw new PolicyError(`invalid tag pattern: ${tags}`);
    (out.protect ??= []).push(tags);
  }
  if (out.untaggedDays === undefined && !out.keep && !out.protect) throw new PolicyError('a policy needs at least one rule (untagged days, keep or protect)');
  if (policy.updatedAt !== undefined) out.updatedAt = policy.updatedAt;
  return out;
}

export function tagMatches(pattern: string, tag: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.]/g, '\\.').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(tag);
}

/** The policy for `repo`: the most specific pattern covering it (exact, longest prefix, `*`). */
export function policyFor(policies: RetentionPolicy[], repo: string): RetentionPolicy | undefined {
  const rank = (p: string) => (p === '*' ? 0 : p.endsWith('/*') ? p.length : Number.MAX_SAFE_INTEGER);
  return policies.filter((p) => covers(p.pattern, repo)).sort((a, b) => rank(b.pattern) - rank(a.pattern))[0];
}

/** A manifest with the manifests it lists as an index's children (read from its body). */
export interface RetainedManifest extends ManifestRecord {
  children: string[];
}

export interface ExpiringTag {
  tag: TagRecord;
  reason: string;
}

export interface ExpiringManifest {
  manifest: ManifestRecord;
  reason: string;
  /** Manifests of this plan that must be deleted first: its parents and its subject. */
  after: string[];
}

/** What expires in one repository: tags first, then manifests in an order that is safe to follow. */
export interface RetentionPlan {
  tags: ExpiringTag[];
  manifests: ExpiringManifest[];
}

/** Pure: what `policy` expires among `manifests` and `tags` at `now` (epoch ms). */
export function selectExpired(manifests: RetainedManifest[], tags: TagRecord[], policy: RetentionPolicy, now: number): RetentionPlan {
  const byDigest = new Map(manifests.map((m) => [m.digest, m]));
  const protectedTag = (t: TagRecord) => (policy.protect ?? []).some((p) => tagMatches(p, t.tag));

  // Tags: each unprotected tag belongs to the first keep rule it matches; beyond a rule's
  // `last` most recently pushed (ties: by name), its tags expire.
  const expired = new Map<string, ExpiringTag>();
  const rules = policy.keep ?? [];
  const groups = rules.map(() => [] as TagRecord[]);
  for (const t of tags) {
    if (protectedTag(t)) continue;
    const i = rules.findIndex((r) => tagMatches(r.tags, t.tag));
    if (i >= 0) groups[i]!.push(t);
  }
  groups.forEach((group, i) => {
    const rule = rules[i]!;
    group.sort((a, b) => b.updatedAt - a.updatedAt || (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
    for (const t of group.slice(rule.last)) expired.set(t.tag, { tag: t, reason: `not among the ${rule.last} most recently pushed ${rule.tags} tags` });
  });

  const tagsOf = new Map<string, TagRecord[]>();
  for (const t of tags) tagsOf.set(t.digest, [...(tagsOf.get(t.digest) ?? []), t]);
  const cutoff = policy.untaggedDays === undefined ? undefined : now - policy.untaggedDays * DAY_MS;

  // Roots: what stays on its own account. Everything they need stays with them.
  const roots: string[] = [];
  for (const m of manifests) {
    const own = tagsOf.get(m.digest) ?? [];
    if (own.some((t) => !expired.has(t.tag))) roots.push(m.digest);
    else if (own.length) continue; // every tag of it expires
    else if (m.subject !== undefined && byDigest.has(m.subject)) continue; // follows its subject
    else if (cutoff === undefined || m.createdAt >= cutoff) roots.push(m.digest);
  }
  const referrers = new Map<string, string[]>();
  for (const m of manifests) if (m.subject !== undefined && byDigest.has(m.subject)) referrers.set(m.subject, [...(referrers.get(m.subject) ?? []), m.digest]);
  const kept = new Set<string>();
  for (const stack = [...roots]; stack.length; ) {
    const d = stack.pop()!;
    if (kept.has(d) || !byDigest.has(d)) continue;
    kept.add(d);
    stack.push(...byDigest.get(d)!.children, ...(referrers.get(d) ?? []));
  }

  const going = manifests.filter((m) => !kept.has(m.digest));
  const parents = new Map<string, string[]>();
  for (const m of going) for (const c of m.children) parents.set(c, [...(parents.get(c) ?? []), m.digest]);
  const reasonFor = (m: RetainedManifest): string => {
    if (tagsOf.get(m.digest)?.length) return 'every tag of it expires';
    if (m.subject !== undefined && byDigest.has(m.subject)) return `a referrer of ${m.subject}, which expires`;
    if (parents.has(m.digest)) return `untagged, a child only of expiring indexes`;
    return `untagged, last pushed more than ${policy.untaggedDays} days ago`;
  };
  const planned = going.map((m) => ({
    manifest: m,
    reason: reasonFor(m),
    after: [...(parents.get(m.digest) ?? []), ...(m.subject !== undefined && byDigest.has(m.subject) ? [m.subject] : [])],
  }));
  // Expiring tags are on manifests that go, or on kept ones (which then lose only the tag).
  return { tags: [...expired.values()].sort((a, b) => (a.tag.tag < b.tag.tag ? -1 : 1)), manifests: ordered(planned) };
}

/** Each manifest after those it must follow (a DAG: digests name content); stable otherwise. */
function ordered(planned: ExpiringManifest[]): ExpiringManifest[] {
  const byDigest = new Map(planned.map((p) => [p.manifest.digest, p]));
  const out: ExpiringManifest[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (p: ExpiringManifest) => {
    if (state.get(p.manifest.digest)) return;
    state.set(p.manifest.digest, 'visiting');
    for (const d of p.after) {
      const before = byDigest.get(d);
      if (before) visit(before);
    }
    state.set(p.manifest.digest, 'done');
    out.push(p);
  };
  for (const p of [...planned].sort((a, b) => (a.manifest.digest < b.manifest.digest ? -1 : 1))) visit(p);
  return out;
}

/**
 * The digests an index lists as children, read leniently from its bytes; undefined when the
 * bytes are missing or are not JSON (the repository is then left alone: what it keeps is unknown).
 */
export function childrenOf(bytes: Uint8Array | undefined): string[] | undefined {
  return readReferences(bytes)?.manifests;
}

// --- the run ---

export interface RetentionOptions {
  /** Read and decide, write nothing (not even where the run stopped): the whole catalog, from its start. */
  dryRun: boolean;
  now?: number;
  /**
   * Epoch ms: no repository is started after this; the run saves where it stopped and reports
   * itself incomplete, and the next run resumes there.
   */
  deadline?: number;
  /** Stop after this many repositories (a bound by work rather than time; tests). */
  maxRepositories?: number;
}

export interface RepositoryRetention {
  repo: string;
  /** The pattern of the policy that applied. */
  policy: string;
  tags: { tag: string; digest: string; reason: string; deleted?: boolean }[];
  manifests: { digest: string; reason: string; deleted?: boolean }[];
  /** Why nothing was decided (a manifest whose bytes could not be read). */
  skipped?: string;
}

export interface RetentionReport {
  dryRun: boolean;
  /** Whether the run reached the end of the catalog (a run that resumed: from where the last one stopped). */
  complete: boolean;
  /** Why it did not: `deadline` (the next run resumes after the last repository it finished), `busy` (another run held the lease until `busyUntil`). */
  stopped?: 'deadline' | 'busy';
  busyUntil?: number;
  /** Whether it started where a run stopped, after the repository `from`. */
  resumed: boolean;
  from?: string;
  policies: number;
  /** Catalog repositories it visited (those no policy covers are only counted). */
  examined: number;
  repositories: RepositoryRetention[];
  /** Repositories removed from the catalog (dry run: that would be) as they hold no manifest. */
  unlisted: string[];
  /** Totals of what was found to expire, deleted, and kept because it changed since it was read. */
  found: { tags: number; manifests: number };
  deleted: { tags: number; manifests: number };
  raced: { tags: number; manifests: number; unlisted: number };
}

export interface RetentionDeps {
  manifests: ManifestIndex;
  /** The policies, and the run's lease and cursor. */
  policies: PolicyStore;
  storage: StorageDriver;
}

/** Catalog names read per page while visiting every repository. */
const CATALOG_PAGE = 1000;
/** A run without a deadline (the admin command) holds its lease this long, renewed as it goes. */
const LEASE_TERM_MS = 600_000;
/** A lease outlives the deadline by this much: the run's last repository and its report. */
const LEASE_MARGIN_MS = 120_000;

/**
 * One run over the catalog, from where the last one stopped. The unit of work is a repository:
 * what expires in it is decided on one read of it and all of it is deleted before the run looks
 * at its deadline again. Stopping inside one would change later decisions (a child whose
 * expiring index went first, a tag-less manifest whose tags went first, would look like
 * ordinary untagged manifests to the next run), so a run that stops and the one that resumes
 * delete exactly what one run would have. The position saved is the last repository finished;
 * a run that fails saves it too, so a retry resumes there instead of starting over.
 */
export async function applyRetention(deps: RetentionDeps, options: RetentionOptions): Promise<RetentionReport> {
  const now = options.now ?? Date.now();
  const policies = (await deps.policies.list()).map(validatePolicy);
  const report: RetentionReport = {
    dryRun: options.dryRun,
    complete: false,
    resumed: false,
    policies: policies.length,
    examined: 0,
    repositories: [],
    unlisted: [],
    found: { tags: 0, manifests: 0 },
    deleted: { tags: 0, manifests: 0 },
    raced: { tags: 0, manifests: 0, unlisted: 0 },
  };
  const run = randomUUID();
  const leaseUntil = () => (options.deadline ?? Date.now() + LEASE_TERM_MS) + LEASE_MARGIN_MS;
  let until = leaseUntil();
  // The last repository finished: where the next run starts (undefined: the start of the catalog).
  let position: string | undefined;
  if (!options.dryRun) {
    const lease = await deps.policies.lease(run, until, Date.now());
    if ('heldUntil' in lease) {
      report.stopped = 'busy';
      report.busyUntil = lease.heldUntil;
      return report;
    }
    position = lease.cursor;
    report.resumed = position !== undefined;
    if (position !== undefined) report.from = position;
  }
  let held = true;
  try {
    for (;;) {
      const page = await deps.manifests.listRepositories(CATALOG_PAGE, position);
      for (const repo of page.items) {
        if ((options.deadline !== undefined && Date.now() >= options.deadline) || report.examined >= (options.maxRepositories ?? Infinity)) {
          report.stopped = 'deadline';
          return report;
        }
        if (!options.dryRun && Date.now() > until - LEASE_MARGIN_MS) {
          until = leaseUntil();
          if ('heldUntil' in (await deps.policies.lease(run, until, Date.now()))) {
            // Lost: another run took the lease over (this one was held up past it); it goes on from the saved position.
            held = false;
            report.stopped = 'busy';
            return report;
          }
        }
        await visitRepository(deps, repo, policies, now, options.dryRun, report);
        report.examined++;
        position = repo;
      }
      if (!page.more || !page.items.length) break;
    }
    report.complete = true;
    position = undefined;
    return report;
  } finally {
    if (!options.dryRun && held) await deps.policies.release(run, position);
  }
}

/**
 * Applies the repository's policy, if any. A repository it reads and finds (or leaves) without a
 * manifest leaves the catalog here too: the fallback for data from before manifest deletes marked
 * their repository for GC, which otherwise removes it (lib/registry/gc.ts). One no policy covers is
 * not read at all.
 */
async function visitRepository(deps: RetentionDeps, repo: string, policies: RetentionPolicy[], now: number, dryRun: boolean, report: RetentionReport): Promise<void> {
  const policy = policyFor(policies, repo);
  if (!policy) return;
  const emptied = await retainRepository(deps, repo, policy, now, dryRun, report);
  if (!emptied) return;
  if (dryRun) {
    report.unlisted.push(repo);
    return;
  }
  const outcome = await deps.manifests.unlistIfEmpty(repo);
  if (outcome === 'removed') report.unlisted.push(repo);
  else if (outcome === 'kept') report.raced.unlisted++;
}

/** Decides and (unless dry) deletes; returns whether no manifest is left (none was there, or every one expires). */
async function retainRepository(deps: RetentionDeps, repo: string, policy: RetentionPolicy, now: number, dryRun: boolean, report: RetentionReport): Promise<boolean> {
  const { manifests, tags } = await deps.manifests.contents(repo);
  const entry: RepositoryRetention = { repo, policy: policy.pattern, tags: [], manifests: [] };
  const retained: RetainedManifest[] = [];
  for (const m of manifests) {
    const bytes = m.body ?? (m.key ? await deps.storage.objects.get(m.key) : undefined);
    const children = childrenOf(bytes);
    if (!children) {
      entry.skipped = `manifest ${m.digest} could not be read: nothing in the repository expires`;
      report.repositories.push(entry);
      return false;
    }
    retained.push({ ...m, children });
  }
  const plan = selectExpired(retained, tags, policy, now);
  if (!plan.tags.length && !plan.manifests.length) return !manifests.length;
  report.repositories.push(entry);
  report.found.tags += plan.tags.length;
  report.found.manifests += plan.manifests.length;
  for (const { tag, reason } of plan.tags) {
    const line: RepositoryRetention['tags'][number] = { tag: tag.tag, digest: tag.digest, reason };
    entry.tags.push(line);
    if (dryRun) continue;
    line.deleted = await deps.manifests.deleteTag(repo, tag.tag, tag);
    if (line.deleted) report.deleted.tags++;
    else report.raced.tags++;
  }
  const failed = new Set<string>();
  for (const { manifest, reason, after } of plan.manifests) {
    const line: RepositoryRetention['manifests'][number] = { digest: manifest.digest, reason };
    entry.manifests.push(line);
    if (dryRun) continue;
    // Something that would keep it stayed (changed since it was read): so does it.
    line.deleted = !after.some((d) => failed.has(d)) && (await deps.manifests.expireManifest(manifest));
    if (line.deleted) report.deleted.manifests++;
    else {
      failed.add(manifest.digest);
      report.raced.manifests++;
    }
  }
  return plan.manifests.length === manifests.length;
}

/** A retention report for people: each tag and manifest that goes (or would), and why. */
export function describeRetention(r: RetentionReport): string[] {
  const lines: string[] = [];
  const verb = (deleted: boolean | undefined) => (r.dryRun ? 'would delete' : deleted ? 'deleted' : 'kept (changed since read)');
  for (const repo of r.repositories) {
    if (repo.skipped) {
      lines.push(`${repo.repo} (policy ${repo.policy}): skipped, ${repo.skipped}`);
      continue;
    }
    for (const t of repo.tags) lines.push(`${repo.repo} (policy ${repo.policy}): ${verb(t.deleted)} tag ${t.tag} (${t.digest}): ${t.reason}`);
    for (const m of repo.manifests) lines.push(`${repo.repo} (policy ${repo.policy}): ${verb(m.deleted)} manifest ${m.digest}: ${m.reason}`);
  }
  for (const repo of r.unlisted) lines.push(`${repo}: ${r.dryRun ? 'would leave' : 'removed from'} the catalog (no manifest left)`);
  const incomplete = r.stopped === 'busy' ? ' (stopped: another run holds the lease)' : r.complete ? '' : ' (stopped at the deadline; the next run resumes there)';
  lines.push(
    `${r.policies} policies; ${r.examined} repositories examined${r.resumed ? ` (resumed after ${r.from})` : ''}; ${r.dryRun ? 'would delete' : 'found'}: ${r.found.tags} tags, ${r.found.manifests} manifests${incomplete}`,
  );
  if (!r.dryRun) {
    lines.push(`deleted: ${r.deleted.tags} tags, ${r.deleted.manifests} manifests; removed from the catalog: ${r.unlisted.length} repositories`);
    lines.push(`kept (changed since read): ${r.raced.tags} tags, ${r.raced.manifests} manifests, ${r.raced.unlisted} repositories in the catalog`);
  }
  return lines;
}
