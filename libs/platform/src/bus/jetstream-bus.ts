import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import type { StreamSpec } from "@emprops/contracts";
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
} from "./event-bus.js";

export interface JetStreamBusOptions {
  url: string;
  stream: string;
  subjects: string[];
  logger: Logger;
  /** Window in which a repeated msgId is dropped (default 10 minutes). */
  duplicateWindowMs?: number;
  /** Further streams with limits of their own (e.g. LORA_HOLDINGS). */
  streams?: StreamSpec[];
  name?: string;
}

const NANOS_PER_MS = 1_000_000;

/**
 * JetStream with a connection that is retried forever in the background:
 * a service starts and serves while NATS is down; publishing then fails
 * (callers keep an outbox) and consumers attach once NATS is back.
 */
export class JetStreamBus implements EventBus {
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private readonly ready: Promise<void>;
  private closed = false;
  private readonly consumers = new Set<{ stop(): Promise<void> }>();
  private readonly telemetry = new MessagingTelemetry();

  constructor(private readonly opts: JetStreamBusOptions) {
    this.ready = this.connectLoop();
    this.ready.catch(() => {});
  }

  get connected(): boolean {
    return !!this.nc && !this.nc.isClosed() && this.nc.info !== undefined && this.isUp;
  }
  private isUp = false;

  /** Resolves once connected and the stream exists. */
  whenReady(): Promise<void> {
    return this.ready;
  }

  private async connectLoop(): Promise<void> {
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        const nc = await connect({
          servers: this.opts.url,
          name: this.opts.name,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 500,
        });
        this.nc = nc;
        this.isUp = true;
        void this.watchStatus(nc);
        await this.ensureStream(nc);
        this.js = jetstream(nc);
        this.opts.logger.info({ url: this.opts.url, stream: this.opts.stream }, "connected to NATS JetStream");
        return;
      } catch (err) {
        const delay = Math.min(5_000, 200 * attempt);
        this.opts.logger.warn({ err, attempt, retry_in_ms: delay }, "NATS not reachable; retrying");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    throw new Error("bus closed");
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") this.isUp = false;
      if (s.type === "reconnect") this.isUp = true;
    }
  }

  private async ensureStream(nc: NatsConnection): Promise<void> {
    const jsm = await jetstreamManager(nc);
    const configs = [
      {
        name: this.opts.stream,
        subjects: this.opts.subjects,
        duplicate_window: (this.opts.duplicateWindowMs ?? 10 * 60_000) * NANOS_PER_MS,
      },
      ...(this.opts.streams ?? []).map((s) => ({
        name: s.name,
        subjects: s.subjects,
        max_age: s.maxAgeMs * NANOS_PER_MS,
        max_msgs_per_subject: s.maxMsgsPerSubject || -1,
        duplicate_window: s.duplicateWindowMs * NANOS_PER_MS,
      })),
    ];
    for (const config of configs) {
      try {
        await jsm.streams.info(config.name);
        await jsm.streams.update(config.name, config);
      } catch (err) {
        if (!String(err).includes("not found")) throw err;
        await jsm.streams.add(config);
      }
    }
  }

  async publish(subject: string, data: Uint8Array, opts: { msgId: string; headers?: Record<string, string> }) {
    const js = this.js;
    if (!js || !this.isUp) throw new Error("NATS is not connected");
    await this.telemetry.publish("nats", subject, opts.msgId, opts.headers, async (headers) => {
      const h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
      await js.publish(subject, data, { msgID: opts.msgId, headers: h, timeout: 5_000 });
    });
  }

  async consume(opts: ConsumerOptions): Promise<Consumer> {
    let stopped = false;
    let current: { close(): Promise<void | Error> } | undefined;
    const run = async () => {
      await this.ready;
      while (!stopped && !this.closed) {
        try {
          const nc = this.nc as NatsConnection;
          const jsm = await jetstreamManager(nc);
          await jsm.consumers.add(this.opts.stream, {
            durable_name: opts.durable,
            ack_policy: AckPolicy.Explicit,
            deliver_policy: DeliverPolicy.All,
            // filter_subjects needs nats-server 2.10; one subject works on older servers too (2.9 here).
            ...(opts.filterSubjects.length === 1
              ? { filter_subject: opts.filterSubjects[0] }
              : { filter_subjects: opts.filterSubjects }),
            max_deliver: opts.maxDeliver ?? -1,
            ack_wait: (opts.ackWaitMs ?? 30_000) * NANOS_PER_MS,
          });
          const consumer = await jetstream(nc).consumers.get(this.opts.stream, opts.durable);
          const messages = await consumer.consume({ max_messages: 64 });
          current = messages;
          // A stop() while attaching found nothing to close: close now, so the loop below ends.
          if (stopped || this.closed) void messages.close().catch(() => {});
          for await (const m of messages) {
            const msg: BusMessage = {
              subject: m.subject,
              data: m.data,
              headers: Object.fromEntries([...(m.headers?.keys() ?? [])].map((k) => [k, m.headers?.get(k) ?? ""])),
              deliveryCount: m.info.deliveryCount,
            };
            try {
              await this.telemetry.deliver("nats", { durable: opts.durable, ...msg, pending: m.info.pending }, () =>
                opts.handler(msg),
              );
              m.ack();
            } catch (err) {
              const delay = redeliveryDelayMs(msg.deliveryCount);
              this.opts.logger.warn(
                { err, subject: m.subject, durable: opts.durable, delivery: msg.deliveryCount, retry_in_ms: delay },
                "event handler failed; redelivering",
              );
              m.nak(delay);
            }
          }
        } catch (err) {
          if (stopped || this.closed) return;
          this.opts.logger.warn({ err, durable: opts.durable }, "consumer interrupted; re-attaching");
          await new Promise((r) => setTimeout(r, 1_000));
        }
      }
    };
    const done = run();
    const handle = {
      stop: async () => {
        stopped = true;
        await current?.close();
        await done.catch(() => {});
      },
    };
    this.consumers.add(handle);
    return handle;
  }

  follow(opts: FollowOptions): Follower {
    let stopped = false;
    let current: { close(): Promise<void | Error> } | undefined;
    let reachedEnd = false;
    let markCaughtUp!: () => void;
    const caughtUp = new Promise<void>((resolve) => (markCaughtUp = resolve));
    const reached = () => {
      if (reachedEnd) return;
      reachedEnd = true;
      markCaughtUp();
    };
    let lastSequence = 0;
    const run = async () => {
      await this.ready;
      while (!stopped && !this.closed) {
        try {
          const nc = this.nc as NatsConnection;
          if (!reachedEnd) {
            const { state } = await (await jetstreamManager(nc)).streams.info(opts.stream);
            if (state.messages === 0 || state.last_seq <= lastSequence) reached();
          }
          // An ordered consumer: ephemeral, in stream order, re-created by the client after a gap.
          const consumer = await jetstream(nc).consumers.get(opts.stream, {
            filter_subjects: opts.filterSubject,
            ...(lastSequence > 0
              ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: lastSequence + 1 }
              : { deliver_policy: DeliverPolicy.All }),
          });
          const messages = await consumer.consume();
          current = messages;
          if (stopped || this.closed) void messages.close().catch(() => {});
          for await (const m of messages) {
            lastSequence = m.seq;
            try {
              opts.handler({
                subject: m.subject,
                data: m.data,
                streamSequence: m.seq,
                storedAt: new Date(Math.floor(m.info.timestampNanos / 1_000_000)),
              });
            } catch (err) {
              this.opts.logger.error({ err, subject: m.subject, stream: opts.stream }, "stream message skipped");
            }
            if (m.info.pending === 0) reached();
          }
        } catch (err) {
          if (stopped || this.closed) return;
          this.opts.logger.warn({ err, stream: opts.stream }, "stream follower interrupted; resuming");
          await new Promise((r) => setTimeout(r, 1_000));
        }
      }
    };
    const done = run();
    const handle = {
      caughtUp,
      stop: async () => {
        stopped = true;
        await current?.close();
        await done.catch(() => {});
      },
    };
    this.consumers.add(handle);
    return handle;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.stop()));
    await this.nc?.drain().catch(() => {});
  }
}
