import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Client } from "@connectrpc/connect";
import { LoraSource, type MachineCacheService } from "@emprops/contracts";
import { loadConfig as machineConfig, type RunningMachineCache, startMachineCache } from "@emprops/machine-cache";
import {
  blobEndpointOf,
  eventually,
  type FaultProxy,
  randomLoraSafetensors,
  startFaultProxy,
  testEnv,
} from "@emprops/testkit";
import {
  machineClient,
  putSharedLora,
  sha256,
  signedReads,
  type UploadedLora,
  uploadUserLora,
  userBlobPath,
  userClient,
} from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * One copy per content on a node, against the real registry, gateway,
 * Azurite, PostgreSQL and NATS: identical LoRAs of two users (or a user's
 * and a shared one) are one file linked under each path. Blob reads are
 * counted by a real HTTP proxy in front of Azurite, as in the machine-cache
 * end-to-end test.
 */

const SECRET = "machine-dedup-e2e-secret-0123456789";
const KIB = 1024;
const A = randomUUID();
const B = randomUUID();

let t: TestStack;
let proxy: FaultProxy;
let machine: Client<typeof MachineCacheService>;
let admin: Client<typeof MachineCacheService>;

const user = (l: UploadedLora) => ({ source: LoraSource.USER, identifier: l.id });
const upload = (owner: string, name: string, bytes: Buffer) =>
  uploadUserLora(t.stack.registry.url, SECRET, owner, name, bytes);
/** The same bytes uploaded by A and by B. */
async function twins(name: string, size: number): Promise<[UploadedLora, UploadedLora]> {
  const bytes = randomLoraSafetensors(size);
  return [await upload(A, name, bytes), await upload(B, name, bytes)];
}
const ensure = async (client: Client<typeof MachineCacheService>, owner: string, l: UploadedLora) => {
  const { results } = await client.ensureLoras({ jobId: `job-${randomUUID()}`, userId: owner, refs: [user(l)] });
  expect(results[0]?.error).toBeUndefined();
  return results[0]!;
};
const userBytes = async (client = admin) => Number((await client.getCacheStats({})).stats!.userLoraBytes);

beforeAll(async () => {
  t = await startTestStack("machine-dedup", {
    jwtSecret: SECRET,
    azureConnectionString: async (c) => {
      proxy = await startFaultProxy(blobEndpointOf(c.connectionString));
      return proxy.viaConnectionString(c.connectionString);
    },
    env: { registry: { OUTBOX_POLL_MS: "500" }, machineCache: { MIN_FREE_SPACE_GB: "0" } },
  });
  machine = machineClient(t.stack.machineCache.url, SECRET);
  admin = machineClient(t.stack.machineCache.url, SECRET, ["admin"]);
});

afterAll(async () => {
  await t?.stop();
  await proxy?.close();
});

test("a second user's identical upload is linked, not downloaded: no blob GET, its own path, bytes counted once", async () => {
  const [a, b] = await twins("same style.safetensors", 600 * KIB);
  const before = await userBytes();
  const first = await ensure(machine, A, a);
  expect(first).toMatchObject({ cacheHit: false, bytesDownloaded: BigInt(a.bytes.length), sha256: a.sha256 });
  expect(await userBytes()).toBe(before + a.bytes.length);

  const second = await ensure(machine, B, b);
  expect(signedReads(proxy, userBlobPath(b))).toHaveLength(0);
  expect(signedReads(proxy, userBlobPath(a))).toHaveLength(1);
  expect(second).toMatchObject({
    absolutePath: path.join(t.userLoraDir, B, `${b.id}-same style.safetensors`),
    bytesDownloaded: 0n,
    attempts: 0,
    sha256: b.sha256,
  });
  // B's answer names B's path only, never A's.
  expect(JSON.stringify(second, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain(A);
  const [statA, statB] = await Promise.all([fs.stat(first.absolutePath), fs.stat(second.absolutePath)]);
  expect(statB.ino).toBe(statA.ino);
  expect(statB.nlink).toBe(2);
  expect(statB.mode & 0o777).toBe(0o600);
  expect(sha256(await fs.readFile(second.absolutePath))).toBe(b.sha256);
  // The budget and the statistics count the content once; each path keeps its own row.
  expect(await userBytes()).toBe(before + a.bytes.length);
  const { models } = await admin.listCachedModels({ modelType: "user_lora", pageSize: 1000 });
  const listed = models.filter((m) => m.path === first.absolutePath || m.path === second.absolutePath);
  expect(listed.map((m) => [m.sizeBytes, m.sha256, m.linkedPaths])).toEqual([
    [BigInt(a.bytes.length), a.sha256, 2],
    [BigInt(a.bytes.length), a.sha256, 2],
  ]);
  // Another user still cannot name A's LoRA.
  const { results } = await machine.ensureLoras({ jobId: "job-cross", userId: B, refs: [user(a)] });
  expect(results[0]?.error).toMatchObject({ code: "not_found" });
});

test("evicting one reference removes that path only; the bytes go with the last one", async () => {
  const [a, b] = await twins("evicted style.safetensors", 500 * KIB);
  const pathA = (await ensure(machine, A, a)).absolutePath;
  const pathB = (await ensure(machine, B, b)).absolutePath;
  const held = await userBytes();

  const one = await admin.evictLoras({ refs: [user(a)] });
  expect(one.evicted.map((e) => [e.path, e.sizeBytes])).toEqual([[pathA, BigInt(a.bytes.length)]]);
  expect(one.freedBytes).toBe(0n);
  await expect(fs.stat(pathA)).rejects.toMatchObject({ code: "ENOENT" });
  expect(await userBytes()).toBe(held);
  const hit = await ensure(machine, B, b);
  expect(hit).toMatchObject({ absolutePath: pathB, cacheHit: true, sha256: b.sha256 });
  expect(sha256(await fs.readFile(pathB))).toBe(b.sha256);
  expect(signedReads(proxy, userBlobPath(b))).toHaveLength(0);

  const { models } = await admin.listCachedModels({ modelType: "user_lora", pageSize: 1000 });
  expect(models.find((m) => m.path === pathB)?.linkedPaths).toBe(1);

  const last = await admin.evictLoras({ refs: [user(b)] });
  expect(last.freedBytes).toBe(BigInt(b.bytes.length));
  await expect(fs.stat(pathB)).rejects.toMatchObject({ code: "ENOENT" });
  expect(await userBytes()).toBe(held - b.bytes.length);
});

test("a deletion event for one user's LoRA removes their path and keeps the other user's", async () => {
  const [a, b] = await twins("deleted style.safetensors", 300 * KIB);
  const pathA = (await ensure(machine, A, a)).absolutePath;
  const pathB = (await ensure(machine, B, b)).absolutePath;
  const held = await userBytes();

  await userClient(t.stack.registry.url, SECRET, A).deleteLora({ loraId: a.id });
  await eventually(async () => expect(await fs.stat(pathA).catch(() => undefined)).toBeUndefined());
  expect(await ensure(machine, B, b)).toMatchObject({ absolutePath: pathB, cacheHit: true, sha256: b.sha256 });
  expect(sha256(await fs.readFile(pathB))).toBe(b.sha256);
  expect(await userBytes()).toBe(held);
  expect(signedReads(proxy, userBlobPath(b))).toHaveLength(0);
});

test("a damaged file is a miss for every path linked to it; the next one links to the fresh download", async () => {
  const [a, b] = await twins("damaged style.safetensors", 400 * KIB);
  const pathA = (await ensure(machine, A, a)).absolutePath;
  await ensure(machine, B, b);
  // Truncated through A's path: the file both paths name.
  await fs.truncate(pathA, 1000);

  const again = await ensure(machine, B, b);
  expect(again).toMatchObject({ cacheHit: false, bytesDownloaded: BigInt(b.bytes.length), sha256: b.sha256 });
  expect(signedReads(proxy, userBlobPath(b))).toHaveLength(1);
  expect(sha256(await fs.readFile(again.absolutePath))).toBe(b.sha256);

  const relinked = await ensure(machine, A, a);
  expect(relinked).toMatchObject({ absolutePath: pathA, bytesDownloaded: 0n, sha256: a.sha256 });
  expect(signedReads(proxy, userBlobPath(a))).toHaveLength(1);
  expect((await fs.stat(pathA)).ino).toBe((await fs.stat(again.absolutePath)).ino);
  expect(sha256(await fs.readFile(pathA))).toBe(a.sha256);
});

test("a user LoRA identical to a shared one is linked to it, and the shared file stays readable", async () => {
  const [a] = await twins("also shared.safetensors", 200 * KIB);
  await putSharedLora(t.containers.connectionString, t.containers.sharedContainer, "also shared.safetensors", a.bytes);
  const { results } = await machine.ensureLoras({
    jobId: "job-shared",
    userId: A,
    refs: [{ source: LoraSource.SHARED, identifier: "also shared.safetensors" }],
  });
  const sharedPath = results[0]!.absolutePath;
  expect(results[0]).toMatchObject({ path: "shared/also shared.safetensors", sha256: a.sha256 });
  const before = await userBytes();
  const mine = await ensure(machine, A, a);
  expect(signedReads(proxy, userBlobPath(a))).toHaveLength(0);
  expect((await fs.stat(mine.absolutePath)).ino).toBe((await fs.stat(sharedPath)).ino);
  expect((await fs.stat(sharedPath)).mode & 0o777).toBe(0o644);
  // The shared file holds the bytes already: the user budget grows by nothing.
  expect(await userBytes()).toBe(before);
});

describe("user LoRAs on another file system than models/loras", () => {
  let dir: string;
  let shmDir: string;
  let other: RunningMachineCache;
  let client: Client<typeof MachineCacheService>;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "machine-dedup-exdev-"));
    shmDir = await fs.mkdtemp(path.join("/dev/shm", "machine-dedup-users-"));
    // The fallback needs two file systems: refuse to pass without them.
    expect((await fs.stat(shmDir)).dev).not.toBe((await fs.stat(dir)).dev);
    other = await startMachineCache(
      machineConfig({
        JWT_SECRET: SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: testEnv().natsUrl,
        NATS_NAMESPACE: t.natsNamespace,
        MACHINE_CACHE_PORT: "0",
        MACHINE_ID: "machine-dedup-exdev",
        COMFYUI_LORA_DIR: path.join(dir, "models", "loras"),
        USER_LORA_DIR: shmDir,
        MODEL_CACHE_DB: path.join(dir, "model_cache.db"),
        REGISTRY_URL: t.stack.registry.url,
        MIN_FREE_SPACE_GB: "0",
      }),
    );
    client = machineClient(other.url, SECRET);
  });

  afterAll(async () => {
    await other?.stop();
    for (const d of [dir, shmDir]) if (d) await fs.rm(d, { recursive: true, force: true });
  });

  test("no hard link across file systems (EXDEV): the shared file is copied, verified and counted, not downloaded", async () => {
    const [a] = await twins("cross device.safetensors", 300 * KIB);
    await putSharedLora(
      t.containers.connectionString,
      t.containers.sharedContainer,
      "cross device.safetensors",
      a.bytes,
    );
    const { results } = await client.ensureLoras({
      jobId: "job-xdev-shared",
      userId: A,
      refs: [{ source: LoraSource.SHARED, identifier: "cross device.safetensors" }],
    });
    expect(results[0]?.error).toBeUndefined();
    const before = await userBytes(machineClient(other.url, SECRET, ["admin"]));
    const mine = await ensure(client, A, a);
    expect(mine).toMatchObject({
      absolutePath: path.join(shmDir, A, `${a.id}-cross device.safetensors`),
      bytesDownloaded: 0n,
    });
    expect(signedReads(proxy, userBlobPath(a))).toHaveLength(0);
    const copy = await fs.stat(mine.absolutePath);
    expect(copy.nlink).toBe(1);
    expect(copy.mode & 0o777).toBe(0o600);
    expect(sha256(await fs.readFile(mine.absolutePath))).toBe(a.sha256);
    // A copy takes its own bytes, so the budget counts them.
    expect(await userBytes(machineClient(other.url, SECRET, ["admin"]))).toBe(before + a.bytes.length);
    expect(await ensure(client, A, a)).toMatchObject({ cacheHit: true, absolutePath: mine.absolutePath });
  });
});
