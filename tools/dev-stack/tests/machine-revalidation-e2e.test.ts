import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Client } from "@connectrpc/connect";
import { LoraResolverService, LoraSource, type MachineCacheService } from "@emprops/contracts";
import { loadConfig as machineConfig, type RunningMachineCache, startMachineCache } from "@emprops/machine-cache";
import { createServiceClient, ManualClock, mintToken } from "@emprops/platform";
import { randomLoraSafetensors, testEnv, testNamespace, type TestNamespace } from "@emprops/testkit";
import Database from "better-sqlite3";
import { machineClient, type UploadedLora, uploadUserLora, userClient } from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * Cached copies checked again with the real registry: a machine that hears
 * no deletion events (its own NATS namespace) and a ManualClock, so a copy
 * is stale exactly when the test says. Every ResolveLoras the machine makes
 * goes through the real client and is recorded on the way.
 */

const SECRET = "machine-revalidation-e2e-secret-0123";
const REVALIDATE_S = 60;

let t: TestStack;
let deaf: TestNamespace;
let dir: string;
let clock: ManualClock;
let machine: RunningMachineCache;
let client: Client<typeof MachineCacheService>;
const calls: { refs: string[]; signUrls: boolean }[] = [];
let loras: Record<"a" | "b" | "c" | "d", UploadedLora>;

const user = (l: UploadedLora) => ({ source: LoraSource.USER, identifier: l.id });
const ensure = (...refs: UploadedLora[]) =>
  client.ensureLoras({ jobId: `job-${calls.length}`, userId: t.userId, refs: refs.map(user) });
/** The registry calls `fn` made. */
async function callsOf<T>(fn: () => Promise<T>): Promise<{ result: T; made: typeof calls }> {
  const before = calls.length;
  const result = await fn();
  return { result, made: calls.slice(before) };
}
const staleAgain = () => clock.advance((REVALIDATE_S + 1) * 1000);

beforeAll(async () => {
  t = await startTestStack("machine-reval", { jwtSecret: SECRET });
  const upload = (name: string, size: number) =>
    uploadUserLora(t.stack.registry.url, SECRET, t.userId, `${name}.safetensors`, randomLoraSafetensors(size));
  loras = {
    a: await upload("a", 40_000),
    b: await upload("b", 50_000),
    c: await upload("c", 60_000),
    d: await upload("d", 70_000),
  };
  const real = createServiceClient(LoraResolverService, t.stack.registry.url, () =>
    mintToken(SECRET, { subject: "reval-machine", roles: ["machine"] }),
  );
  const resolver: Client<typeof LoraResolverService> = {
    ...real,
    resolveLoras: (req, opts) => {
      calls.push({ refs: (req.refs ?? []).map((r) => r.identifier ?? ""), signUrls: !req.skipDownloadUrls });
      return real.resolveLoras(req, opts);
    },
  };
  deaf = testNamespace("machine-reval-deaf");
  clock = new ManualClock(new Date("2031-05-01T10:00:00Z"));
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "machine-reval-"));
  machine = await startMachineCache(
    machineConfig({
      JWT_SECRET: SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: testEnv().natsUrl,
      NATS_NAMESPACE: deaf.namespace,
      MACHINE_CACHE_PORT: "0",
      MACHINE_ID: "reval-machine",
      COMFYUI_LORA_DIR: path.join(dir, "models", "loras"),
      MODEL_CACHE_DB: path.join(dir, "model_cache.db"),
      REGISTRY_URL: t.stack.registry.url,
      MIN_FREE_SPACE_GB: "0",
      LORA_REVALIDATE_AFTER_SECONDS: String(REVALIDATE_S),
    }),
    { clock, resolver },
  );
  client = machineClient(machine.url, SECRET);
});

afterAll(async () => {
  await machine?.stop();
  await t?.stop();
  await deaf?.cleanup();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

test("a batch with a stale copy and a miss asks the registry once, with read URLs", async () => {
  const first = await callsOf(() => ensure(loras.a, loras.b));
  expect(first.made).toEqual([{ refs: [loras.a.id, loras.b.id], signUrls: true }]);
  expect(first.result.results.map((r) => r.cacheHit)).toEqual([false, false]);

  staleAgain();
  const { result, made } = await callsOf(() => ensure(loras.a, loras.c, loras.a));
  expect(made).toEqual([{ refs: [loras.a.id, loras.c.id], signUrls: true }]);
  expect(result.results.map((r) => [r.cacheHit, r.error?.reason])).toEqual([
    [true, undefined],
    [false, undefined],
    [true, undefined],
  ]);
  expect(Number(result.results[1]?.bytesDownloaded)).toBe(loras.c.bytes.length);

  // Confirmed just now: not stale, so no registry call at all.
  expect((await callsOf(() => ensure(loras.a, loras.c))).made).toEqual([]);
});

test("stale copies alone are checked without read URLs; one deleted meanwhile is evicted and NOT_FOUND", async () => {
  const bPath = path.join(dir, "user_lora_cache", t.userId, `${loras.b.id}-b.safetensors`);
  expect((await fs.stat(bPath)).size).toBe(loras.b.bytes.length);
  await userClient(t.stack.registry.url, SECRET, t.userId).deleteLora({ loraId: loras.b.id });
  staleAgain();
  const { result, made } = await callsOf(() => ensure(loras.a, loras.b));
  expect(made).toEqual([{ refs: [loras.a.id, loras.b.id], signUrls: false }]);
  expect(result.results[0]).toMatchObject({ cacheHit: true, sha256: loras.a.sha256 });
  expect(result.results[1]?.error).toMatchObject({ code: "not_found", reason: 6 });
  await expect(fs.stat(bPath)).rejects.toMatchObject({ code: "ENOENT" });
});

test("a stale copy whose content changed is evicted and downloaded again", async () => {
  await ensure(loras.d);
  const db = new Database(path.join(dir, "model_cache.db"));
  try {
    // What the cache recorded no longer matches the registry's checksum.
    db.prepare("UPDATE lora_files SET sha256 = ? WHERE identifier = ?").run("0".repeat(64), loras.d.id);
  } finally {
    db.close();
  }
  staleAgain();
  const { result, made } = await callsOf(() => ensure(loras.d));
  // The batch's call signs no URL (nothing was missing); the download asks for its own.
  expect(made).toEqual([
    { refs: [loras.d.id], signUrls: false },
    { refs: [loras.d.id], signUrls: true },
  ]);
  expect(result.results[0]).toMatchObject({ cacheHit: false, sha256: loras.d.sha256 });
  expect(Number(result.results[0]?.bytesDownloaded)).toBe(loras.d.bytes.length);
});
