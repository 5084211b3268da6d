import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { Client } from "@connectrpc/connect";
import { LoraSource, type MachineCacheService } from "@emprops/contracts";
import { loadConfig as machineConfig, type RunningMachineCache, startMachineCache } from "@emprops/machine-cache";
import { ManualClock } from "@emprops/platform";
import {
  blobEndpointOf,
  callPickle,
  eventually,
  testEnv,
  type TestContainers,
  randomLoraSafetensors,
  type FaultProxy,
  startFaultProxy,
  torchZip,
} from "@emprops/testkit";
import Database from "better-sqlite3";
import { type RunningStack } from "../src/index.js";
import {
  adminClient,
  machineClient,
  onSignedReadsOf,
  putSharedLora,
  sha256,
  signedReadOf,
  signedReads,
  type UploadedLora,
  uploadUserLora,
  userBlobPath,
  userClient,
} from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * The machine cache against the real registry, gateway, Azurite, PostgreSQL
 * and NATS. Blob downloads are counted by a real HTTP proxy in front of
 * Azurite: the gateway is given a connection string whose BlobEndpoint is the
 * proxy, so every URL it signs leads through it. Faults (a cut, a corrupted
 * byte, a stall) are injected there, on signed reads only.
 */

const SECRET = "machine-cache-e2e-secret-0123456789";
const KIB = 1024;
const MIB = 1024 * KIB;
const A = randomUUID();
const B = randomUUID();
const run = promisify(execFile);

let t: TestStack;
let containers: TestContainers;
let proxy: FaultProxy;
let machineDir: string;
let loraDir: string;
let stack: RunningStack;
let machine: Client<typeof MachineCacheService>;

const user = (l: UploadedLora | string) => ({
  source: LoraSource.USER,
  identifier: typeof l === "string" ? l : l.id,
});
const upload = (owner: string, name: string, size: number) =>
  uploadUserLora(stack.registry.url, SECRET, owner, name, randomLoraSafetensors(size));

beforeAll(async () => {
  t = await startTestStack("machine-e2e", {
    jwtSecret: SECRET,
    machineId: "e2e-machine-1",
    // The stack reaches Azure through the proxy, so a test can count and cut blob requests.
    azureConnectionString: async (c) => {
      proxy = await startFaultProxy(blobEndpointOf(c.connectionString));
      return proxy.viaConnectionString(c.connectionString);
    },
    env: {
      registry: { OUTBOX_POLL_MS: "500" },
      machineCache: {
        MIN_FREE_SPACE_GB: "0",
        LORA_DOWNLOAD_MAX_ATTEMPTS: "3",
        LORA_DOWNLOAD_RETRY_MIN_MS: "20",
        LORA_DOWNLOAD_RETRY_MAX_MS: "100",
        USAGE_FLUSH_INTERVAL_SECONDS: "1",
        CACHE_STATS_INTERVAL_SECONDS: "1",
      },
    },
  });
  ({ stack, containers, machineDir, loraDir } = t);
  machine = machineClient(stack.machineCache.url, SECRET);
});

afterAll(async () => {
  await t?.stop();
  await proxy?.close();
});

beforeEach(() => {
  proxy.rules.length = 0;
});

/** What the EmProps node does with the answer: the file at absolutePath must be a complete safetensors file. */
async function comfyLoads(file: string): Promise<{ tensors: string[]; size: number }> {
  const { stdout } = await run("python3", [
    "-c",
    `
import json, os, struct, sys
path = os.path.join(sys.argv[1], sys.argv[2])
assert os.path.isfile(path), path
with open(path, 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    header = json.loads(f.read(n))
size = os.path.getsize(path)
end = max(t['data_offsets'][1] for k, t in header.items() if k != '__metadata__')
assert 8 + n + end == size, (n, end, size)
print(json.dumps({'tensors': sorted(k for k in header if k != '__metadata__'), 'size': size}))
`,
    loraDir,
    file,
  ]);
  return JSON.parse(stdout) as { tensors: string[]; size: number };
}

/** The stack machine-cache's user LoRA directory (its default, beside models/). */
const userLoraDir = () => path.join(machineDir, "user_lora_cache");

describe("EnsureLoras end to end", () => {
  let first: UploadedLora;

  beforeAll(async () => {
    first = await upload(A, "My Anime Style (v2).safetensors", 700 * KIB);
  });

  test("first use downloads and verifies; second use is a hit with no blob request; ComfyUI finds the file", async () => {
    const miss = await machine.ensureLoras({ jobId: "job-1", userId: A, workflowId: "wf-anime", refs: [user(first)] });
    // The name as uploaded: it passed the LoRA file-name rule, so the cache keeps it.
    const path1 = path.join(userLoraDir(), A, `${first.id}-My Anime Style (v2).safetensors`);
    expect(miss.results[0]).toMatchObject({
      path: "",
      absolutePath: path1,
      cacheHit: false,
      sizeBytes: BigInt(first.bytes.length),
      bytesDownloaded: BigInt(first.bytes.length),
      attempts: 1,
      sha256: first.sha256,
    });
    expect(miss.results[0]?.error).toBeUndefined();
    expect(signedReads(proxy, userBlobPath(first))).toHaveLength(1);
    expect(sha256(await fs.readFile(path1))).toBe(first.sha256);
    expect(await comfyLoads(path1)).toEqual({ tensors: ["lora_unet_down.lora_down.weight"], size: first.bytes.length });

    const hit = await machine.ensureLoras({ jobId: "job-2", userId: A, refs: [user(first)] });
    expect(hit.results[0]).toMatchObject({ absolutePath: path1, cacheHit: true, bytesDownloaded: 0n, attempts: 0 });
    expect(signedReads(proxy, userBlobPath(first))).toHaveLength(1);

    // The node package's view of the same download: an absolute path keyed row of type user_lora.
    const sqlite = new Database(path.join(machineDir, "model_cache.db"), { readonly: true });
    try {
      expect(sqlite.prepare("SELECT * FROM models WHERE path = ?").get(path1)).toMatchObject({
        model_type: "user_lora",
        filename: `${first.id}-My Anime Style (v2).safetensors`,
        size_bytes: first.bytes.length,
        use_count: 2,
        protected: 0,
        is_ignore: 0,
      });
    } finally {
      sqlite.close();
    }
  });

  test("64 concurrent EnsureLoras for one uncached LoRA cause exactly one blob download", async () => {
    const lora = await upload(A, "crowd.safetensors", 1200 * KIB);
    const results = await Promise.all(
      Array.from({ length: 64 }, (_, i) => machine.ensureLoras({ jobId: `crowd-${i}`, userId: A, refs: [user(lora)] })),
    );
    const answers = results.map((r) => r.results[0]!);
    expect(
      answers.every((a) => !a.error && a.absolutePath === path.join(userLoraDir(), A, `${lora.id}-crowd.safetensors`)),
    ).toBe(true);
    expect(signedReads(proxy, userBlobPath(lora))).toHaveLength(1);
    expect(answers.reduce((s, a) => s + a.bytesDownloaded, 0n)).toBe(BigInt(lora.bytes.length));
    expect(sha256(await fs.readFile(answers[0]!.absolutePath))).toBe(lora.sha256);
  });

  test("another user's LoRA id is NOT_FOUND, even while the file is cached on this machine", async () => {
    const theirs = await machine.ensureLoras({ jobId: "job-b", userId: B, refs: [user(first)] });
    expect(theirs.results[0]?.path).toBe("");
    expect(theirs.results[0]?.error).toMatchObject({ code: "not_found", reason: 6 });
    expect(signedReads(proxy, userBlobPath(first))).toHaveLength(1);
    // Still A's, untouched.
    const mine = await machine.ensureLoras({ jobId: "job-a", userId: A, refs: [user(first)] });
    expect(mine.results[0]?.cacheHit).toBe(true);
  });

  test("a download cut mid-stream resumes from the partial file and ends with the right sha256", async () => {
    const lora = await upload(A, "cut.safetensors", 1500 * KIB);
    proxy.rules.push(onSignedReadsOf(userBlobPath(lora), { kind: "cut", afterBytes: 600 * KIB }));
    const { results } = await machine.ensureLoras({ jobId: "job-cut", userId: A, refs: [user(lora)] });
    expect(results[0]).toMatchObject({ attempts: 2, resumed: true, sha256: lora.sha256 });
    // The bytes before the cut were kept: nothing was fetched twice.
    expect(results[0]?.bytesDownloaded).toBe(BigInt(lora.bytes.length));
    const reads = proxy.requests.filter(signedReadOf(userBlobPath(lora)));
    expect(reads).toHaveLength(2);
    expect(Number(/bytes=(\d+)-/.exec(reads[1]?.range ?? "")?.[1])).toBeGreaterThan(0);
    expect(sha256(await fs.readFile(results[0]!.absolutePath))).toBe(lora.sha256);
  });

  test("a corrupted download is rejected and retried; one corrupted every time fails alone with CHECKSUM_MISMATCH", async () => {
    const once = await upload(A, "flipped-once.safetensors", 300 * KIB);
    const always = await upload(A, "flipped-always.safetensors", 300 * KIB);
    proxy.rules.push(onSignedReadsOf(userBlobPath(once), { kind: "corrupt", atByte: 1000 }));
    const retried = await machine.ensureLoras({ jobId: "job-flip", userId: A, refs: [user(once)] });
    expect(retried.results[0]).toMatchObject({ attempts: 2, sha256: once.sha256, cacheHit: false });

    proxy.rules.push(onSignedReadsOf(userBlobPath(always), { kind: "corrupt", atByte: 2000 }, 3));
    const { results } = await machine.ensureLoras({
      jobId: "job-flip-2",
      userId: A,
      refs: [user(always), user(first)],
    });
    expect(results[0]?.error).toMatchObject({ code: "data_loss", reason: 5, metadata: { attempts: "3" } });
    expect(results[0]?.path).toBe("");
    expect(results[1]).toMatchObject({ cacheHit: true, absolutePath: expect.stringContaining(`${first.id}-`) });
    const leftovers = await fs.readdir(path.join(userLoraDir(), A));
    expect(leftovers.filter((f) => f.startsWith(`${always.id}-`))).toEqual([]);
  });

  test("three LoRAs in one request and a workflow's own references are fetched together", async () => {
    const three = await Promise.all(["one", "two", "three"].map((n) => upload(A, `${n}.safetensors`, 400 * KIB)));
    const workflow = {
      "5": { class_type: "EmProps_Lora_Loader", inputs: { lora_source: "user", lora_identifier: three[2]!.id } },
    };
    const { results } = await machine.ensureLoras({
      jobId: "job-three",
      userId: A,
      refs: [user(three[0]!), user(three[1]!)],
      workflowJson: JSON.stringify(workflow),
    });
    expect(results.map((r) => [r.ref?.identifier, r.sha256, !!r.error])).toEqual(
      three.map((l) => [l.id, l.sha256, false]),
    );
  });

  test("a shared LoRA by name comes from the shared container into loras/shared/", async () => {
    const bytes = randomLoraSafetensors(200 * KIB);
    await putSharedLora(containers.connectionString, containers.sharedContainer, "popular style.safetensors", bytes);
    const { results } = await machine.ensureLoras({
      jobId: "job-shared",
      userId: B,
      refs: [{ source: LoraSource.SHARED, identifier: "popular style.safetensors" }],
    });
    expect(results[0]?.path).toBe("shared/popular style.safetensors");
    expect(sha256(await fs.readFile(path.join(loraDir, results[0]!.path)))).toBe(sha256(bytes));
    const missing = await machine.ensureLoras({
      jobId: "job-shared-2",
      userId: B,
      refs: [{ source: LoraSource.SHARED, identifier: "nobody-has-this.safetensors" }],
    });
    expect(missing.results[0]?.error).toMatchObject({ code: "not_found", reason: 6 });
  });

  test("a shared LoRA carries the gateway's sha256: a byte flipped in transit is never stored nor served as a hit", async () => {
    const name = "flipped shared.safetensors";
    const bytes = randomLoraSafetensors(250 * KIB);
    await putSharedLora(containers.connectionString, containers.sharedContainer, name, bytes);
    const ref = { source: LoraSource.SHARED, identifier: name };
    const blobPath = `/models/loras/${encodeURIComponent(name)}`;
    // Every attempt of the machine's download gets one byte flipped (the gateway's own verification read is not signed).
    proxy.rules.push(onSignedReadsOf(blobPath, { kind: "corrupt", atByte: 5000 }, 3));
    const flipped = await machine.ensureLoras({ jobId: "job-shared-flip", userId: B, refs: [ref] });
    expect(flipped.results[0]?.error).toMatchObject({ code: "data_loss", reason: 5, metadata: { attempts: "3" } });
    expect(proxy.requests.filter((r) => r.fault === "corrupt" && signedReadOf(blobPath)(r))).toHaveLength(3);
    await expect(fs.stat(path.join(loraDir, "shared", name))).rejects.toMatchObject({ code: "ENOENT" });
    const db = new Database(path.join(machineDir, "model_cache.db"), { readonly: true });
    try {
      const rows = db.prepare("SELECT path FROM models WHERE path LIKE ?").all(`%${name}`);
      expect(rows).toEqual([]);
    } finally {
      db.close();
    }
    // Asked again, it is not a hit: it is downloaded, this time intact, and only then served from the cache.
    const fetched = await machine.ensureLoras({ jobId: "job-shared-flip-2", userId: B, refs: [ref] });
    expect(fetched.results[0]).toMatchObject({ cacheHit: false, sha256: sha256(bytes), path: `shared/${name}` });
    expect(sha256(await fs.readFile(path.join(loraDir, "shared", name)))).toBe(sha256(bytes));
    const hit = await machine.ensureLoras({ jobId: "job-shared-flip-3", userId: B, refs: [ref] });
    expect(hit.results[0]).toMatchObject({ cacheHit: true, sha256: sha256(bytes) });
  });

  test("a shared LoRA that fails verification is refused with its reason and never downloaded", async () => {
    const name = "evil shared.pt";
    await putSharedLora(
      containers.connectionString,
      containers.sharedContainer,
      name,
      torchZip(callPickle("os", "system", "id")),
    );
    const { results } = await machine.ensureLoras({
      jobId: "job-shared-evil",
      userId: B,
      refs: [{ source: LoraSource.SHARED, identifier: name }],
    });
    expect(results[0]?.error).toMatchObject({ code: "failed_precondition", reason: 4 /* UNSAFE_PICKLE */ });
    expect(results[0]?.error?.message).toContain("os.system");
    expect(signedReads(proxy, `/models/loras/${encodeURIComponent(name)}`)).toEqual([]);
    await expect(fs.stat(path.join(loraDir, "shared", name))).rejects.toMatchObject({ code: "ENOENT" });
  });

  test("usage batches reach the registry and the machine's statistics reach the admin API", async () => {
    const lora = userClient(stack.registry.url, SECRET, A);
    await eventually(async () => {
      const got = (await lora.getLora({ loraId: first.id })).lora!;
      expect(got.usageCount).toBeGreaterThanOrEqual(3n);
      expect(got.workflowsUsing.map((w) => w.id)).toContain("wf-anime");
    });
    const admin = adminClient(stack.registry.url, SECRET);
    await eventually(async () => {
      const { machines } = await admin.getCacheStats({ machineId: "e2e-machine-1" });
      expect(machines[0]?.userLoraCount ?? 0).toBeGreaterThanOrEqual(5);
      expect(machines[0]?.cacheHitRate24h).toBeDefined();
    });
  });

  test("WarmLoras prefetches given and popular LoRAs while idle", async () => {
    const later = await upload(A, "warm-me.safetensors", 256 * KIB);
    const warm = await machine.warmLoras({ userId: A, refs: [user(later), user(first)], includePopular: true });
    expect(warm.alreadyCached).toBeGreaterThanOrEqual(1);
    expect(warm.queued).toBeGreaterThanOrEqual(1);
    await eventually(async () => {
      const { models } = await machineClient(stack.machineCache.url, SECRET, ["admin"]).listCachedModels({
        modelType: "user_lora",
        pageSize: 1000,
      });
      expect(models.map((m) => m.path)).toContainEqual(expect.stringContaining(`/${A}/${later.id}-`));
    });
    const { results } = await machine.ensureLoras({ jobId: "job-warm", userId: A, refs: [user(later)] });
    expect(results[0]?.cacheHit).toBe(true);
  });
});

describe("a second machine with a small cache and an injected clock", () => {
  let clock: ManualClock;
  let small: RunningMachineCache;
  let client: Client<typeof MachineCacheService>;
  let dir: string;
  const CACHE = 3.5 * MIB;
  let kept = { shared: "", second: "", third: "", fifth: "" };

  beforeAll(async () => {
    clock = new ManualClock(new Date("2031-03-01T10:00:00Z"));
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "machine-e2e-small-"));
    small = await startMachineCache(
      machineConfig({
        JWT_SECRET: SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: testEnv().natsUrl,
        NATS_NAMESPACE: t.natsNamespace,
        MACHINE_CACHE_PORT: "0",
        MACHINE_ID: "e2e-machine-small",
        COMFYUI_LORA_DIR: path.join(dir, "models", "loras"),
        MODEL_CACHE_DB: path.join(dir, "model_cache.db"),
        REGISTRY_URL: stack.registry.url,
        LORA_CACHE_MAX_GB: String(CACHE / 1024 ** 3),
        LORA_MAX_AGE_DAYS: "7",
        MIN_FREE_SPACE_GB: "0",
      }),
      { clock },
    );
    client = machineClient(small.url, SECRET);
  });

  afterAll(async () => {
    await small?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const cached = async () => {
    const { models } = await machineClient(small.url, SECRET, ["admin"]).listCachedModels({ pageSize: 1000 });
    return models.map((m) => m.path).sort();
  };
  const use = async (l: UploadedLora) => {
    clock.advance(60_000);
    const { results } = await client.ensureLoras({ jobId: `job-${l.id}`, userId: A, refs: [user(l)] });
    expect(results[0]?.error).toBeUndefined();
    const { stats } = await client.getCacheStats({});
    expect(Number(stats!.userLoraBytes)).toBeLessThanOrEqual(CACHE);
    return results[0]!.absolutePath;
  };

  test("a full cache evicts the least recently used unprotected, non-ignored user LoRAs, only as many as needed", async () => {
    const l = await Promise.all([1, 2, 3, 4, 5].map((i) => upload(A, `lru-${i}.safetensors`, MIB)));
    const shared = randomLoraSafetensors(MIB);
    await putSharedLora(containers.connectionString, containers.sharedContainer, "keep-me.safetensors", shared);
    const sharedPath = (
      await client.ensureLoras({
        jobId: "job-shared",
        userId: A,
        refs: [{ source: LoraSource.SHARED, identifier: "keep-me.safetensors" }],
      })
    ).results[0]!.absolutePath;
    const p = [await use(l[0]!), await use(l[1]!), await use(l[2]!)];
    // An operator protects the second and marks the third ignored, as the node package's tools do.
    const sqlite = new Database(path.join(dir, "model_cache.db"));
    sqlite.prepare("UPDATE models SET protected = 1 WHERE path LIKE ?").run(`%/${l[1]!.id}-%`);
    sqlite.close();

    // A fourth needs room for one: the oldest evictable (the first) goes, nothing else.
    const p4 = await use(l[3]!);
    expect(await cached()).toEqual([sharedPath, p[1]!, p[2]!, p4].sort());

    // The third is used again, so the fourth is now the least recently used evictable one.
    await use(l[2]!);
    const p5 = await use(l[4]!);
    expect(await cached()).toEqual([sharedPath, p[1]!, p[2]!, p5].sort());
    kept = { shared: sharedPath, second: p[1]!, third: p[2]!, fifth: p5 };
    expect(await fs.readdir(path.join(dir, "user_lora_cache", A))).toHaveLength(3);
  });

  test("age eviction with the injected clock removes exactly the LoRAs unused for more than the configured days", async () => {
    const admin = machineClient(small.url, SECRET, ["admin"]);
    const DAY = 24 * 3600 * 1000;
    // Now: the fifth was used just now, the third a minute before it.
    clock.advance(7 * DAY - 30_000);
    const first = await admin.evictLoras({ runAgePolicy: true });
    expect(first.evicted.map((e) => [e.path, e.reason])).toEqual([[kept.third, "age"]]);
    clock.advance(60_000);
    const second = await admin.evictLoras({ runAgePolicy: true });
    expect(second.evicted.map((e) => [e.path, e.reason])).toEqual([[kept.fifth, "age"]]);
    // Protected user LoRAs and shared LoRAs are never aged out.
    clock.advance(365 * DAY);
    expect((await admin.evictLoras({ runAgePolicy: true })).evicted).toEqual([]);
    expect(await cached()).toEqual([kept.shared, kept.second].sort());
  });
});
