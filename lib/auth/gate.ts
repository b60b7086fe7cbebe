/**
 * Bounds concurrent password verifications. Each scrypt takes 32 MiB and a thread of libuv's
 * pool, the pool that also serves file reads: unbounded, a burst of logins (made-up names cost
 * the same) queues every blob read behind it. At most `concurrency` verifications run at once;
 * up to `queue` more callers wait their turn; anyone past that is turned away at once (the
 * caller answers 429 with Retry-After) instead of joining an ever longer line.
 */
export interface GateTicket {
  /** Runs `work` in a verification slot, waiting for one if all are busy. */
  run<T>(work: () => Promise<T>): Promise<T>;
  /** Gives up the ticket's place (idempotent); call it whether or not run() was used. */
  leave(): void;
}

export class VerificationGate {
  private running = 0;
  private admitted = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly concurrency: number,
    readonly queue: number,
  ) {}

  /** A place in line, or undefined when the line is full. */
  admit(): GateTicket | undefined {
    if (this.admitted >= this.concurrency + this.queue) return undefined;
    this.admitted++;
    let left = false;
    return {
      run: async (work) => {
        await this.acquire();
        try {
          return await work();
        } finally {
          this.release();
        }
      },
      leave: () => {
        if (left) return;
        left = true;
        this.admitted--;
      },
    };
  }

  private acquire(): Promise<void> {
    if (this.running < this.concurrency) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(): void {
    const next = this.waiting.shift();
    // The slot passes straight to the next in line; `running` stays the same.
    if (next) next();
    else this.running--;
  }
}
