import { eventNames } from "@emprops/contracts";
import { eventually, testEnv, testNamespace, type TestNamespace } from "@emprops/testkit";
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

  test("followers read a stream from its start in stream order, then each new message, and catch up", async () => {
    const names = eventNames(ns.namespace);
    const { stream, all } = { stream: names.holdings.stream.name, all: names.holdings.all };
    const publish = (machine: string, n: number) =>
      bus.publish(names.holdings.delta(machine, 1n, BigInt(n)), new Uint8Array([n]), {
        msgId: `${kind}-${machine}-${n}`,
      });
    await publish("m1", 1);
    await publish("m2", 2);
    await publish("m1", 3);
    const read = () => {
      const seen: { subject: string; byte: number; sequence: number; storedAt: Date }[] = [];
      const follower = bus.follow({
        stream,
        filterSubject: all,
        handler: (m) =>
          seen.push({ subject: m.subject, byte: m.data[0]!, sequence: m.streamSequence, storedAt: m.storedAt }),
      });
      return { seen, follower };
    };
    const a = read();
    const b = read();
    await Promise.all([a.follower.caughtUp, b.follower.caughtUp]);
    expect(a.seen.map((m) => m.byte)).toEqual([1, 2, 3]);
    expect(a.seen[0]!.subject).toBe(names.holdings.delta("m1", 1n, 1n));
    expect(a.seen.every((m) => m.storedAt.getTime() > Date.now() - 60_000)).toBe(true);
    await publish("m2", 4);
    await eventually(() => expect(b.seen.map((m) => m.byte)).toEqual([1, 2, 3, 4]));
    await eventually(() => expect(a.seen.map((m) => m.byte)).toEqual([1, 2, 3, 4]));
    expect(a.seen.map((m) => m.sequence)).toEqual(b.seen.map((m) => m.sequence));
    await Promise.all([a.follower.stop(), b.follower.stop()]);
  });

  (kind === "nats" ? test : test.skip)(
    "the holdings stream keeps only the latest snapshot of each machine",
    async () => {
      const names = eventNames(ns.namespace);
      for (const n of [1, 2, 3]) {
        await bus.publish(names.holdings.snapshot("m9"), new Uint8Array([n]), { msgId: `snapshot-${n}` });
      }
      const seen: number[] = [];
      const follower = bus.follow({
        stream: names.holdings.stream.name,
        filterSubject: names.holdings.snapshot("m9"),
        handler: (m) => seen.push(m.data[0]!),
      });
      await eventually(() => expect(seen).toEqual([3]));
      await follower.stop();
    },
  );
});
