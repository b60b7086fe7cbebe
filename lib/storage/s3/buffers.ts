/**
 * Reused part buffers. A fresh 8 MiB buffer per part costs page faults on first touch and
 * garbage-collector work later, which profiling showed to be a third of the registry's CPU on a
 * streamed upload; a small pool of buffers that outlive requests removes both.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    /** How many idle buffers to keep: memory held while idle is at most size x keep. */
    private readonly keep: number,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buffer: Buffer): void {
    if (buffer.length === this.size && this.free.length < this.keep) this.free.push(buffer);
  }
}
