/**
 * Faults on a test registry's DynamoDB client (middleware on TestRegistry.db), at chosen calls
 * of a flow. Calls are counted as the app sends them: an SDK retry or a conflict retry of one
 * command is the same call, a command the app sends again is a new one. The faults, and where
 * they act:
 *
 *   fail       the request never reaches DynamoDB (connection reset), once: the SDK retries
 *   lose       DynamoDB applies it, the answer is lost (timeout), once: the SDK resends it
 *   lose-app   applied, and the timeout reaches the app (the SDK's retries are spent)
 *   throttle   ProvisionedThroughputExceeded reaches the app (after the SDK's retries); not applied
 *   conflict   writes only: TransactionConflict on every attempt, through the app's own conflict
 *              retries (lib/metadata/dynamo/table.ts), which then give up; not applied
 *
 * A local injector for the manifest flows; the uploads work has a fault layer for both SDK
 * clients and the filesystem (test/helpers/faults.ts) that this may later merge into.
 */
import type { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';

export type DynamoFault = 'fail' | 'lose' | 'lose-app' | 'throttle' | 'conflict';
export const DYNAMO_FAULTS: DynamoFault[] = ['fail', 'lose', 'lose-app', 'throttle', 'conflict'];

/** Commands that write (the only ones a transaction conflict or a lost write applies to). */
export const WRITES = new Set(['PutItemCommand', 'UpdateItemCommand', 'DeleteItemCommand', 'TransactWriteItemsCommand', 'BatchWriteItemCommand']);

export interface DynamoFaults {
  /** Commands sent since the last arm() or count(), by name, in order. */
  readonly calls: string[];
  /** Whether the armed fault has acted. */
  readonly fired: boolean;
  /** Counts calls from now on, without faults. */
  count(): void;
  /**
   * Counts calls from now on, and injects `fault` into call number `at` (0-based; or each of
   * several), counting every call, or with `among: 'writes'` only the writes.
   */
  arm(at: number | number[], fault: DynamoFault, among?: 'all' | 'writes'): void;
  disarm(): void;
  remove(): void;
}

const timeout = () => Object.assign(new Error('socket timed out after the request was sent'), { name: 'TimeoutError' });
const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
const serviceError = (name: string, extra: Record<string, unknown> = {}) =>
  Object.assign(new Error(`${name} (injected)`), { name, $fault: 'client', $metadata: { httpStatusCode: 400, attempts: 1 }, ...extra });

export function injectDynamoFaults(db: DynamoDBDocumentClient): DynamoFaults {
  let armed: { at: number[]; fault: DynamoFault; among: 'all' | 'writes' } | undefined;
  let writes = 0;
  let fired = false;
  const calls: string[] = [];
  // Per call: the fault it carries, and whether its one-shot transport fault already acted.
  const perCall = new WeakMap<object, { fault?: DynamoFault; spent: boolean }>();

  db.middlewareStack.add(
    (next, ctx) => async (args) => {
      const name = ctx.commandName!;
      const index = armed?.among === 'writes' ? (WRITES.has(name) ? writes++ : -1) : calls.length;
      calls.push(name);
      const fault = armed && armed.at.includes(index) && (WRITES.has(name) || !['lose-app', 'conflict'].includes(armed.fault)) ? armed.fault : undefined;
      perCall.set(ctx, { fault, spent: false });
      if (fault === 'throttle') {
        fired = true;
        throw serviceError('ProvisionedThroughputExceededException');
      }
      const out = await next(args);
      if (fault === 'lose-app') {
        fired = true;
        throw timeout();
      }
      return out;
    },
    { step: 'initialize', priority: 'high', name: 'faultsOuter' },
  );
  // Inside the app's conflict retries (added at normal priority in the same step).
  db.middlewareStack.add(
    (next, ctx) => async (args) => {
      if (perCall.get(ctx)?.fault === 'conflict') {
        fired = true;
        const input = args.input as { TransactItems?: unknown[] };
        if (ctx.commandName !== 'TransactWriteItemsCommand') throw serviceError('TransactionConflictException');
        throw serviceError('TransactionCanceledException', { CancellationReasons: (input.TransactItems ?? []).map(() => ({ Code: 'TransactionConflict' })) });
      }
      return next(args);
    },
    { step: 'initialize', priority: 'low', name: 'faultsConflict' },
  );
  // Inside the SDK's retries: what the network does to one attempt.
  db.middlewareStack.add(
    (next, ctx) => async (args) => {
      const state = perCall.get(ctx);
      if (!state || state.spent || (state.fault !== 'fail' && state.fault !== 'lose')) return next(args);
      state.spent = true;
      fired = true;
      if (state.fault === 'fail') throw reset();
      await next(args);
      throw timeout();
    },
    { step: 'deserialize', priority: 'high', name: 'faultsTransport' },
  );

  return {
    calls,
    get fired() {
      return fired;
    },
    count() {
      calls.length = 0;
      armed = undefined;
      fired = false;
    },
    arm(at, fault, among = 'all') {
      calls.length = 0;
      writes = 0;
      armed = { at: [at].flat(), fault, among };
      fired = false;
    },
    disarm() {
      armed = undefined;
    },
    remove() {
      for (const name of ['faultsOuter', 'faultsConflict', 'faultsTransport']) db.middlewareStack.remove(name);
    },
  };
}

/**
 * Holds the next call matching `match` (by command name and input) until `during` has run, then
 * lets it go: a deterministic interleaving of another request at that exact point. Resolves
 * with `during`'s result once it ran.
 */
export function holdBefore<T>(db: DynamoDBDocumentClient, match: (command: string, input: Record<string, unknown>) => boolean, during: () => Promise<T>): Promise<T> {
  const name = `hold-${Math.random().toString(36).slice(2)}`;
  return new Promise<T>((resolve, reject) => {
    db.middlewareStack.add(
      (next, ctx) => async (args) => {
        if (!db.middlewareStack.identify().some((m) => m.startsWith(name)) || !match(ctx.commandName!, args.input as Record<string, unknown>)) return next(args);
        db.middlewareStack.remove(name);
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
