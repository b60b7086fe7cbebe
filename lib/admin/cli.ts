/**
 * skiff-admin: users, passwords and grants, kept in the registry's DynamoDB table.
 *
 *   user add <name>                      create a user; the password is read from stdin
 *   user passwd <name>                   set a user's password (stdin)
 *   user remove <name>                   delete a user and their grants
 *   user unlock <name>                   clear the user's failed-login counters (every source)
 *   user list                            users and their grants
 *   grant <user|anonymous> <pattern> <actions>   e.g. grant alice 'team/*' pull,push
 *   revoke <user|anonymous> <pattern>
 *   key new [kid]                        print a new token key entry for SKIFF_TOKEN_KEYS
 *   gc [--dry-run] [--grace S] [--budget S] [--full]  collect garbage (lib/registry/gc.ts)
 *   policy set <pattern> [--untagged-days N] [--keep TAGS=N]... [--protect TAGS]...
 *   policy list | policy remove <pattern>  retention policies (lib/registry/retention.ts)
 *   retention [--dry-run]                apply them: expire tags and manifests (resuming where a run stopped)
 *
 * Passwords are read from standard input (typed without echo on a terminal) and never
 * printed; only their scrypt hashes are stored.
 */
import { randomBytes } from 'node:crypto';
import { ACTIONS, type Action, isValidPattern } from '../auth/access.js';
import { ANONYMOUS, isValidUserName } from '../auth/authorizer.js';
import { hashPassword } from '../auth/passwords.js';
import type { PolicyStore, RetentionPolicy, UserStore } from '../metadata/types.js';
import type { CollectOptions, CollectReport } from '../registry/gc.js';
import { PolicyError, type RetentionOptions, type RetentionReport, describeRetention, validatePolicy } from '../registry/retention.js';
import type { OrphanReport } from '../registry/orphans.js';

export interface Io {
  out(line: string): void;
  err(line: string): void;
  /** Reads a password: from a terminal without echo, else the first line of stdin. */
  readSecret(prompt: string): Promise<string>;
}

export class UsageError extends Error {}

const USAGE = `usage:
  skiff-admin user add <name>          (password from stdin)
  skiff-admin user passwd <name>       (password from stdin)
  skiff-admin user remove <name>
  skiff-admin user unlock <name>
  skiff-admin user list
  skiff-admin grant <user|anonymous> <pattern> <pull,push,delete>
  skiff-admin revoke <user|anonymous> <pattern>
  skiff-admin key new [kid]
  skiff-admin gc [--dry-run] [--grace SECONDS (default 86400)] [--budget SECONDS (default 600)] [--full]
  skiff-admin policy set <pattern> [--untagged-days N] [--keep TAGS=N]... [--protect TAGS]...
  skiff-admin policy list
  skiff-admin policy remove <pattern>
  skiff-admin retention [--dry-run]
patterns: an exact repository name, a prefix such as team/*, or * for every repository
TAGS: a tag pattern, * for any run of characters and ? for one (pr-*, v?.*, latest)`;

/** Runs a garbage collection with these options (the wiring to a table and storage). */
export type Collect = (options: CollectOptions) => Promise<CollectReport>;
/** Applies the retention policies with these options (the wiring to a table and storage). */
export type Retain = (options: RetentionOptions) => Promise<RetentionReport>;

/** What the retention commands need, wired lazily like the user store. */
export interface RetentionWiring {
  policies: () => PolicyStore;
  retain: Retain;
}

export async function run(argv: string[], users: () => UserStore, io: Io, collect?: Collect, retention?: RetentionWiring): Promise<number> {
  try {
    await dispatch(argv, users, io, collect, retention);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`skiff-admin: ${err.message}`);
      io.err(USAGE);
      return 2;
    }
    io.err(`skiff-admin: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

async function dispatch(argv: string[], users: () => UserStore, io: Io, collect?: Collect, retention?: RetentionWiring): Promise<void> {
  const [command, sub, ...rest] = argv;
  if (command === 'policy') return policyCommand(sub, rest, io, retention);
  if (command === 'retention') {
    const args = argv.slice(1);
    const bad = args.find((a) => a !== '--dry-run');
    if (bad !== undefined) throw new UsageError(`unknown retention option: ${bad}`);
    if (!retention) throw new Error('retention is not available here');
    const report = await retention.retain({ dryRun: args.includes('--dry-run') });
    for (const line of describeRetention(report)) io.out(line);
    if (report.stopped === 'busy') throw new Error(`another retention run holds the lease until ${new Date(report.busyUntil ?? 0).toISOString()}`);
    if (!report.complete) throw new Error('the run stopped at its deadline before visiting every repository');
    return;
  }
  if (command === 'gc') {
    if (!collect) throw new Error('garbage collection is not available here');
    const report = await collect(gcOptions(argv.slice(1)));
    for (const line of describeCollection(report)) io.out(line);
    if (report.stopped === 'busy') throw new Error(`another collection holds the lease until ${new Date(report.busyUntil ?? 0).toISOString()}; nothing was done`);
    return;
  }
  if (command === 'key' && sub === 'new') {
    const kid = rest[0] ?? `k${new Date().toISOString().slice(0, 10).replace(/-/g, '')}`;
    io.out(`${kid}=${randomBytes(32).toString('base64url')}`);
    return;
  }
  if (command === 'user') {
    if (sub === 'list') {
      const store = users();
      for (const name of [ANONYMOUS, ...(await store.listUsers())]) {
        const grants = await store.grants(name);
        if (name === ANONYMOUS && !grants.length) continue;
        io.out(`${name}${grants.length ? '' : ' (no grants)'}`);
        for (const g of grants) io.out(`  ${g.pattern}: ${g.actions.join(',')}`);
      }
      return;
    }
    const name = userName(rest[0], false);
    const store = users();
    if (sub === 'add' || sub === 'passwd') {
      const existing = await store.getUser(name);
      if (sub === 'add' && existing) throw new Error(`user ${name} already exists (use: user passwd ${name})`);
      if (sub === 'passwd' && !existing) throw new Error(`no user ${name} (use: user add ${name})`);
      const password = await io.readSecret(`password for ${name}: `);
      if (password.length < 8) throw new Error('the password must be at least 8 characters');
      // U+FFFD is what lenient decoders make of invalid bytes: a password holding it would
      // match logins carrying any invalid byte there (the registry refuses those, but a hash
      // stored from such input would still be a password nobody can type).
      if (password.includes('\uFFFD')) throw new Error('the password holds U+FFFD (invalid UTF-8 in the input?); choose another');
      const now = Date.now();
      await store.putUser({ name, passwordHash: await hashPassword(password), createdAt: existing?.createdAt ?? now, updatedAt: now });
      io.out(sub === 'add' ? `created user ${name}` : `changed the password of ${name}`);
      return;
    }
    if (sub === 'unlock') {
      if (!(await store.getUser(name))) throw new Error(`no user ${name}`);
      await store.clearFailures(name);
      io.out(`cleared the failed logins of ${name}`);
      return;
    }
    if (sub === 'remove') {
      if (!(await store.deleteUser(name))) throw new Error(`no user ${name}`);
      io.out(`removed user ${name} and their grants`);
      return;
    }
    throw new UsageError(`unknown user command: ${sub ?? '(none)'}`);
  }
  if (command === 'grant' || command === 'revoke') {
    const name = userName(sub, true);
    const pattern = rest[0];
    if (!pattern || !isValidPattern(pattern)) throw new UsageError(`invalid repository pattern: ${pattern ?? '(none)'}`);
    const store = users();
    if (name !== ANONYMOUS && !(await store.getUser(name))) throw new Error(`no user ${name}`);
    if (command === 'revoke') {
      if (!(await store.deleteGrant(name, pattern))) throw new Error(`${name} has no grant on ${pattern}`);
      io.out(`revoked ${name}'s grant on ${pattern}`);
      return;
    }
    const actions = (rest[1] ?? '').split(',').filter(Boolean);
    if (!actions.length || actions.some((a) => !(ACTIONS as readonly string[]).includes(a))) {
      throw new UsageError(`actions must be a comma-separated list of ${ACTIONS.join(', ')}`);
    }
    if (name === ANONYMOUS && actions.some((a) => a !== 'pull')) throw new Error('anonymous callers may only be granted pull');
    await store.putGrant(name, { pattern, actions: [...new Set(actions)] as Action[] });
    io.out(`granted ${[...new Set(actions)].join(',')} on ${pattern} to ${name}`);
    return;
  }
  throw new UsageError(command ? `unknown command: ${command}` : 'no command given');
}

function userName(name: string | undefined, allowAnonymous: boolean): string {
  if (!name) throw new UsageError('a user name is required');
  if (name === ANONYMOUS && allowAnonymous) return name;
  if (!isValidUserName(name)) throw new UsageError(`invalid user name: ${name} (letters, digits, . _ @ -; not "anonymous")`);
  return name;
}

async function policyCommand(sub: string | undefined, args: string[], io: Io, retention?: RetentionWiring): Promise<void> {
  if (sub !== 'set' && sub !== 'list' && sub !== 'remove') throw new UsageError(`unknown policy command: ${sub ?? '(none)'}`);
  if (!retention) throw new Error('retention policies are not available here');
  if (sub === 'list') {
    if (args.length) throw new UsageError('policy list takes no arguments');
    const policies = await retention.policies().list();
    if (!policies.length) io.out('no retention policies');
    for (const p of policies) io.out(describePolicy(p));
    return;
  }
  const [pattern, ...options] = args;
  if (!pattern) throw new UsageError('a repository pattern is required');
  if (sub === 'remove') {
    if (options.length) throw new UsageError('policy remove takes only a pattern');
    if (!(await retention.policies().remove(pattern))) throw new Error(`no retention policy for ${pattern}`);
    io.out(`removed the retention policy for ${pattern}`);
    return;
  }
  const policy: RetentionPolicy = { pattern };
  for (let i = 0; i < options.length; i++) {
    const option = options[i]!;
    const value = options[++i];
    if (value === undefined) throw new UsageError(`${option} needs a value`);
    if (option === '--untagged-days') {
      if (!/^\d+$/.test(value)) throw new UsageError('--untagged-days needs a whole number of days');
      policy.untaggedDays = Number(value);
    } else if (option === '--keep') {
      const m = /^(.+)=(\d+)$/.exec(value);
      if (!m) throw new UsageError(`--keep needs TAGS=N (e.g. 'pr-*=10'), not ${value}`);
      (policy.keep ??= []).push({ tags: m[1]!, last: Number(m[2]) });
    } else if (option === '--protect') (policy.protect ??= []).push(value);
    else throw new UsageError(`unknown policy option: ${option}`);
  }
  let valid: RetentionPolicy;
  try {
    valid = validatePolicy({ ...policy, updatedAt: Date.now() });
  } catch (err) {
    if (err instanceof PolicyError) throw new UsageError(err.message);
    throw err;
  }
  await retention.policies().put(valid);
  io.out(`set ${describePolicy(valid)}`);
}

/** One line per policy, in the words of its rules. */
export function describePolicy(p: RetentionPolicy): string {
  const rules = [
    ...(p.untaggedDays !== undefined ? [`untagged manifests expire after ${p.untaggedDays} days`] : []),
    ...(p.keep ?? []).map((k) => `keep the ${k.last} most recent ${k.tags} tags`),
    ...(p.protect?.length ? [`protect ${p.protect.join(', ')}`] : []),
  ];
  return `${p.pattern}: ${rules.join('; ')}`;
}

function gcOptions(args: string[]): CollectOptions {
  const options: CollectOptions = { dryRun: false, graceMs: 86_400_000, budgetMs: 600_000 };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === '--dry-run') options.dryRun = true;
    else if (arg === '--full') options.full = true;
    else if (arg === '--grace' || arg === '--budget') {
      const value = args[++i];
      if (value === undefined || !/^\d+$/.test(value)) throw new UsageError(`${arg} needs a whole number of seconds`);
      options[arg === '--grace' ? 'graceMs' : 'budgetMs'] = Number(value) * 1000;
    } else throw new UsageError(`unknown gc option: ${arg}`);
  }
  if (options.budgetMs <= 0) throw new UsageError('--budget must be at least 1 second');
  return options;
}

/** A collection report for people: what was found and freed, and what the run cost. */
export function describeCollection(r: CollectReport): string[] {
  const tally = (t: CollectReport['found']) => `${t.links} links, ${t.descriptors} descriptors, ${t.objects} objects, ${t.bytes} bytes`;
  const calls = (c: Record<string, number>) => Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  const stopped =
    r.stopped === 'busy'
      ? ['stopped: another collection holds the lease']
      : r.stopped === 'budget'
        ? [`stopped at the budget${r.dryRun ? '' : '; the next run resumes where this one stopped'}`]
        : [];
  return [
    `${r.mode === 'full' ? 'full pass' : 'marked candidates'}${r.resumed ? ' (resumed)' : ''}: ${r.candidates.repositories} repositories, ${r.candidates.digests} digests`,
    `read: ${r.scanned.links} links, ${r.scanned.descriptors} descriptors, ${r.scanned.manifests} manifests${r.complete ? '' : ' (incomplete)'}`,
    `${r.dryRun ? 'would free' : 'found'}: ${tally(r.found)}`,
    ...(r.dryRun ? [] : [`freed: ${tally(r.freed)}`, `kept (changed since read): ${r.raced.links} links, ${r.raced.descriptors} descriptors`]),
    ...(r.unreadable.length ? [`repositories with unreadable manifests (links kept): ${r.unreadable.join(' ')}`] : []),
    ...(r.unlisted.length ? [`${r.dryRun ? 'would remove' : 'removed'} from the catalog (no manifest left): ${r.unlisted.join(' ')}`] : []),
    `cost: DynamoDB ${calls(r.cost.dynamo)} (${r.cost.capacityUnits} capacity units: ${r.cost.readUnits} read, ${r.cost.writeUnits} write); storage ${calls(r.cost.storage)}`,
    ...stopped,
    ...(r.orphans ? describeOrphans(r.orphans, r.dryRun) : []),
  ];
}

/** The orphan sweep's part of the report (lib/registry/orphans.ts). */
function describeOrphans(o: OrphanReport, dryRun: boolean): string[] {
  const tally = (t: OrphanReport['found']) => `${t.objects} objects, ${t.bytes} bytes, ${t.writes} incomplete multipart uploads`;
  const calls = (c: Record<string, number>) => Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  return [
    `orphans: listed ${o.listed} objects${o.complete ? ' (all of storage)' : `, the next run continues after ${o.cursor ?? 'the start'}`}${o.unjudged ? `; ${o.unjudged} kept unjudged (the index reads ran out of time)` : ''}`,
    `orphans ${dryRun ? 'that would be freed' : 'found'}: ${tally(o.found)}`,
    ...(dryRun ? [] : [`orphans freed: ${tally(o.freed)}`]),
    // Unnamed objects are noted first and freed by a later run, after the index has caught up.
    `orphan suspects ${dryRun ? 'that would be noted' : 'noted'}: ${o.noted.objects} objects, ${o.noted.bytes} bytes (a later run frees them); ${o.waiting} waiting; ${o.cleared} ${dryRun ? 'that would be forgotten' : 'forgotten'} (named, live or changed since)`,
    `orphans cost: DynamoDB ${calls(o.cost.dynamo)} (${o.cost.capacityUnits} capacity units); storage ${calls(o.cost.storage)}`,
  ];
}
