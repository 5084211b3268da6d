import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { LoraSource } from "@emprops/contracts";
import { loadConfig as machineConfig, type RunningMachineCache, startMachineCache } from "@emprops/machine-cache";
import {
  blobEndpointOf,
  createTestContainers,
  eventually,
  createTestDatabase,
  startNatsServer,
  type StartedNatsServer,
  testNamespace,
  type TestContainers,
  type TestDatabase,
  type TestNamespace,
  randomLoraSafetensors,
  type FaultProxy,
  startFaultProxy,
} from "@emprops/testkit";
import Database from "better-sqlite3";
import { type RunningStack, startStack } from "../src/index.js";
import {
  machineClient,
  onSignedReadsOf,
  sha256,
  signedReadOf,
  signedReads,
  type UploadedLora,
  uploadUserLora,
  userBlobPath,
  userClient,
} from "./machine-support.js";

/*
 * Deletion through NATS (also while NATS is down), a crash in the middle of a
 * download, and a read URL that expires mid-download: the real registry,
 * gateway and Azurite, and a nats-server of this file's own that it can stop
 * and start again on the same port and store.
 */

const SECRET = "machine-recovery-e2e-secret-012345";
const KIB = 1024;
const A = randomUUID();

let db: TestDatabase;
let ns: TestNamespace;
let containers: TestContainers;
let nats: StartedNatsServer;
let natsPort: number;
let natsDir: string;
let proxy: FaultProxy;
let machineDir: string;
let stack: RunningStack;

const user = (l: UploadedLora) => ({ source: LoraSource.USER, identifier: l.id });
const upload = (name: string, size: number) =>
  uploadUserLora(stack.registry.url, SECRET, A, name, randomLoraSafetensors(size));
/** A user LoRA's file under a ComfyUI directory: in the machine-cache's default user LoRA directory. */
const fileOf = (comfyDir: string, l: UploadedLora) => path.join(comfyDir, "user_lora_cache", A, `${l.id}-${l.name}`);
const exists = (p: string) =>
  fs.stat(p).then(
    () => true,
    () => false,
  );

beforeAll(async () => {
  natsDir = await fs.mkdtemp(path.join(os.tmpdir(), "machine-recovery-nats-"));
  nats = await startNatsServer({ dataDir: natsDir, persistent: true });
  natsPort = Number(new URL(nats.url).port);
  [db, containers] = await Promise.all([
    createTestDatabase("machine-recovery"),
    createTestContainers("machine-recovery"),
  ]);
  ns = testNamespace("machine-recovery");
  proxy = await startFaultProxy(blobEndpointOf(containers.connectionString));
  machineDir = await fs.mkdtemp(path.join(os.tmpdir(), "machine-recovery-"));
  stack = await startStack({
    databaseUrl: db.url,
    natsUrl: nats.url,
    natsNamespace: ns.namespace,
    azureConnectionString: proxy.viaConnectionString(containers.connectionString),
    userContainer: containers.userContainer,
    sharedContainer: containers.sharedContainer,
    jwtSecret: SECRET,
    machineDir,
    machineId: "recovery-machine-1",
    logLevel: "silent",
    env: {
      registry: { OUTBOX_POLL_MS: "300" },
      // A read URL's expiry is rounded down to a whole second, so it lives between 2 and 3 s: the first read starts
      // well within that, and a read that waits out a 3 s stall finds the URL expired.
      gateway: { DOWNLOAD_URL_TTL_SECONDS: "3" },
      machineCache: {
        MIN_FREE_SPACE_GB: "0",
        LORA_DOWNLOAD_STALL_TIMEOUT_SECONDS: "3",
        LORA_DOWNLOAD_RETRY_MIN_MS: "20",
        LORA_DOWNLOAD_RETRY_MAX_MS: "100",
      },
    },
  });
});

afterAll(async () => {
  await stack?.stop();
  await proxy?.close();
  await nats?.stop();
  await Promise.all([db?.cleanup(), containers?.cleanup()]);
  for (const dir of [machineDir, natsDir]) if (dir) await fs.rm(dir, { recursive: true, force: true });
});

test("a LoRA deleted in the registry disappears from the machine through NATS", async () => {
  const lora = await upload("deleted-soon.safetensors", 200 * KIB);
  const machine = machineClient(stack.machineCache.url, SECRET);
  const { results } = await machine.ensureLoras({ jobId: "job-del", userId: A, refs: [user(lora)] });
  const file = results[0]!.absolutePath;
  expect(await exists(file)).toBe(true);

  await userClient(stack.registry.url, SECRET, A).deleteLora({ loraId: lora.id });
  await eventually(async () => expect(await exists(file)).toBe(false));
  const sqlite = new Database(path.join(machineDir, "model_cache.db"), { readonly: true });
  expect(sqlite.prepare("SELECT COUNT(*) AS n FROM models WHERE path = ?").get(file)).toEqual({ n: 0 });
  sqlite.close();
});

test("with NATS down during the delete, the LoRA disappears after NATS returns", async () => {
  const lora = await upload("deleted-while-down.safetensors", 200 * KIB);
  const machine = machineClient(stack.machineCache.url, SECRET);
  const { results } = await machine.ensureLoras({ jobId: "job-down", userId: A, refs: [user(lora)] });
  const file = results[0]!.absolutePath;

  await nats.stop();
  try {
    await userClient(stack.registry.url, SECRET, A).deleteLora({ loraId: lora.id });
    // The deletion is in the registry's outbox; nothing can reach the machine yet.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await exists(file)).toBe(true);
  } finally {
    nats = await startNatsServer({ dataDir: natsDir, persistent: true, port: natsPort });
  }
  await eventually(async () => expect(await exists(file)).toBe(false), { timeoutMs: 45_000 });
}, 90_000);

test("a read URL that expired during a stalled download is resolved again", async () => {
  const lora = await upload("slow-start.safetensors", 300 * KIB);
  proxy.rules.push(onSignedReadsOf(userBlobPath(lora), { kind: "stall", afterBytes: 10 * KIB }));
  const machine = machineClient(stack.machineCache.url, SECRET);
  const { results } = await machine.ensureLoras({ jobId: "job-expired", userId: A, refs: [user(lora)] });
  expect(results[0]?.error).toBeUndefined();
  expect(results[0]).toMatchObject({ sha256: lora.sha256, resumed: true });
  const reads = proxy.requests.filter(signedReadOf(userBlobPath(lora)));
  // Stalled after 10 KiB, then refused (expired), then the rest fetched with a fresh URL.
  expect(reads.map((r) => [r.status, r.fault])).toEqual([
    [206, "stall"],
    [403, undefined],
    [206, undefined],
  ]);
  expect(reads[2]!.path).not.toBe(reads[0]!.path);
  // The 10 KiB that arrived before the stall were kept: the fresh URL is asked for the rest only.
  expect(reads[2]!.range).toBe(`bytes=${10 * KIB}-${lora.bytes.length - 1}`);
  expect(sha256(await fs.readFile(results[0]!.absolutePath))).toBe(lora.sha256);
});

test("crash recovery: a partial download and a stale row left behind are reconciled at start, and the download resumes", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "machine-recovery-crash-"));
  const lora = await upload("interrupted.safetensors", 900 * KIB);
  const config = machineConfig({
    JWT_SECRET: SECRET,
    LOG_LEVEL: "silent",
    NATS_URL: nats.url,
    NATS_NAMESPACE: ns.namespace,
    MACHINE_CACHE_PORT: "0",
    MACHINE_ID: "recovery-machine-2",
    COMFYUI_LORA_DIR: path.join(dir, "models", "loras"),
    MODEL_CACHE_DB: path.join(dir, "model_cache.db"),
    REGISTRY_URL: stack.registry.url,
    MIN_FREE_SPACE_GB: "0",
    LORA_DOWNLOAD_STALL_TIMEOUT_SECONDS: "120",
  });
  let instance: RunningMachineCache | undefined = await startMachineCache(config);
  try {
    proxy.rules.push(onSignedReadsOf(userBlobPath(lora), { kind: "stall", afterBytes: 400 * KIB }));
    const pending = machineClient(instance.url, SECRET)
      .ensureLoras({ jobId: "job-crash", userId: A, refs: [user(lora)] })
      .catch((err: unknown) => err);
    const target = fileOf(dir, lora);
    await eventually(async () => expect(await exists(`${target}.partial`)).toBe(true));
    await eventually(() => expect(signedReads(proxy, userBlobPath(lora))).toHaveLength(1));
    // The machine goes down mid-download.
    await instance.stop();
    instance = undefined;
    await pending;
    expect(await exists(`${target}.partial`)).toBe(true);
    expect(await exists(`${target}.partial.json`)).toBe(true);

    // A row whose file is gone, as a crash between deleting a file and its row leaves it.
    const ghost = path.join(dir, "user_lora_cache", A, "999-ghost.safetensors");
    const sqlite = new Database(path.join(dir, "model_cache.db"));
    sqlite
      .prepare(
        "INSERT INTO models (path, model_type, filename, size_bytes, last_used, download_date) VALUES (?, 'user_lora', ?, 5, ?, ?)",
      )
      .run(ghost, path.basename(ghost), "2031-01-01T00:00:00.000000", "2031-01-01T00:00:00.000000");
    sqlite.close();

    instance = await startMachineCache(config);
    const check = new Database(path.join(dir, "model_cache.db"), { readonly: true });
    expect(check.prepare("SELECT COUNT(*) AS n FROM models WHERE path = ?").get(ghost)).toEqual({ n: 0 });
    check.close();
    expect(await exists(`${target}.partial`)).toBe(true);

    const { results } = await machineClient(instance.url, SECRET).ensureLoras({
      jobId: "job-after-crash",
      userId: A,
      refs: [user(lora)],
    });
    expect(results[0]).toMatchObject({ resumed: true, sha256: lora.sha256, attempts: 1 });
    expect(results[0]!.bytesDownloaded).toBeLessThan(BigInt(lora.bytes.length));
    expect(sha256(await fs.readFile(target))).toBe(lora.sha256);
    expect(await exists(`${target}.partial`)).toBe(false);
  } finally {
    await instance?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
});
