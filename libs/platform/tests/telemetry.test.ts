import {
  type BusMessage,
  createEventBus,
  createLogger,
  type EventBus,
  JetStreamBus,
  RepeatedFailures,
} from "../src/index.js";
import { type InMemoryTelemetry, startInMemoryTelemetry, tracer } from "../src/index.js";
import { eventually, testEnv, testNamespace, type TestNamespace } from "@emprops/testkit";
import { SpanKind, trace } from "@opentelemetry/api";

let telemetry: InMemoryTelemetry;
beforeAll(() => {
  telemetry = startInMemoryTelemetry();
});
afterAll(async () => {
  await telemetry.stop();
});

/** A pino destination that keeps the JSON lines. */
function lines() {
  const out: Record<string, unknown>[] = [];
  return { out, stream: { write: (line: string) => void out.push(JSON.parse(line) as Record<string, unknown>) } };
}

test("log lines written inside a span carry its trace and span ids; lines outside carry none", () => {
  const { out, stream } = lines();
  const logger = createLogger("svc", "info", stream);
  logger.info("outside");
  const ids = tracer().startActiveSpan("work", (span) => {
    logger.info({ lora_id: "1" }, "inside");
    span.end();
    return span.spanContext();
  });
  expect(out[0]).not.toHaveProperty("trace_id");
  expect(out[1]).toMatchObject({
    msg: "inside",
    service: "svc",
    level: "info",
    trace_id: ids.traceId,
    span_id: ids.spanId,
  });
});

test("one key failing repeatedly logs a warning once per threshold and is counted until it succeeds", async () => {
  const { out, stream } = lines();
  const failures = new RepeatedFailures({
    name: "test.fetch",
    what: "fetch",
    threshold: 3,
    logger: createLogger("svc", "info", stream),
  });
  const attrs = { reason: "checksum" };
  for (let i = 0; i < 2; i++) failures.failed("lora-1", attrs);
  failures.failed("lora-2", attrs);
  expect(out).toEqual([]);
  expect(failures.failed("lora-1", attrs)).toBe(3);
  expect(out).toEqual([
    expect.objectContaining({ level: "warn", msg: "repeated fetch failures", key: "lora-1", consecutive_failures: 3 }),
  ]);
  let m = await telemetry.collect();
  const value = (name: string) => m.find((p) => p.name === name)?.value;
  expect(value("test.fetch.failures")).toBe(4);
  expect(value("test.fetch.repeated_failures")).toBe(1);
  expect(value("test.fetch.failing")).toBe(1);
  failures.succeeded("lora-1");
  m = await telemetry.collect();
  expect(value("test.fetch.failing")).toBe(0);
  failures.failed("lora-1", attrs);
  expect(out).toHaveLength(1);
});

describe.each(["memory", "nats"])("the %s event bus carries the trace across a message", (kind) => {
  let bus: EventBus;
  let ns: TestNamespace;
  let subject: string;
  let durable: string;

  beforeAll(async () => {
    ns = testNamespace(`bus-trace-${kind}`);
    const created = createEventBus({
      natsUrl: kind === "memory" ? "memory" : testEnv().natsUrl,
      namespace: ns.namespace,
      logger: createLogger("bus", "silent"),
      name: "bus-trace-test",
    });
    bus = created.bus;
    subject = created.names.loraDeleted("user-1");
    durable = created.names.durables.blobGatewayDeletions;
    if (bus instanceof JetStreamBus) await bus.whenReady();
  });
  afterAll(async () => {
    await bus.close();
    await ns.cleanup();
  });

  test("the consumer's span continues the publisher's trace, and a failing handler is retried in the same trace", async () => {
    const seen: { traceId: string | undefined; msg: BusMessage }[] = [];
    let failOnce = true;
    const done = new Promise<void>((resolve) => {
      void bus.consume({
        durable,
        filterSubjects: [subject],
        handler: async (msg) => {
          seen.push({ traceId: trace.getActiveSpan()?.spanContext().traceId, msg });
          if (failOnce) {
            failOnce = false;
            throw new Error("try again");
          }
          resolve();
        },
      });
    });
    const origin = await tracer().startActiveSpan("request", async (span) => {
      await bus.publish(subject, new Uint8Array([1]), { msgId: `m-${kind}` });
      span.end();
      return span.spanContext();
    });
    await done;
    // The handler has returned; its span ends right after.
    const consumerSpans = () =>
      telemetry.spans().filter((s) => s.spanContext().traceId === origin.traceId && s.kind === SpanKind.CONSUMER);
    await eventually(() => expect(consumerSpans().length).toBeGreaterThanOrEqual(2), { intervalMs: 20 });
    expect(seen.map((s) => s.traceId)).toEqual([origin.traceId, origin.traceId]);
    expect(seen[0]?.msg.headers.traceparent).toMatch(new RegExp(`^00-${origin.traceId}-[0-9a-f]{16}-01$`));

    const spans = telemetry.spans().filter((s) => s.spanContext().traceId === origin.traceId);
    const family = `${ns.namespace}.lora.deleted`;
    const producer = spans.find((s) => s.kind === SpanKind.PRODUCER);
    expect(producer?.name).toBe(`publish ${family}`);
    expect(producer?.parentSpanContext?.spanId).toBe(origin.spanId);
    const consumers = spans.filter((s) => s.kind === SpanKind.CONSUMER);
    expect(
      consumers.map((c) => [
        c.name,
        c.attributes["messaging.message.delivery_count"],
        c.attributes["messaging.outcome"],
      ]),
    ).toEqual([
      [`process ${family}`, 1, "retry"],
      [`process ${family}`, 2, "ack"],
    ]);
    for (const c of consumers) expect(c.parentSpanContext?.spanId).toBe(producer?.spanContext().spanId);

    const m = await telemetry.collect();
    const consumed = (outcome: string) =>
      m.find(
        (p) =>
          p.name === "messaging.client.consumed.messages" &&
          p.attributes["messaging.consumer.group.name"] === durable &&
          p.attributes.outcome === outcome,
      )?.value;
    expect([consumed("retry"), consumed("ack")]).toEqual([1, 1]);
    expect(
      m.find((p) => p.name === "messaging.consumer.lag" && p.attributes["messaging.consumer.group.name"] === durable)
        ?.value,
    ).toBe(0);
  });
});
