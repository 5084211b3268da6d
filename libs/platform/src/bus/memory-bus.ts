import type { Logger } from "pino";
import { MessagingTelemetry } from "../telemetry-messaging.js";
import {
  type BusMessage,
  type Consumer,
  type ConsumerOptions,
  type EventBus,
  type Follower,
  type FollowOptions,
  redeliveryDelayMs,
  subjectMatches,
} from "./event-bus.js";

interface Stored {
  seq: number;
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
  storedAt: Date;
}

/**
 * An in-process stand-in for JetStream, for `npm start` on a machine with no
 * NATS: durable within the process only. Never used in production.
 */
export class MemoryBus implements EventBus {
  private readonly log: Stored[] = [];
  private readonly seenIds = new Set<string>();
  private readonly wakers = new Set<() => void>();
  private closed = false;
  private readonly telemetry = new MessagingTelemetry();
  readonly connected = true;

  whenReady(): Promise<void> {
    return Promise.resolve();
  }

  constructor(logger: Logger) {
    logger.warn(
      "NO NATS: using an in-process event bus. Events are lost on restart and never reach other processes. Set NATS_URL or install nats-server.",
    );
  }

  async publish(subject: string, data: Uint8Array, opts: { msgId: string; headers?: Record<string, string> }) {
    if (this.seenIds.has(opts.msgId)) return;
    this.seenIds.add(opts.msgId);
    await this.telemetry.publish("memory", subject, opts.msgId, opts.headers, async (headers) => {
      this.log.push({ seq: this.log.length + 1, subject, data, headers, storedAt: new Date() });
    });
    for (const wake of this.wakers) wake();
  }

  async consume(opts: ConsumerOptions): Promise<Consumer> {
    let stopped = false;
    let wake = () => {};
    const waker = () => wake();
    this.wakers.add(waker);
    const run = async () => {
      let next = 0;
      while (!stopped && !this.closed) {
        const item = this.log[next];
        if (!item) {
          await new Promise<void>((resolve) => (wake = resolve));
          continue;
        }
        next++;
        if (!opts.filterSubjects.some((p) => subjectMatches(p, item.subject))) continue;
        for (let delivery = 1; !stopped; delivery++) {
          const msg: BusMessage = { ...item, deliveryCount: delivery };
          try {
            await this.telemetry.deliver(
              "memory",
              { durable: opts.durable, ...msg, pending: this.log.length - next },
              () => opts.handler(msg),
            );
            break;
          } catch {
            if (opts.maxDeliver && delivery >= opts.maxDeliver) break;
            await new Promise((r) => setTimeout(r, redeliveryDelayMs(delivery)));
          }
        }
      }
    };
    const done = run();
    return {
      stop: async () => {
        stopped = true;
        this.wakers.delete(waker);
        wake();
        await done;
      },
    };
  }

  /** Every stored message matching the filter (the stand-in has one log, no stream limits). */
  follow(opts: FollowOptions): Follower {
    let stopped = false;
    let wake = () => {};
    const waker = () => wake();
    this.wakers.add(waker);
    let markCaughtUp!: () => void;
    const caughtUp = new Promise<void>((resolve) => (markCaughtUp = resolve));
    const run = async () => {
      let next = 0;
      while (!stopped && !this.closed) {
        const item = this.log[next];
        if (!item) {
          markCaughtUp();
          await new Promise<void>((resolve) => (wake = resolve));
          continue;
        }
        next++;
        if (!subjectMatches(opts.filterSubject, item.subject)) continue;
        try {
          opts.handler({ subject: item.subject, data: item.data, streamSequence: item.seq, storedAt: item.storedAt });
        } catch {
          // skipped, as on JetStream
        }
      }
    };
    const done = run();
    return {
      caughtUp,
      stop: async () => {
        stopped = true;
        this.wakers.delete(waker);
        wake();
        await done;
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.wakers) wake();
  }
}
