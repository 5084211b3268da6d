import { randomUUID } from "node:crypto";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  eventNames,
  LoraSource,
  MachineHoldingsReportedSchema,
  PlacementService,
  type RankMachinesResponse,
} from "@emprops/contracts";
import { bearerInterceptor, ManualClock, mintToken } from "@emprops/platform";
import { eventually, publishToStream, rpcFailure } from "@emprops/testkit";
import { loadConfig, type RunningRegistry, startLoraRegistry } from "../src/index.js";
import { JWT_SECRET, NO_GATEWAY, type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";
import { seedLoras } from "./support/seed.js";

/*
 * The holdings index and the placement RPCs through the real registry: the
 * reports are published to the real NATS stream (as a machine-cache
 * publishes them, and also redelivered, repeated and out of order), the
 * answers read through a real client with a scheduler token.
 */

const TTL_SECONDS = 30;
const clock = new ManualClock(new Date());
let t: RegistryUnderTest;
const owner = randomUUID();
const intruder = randomUUID();
let loraA: string;
let loraB: string;
let loraC: string;
let sha: Record<string, string>;
let size: Record<string, number>;

beforeAll(async () => {
  t = await startRegistryForTest("placement", {
    clock,
    env: { HOLDINGS_MACHINE_TTL_SECONDS: String(TTL_SECONDS) },
  });
  await t.registry.ready;
  [loraA, loraB, loraC] = (await seedLoras(t.db, [
    { userId: owner, sizeBytes: 300_000_000 },
    { userId: owner, sizeBytes: 100_000_000 },
    { userId: owner, sizeBytes: 50_000_000 },
  ])) as [string, string, string];
  const rows = await t.db.selectFrom("flat_file").select(["id", "gen_out_data"]).execute();
  sha = Object.fromEntries(rows.map((r) => [r.id, (r.gen_out_data?.file_hash ?? "").replace("sha256:", "")]));
  size = Object.fromEntries(rows.map((r) => [r.id, Number(r.gen_out_data?.size_bytes)]));
});

afterAll(async () => {
  await t?.stop();
});

const names = () => eventNames(t.namespace.namespace);
const scheduler = () => t.as("job-broker", ["scheduler"]).placement;
const user = (id: string) => ({ source: LoraSource.USER, identifier: id });
const shared = (name: string) => ({ source: LoraSource.SHARED, identifier: name });

type Report = MessageInitShape<typeof MachineHoldingsReportedSchema>;
const copy = (id: string, sha256 = sha[id]!) => ({
  source: LoraSource.USER,
  identifier: id,
  userId: owner,
  sha256,
  sizeBytes: BigInt(size[id]!),
});
const sharedCopy = (name: string, bytes: number) => ({
  source: LoraSource.SHARED,
  identifier: name,
  sha256: "ab".repeat(32),
  sizeBytes: BigInt(bytes),
});

/** Publishes a report as a machine does; `msgId` differs for a redelivery the stream's window would drop. */
async function publish(report: Report, msgId?: string) {
  const message = create(MachineHoldingsReportedSchema, {
    pool: "pool-a",
    freeCacheBytes: 10_000_000_000n,
    cacheMaxBytes: 50_000_000_000n,
    reportTime: timestampFromDate(new Date()),
    ...report,
  });
  const n = names().holdings;
  const subject =
    message.report.case === "snapshot"
      ? n.snapshot(message.machineId)
      : message.report.case === "heartbeat"
        ? n.heartbeat(message.machineId)
        : n.delta(message.machineId, message.generation, message.sequence);
  await publishToStream(
    t.namespace.natsUrl,
    subject,
    toBinary(MachineHoldingsReportedSchema, message),
    msgId ?? `${message.machineId}:${message.generation}:${message.sequence}`,
  );
}

/** The machines holding each ref, as FindLoraHolders lists them. */
async function holders(refs: ReturnType<typeof user>[], userId = owner, pool = "") {
  const res = await scheduler().findLoraHolders({ userId, refs, pool });
  return res.loras.map((l) => l.holders.map((h) => h.machineId).sort());
}

const order = (res: RankMachinesResponse) => res.machines.map((m) => m.machineId);

describe("the holdings index", () => {
  test("folds snapshots and deltas, whatever their order and however often they arrive", async () => {
    const snapshot = (machineId: string, sequence: bigint, ids: string[]): Report => ({
      machineId,
      generation: 1000n,
      sequence,
      report: { case: "snapshot", value: { holdings: ids.map((id) => copy(id)) } },
    });
    const delta = (machineId: string, sequence: bigint, added: string[], removed: string[]): Report => ({
      machineId,
      generation: 1000n,
      sequence,
      report: { case: "delta", value: { added: added.map((id) => copy(id)), removed: removed.map((id) => copy(id)) } },
    });
    // The machine's history: holds A and B; evicts A; downloads C; snapshot of {B, C}; evicts C.
    const history = (m: string) => [
      snapshot(m, 1n, [loraA, loraB]),
      delta(m, 2n, [], [loraA]),
      delta(m, 3n, [loraC], []),
      snapshot(m, 4n, [loraB, loraC]),
      delta(m, 5n, [], [loraC]),
    ];
    const [s1, d2, d3, s4, d5] = history("in-order");
    for (const r of [s1, d2, d3, s4, d5]) await publish(r!);
    // The same history out of order, with redeliveries (new message ids, as after the duplicate window).
    const [o1, o2, o3, o4, o5] = history("shuffled");
    for (const [r, again] of [
      [o5, false],
      [o3, false],
      [o1, false],
      [o3, true],
      [o4, false],
      [o2, false],
      [o1, true],
      [o5, true],
    ] as const) {
      await publish(r!, again ? randomUUID() : undefined);
    }
    await eventually(async () =>
      expect(await holders([user(loraA), user(loraB), user(loraC)])).toEqual([[], ["in-order", "shuffled"], []]),
    );
  });

  test("a restart's reports supersede the previous run's, even when an old one arrives late", async () => {
    const m = "restarted";
    await publish({
      machineId: m,
      generation: 2000n,
      sequence: 1n,
      report: { case: "snapshot", value: { holdings: [copy(loraB)] } },
    });
    // Late: a delta of the previous run adding A.
    await publish({
      machineId: m,
      generation: 1999n,
      sequence: 40n,
      report: { case: "delta", value: { added: [copy(loraA)] } },
    });
    await publish({
      machineId: m,
      generation: 2000n,
      sequence: 2n,
      report: { case: "heartbeat", value: { holdingCount: 1 } },
    });
    await eventually(async () => expect((await holders([user(loraB)]))[0]).toContain(m));
    expect((await holders([user(loraA)]))[0]).not.toContain(m);
  });

  test("a second replica reading the stream from its start agrees with the first", async () => {
    const config = loadConfig({
      REGISTRY_PORT: "0",
      DATABASE_URL: t.database.url,
      JWT_SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: t.namespace.natsUrl,
      NATS_NAMESPACE: t.namespace.namespace,
      BLOB_GATEWAY_URL: NO_GATEWAY,
      HOLDINGS_MACHINE_TTL_SECONDS: String(TTL_SECONDS),
    });
    const second: RunningRegistry = await startLoraRegistry(config, { clock });
    try {
      const token = await mintToken(JWT_SECRET, { subject: "job-broker", roles: ["scheduler"] });
      const client = createClient(
        PlacementService,
        createGrpcTransport({ baseUrl: second.url, interceptors: [bearerInterceptor(token)] }),
      );
      const refs = [user(loraA), user(loraB), user(loraC)];
      const ask = async (c: typeof client) =>
        (await c.findLoraHolders({ userId: owner, refs })).loras.map((l) => l.holders.map((h) => h.machineId).sort());
      await eventually(async () => expect(await ask(client)).toEqual(await ask(scheduler())));
      expect(await ask(client)).toEqual([[], ["in-order", "restarted", "shuffled"], []]);
    } finally {
      await second.stop();
    }
  });

  test("a machine that stops reporting drops out after HOLDINGS_MACHINE_TTL_SECONDS, and is back with its next report", async () => {
    const m = "falls-silent";
    await publish({
      machineId: m,
      generation: 3000n,
      sequence: 1n,
      report: { case: "snapshot", value: { holdings: [copy(loraC)] } },
    });
    await eventually(async () => expect((await holders([user(loraC)]))[0]).toEqual([m]));
    const start = clock.now();
    try {
      clock.advance((TTL_SECONDS + 5) * 1000);
      expect((await holders([user(loraC)]))[0]).toEqual([]);
      const ranked = await scheduler().rankMachines({
        userId: owner,
        refs: [user(loraC)],
        machineIds: [m, "in-order"],
      });
      expect(ranked.machines.map((r) => [r.machineId, r.reporting, r.cachedBytes])).toEqual([
        [m, false, 0n],
        ["in-order", false, 0n],
      ]);
    } finally {
      clock.set(new Date());
    }
    // The next heartbeat brings it back with what it held.
    await publish({
      machineId: m,
      generation: 3000n,
      sequence: 2n,
      report: { case: "heartbeat", value: { holdingCount: 1 } },
    });
    await eventually(async () => expect((await holders([user(loraC)]))[0]).toEqual([m]));
    expect(start.getTime()).toBeLessThanOrEqual(clock.now().getTime());
  });
});

describe("RankMachines", () => {
  beforeAll(async () => {
    const facts = (free: number, evicted: number) => ({
      freeCacheBytes: BigInt(free),
      evictedBytes1h: BigInt(evicted),
    });
    await publish({
      machineId: "holds-a",
      generation: 1n,
      sequence: 1n,
      ...facts(1e9, 0),
      report: { case: "snapshot", value: { holdings: [copy(loraA), sharedCopy("style.safetensors", 70_000_000)] } },
    });
    await publish({
      machineId: "holds-b-roomy",
      generation: 1n,
      sequence: 1n,
      ...facts(9e9, 0),
      report: { case: "snapshot", value: { holdings: [copy(loraB)] } },
    });
    await publish({
      machineId: "holds-b-pressed",
      generation: 1n,
      sequence: 1n,
      ...facts(9e9, 5e9),
      report: { case: "snapshot", value: { holdings: [copy(loraB)] } },
    });
    // A copy of an older content of A: it does not count.
    await publish({
      machineId: "stale-a",
      generation: 1n,
      sequence: 1n,
      ...facts(20e9, 0),
      report: { case: "snapshot", value: { holdings: [copy(loraA, "cd".repeat(32))] } },
    });
    await publish({
      machineId: "empty",
      generation: 1n,
      sequence: 1n,
      ...facts(30e9, 0),
      report: { case: "snapshot", value: {} },
    });
    await eventually(async () => expect((await holders([user(loraA)]))[0]).toContain("holds-a"));
    await eventually(async () => expect((await holders([user(loraA)]))[0]).not.toContain("empty"));
  });

  const candidates = ["unknown-machine", "empty", "stale-a", "holds-b-pressed", "holds-b-roomy", "holds-a", "empty"];

  test("ranks by cached bytes, then free space, then eviction pressure, and says what each would download", async () => {
    const res = await scheduler().rankMachines({
      userId: owner,
      refs: [user(loraA), user(loraB), shared("style.safetensors")],
      machineIds: candidates,
    });
    expect(order(res)).toEqual(["holds-a", "holds-b-roomy", "holds-b-pressed", "empty", "stale-a", "unknown-machine"]);
    const byId = Object.fromEntries(res.machines.map((m) => [m.machineId, m]));
    expect(byId["holds-a"]).toMatchObject({
      reporting: true,
      cachedBytes: BigInt(size[loraA]! + 70_000_000),
      downloadBytes: BigInt(size[loraB]!),
      downloadRefIndexes: [1],
      pool: "pool-a",
      freeCacheBytes: 1_000_000_000n,
    });
    expect(byId["holds-b-pressed"]).toMatchObject({ evictedBytes1h: 5_000_000_000n, downloadRefIndexes: [0, 2] });
    expect(byId["stale-a"]).toMatchObject({ cachedBytes: 0n, downloadRefIndexes: [0, 1, 2] });
    expect(byId["unknown-machine"]).toMatchObject({ reporting: false, cachedBytes: 0n, downloadRefIndexes: [0, 1, 2] });
    expect(res.loras.map((l) => (l.outcome.case === "lora" ? l.outcome.value : undefined))).toEqual([
      expect.objectContaining({ sizeBytes: BigInt(size[loraA]!), sizeKnown: true, sha256: sha[loraA], holderCount: 1 }),
      expect.objectContaining({ sizeBytes: BigInt(size[loraB]!), holderCount: 5 }),
      expect.objectContaining({ sizeBytes: 70_000_000n, sizeKnown: true, sha256: "", holderCount: 1 }),
    ]);
  });

  test("another user's LoRA is not found, word for word as a missing one, and counts for no machine", async () => {
    const res = await scheduler().rankMachines({
      userId: intruder,
      refs: [user(loraA), user("987654321")],
      machineIds: candidates,
    });
    const [theirs, missing] = res.loras.map((l) => (l.outcome.case === "error" ? l.outcome.value : undefined));
    expect(theirs).toMatchObject({ code: "not_found", reason: expect.anything() });
    expect(theirs?.message.replace(loraA, "<id>")).toBe(missing?.message.replace("987654321", "<id>"));
    expect(res.machines.every((m) => m.cachedBytes === 0n && m.downloadRefIndexes.length === 0)).toBe(true);
    // Nothing cached anywhere: most free space first, then least eviction pressure.
    expect(order(res)).toEqual(["empty", "stale-a", "holds-b-roomy", "holds-b-pressed", "holds-a", "unknown-machine"]);
    const found = await scheduler().findLoraHolders({ userId: intruder, refs: [user(loraA)] });
    expect(found.loras[0]?.holders).toEqual([]);
    expect(found.loras[0]?.lora?.outcome.case).toBe("error");
  });

  test("FindLoraHolders lists holders of the current content only, by pool", async () => {
    expect(await holders([user(loraA), shared("style.safetensors")])).toEqual([["holds-a"], ["holds-a"]]);
    expect(await holders([user(loraA)], owner, "pool-b")).toEqual([[]]);
  });

  test("with home_affinity a user's misses go to the same machines: the user's weights, not free space nor order", async () => {
    const rank = async (userId: string, machineIds: string[], refs = [user(loraA)]) =>
      order(await scheduler().rankMachines({ userId, refs, machineIds, homeAffinity: true }));
    const idle = Array.from({ length: 12 }, (_, i) => `idle-${i}`);
    const reporting = ["empty", "stale-a", "holds-b-roomy", "holds-b-pressed"];
    const mine = await rank(owner, [...idle, ...reporting, "holds-a"]);
    // Holding the job's bytes still comes first, then machines in the index, then the others.
    expect(mine[0]).toBe("holds-a");
    expect(mine.slice(1, 5).sort()).toEqual([...reporting].sort());
    expect(await rank(owner, [...reporting].reverse())).toEqual(mine.slice(1, 5));
    // The same order whatever order the candidates come in, and for any subset (rendezvous hashing).
    expect(await rank(owner, [...idle].reverse())).toEqual(mine.filter((m) => m.startsWith("idle-")));
    const subset = idle.filter((_, i) => i % 3 !== 0);
    expect(await rank(owner, subset)).toEqual(mine.filter((m) => subset.includes(m)));
    // Another user has other home machines.
    expect(await rank(intruder, idle)).not.toEqual(await rank(owner, idle));
    // Without it, the order of equals is the caller's.
    expect(order(await scheduler().rankMachines({ userId: owner, refs: [user(loraA)], machineIds: idle }))).toEqual(
      idle,
    );
    // A job of shared LoRAs only has the home machines of its set of references.
    const sharedJob = [shared("style.safetensors"), shared("other.safetensors")];
    expect(await rank("", idle, sharedJob)).toEqual(await rank("", [...idle].reverse(), [...sharedJob].reverse()));
  });

  test("bad input is refused with a reason", async () => {
    const bad = (machineIds: string[], refs = [user(loraA)], userId: string = owner) =>
      rpcFailure(scheduler().rankMachines({ userId, refs, machineIds }));
    expect(await bad([])).toMatchObject({ code: "InvalidArgument", reason: "INVALID_REQUEST" });
    expect(await bad(["has space"])).toMatchObject({ code: "InvalidArgument", reason: "INVALID_REQUEST" });
    expect(await bad(Array.from({ length: 10_001 }, (_, i) => `m${i}`))).toMatchObject({ reason: "INVALID_REQUEST" });
    expect(
      await bad(
        ["m1"],
        Array.from({ length: 65 }, () => user(loraA)),
      ),
    ).toMatchObject({
      reason: "INVALID_REQUEST",
    });
    expect(await bad(["m1"], [user(loraA)], "")).toMatchObject({ code: "InvalidArgument", reason: "INVALID_ID" });
    expect(
      await rpcFailure(scheduler().findLoraHolders({ userId: owner, refs: [user(loraA)], pool: "a b" })),
    ).toMatchObject({ reason: "INVALID_REQUEST" });
    // A job without a user may ask about shared LoRAs only.
    const sharedOnly = await scheduler().rankMachines({ refs: [shared("style.safetensors")], machineIds: ["holds-a"] });
    expect(sharedOnly.machines[0]?.cachedBytes).toBe(70_000_000n);
  });

  test("only a scheduler token is admitted", async () => {
    const call = (roles: Parameters<RegistryUnderTest["as"]>[1]) =>
      rpcFailure(t.as("caller", roles).placement.rankMachines({ userId: owner, refs: [], machineIds: ["m1"] }));
    expect(await call(["machine"])).toMatchObject({ code: "PermissionDenied", reason: "ROLE_REQUIRED" });
    expect(await call(["admin"])).toMatchObject({ code: "PermissionDenied", reason: "ROLE_REQUIRED" });
    expect(await rpcFailure(t.as(owner).placement.rankMachines({ machineIds: ["m1"] }))).toMatchObject({
      reason: "ROLE_REQUIRED",
    });
  });
});
