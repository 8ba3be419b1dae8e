/**
 * Device changes on one appliance are serialized (os-brick takes a host-wide lock around
 * connect/disconnect for the same reason: dm and export changes on one host must not interleave).
 * Waiting for a device to appear does not take the lock.
 */
export class HostLock {
  private tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
