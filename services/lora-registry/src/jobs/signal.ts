/** A wake-up call: wait() resolves on notify() or after a timeout, whichever is first. */
export class Signal {
  private waiters = new Set<() => void>();
  private raised = false;

  notify(): void {
    this.raised = true;
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  /** Resolves true when notified (also for a notify() since the last wait), false on timeout. */
  wait(timeoutMs: number): Promise<boolean> {
    if (this.raised) {
      this.raised = false;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.raised = false;
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        resolve(false);
      }, timeoutMs);
      this.waiters.add(wake);
    });
  }
}
