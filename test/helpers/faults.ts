/**
 * The fault layer of the tests: middleware on both SDK clients (the TestRegistry's `db` and
 * `s3`) and a wrapper around the filesystem driver's methods, so that chosen calls of a flow can
 *
 *   fail          fail before it applies (a refused connection, once the SDK gave up);
 *   lose          apply, then lose the answer: the caller gets a timeout;
 *   lose-retried  apply, lose the answer, and let the SDK send it again: the caller gets the
 *                 retry's answer (a conditional write then meets its own applied write);
 *   delay         hold the call, and apply it only after `delayMs` or when release() is
 *                 called: a stalled request, whose lease a test can let run out meanwhile;
 *   throttle      be refused by a busy backend: S3 503 SlowDown, DynamoDB
 *                 ProvisionedThroughputExceeded (transactions included); not applied;
 *   conflict      DynamoDB writes only: TransactionConflict on every attempt, through the
 *                 registry's own conflict retries (lib/metadata/dynamo/table.ts), which then give
 *                 up; not applied.
 *
 * Calls are counted from `arm()` (or `record()`) in the order they are sent, one count per call
 * the code makes (SDK retries and the registry's conflict retries of it are the same call; a
 * command the code sends again, as transact() does after a lost answer, is a new call). The
 * injection sits outside the SDK's retry loop: a fault is what the code sees once the SDK has
 * given up, except `lose-retried`, which replays the SDK's retry itself.
 *
 * Usage:
 *   const faults = injectFaults(r, { delayMs: 1300 });
 *   faults.record();  await flow();  const calls = faults.disarm();   // what the flow calls
 *   faults.arm(3, 'lose');  await flow();  faults.disarm();            // lose call #3's answer
 *   faults.arm(nth('TransactWriteItemsCommand', 0), 'lose', { after: () => race() });
 *                                      // another request runs between the write and its lost answer
 *
 * holdBefore() (at the end) is the one-off form of a hold: a deterministic interleaving of
 * another request at one exact DynamoDB call, without a layer.
 */
import type { MiddlewareStack } from '@smithy/types';
import type { TestRegistry } from './registry.js';

export type FaultKind = 'fail' | 'lose' | 'lose-retried' | 'delay' | 'throttle' | 'conflict';
export const FAULT_KINDS: FaultKind[] = ['fail', 'lose', 'lose-retried', 'delay', 'throttle', 'conflict'];

/** Where a call goes: 'dynamodb', 's3' or 'fs'. */
export type Backend = 'dynamodb' | 's3' | 'fs';

export interface CallRecord {
  index: number;
  backend: Backend;
  /** Command name (UpdateItemCommand, PutObjectCommand) or driver method (objects.put, ingester.append). */
  name: string;
  /** The command's input (SDK) or the method's arguments (fs), for predicates. */
  input: unknown;
  /** What was injected into this call, if anything. */
  fault?: FaultKind;
}

/** Which call to hit: its index since arm(), or a call the predicate accepts. */
export type Target = number | ((call: CallRecord) => boolean);

/** DynamoDB commands that write (the only ones a transaction conflict applies to). */
export const DYNAMO_WRITES = new Set(['PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand', 'TransactWriteItemsCommand', 'BatchWriteItemCommand']);

/** Whether a call writes: a DynamoDB write, or anything else that is not a read. */
export function isWrite(call: Pick<CallRecord, 'backend' | 'name'>): boolean {
  if (call.backend === 'dynamodb') return DYNAMO_WRITES.has(call.name);
  return !/^(Get|Head|List)|\.(get|open|list|readWritten|stat)$/.test(call.name);
}

/** The `n`-th call (0-based) of a command, optionally one whose input the predicate accepts. */
export function nth(name: string, n: number, where: (input: any) => boolean = () => true): (call: CallRecord) => boolean {
  return nthCall((call) => call.name === name && where(call.input), n);
}

/** The `n`-th call (0-based) the predicate accepts. */
export function nthCall(accept: (call: CallRecord) => boolean, n: number): (call: CallRecord) => boolean {
  let seen = 0;
  return (call) => accept(call) && seen++ === n;
}

/** The faults that can happen to a call: the filesystem neither throttles nor retries; only DynamoDB writes conflict. */
export function faultsFor(call: Pick<CallRecord, 'backend' | 'name'>): FaultKind[] {
  if (call.backend === 'fs') return ['fail', 'lose', 'delay'];
  if (call.backend === 's3' || !DYNAMO_WRITES.has(call.name)) return FAULT_KINDS.filter((f) => f !== 'conflict');
  return FAULT_KINDS;
}

export interface FaultOptions {
  /** How long `delay` holds a call back (default 1,300 ms: past a 1 s lease). */
  delayMs?: number;
}

export interface PlanOptions {
  /** How many calls the target may hit (default 1). */
  times?: number;
  /** Runs before the faulted call goes on (the call is held meanwhile). */
  before?: () => Promise<unknown>;
  /** Runs once the faulted call has applied, before its answer (or the loss of it) reaches the caller. */
  after?: () => Promise<unknown>;
}

interface Plan extends PlanOptions {
  at: Target;
  fault: FaultKind;
  hits: number;
}

export class FaultLayer {
  delayMs: number;
  private counting = false;
  private plans: Plan[] = [];
  private calls: CallRecord[] = [];
  private readonly hooks = new WeakMap<CallRecord, Plan>();
  private readonly holding = new Set<() => void>();
  private heldWaiters: (() => void)[] = [];

  constructor(opts: FaultOptions = {}) {
    this.delayMs = opts.delayMs ?? 1300;
  }

  /** Counts calls from now on without injecting anything. */
  record(): void {
    this.calls = [];
    this.plans = [];
    this.counting = true;
  }

  /** Counts calls from now on and injects `fault` into call number `at` (0-based), or the calls `at` accepts. */
  arm(at: Target, fault: FaultKind, opts: PlanOptions = {}): void {
    this.record();
    this.add(at, fault, opts);
  }

  /** Adds a fault to the armed ones, counting on (a predicate sees only the calls from now on). */
  add(at: Target, fault: FaultKind, opts: PlanOptions = {}): void {
    this.counting = true;
    this.plans.push({ at, fault, hits: 0, ...opts });
  }

  /** Stops counting and injecting; returns the calls seen since record() / arm(). */
  disarm(): CallRecord[] {
    this.counting = false;
    this.plans = [];
    return this.calls;
  }

  /** The calls seen so far since record() / arm(). */
  get seen(): readonly CallRecord[] {
    return this.calls;
  }

  /** Resolves once a `delay` fault holds a call. */
  whenHeld(): Promise<void> {
    if (this.holding.size) return Promise.resolve();
    return new Promise((res) => this.heldWaiters.push(res));
  }

  /** Lets every held call go on now. */
  release(): void {
    for (const go of [...this.holding]) go();
  }

  /** Whether an armed fault has been injected. */
  get fired(): boolean {
    return this.calls.some((c) => c.fault !== undefined);
  }

  /** Registers a call; returns the fault to inject into it, if any. */
  enter(backend: Backend, name: string, input: unknown): FaultKind | undefined {
    if (!this.counting) return undefined;
    const call: CallRecord = { index: this.calls.length, backend, name, input };
    this.calls.push(call);
    // Every predicate sees every call (nth() counts what it sees); the first plan that wants it gets it.
    const wanted = this.plans.filter((p) => p.hits < (p.times ?? 1) && (typeof p.at === 'number' ? p.at === call.index : p.at(call)));
    const plan = wanted[0];
    if (plan) {
      if (!faultsFor(call).includes(plan.fault)) throw new Error(`fault ${plan.fault} does not apply to ${backend} ${name}`);
      plan.hits++;
      call.fault = plan.fault;
      this.hooks.set(call, plan);
    }
    return call.fault;
  }

  /**
   * Runs `apply` (the call itself) under the fault `enter()` gave `call`, with its plan's hooks.
   * `again` is a fresh send of the same call.
   */
  async inject<T>(backend: Backend, name: string, call: CallRecord | undefined, apply: () => Promise<T>, again: () => Promise<T> = apply): Promise<T> {
    const fault = call?.fault;
    if (fault === undefined) return apply();
    const plan = this.hooks.get(call!);
    await plan?.before?.();
    const applied = async <R>(run: () => Promise<R>): Promise<R> => {
      try {
        return await run();
      } finally {
        await plan?.after?.();
      }
    };
    switch (fault) {
      case 'fail':
        throw refused(backend, name);
      case 'lose':
        await applied(apply).catch(() => undefined);
        throw timedOut(backend, name);
      case 'lose-retried':
        await applied(apply).catch(() => undefined);
        return again();
      case 'delay':
        await new Promise<void>((res) => {
          const go = () => {
            clearTimeout(timer);
            this.holding.delete(go);
            res();
          };
          const timer = setTimeout(go, this.delayMs);
          this.holding.add(go);
          for (const w of this.heldWaiters.splice(0)) w();
        });
        return applied(apply);
      case 'throttle':
        throw throttled(backend, name);
      case 'conflict':
        throw new Error(`conflict is injected by the SDK middleware (${backend} ${name})`);
    }
  }
}

const installed = new WeakMap<TestRegistry, FaultLayer>();

/**
 * Installs the fault layer on a running test registry: both SDK clients, and the filesystem
 * driver's object store and ingester when the registry stores on the filesystem. Installed
 * once per registry; later calls return the same layer (with `opts` applied).
 */
export function injectFaults(r: TestRegistry, opts: FaultOptions = {}): FaultLayer {
  const existing = installed.get(r);
  if (existing) {
    existing.delayMs = opts.delayMs ?? existing.delayMs;
    return existing;
  }
  const layer = new FaultLayer(opts);
  installed.set(r, layer);
  addMiddleware(layer, r.db, 'dynamodb');
  addMiddleware(layer, r.s3, 's3');
  if (r.config.storage === 'fs') {
    wrapMethods(layer, r.registry.storage.objects, 'objects', ['put', 'get', 'open', 'list', 'delete']);
    wrapMethods(layer, r.registry.storage.ingester, 'ingester', ['append', 'commit', 'readWritten', 'release', 'abort']);
  }
  return layer;
}

const CALL = Symbol('skiffFaultCall');

// Both clients' stacks take the same initialize middleware; their input/output unions differ.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyStack = { middlewareStack: MiddlewareStack<any, any> };

function addMiddleware(layer: FaultLayer, client: AnyStack, backend: Backend): void {
  // Outermost: one count per call the code makes, before the registry's own conflict retries.
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (layer.enter(backend, context.commandName ?? 'unknown', args.input)) (context as Record<symbol, unknown>)[CALL] = layer.seen[layer.seen.length - 1];
      return next(args);
    },
    { step: 'initialize', priority: 'high', name: 'skiffFaultCount' },
  );
  // Innermost of the initialize step: inside the conflict retries (so a transaction conflict is
  // seen by them on every attempt), outside the SDK's retry loop (which is in finalizeRequest).
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const call = (context as Record<symbol, CallRecord | undefined>)[CALL];
      const name = context.commandName ?? 'unknown';
      if (call?.fault === 'conflict') throw transactionConflict(name, args.input as { TransactItems?: unknown[] });
      return layer.inject(backend, name, call, () => next(args), () => next(args));
    },
    { step: 'initialize', priority: 'low', name: 'skiffFaultInject' },
  );
}

function wrapMethods(layer: FaultLayer, target: object, prefix: string, methods: string[]): void {
  const obj = target as Record<string, unknown>;
  for (const method of methods) {
    const original = obj[method];
    if (typeof original !== 'function') continue;
    const name = `${prefix}.${method}`;
    obj[method] = function (this: unknown, ...args: unknown[]) {
      const call = layer.enter('fs', name, args) ? layer.seen[layer.seen.length - 1] : undefined;
      return layer.inject('fs', name, call, () => Promise.resolve((original as (...a: unknown[]) => unknown).apply(this, args)));
    };
  }
}

function refused(backend: Backend, name: string): Error {
  const code = backend === 'fs' ? 'EIO' : 'ECONNREFUSED';
  return Object.assign(new Error(`injected: ${backend} ${name} failed before it applied (${code})`), { code, $metadata: {} });
}

function timedOut(backend: Backend, name: string): Error {
  return Object.assign(new Error(`injected: ${backend} ${name} applied, its answer was lost`), {
    name: 'TimeoutError',
    code: backend === 'fs' ? 'EIO' : 'ETIMEDOUT',
    $metadata: {},
  });
}

function throttled(backend: Backend, name: string): Error {
  if (backend === 's3') {
    return Object.assign(new Error(`injected: ${name}: Please reduce your request rate.`), {
      name: 'SlowDown',
      Code: 'SlowDown',
      $fault: 'server',
      $metadata: { httpStatusCode: 503 },
    });
  }
  return Object.assign(new Error(`injected: ${name}: The level of configured provisioned throughput for the table was exceeded.`), {
    name: 'ProvisionedThroughputExceededException',
    $fault: 'client',
    $metadata: { httpStatusCode: 400 },
  });
}

/** What DynamoDB answers a write that meets a transaction in flight on its item. */
function transactionConflict(name: string, input: { TransactItems?: unknown[] }): Error {
  if (name !== 'TransactWriteItemsCommand') {
    return Object.assign(new Error('injected: Transaction is ongoing for the item'), { name: 'TransactionConflictException', $fault: 'client', $metadata: { httpStatusCode: 400 } });
  }
  return Object.assign(new Error('injected: Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]'), {
    name: 'TransactionCanceledException',
    $fault: 'client',
    $metadata: { httpStatusCode: 400 },
    CancellationReasons: (input.TransactItems ?? [{}]).map(() => ({ Code: 'TransactionConflict' })),
  });
}

/**
 * Holds the next call on `client` matching `match` (by command name and input) until `during`
 * has run, then lets it go: a deterministic interleaving of another request at that exact
 * point. Resolves with `during`'s result once it ran.
 */
export function holdBefore<T>(client: AnyStack, match: (command: string, input: Record<string, unknown>) => boolean, during: () => Promise<T>): Promise<T> {
  const name = `hold-${Math.random().toString(36).slice(2)}`;
  return new Promise<T>((resolve, reject) => {
    client.middlewareStack.add(
      (next, ctx) => async (args) => {
        if (!client.middlewareStack.identify().some((m) => m.startsWith(name)) || !match(ctx.commandName!, args.input as Record<string, unknown>)) return next(args);
        client.middlewareStack.remove(name);
        try {
          resolve(await during());
        } catch (err) {
          reject(err);
        }
        return next(args);
      },
      { step: 'initialize', priority: 'high', name },
    );
  });
}
