import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  LoraUsageBatchSchema,
  LoraUsageSchema,
  MachineCacheStatsReportedSchema,
  MachineCacheStatsSchema,
} from "@emprops/contracts";
import { eventually, publishToStream } from "@emprops/testkit";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras } from "./support/seed.js";

let t: RegistryUnderTest;
const owner = randomUUID();
const stranger = randomUUID();
let a: string;
let b: string;
let strangers: string;

beforeAll(async () => {
  t = await startRegistryForTest("usage");
  [a, b] = (await seedLoras(t.db, [
    { userId: owner, sizeBytes: 111 },
    { userId: owner, sizeBytes: 222 },
  ])) as [string, string];
  [strangers] = (await seedLoras(t.db, [{ userId: stranger, sizeBytes: 333 }])) as [string];
  await eventually(() => expect(t.registry.ctx.bus.connected).toBe(true));
});

afterAll(async () => {
  await t?.stop();
});

function use(loraId: string, userId: string, workflowId: string, at: Date, workflowName = "") {
  return create(LoraUsageSchema, {
    loraId,
    userId,
    jobId: randomUUID(),
    workflowId,
    workflowName,
    usedAt: timestampFromDate(at),
  });
}

async function appliedBatches(): Promise<number> {
  return (await t.db.selectFrom("lora_usage_batch").select("batch_id").execute()).length;
}

describe("usage", () => {
  it("folds batches into usage_count, last_used_at and workflows_using; a batch applied twice counts once", async () => {
    const t1 = new Date(Date.UTC(2026, 10, 20, 10));
    const t2 = new Date(Date.UTC(2026, 10, 21, 10));
    const batch = create(LoraUsageBatchSchema, {
      batchId: randomUUID(),
      machineId: "machine-1",
      usages: [
        use(a, owner, "wf-portrait", t1, "Anime Portrait Generator"),
        use(a, owner, "wf-portrait", t2),
        use(a, owner, "wf-landscape", t1, "Landscape with Style"),
        use(b, owner, "", t1),
        // Claims the owner's LoRA for someone else, and someone else's for the owner: both ignored.
        use(a, stranger, "wf-x", t2),
        use(strangers, owner, "wf-x", t2),
        use("not-a-number", owner, "wf-x", t2),
      ],
    });
    const data = toBinary(LoraUsageBatchSchema, batch);
    const subject = t.namespace.names.loraUsage("machine-1");
    await publishToStream(t.namespace.natsUrl, subject, data, batch.batchId);
    await eventually(async () => expect(await appliedBatches()).toBe(1));
    // The same batch again, as a machine would resend it after a lost ack (a new Nats-Msg-Id gets past the stream).
    await publishToStream(t.namespace.natsUrl, subject, data, `${batch.batchId}-resent`);
    // And a later batch, so that we know the resent one has been consumed before it.
    const later = create(LoraUsageBatchSchema, {
      batchId: randomUUID(),
      machineId: "machine-1",
      usages: [use(b, owner, "wf-portrait", t2)],
    });
    await publishToStream(t.namespace.natsUrl, subject, toBinary(LoraUsageBatchSchema, later), later.batchId);
    await eventually(async () => expect(await appliedBatches()).toBe(2));

    const gotA = (await t.as(owner).lora.getLora({ loraId: a })).lora!;
    expect(gotA.usageCount).toBe(3n);
    expect(timestampDate(gotA.lastUsedAt!)).toEqual(t2);
    expect(gotA.workflowsUsing.map((w) => ({ id: w.id, name: w.name, uses: w.useCount }))).toEqual([
      { id: "wf-portrait", name: "Anime Portrait Generator", uses: 2n },
      { id: "wf-landscape", name: "Landscape with Style", uses: 1n },
    ]);
    const gotB = (await t.as(owner).lora.getLora({ loraId: b })).lora!;
    expect(gotB.usageCount).toBe(2n);
    expect(gotB.workflowsUsing.map((w) => w.id)).toEqual(["wf-portrait"]);
    const theirs = (await t.as(stranger).lora.getLora({ loraId: strangers })).lora!;
    expect(theirs.usageCount).toBe(0n);
    expect(theirs.lastUsedAt).toBeUndefined();

    // Lists carry the usage too (but not the workflows).
    const listed = (await t.as(owner).lora.listLoras({})).loras.find((l) => l.id === a)!;
    expect(listed.usageCount).toBe(3n);
    expect(listed.workflowsUsing).toEqual([]);

    // The quota listing shows when each LoRA was last used.
    const sizes = (await t.as(owner).lora.getQuota({})).loras;
    expect(sizes.map((s) => s.id)).toEqual([b, a]);
    expect(timestampDate(sizes[1]!.lastUsedAt!)).toEqual(t2);

    const machine = t.as("machine-1", ["machine"]);
    const popular = await machine.resolver.listPopularLoras({});
    expect(popular.loras.map((p) => [p.loraId, p.usageCount, p.sizeBytes])).toEqual([
      [a, 3n, 111n],
      [b, 2n, 222n],
    ]);
    const since = await machine.resolver.listPopularLoras({
      usedSince: timestampFromDate(new Date(Date.UTC(2026, 10, 21))),
      pageSize: 1,
    });
    expect(since.loras.map((p) => p.loraId)).toEqual([a]);
    expect((await machine.resolver.listPopularLoras({ userId: stranger })).loras).toEqual([]);
  });
});

describe("machine cache statistics", () => {
  it("keeps the latest report of each machine for GetCacheStats", async () => {
    const report = (machineId: string, at: Date, user: number) =>
      toBinary(
        MachineCacheStatsReportedSchema,
        create(MachineCacheStatsReportedSchema, {
          stats: create(MachineCacheStatsSchema, {
            machineId,
            totalLoraCacheGb: 45.2,
            maxLoraCacheGb: 50,
            utilizationPercent: 90.4,
            userLoraCount: user,
            sharedLoraCount: 5,
            cacheHitRate24h: 0.87,
            evictionsLast24h: 3,
            oldestLoraAgeDays: 12,
            reportTime: timestampFromDate(at),
            userLoraBytes: 123_456_789_012n,
          }),
        }),
      );
    const names = t.namespace.names;
    const url = t.namespace.natsUrl;
    await publishToStream(
      url,
      names.cacheStats("gpu-1"),
      report("gpu-1", new Date(Date.UTC(2026, 10, 25, 10)), 23),
      randomUUID(),
    );
    await publishToStream(
      url,
      names.cacheStats("gpu-2"),
      report("gpu-2", new Date(Date.UTC(2026, 10, 25, 10)), 7),
      randomUUID(),
    );
    // An older report arriving late does not replace the newer one.
    await publishToStream(
      url,
      names.cacheStats("gpu-1"),
      report("gpu-1", new Date(Date.UTC(2026, 10, 25, 9)), 1),
      randomUUID(),
    );
    await publishToStream(
      url,
      names.cacheStats("gpu-3"),
      report("gpu-3", new Date(Date.UTC(2026, 10, 25, 9)), 1),
      randomUUID(),
    );
    const admin = t.as("root", ["admin"]).admin;
    const all = await eventually(async () => {
      const res = await admin.getCacheStats({});
      expect(res.machines).toHaveLength(3);
      return res;
    });
    expect(all.machines.map((m) => [m.machineId, m.userLoraCount])).toEqual([
      ["gpu-1", 23],
      ["gpu-2", 7],
      ["gpu-3", 1],
    ]);
    expect(all.machines[0]).toMatchObject({
      maxLoraCacheGb: 50,
      cacheHitRate24h: 0.87,
      userLoraBytes: 123_456_789_012n,
    });
    const one = await admin.getCacheStats({ machineId: "gpu-2" });
    expect(one.machines.map((m) => m.machineId)).toEqual(["gpu-2"]);
    expect((await admin.getCacheStats({ machineId: "gpu-9" })).machines).toEqual([]);
  });
});
