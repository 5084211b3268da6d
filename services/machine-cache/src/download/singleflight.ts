/**
 * One run per key however many callers ask at once: later callers join the
 * run in flight and get its outcome.
 */
export class SingleFlight<V> {
  private readonly flights = new Map<string, Promise<V>>();

  run(key: string, fn: () => Promise<V>): { promise: Promise<V>; joined: boolean } {
    const existing = this.flights.get(key);
    if (existing) return { promise: existing, joined: true };
    const promise = (async () => {
      try {
        return await fn();
      } finally {
        this.flights.delete(key);
      }
    })();
    this.flights.set(key, promise);
    return { promise, joined: false };
  }

  has(key: string): boolean {
    return this.flights.has(key);
  }

  keys(): string[] {
    return [...this.flights.keys()];
  }

  /** Resolves when every run in flight has settled. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.flights.values()]);
  }
}
