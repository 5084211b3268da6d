import {
  type Attributes,
  context,
  type Counter,
  type Histogram,
  type ObservableGauge,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { meter, tracer } from "./telemetry.js";

/** The subject without its last token (the user or machine id): a low-cardinality name for spans and metrics. */
export function subjectFamily(subject: string): string {
  const i = subject.lastIndexOf(".");
  return i > 0 ? subject.slice(0, i) : subject;
}

/**
 * Messaging telemetry shared by every EventBus: a PRODUCER span per publish
 * whose context travels in the message headers (W3C traceparent), and a
 * CONSUMER span per delivery continuing that trace, so an event's consumers
 * appear in the trace of the request that caused it. Instruments are made
 * when the bus is built, after the SDK started.
 */
export class MessagingTelemetry {
  private readonly sent: Counter;
  private readonly processed: Counter;
  private readonly duration: Histogram;
  private readonly lag: ObservableGauge;
  private readonly pending = new Map<string, number>();

  constructor() {
    const m = meter();
    this.sent = m.createCounter("messaging.client.sent.messages", {
      description: "Messages published, by subject family and outcome (ok, error)",
    });
    this.processed = m.createCounter("messaging.client.consumed.messages", {
      description: "Deliveries handled by a durable consumer, by outcome (ack, retry)",
    });
    this.duration = m.createHistogram("messaging.process.duration", {
      description: "Time a consumer's handler took per delivery",
      unit: "s",
    });
    this.lag = m.createObservableGauge("messaging.consumer.lag", {
      description: "Messages in the stream not yet delivered to the durable consumer (its backlog)",
      unit: "{message}",
    });
    this.lag.addCallback((result) => {
      for (const [durable, n] of this.pending) result.observe(n, { "messaging.consumer.group.name": durable });
    });
  }

  /**
   * Publishes inside a PRODUCER span that is a child of the active context
   * (the request, or the context an outbox row carried), with its trace
   * context added to the message headers.
   */
  async publish(
    system: string,
    subject: string,
    msgId: string,
    headers: Record<string, string> | undefined,
    send: (headers: Record<string, string>) => Promise<void>,
  ): Promise<void> {
    const family = subjectFamily(subject);
    const span = tracer().startSpan(`publish ${family}`, {
      kind: SpanKind.PRODUCER,
      attributes: {
        "messaging.system": system,
        "messaging.operation.type": "send",
        "messaging.destination.name": subject,
        "messaging.message.id": msgId,
      },
    });
    const out = { ...headers };
    propagation.inject(trace.setSpan(context.active(), span), out);
    try {
      await send(out);
      this.sent.add(1, { "messaging.destination.name": family, outcome: "ok" });
    } catch (err) {
      this.sent.add(1, { "messaging.destination.name": family, outcome: "error" });
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  }

  /**
   * Runs a consumer's handler for one delivery inside a CONSUMER span that
   * continues the producer's trace; records the outcome, the handling time
   * and the consumer's backlog. Rethrows so the bus redelivers.
   */
  async deliver(
    system: string,
    delivery: {
      durable: string;
      subject: string;
      headers: Record<string, string>;
      deliveryCount: number;
      pending?: number;
    },
    handler: () => Promise<void>,
  ): Promise<void> {
    const { durable, subject, headers } = delivery;
    if (delivery.pending !== undefined) this.pending.set(durable, delivery.pending);
    const parent = propagation.extract(context.active(), headers);
    const attributes: Attributes = {
      "messaging.system": system,
      "messaging.operation.type": "process",
      "messaging.destination.name": subject,
      "messaging.consumer.group.name": durable,
      "messaging.message.delivery_count": delivery.deliveryCount,
    };
    const span = tracer().startSpan(
      `process ${subjectFamily(subject)}`,
      { kind: SpanKind.CONSUMER, attributes },
      parent,
    );
    const started = performance.now();
    let outcome = "ack";
    try {
      await context.with(trace.setSpan(parent, span), handler);
    } catch (err) {
      outcome = "retry";
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.setAttribute("messaging.outcome", outcome);
      span.end();
      const labels = { "messaging.consumer.group.name": durable, outcome };
      this.processed.add(1, labels);
      this.duration.record((performance.now() - started) / 1000, labels);
    }
  }
}
