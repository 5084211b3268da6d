import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import {
  LoraDeletedSchema,
  LoraSource,
  LoraUsageBatchSchema,
  MachineCacheService,
  MachineCacheStatsReportedSchema,
} from "@emprops/contracts";
import { bearerInterceptor, ManualClock, mintToken, type Role } from "@emprops/platform";
import {
  eventually,
  publishToStream,
  readStream,
  rpcFailure,
  testNamespace,
  type TestNamespace,
} from "@emprops/testkit";
import { PARTIAL_SUFFIX } from "../src/cache/cache-layout.js";
import { loadConfig } from "../src/config.js";
import { findLoraFileByPath, upsertLoraFile } from "../src/db/lora-files.js";
import { getModel, registerModel, USER_LORA } from "../src/db/models.js";
import { type Db, openDatabase } from "../src/db/open-database.js";
import { parsePythonIso, toPythonIso } from "../src/db/python-time.js";
import { type RunningMachineCache, startMachineCache } from "../src/service.js";
import { defaultUserLoraDir, exists, type SeededLora, seedLora } from "./support/seed.js";

const SECRET = "machine-cache-service-test-secret";
const DAY = 24 * 3600 * 1000;
const A = "5b2b3a1e-4c1d-4e7a-9c11-0a1b2c3d4e5f";
const B = "9e8d7c6b-5a49-4382-a716-1f2e3d4c5b6a";
const MACHINE = `svc-test-${randomUUID().slice(0, 8)}`;

let ns: TestNamespace;
let root: string;
let loraDir: string;
let dbFile: string;
let db: Db;
let cache: RunningMachineCache;
let clock: ManualClock;
let stale: SeededLora;
let partialLeftBehind: string;
let oldLayout: { from: string; to: string };
const seeded: Record<string, SeededLora> = {};

const client = async (roles: Role[], subject = "caller"): Promise<Client<typeof MachineCacheService>> => {
  const token = await mintToken(SECRET, { subject, roles });
  return createClient(
    MachineCacheService,
    createConnectTransport({ baseUrl: cache.url, httpVersion: "1.1", interceptors: [bearerInterceptor(token)] }),
  );
};

const user = (id: string) => ({ source: LoraSource.USER, identifier: id });
const shared = (name: string) => ({ source: LoraSource.SHARED, identifier: name });

beforeAll(async () => {
  ns = testNamespace("machine-cache-svc");
  root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-svc-"));
  loraDir = path.join(root, "models", "loras");
  dbFile = path.join(root, "model_cache.db");
  clock = new ManualClock(new Date());
  db = openDatabase(dbFile);
  const now = clock.now();
  const seed = async (name: string, opts: Parameters<typeof seedLora>[2]) =>
    (seeded[name] = await seedLora(db, loraDir, opts));
  await seed("a1", {
    relativePath: `users/${A}/1-first.safetensors`,
    sizeBytes: 100,
    lastUsed: new Date(now.getTime() - DAY),
    sha256: "a1".repeat(32),
  });
  await seed("a2", {
    relativePath: `users/${A}/2-second.safetensors`,
    sizeBytes: 300,
    lastUsed: new Date(now.getTime() - 2 * DAY),
  });
  await seed("a3", {
    relativePath: `users/${A}/3-third.safetensors`,
    sizeBytes: 50,
    lastUsed: new Date(now.getTime() - 20 * DAY),
  });
  await seed("b7", {
    relativePath: `users/${B}/7-bee.safetensors`,
    sizeBytes: 70,
    lastUsed: new Date(now.getTime() - 3 * DAY),
  });
  await seed("kept", {
    relativePath: `users/${B}/8-kept.safetensors`,
    sizeBytes: 80,
    lastUsed: new Date(now.getTime() - 40 * DAY),
    protected: true,
  });
  // Protected: no eviction policy touches it, but a deletion in the registry still removes it.
  await seed("a4", {
    relativePath: `users/${A}/4-deleted-later.safetensors`,
    sizeBytes: 20,
    lastUsed: new Date(now.getTime() - DAY),
    protected: true,
  });
  await seed("style", { relativePath: "shared/style.safetensors", sizeBytes: 40, lastUsed: now });
  stale = await seedLora(db, loraDir, {
    relativePath: `users/${A}/9-stale.safetensors`,
    sizeBytes: 10,
    lastUsed: now,
    validatedAtMs: now.getTime() - 2 * 3600 * 1000,
  });
  // Left by a crash: a row without its file and a partial download without a sidecar.
  const ghost = await seedLora(db, loraDir, {
    relativePath: `users/${A}/10-ghost.safetensors`,
    sizeBytes: 5,
    lastUsed: now,
  });
  await fs.rm(ghost.path);
  // Left by an earlier version in the specification's layout, where ComfyUI lists user LoRAs:
  // a partial download and a finished one.
  const oldUserDir = path.join(loraDir, "users", A);
  await fs.mkdir(oldUserDir, { recursive: true });
  partialLeftBehind = path.join(oldUserDir, `11-half.safetensors${PARTIAL_SUFFIX}`);
  await fs.writeFile(partialLeftBehind, Buffer.alloc(10));
  oldLayout = {
    from: path.join(oldUserDir, "12-old.safetensors"),
    to: path.join(defaultUserLoraDir(loraDir), A, "12-old.safetensors"),
  };
  await fs.writeFile(oldLayout.from, Buffer.alloc(12, 1));
  registerModel(db, {
    path: oldLayout.from,
    modelType: USER_LORA,
    filename: "12-old.safetensors",
    sizeBytes: 12,
    now: toPythonIso(now),
    useCount: 1,
  });
  // Protected, so the LRU order the tests below rely on stays that of the LoRAs above.
  db.prepare("UPDATE models SET protected = 1 WHERE path = ?").run(oldLayout.from);
  upsertLoraFile(db, {
    path: oldLayout.from,
    source: "user",
    identifier: "12",
    user_id: A,
    file_name: "old.safetensors",
    sha256: "",
    size_bytes: 12,
    validated_at_ms: now.getTime(),
  });

  cache = await startMachineCache(
    loadConfig({
      JWT_SECRET: SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: ns.natsUrl,
      NATS_NAMESPACE: ns.namespace,
      MACHINE_CACHE_PORT: "0",
      MACHINE_ID: MACHINE,
      COMFYUI_LORA_DIR: loraDir,
      MODEL_CACHE_DB: dbFile,
      // Nothing listens here: every answer below comes from the disk and model_cache.db alone.
      REGISTRY_URL: "http://127.0.0.1:1",
      LORA_CACHE_MAX_GB: "1",
      MIN_FREE_SPACE_GB: "0",
      LORA_REVALIDATE_AFTER_SECONDS: "3600",
      USAGE_FLUSH_INTERVAL_SECONDS: "1",
      CACHE_STATS_INTERVAL_SECONDS: "1",
    }),
    { clock },
  );
});

// Every test happens a second later than the one before, so last_used orders them.
beforeEach(() => clock.advance(1000));

afterAll(async () => {
  await cache?.stop();
  if (db?.open) db.close();
  await ns?.cleanup();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

describe("start-up", () => {
  test("a stale row and a partial download left by a crash are reconciled before serving", async () => {
    expect(getModel(db, path.join(defaultUserLoraDir(loraDir), A, "10-ghost.safetensors"))).toBeUndefined();
    expect(await exists(partialLeftBehind)).toBe(false);
    expect(getModel(db, seeded.a1!.path)).toBeDefined();
  });
});

describe("user LoRAs where ComfyUI lists no model", () => {
  test("a user LoRA cached in models/loras/users/ by an earlier version moved out at start, rows and all, mode 0600", async () => {
    expect(await exists(oldLayout.from)).toBe(false);
    expect((await fs.stat(oldLayout.to)).mode & 0o777).toBe(0o600);
    expect((await fs.stat(defaultUserLoraDir(loraDir))).mode & 0o777).toBe(0o700);
    expect(getModel(db, oldLayout.to)).toMatchObject({
      model_type: USER_LORA,
      filename: "12-old.safetensors",
      use_count: 1,
    });
    expect(getModel(db, oldLayout.from)).toBeUndefined();
    expect(findLoraFileByPath(db, oldLayout.to)).toMatchObject({ identifier: "12", user_id: A });
    // Nothing of the old layout is left for ComfyUI to list.
    expect(await exists(path.join(loraDir, "users"))).toBe(false);
    const machine = await client(["machine"]);
    const { results } = await machine.ensureLoras({ jobId: "job-moved", userId: A, refs: [user("12")] });
    expect(results[0]).toMatchObject({ cacheHit: true, path: "", absolutePath: oldLayout.to });
  });
});

describe("EnsureLoras from the cache", () => {
  test("a plain JSON POST, as ComfyUI's node sends it, answers a hit from disk with no registry", async () => {
    const token = await mintToken(SECRET, { subject: MACHINE, roles: ["machine"] });
    const before = getModel(db, seeded.a1!.path);
    const res = await fetch(`${cache.url}/emprops.cache.v1.MachineCacheService/EnsureLoras`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({
        jobId: "job-1",
        userId: A,
        workflowId: "wf-1",
        refs: [{ source: "LORA_SOURCE_USER", identifier: "1" }],
        workflowJson: JSON.stringify({
          nodes: [
            {
              id: 1,
              type: "EmProps_Lora_Loader",
              inputs: { lora_source: "shared", lora_identifier: "style.safetensors" },
            },
          ],
        }),
      }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { results: Record<string, unknown>[] };
    expect(body.results).toEqual([
      expect.objectContaining({
        absolutePath: seeded.a1!.path,
        cacheHit: true,
        sizeBytes: "100",
        sha256: "a1".repeat(32),
      }),
      expect.objectContaining({ path: "shared/style.safetensors", cacheHit: true, sizeBytes: "40" }),
    ]);
    // No path relative to models/loras (ComfyUI's folders do not list the file): the node loads it by absolute path.
    expect(body.results[0]!.path).toBeUndefined();
    expect((await fs.stat(body.results[0]!.absolutePath as string)).size).toBe(100);
    expect(body.results[1]).toMatchObject({ absolutePath: path.join(loraDir, "shared", "style.safetensors") });
    const after = getModel(db, seeded.a1!.path);
    expect(after?.use_count).toBe((before?.use_count ?? 0) + 1);
    expect(parsePythonIso(after?.last_used)?.getTime()).toBe(clock.now().getTime());
  });

  test("a hit not checked for longer than the interval is still served while the registry is unreachable", async () => {
    const machine = await client(["machine"]);
    const { results } = await machine.ensureLoras({ jobId: "job-2", userId: A, refs: [user("9")] });
    expect(results[0]).toMatchObject({ cacheHit: true, path: "", absolutePath: stale.path });
  });

  test("a miss fails on its own with the reason while hits in the same request succeed", async () => {
    const machine = await client(["machine"]);
    const { results } = await machine.ensureLoras({ jobId: "job-3", userId: A, refs: [user("2"), user("404")] });
    expect(results[0]).toMatchObject({ cacheHit: true, absolutePath: seeded.a2!.path });
    expect(results[1]?.path).toBe("");
    expect(results[1]?.error).toMatchObject({ code: "unavailable", reason: 52 });
  });

  test("another user's LoRA id never returns that user's cached file", async () => {
    const machine = await client(["machine"]);
    const { results } = await machine.ensureLoras({ jobId: "job-4", userId: B, refs: [user("1")] });
    expect(results[0]?.path).toBe("");
    expect(results[0]?.cacheHit).toBe(false);
    expect(results[0]?.error).toBeDefined();
  });

  test("usage of user LoRAs reaches NATS in batches whose message id is the batch id", async () => {
    // The uses of earlier tests may be published in more than one batch: read until both are there.
    const { batches, usages } = await eventually(async () => {
      const published = await readStream(ns.natsUrl, ns.names.stream, ns.names.loraUsage(MACHINE));
      const read = published.map((m) => ({ msgId: m.msgId, batch: fromBinary(LoraUsageBatchSchema, m.data) }));
      const used = read.flatMap((b) => b.batch.usages);
      expect(used).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ loraId: "1", userId: A, jobId: "job-1", workflowId: "wf-1" }),
          expect.objectContaining({ loraId: "9", userId: A, jobId: "job-2" }),
        ]),
      );
      return { batches: read, usages: used };
    });
    expect(batches.every((b) => b.msgId === b.batch.batchId && b.batch.machineId === MACHINE)).toBe(true);
    // Shared LoRAs have no flat_file id and failed references are no use.
    expect(usages.some((u) => u.loraId === "404" || u.loraId === "")).toBe(false);
  });
});

test("a job without a user gets its shared LoRAs", async () => {
  const machine = await client(["machine"]);
  const { results } = await machine.ensureLoras({
    jobId: "job-shared",
    userId: "",
    refs: [shared("style.safetensors")],
  });
  expect(results).toEqual([expect.objectContaining({ path: "shared/style.safetensors", cacheHit: true })]);
});

describe("bad input and access", () => {
  const modelsSnapshot = () => db.prepare("SELECT * FROM models ORDER BY id").all();

  test.each([
    ["a user id that is not a UUID", { userId: "someone", refs: [user("1")] }, "INVALID_ID"],
    [
      "a user LoRA for a job without a user",
      { userId: "", refs: [shared("style.safetensors"), user("1")] },
      "INVALID_ID",
    ],
    [
      "a reference without a source",
      { userId: A, refs: [{ source: LoraSource.UNSPECIFIED, identifier: "1" }] },
      "INVALID_REFERENCE",
    ],
    ["an empty identifier", { userId: A, refs: [user(" ")] }, "INVALID_REFERENCE"],
    ["a user LoRA id that is not a number", { userId: A, refs: [user("12abc")] }, "INVALID_ID"],
    ["a shared name with a path", { userId: A, refs: [shared("../../checkpoints/x.safetensors")] }, "INVALID_NAME"],
    ["a shared name without a model extension", { userId: A, refs: [shared("readme.txt")] }, "INVALID_NAME"],
    ...[
      "evil\u202Egpj.safetensors",
      "zero\u200Bwidth.safetensors",
      "\uFEFFstyle.safetensors",
      "CON.safetensors",
      "nul.pt",
      "com1.ckpt",
      "LPT\u00B2.safetensors",
      " style.safetensors",
      "style.safetensors ",
      ".style.safetensors",
      "style:x.safetensors",
      `${"日".repeat(67)}.safetensors`,
    ].map((name): [string, object, string] => [
      `the shared name ${JSON.stringify(name)}`,
      { userId: A, refs: [shared(name)] },
      "INVALID_NAME",
    ]),
    [
      "65 references",
      { userId: A, refs: Array.from({ length: 65 }, (_, i) => user(String(i + 1))) },
      "INVALID_REQUEST",
    ],
    ["a workflow that is not JSON", { userId: A, workflowJson: "{nodes:" }, "INVALID_WORKFLOW"],
    ["a job id of 300 characters", { userId: A, jobId: "j".repeat(300), refs: [user("1")] }, "INVALID_REQUEST"],
  ])("%s is INVALID_ARGUMENT with its reason and changes nothing", async (_, req, reason) => {
    const machine = await client(["machine"]);
    const before = modelsSnapshot();
    expect(await rpcFailure(machine.ensureLoras(req))).toMatchObject({ code: "InvalidArgument", reason });
    expect(modelsSnapshot()).toEqual(before);
  });

  test("no token, a user token, and a machine token on an admin RPC are refused", async () => {
    const anonymous = createClient(
      MachineCacheService,
      createConnectTransport({ baseUrl: cache.url, httpVersion: "1.1" }),
    );
    expect(await rpcFailure(anonymous.ensureLoras({ userId: A, refs: [user("1")] }))).toMatchObject({
      code: "Unauthenticated",
      reason: "TOKEN_MISSING",
    });
    const plainUser = await client([], A);
    expect(await rpcFailure(plainUser.ensureLoras({ userId: A, refs: [user("1")] }))).toMatchObject({
      code: "PermissionDenied",
      reason: "ROLE_REQUIRED",
    });
    const machine = await client(["machine"]);
    expect(await rpcFailure(machine.evictLoras({ userId: A }))).toMatchObject({
      code: "PermissionDenied",
      reason: "ROLE_REQUIRED",
    });
    expect(await exists(seeded.a1!.path)).toBe(true);
  });
});

describe("operators", () => {
  test("ListCachedModels pages through the models table by id, filtered by model_type", async () => {
    const admin = await client(["admin"]);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await admin.listCachedModels({ pageSize: 2, pageToken, modelType: "user_lora" });
      expect(page.models.length).toBeLessThanOrEqual(2);
      seen.push(...page.models.map((m) => m.path));
      pageToken = page.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(expect.arrayContaining([seeded.a1!.path, seeded.kept!.path]));
    expect(seen).not.toContain(seeded.style!.path);
    const all = await admin.listCachedModels({});
    const style = all.models.find((m) => m.relativePath === "shared/style.safetensors");
    expect(style).toMatchObject({ modelType: "loras", path: seeded.style!.path, isIgnore: false });
    const kept = all.models.find((m) => m.path === seeded.kept!.path);
    expect(kept?.protected).toBe(true);
  });

  test("ListCachedModels refuses a negative page size and a token not issued for the query", async () => {
    const admin = await client(["admin"]);
    expect(await rpcFailure(admin.listCachedModels({ pageSize: -1 }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_SIZE",
    });
    expect(await rpcFailure(admin.listCachedModels({ pageToken: "garbage" }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_TOKEN",
    });
    const { nextPageToken } = await admin.listCachedModels({ pageSize: 1, modelType: "user_lora" });
    expect(await rpcFailure(admin.listCachedModels({ pageToken: nextPageToken, modelType: "loras" }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_TOKEN",
    });
  });

  test("GetCacheStats reports the specification's fields and the same numbers go out on NATS", async () => {
    const machine = await client(["machine"]);
    const { stats } = await machine.getCacheStats({});
    expect(stats).toMatchObject({
      machineId: MACHINE,
      maxLoraCacheGb: 1,
      userLoraCount: 8,
      sharedLoraCount: 1,
      evictionsLast24h: 0,
    });
    expect(Number(stats?.userLoraBytes)).toBe(100 + 300 + 50 + 70 + 80 + 10 + 20 + 12);
    expect(Number(stats?.sharedLoraBytes)).toBe(40);
    expect(stats?.utilizationPercent).toBeCloseTo((642 / 1024 ** 3) * 100, 12);
    expect(Number(stats?.hits24h)).toBeGreaterThanOrEqual(4);
    expect(stats?.cacheHitRate24h).toBeCloseTo(
      Number(stats?.hits24h) / (Number(stats?.hits24h) + Number(stats?.misses24h)),
    );
    expect(stats?.oldestLoraAgeDays).toBeGreaterThanOrEqual(40);
    const published = await eventually(async () => {
      const messages = await readStream(ns.natsUrl, ns.names.stream, ns.names.cacheStats(MACHINE));
      expect(messages.length).toBeGreaterThan(0);
      return messages;
    });
    const last = fromBinary(MachineCacheStatsReportedSchema, published[published.length - 1]!.data);
    expect(last.stats?.machineId).toBe(MACHINE);
    expect(last.stats?.userLoraCount).toBeGreaterThan(0);
  });

  test("WarmLoras counts what is cached and refuses requests that name nothing or no user", async () => {
    const machine = await client(["machine"]);
    expect(await machine.warmLoras({ userId: A, refs: [user("1"), user("2")] })).toMatchObject({
      queued: 0,
      alreadyCached: 2,
    });
    expect(await rpcFailure(machine.warmLoras({ userId: A }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_REQUEST",
    });
    expect(await rpcFailure(machine.warmLoras({ refs: [user("1")] }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ID",
    });
    expect(await rpcFailure(machine.warmLoras({ includePopular: true, popularLimit: -1 }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_SIZE",
    });
    expect(await rpcFailure(machine.warmLoras({ includePopular: true }))).toMatchObject({
      code: "Unavailable",
      reason: "DEPENDENCY_UNAVAILABLE",
    });
  });

  test("EvictLoras validates first, then runs the age policy on the injected clock", async () => {
    const admin = await client(["admin"]);
    expect(await rpcFailure(admin.evictLoras({}))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_REQUEST",
    });
    expect(await rpcFailure(admin.evictLoras({ freeBytes: -1n }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_SIZE",
    });
    expect(await rpcFailure(admin.evictLoras({ userId: "nope" }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ID",
    });
    // a3 was last used 20 days ago, kept 40 days ago but is protected; nothing else is older than 7 days.
    const aged = await admin.evictLoras({ runAgePolicy: true });
    expect(aged.evicted.map((e) => [e.path, e.reason])).toEqual([[seeded.a3!.path, "age"]]);
    expect(await exists(seeded.a3!.path)).toBe(false);
    expect(await exists(seeded.kept!.path)).toBe(true);
  });

  test("EvictLoras removes named LoRAs, all of a user's, or LRU bytes, and reports each with its reason", async () => {
    const admin = await client(["admin"]);
    const byRef = await admin.evictLoras({ refs: [user("7")] });
    expect(byRef.evicted.map((e) => [e.path, e.reason])).toEqual([[seeded.b7!.path, "admin"]]);
    expect(byRef.freedBytes).toBe(70n);
    const byUser = await admin.evictLoras({ userId: B });
    // B's only remaining LoRA is protected.
    expect(byUser.evicted).toEqual([]);
    const byBytes = await admin.evictLoras({ freeBytes: 1n });
    // The least recently used evictable user LoRA goes first: 1 was used before 9 and 2.
    expect(byBytes.evicted.map((e) => e.path)).toEqual([seeded.a1!.path]);
    const { stats } = await admin.getCacheStats({});
    expect(stats?.evictionsLast24h).toBe(3);
  });

  test("lora_eviction_enabled = false in model_cache.db turns eviction off at once", async () => {
    const admin = await client(["admin"]);
    db.prepare("UPDATE settings SET value = 'false' WHERE key = 'lora_eviction_enabled'").run();
    try {
      expect(await rpcFailure(admin.evictLoras({ runAgePolicy: true }))).toMatchObject({
        code: "FailedPrecondition",
        reason: "EVICTION_DISABLED",
      });
    } finally {
      db.prepare("UPDATE settings SET value = 'true' WHERE key = 'lora_eviction_enabled'").run();
    }
  });
});

describe("invalidation", () => {
  test("a LoraDeleted event removes the cached copy, protected or not, through the machine's durable consumer", async () => {
    expect(await exists(seeded.a4!.path)).toBe(true);
    const event = create(LoraDeletedSchema, {
      eventId: randomUUID(),
      loraId: "4",
      userId: A,
      blobPath: `users/${A}/loras/4.safetensors`,
      extension: "safetensors",
      deleteTime: timestampFromDate(new Date()),
      reason: "user",
    });
    await publishToStream(ns.natsUrl, ns.names.loraDeleted(A), toBinary(LoraDeletedSchema, event), event.eventId);
    await eventually(async () => {
      expect(await exists(seeded.a4!.path)).toBe(false);
      expect(getModel(db, seeded.a4!.path)).toBeUndefined();
    });
    expect(findLoraFileByPath(db, seeded.a4!.path)).toBeUndefined();
    const machine = await client(["machine"]);
    const { results } = await machine.ensureLoras({ jobId: "job-5", userId: A, refs: [user("4")] });
    expect(results[0]?.cacheHit).toBe(false);
    expect(results[0]?.path).toBe("");
  });
});
