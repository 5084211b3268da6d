import { testEnv, testNamespace, type TestNamespace } from "@emprops/testkit";
import { createEventBus, createLogger, type EventBus, JetStreamBus } from "../src/index.js";

describe.each(["memory", "nats"])("the %s event bus", (kind) => {
  let bus: EventBus;
  let ns: TestNamespace;
  let subject: string;

  beforeAll(async () => {
    ns = testNamespace(`bus-stop-${kind}`);
    const created = createEventBus({
      natsUrl: kind === "memory" ? "memory" : testEnv().natsUrl,
      namespace: ns.namespace,
      logger: createLogger("bus", "silent"),
      name: "bus-stop-test",
    });
    bus = created.bus;
    subject = created.names.loraDeleted("user-1");
    if (bus instanceof JetStreamBus) await bus.whenReady();
  });
  afterAll(async () => {
    await bus.close();
    await ns.cleanup();
  });

  test("a consumer stopped while it is still attaching stops, and one stopped later still delivered", async () => {
    const early = await bus.consume({ durable: "stopped-at-once", filterSubjects: [subject], handler: async () => {} });
    await early.stop();

    const seen: number[] = [];
    const delivered = new Promise<void>((resolve) => {
      void bus
        .consume({
          durable: "stopped-later",
          filterSubjects: [subject],
          handler: async (msg) => {
            seen.push(msg.data[0] as number);
            resolve();
          },
        })
        .then((c) => delivered.then(() => c.stop()));
    });
    await bus.publish(subject, new Uint8Array([7]), { msgId: `stop-${kind}` });
    await delivered;
    expect(seen).toEqual([7]);
  });
});
