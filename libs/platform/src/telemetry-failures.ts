import type { Attributes, Counter } from "@opentelemetry/api";
import type { Logger } from "pino";
import { meter } from "./telemetry.js";

export interface RepeatedFailuresOptions {
  /** Metric name prefix, e.g. "machine_cache.download". */
  name: string;
  /** What fails, for the log line, e.g. "download". */
  what: string;
  /** Consecutive failures of one key that count as repeated (default 3). */
  threshold?: number;
  logger: Logger;
}

/**
 * Tracks consecutive failures per key (one LoRA, one blob): every failure
 * is counted (`<name>.failures`); when one key fails `threshold` times in a
 * row a warning is logged and `<name>.repeated_failures` counts it, and the
 * gauge `<name>.failing` tells how many keys are failing repeatedly right
 * now — the number an alert watches. A success clears the key.
 */
export class RepeatedFailures {
  private readonly counts = new Map<string, number>();
  private readonly failures: Counter;
  private readonly repeated: Counter;
  private readonly threshold: number;

  constructor(private readonly opts: RepeatedFailuresOptions) {
    this.threshold = opts.threshold ?? 3;
    const m = meter();
    this.failures = m.createCounter(`${opts.name}.failures`, { description: `Failed ${opts.what} attempts` });
    this.repeated = m.createCounter(`${opts.name}.repeated_failures`, {
      description: `Times one key reached ${this.threshold} consecutive ${opts.what} failures`,
    });
    m.createObservableGauge(`${opts.name}.failing`, {
      description: `Keys whose last ${this.threshold} or more ${opts.what}s failed`,
    }).addCallback((r) => r.observe([...this.counts.values()].filter((n) => n >= this.threshold).length));
  }

  /** Records a failure of key; returns how many in a row it has now. */
  failed(key: string, attributes: Attributes, err?: unknown): number {
    const n = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, n);
    this.failures.add(1, attributes);
    if (n === this.threshold || (n > this.threshold && n % this.threshold === 0)) {
      this.repeated.add(1, attributes);
      this.opts.logger.warn(
        { key, consecutive_failures: n, ...attributes, err },
        `repeated ${this.opts.what} failures`,
      );
    }
    return n;
  }

  succeeded(key: string): void {
    this.counts.delete(key);
  }
}
