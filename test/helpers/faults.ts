/**
 * Fault injection for a test registry: middleware on both SDK clients (the TestRegistry's `db`
 * and `s3`) and a wrapper around the filesystem driver's methods, so that one chosen call of a
 * flow can
 *
 *   fail          fail before it applies (a refused connection);
 *   lose          apply, then lose the answer: the caller gets a timeout;
 *   lose-retried  apply, lose the answer, and let the SDK send it again: the caller gets the
 *                 retry's answer (a conditional write then meets its own applied write);
 *   delay         hold the call, and apply it only after `delayMs` or when release() is
 *                 called: a stalled request, whose lease a test can let run out meanwhile;
 *   throttle      be refused by a busy backend: S3 503 SlowDown, DynamoDB
 *                 ProvisionedThroughputExceeded, or for a transaction TransactionConflict on
 *                 every attempt (the registry's own conflict retries included).
 *
 * Calls are counted from `arm()` (or `record()`) in the order they are sent, one count per call
 * the code makes (SDK retries and the registry's conflict retries of it are the same call). The
 * injection sits outside the SDK's retry loop: a fault is what the code sees once the SDK has
 * given up, except `lose-retried`, which replays the SDK's retry itself.
 *
 * Usage:
 *   const faults = injectFaults(r, { delayMs: 1300 });
 *   faults.record();  await flow();  const calls = faults.disarm();   // what the flow calls
 *   faults.arm(3, 'lose');  await flow();  faults.disarm();            // lose call #3's answer
 */
import type { MiddlewareStack } from '@smithy/types';
import type { TestRegistry } from './registry.js';

export type FaultKind = 'fail' | 'lose' | 'lose-retried' | 'delay' | 'throttle';
export const FAULT_KINDS: FaultKind[] = ['fail', 'lose', 'lose-retried', 'delay', 'throttle'];

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

/** Which call to hit: its index since arm(), or the first call the predicate accepts. */
export type Target = number | ((call: CallRecord) => boolean);

/** The `n`-th call (0-based) of a command, optionally one whose input the predicate accepts. */
export function nth(name: string, n: number, where: (input: any) => boolean = () => true): (call: CallRecord) => boolean {
  let seen = 0;
  return (call) => call.name === name && where(call.input) && seen++ === n;
}

/** The faults that make sense for a call: the filesystem neither throttles nor retries. */
export function faultsFor(call: Pick<CallRecord, 'backend'>): FaultKind[] {
  return call.backend === 'fs' ? ['fail', 'lose', 'delay'] : FAULT_KINDS;
}

export interface FaultOptions {
  /** How long `delay` holds a call back (default 1,300 ms: past a 1 s lease). */
  delayMs?: number;
}

interface Plan {
  at: Target;
  fault: FaultKind;
}

export class FaultLayer {
  delayMs: number;
  private counting = false;
  private plan: Plan | undefined;
  private calls: CallRecord[] = [];
  private readonly holding = new Set<() => void>();
  private heldWaiters: (() => void)[] = [];

  constructor(opts: FaultOptions = {}) {
    this.delayMs = opts.delayMs ?? 1300;
  }

  /** Counts calls from now on without injecting anything. */
  record(): void {
    this.calls = [];
    this.plan = undefined;
    this.counting = true;
  }

  /** Counts calls from now on and injects `fault` into call number `at` (0-based), or the first call `at` accepts. */
  arm(at: Target, fault: FaultKind): void {
    this.record();
    this.plan = { at, fault };
  }

  /** Stops counting and injecting; returns the calls seen since record() / arm(). */
  disarm(): CallRecord[] {
    this.counting = false;
    this.plan = undefined;
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

  /** Whether the armed fault has been injected. */
  get fired(): boolean {
    return this.calls.some((c) => c.fault !== undefined);
  }

  /** Registers a call; returns the fault to inject into it, if any. */
  enter(backend: Backend, name: string, input: unknown): FaultKind | undefined {
    if (!this.counting) return undefined;
    const call: CallRecord = { index: this.calls.length, backend, name, input };
    this.calls.push(call);
    const at = this.plan?.at;
    if (this.plan && !this.fired && (typeof at === 'number' ? at === call.index : at!(call))) {
      call.fault = this.plan.fault;
      if (backend === 'fs' && !faultsFor(call).includes(call.fault)) throw new Error(`fault ${call.fault} does not apply to ${name}`);
    }
    return call.fault;
  }

  /** Runs `apply` (the call itself) under `fault`. `again` is a fresh send of the same call. */
  async inject<T>(backend: Backend, name: string, fault: FaultKind | undefined, apply: () => Promise<T>, again: () => Promise<T> = apply): Promise<T> {
    switch (fault) {
      case undefined:
        return apply();
      case 'fail':
        throw refused(backend, name);
      case 'lose':
        await apply().catch(() => undefined);
        throw timedOut(backend, name);
      case 'lose-retried':
        await apply().catch(() => undefined);
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
        return apply();
      case 'throttle':
        throw throttled(backend, name);
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
      const fault = layer.enter(backend, context.commandName ?? 'unknown', args.input);
      (context as Record<symbol, unknown>)[CALL] = fault;
      return next(args);
    },
    { step: 'initialize', priority: 'high', name: 'skiffFaultCount' },
  );
  // Innermost of the initialize step: inside the conflict retries (so a transaction conflict is
  // seen by them on every attempt), outside the SDK's retry loop (which is in finalizeRequest).
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const fault = (context as Record<symbol, FaultKind | undefined>)[CALL];
      const name = context.commandName ?? 'unknown';
      // Throttling a transaction is a conflict: the registry retries it, so refuse each attempt.
      if (fault === 'throttle' && backend === 'dynamodb' && /^TransactWrite/.test(name)) throw transactionConflict();
      return layer.inject(backend, name, fault, () => next(args), () => next(args));
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
      const fault = layer.enter('fs', name, args);
      return layer.inject('fs', name, fault, () => Promise.resolve((original as (...a: unknown[]) => unknown).apply(this, args)));
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

function transactionConflict(): Error {
  return Object.assign(new Error('injected: Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict]'), {
    name: 'TransactionCanceledException',
    $fault: 'client',
    $metadata: { httpStatusCode: 400 },
    CancellationReasons: [{ Code: 'TransactionConflict' }],
  });
}
