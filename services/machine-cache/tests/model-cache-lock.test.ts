import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LoraSource, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import { rpcFailure, testNamespace, type TestNamespace } from "@emprops/testkit";
import { loadConfig } from "../src/config.js";
import { getModel } from "../src/db/models.js";
import { openDatabase } from "../src/db/open-database.js";
import { type RunningMachineCache, startMachineCache } from "../src/service.js";
import { pythonLockHolder } from "./support/python.js";
import { type SeededLora, seedLora } from "./support/seed.js";

const SECRET = "machine-cache-lock-test-secret";
const U = "3c6f0d2e-1b4a-4c5d-8e9f-0a1b2c3d4e5f";

let ns: TestNamespace;
let root: string;
const running: RunningMachineCache[] = [];

interface Machine {
  cache: RunningMachineCache;
  dbFile: string;
  lora: SeededLora;
  /** A hit's answer: whether it was one and its absolute path. */
  ensureHit(): Promise<{ cacheHit: boolean; path: string }>;
  health(): Promise<string>;
}

/** A machine cache with one cached LoRA (no registry: hits come from the disk) and the given lock wait. */
async function machine(name: string, lockWaitMs: number): Promise<Machine> {
  const dir = path.join(root, name);
  const loraDir = path.join(dir, "models", "loras");
  const dbFile = path.join(dir, "model_cache.db");
  const seedDb = openDatabase(dbFile);
  const lora = await seedLora(seedDb, loraDir, {
    relativePath: `users/${U}/1-locked.safetensors`,
    sizeBytes: 64,
    lastUsed: new Date(),
  });
  seedDb.close();
  const cache = await startMachineCache(
    loadConfig({
      JWT_SECRET: SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: ns.natsUrl,
      NATS_NAMESPACE: ns.namespace,
      MACHINE_CACHE_PORT: "0",
      MACHINE_ID: `lock-${name}`,
      COMFYUI_LORA_DIR: loraDir,
      MODEL_CACHE_DB: dbFile,
      MODEL_CACHE_DB_LOCK_WAIT_MS: String(lockWaitMs),
      REGISTRY_URL: "http://127.0.0.1:1",
      LORA_REVALIDATE_AFTER_SECONDS: "86400",
      MIN_FREE_SPACE_GB: "0",
    }),
  );
  running.push(cache);
  const token = await mintToken(SECRET, { subject: `lock-${name}`, roles: ["machine"] });
  const client = createClient(
    MachineCacheService,
    createConnectTransport({ baseUrl: cache.url, httpVersion: "1.1", interceptors: [bearerInterceptor(token)] }),
  );
  return {
    cache,
    dbFile,
    lora,
    ensureHit: async () => {
      const { results } = await client.ensureLoras({
        jobId: "job-lock",
        userId: U,
        refs: [{ source: LoraSource.USER, identifier: "1" }],
      });
      const [r] = results;
      if (!r || r.error) throw new Error(`no hit: ${JSON.stringify(r?.error)}`);
      return { cacheHit: r.cacheHit, path: r.absolutePath };
    },
    health: async () => {
      const res = await fetch(`${cache.url}/grpc.health.v1.Health/Check`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      return ((await res.json()) as { status: string }).status;
    },
  };
}

beforeAll(async () => {
  ns = testNamespace("machine-cache-lock");
  root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-lock-"));
});

afterAll(async () => {
  for (const cache of running) await cache.stop();
  await ns?.cleanup();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

test("while the node package's Python holds the write lock, health answers and the event loop keeps turning; the hit completes once the lock is released", async () => {
  const m = await machine("patient", 60_000);
  const usesBefore = getModelUses(m);
  const holder = await pythonLockHolder(m.dbFile);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const heldFrom = performance.now();
  let settled = false;
  const hit = m.ensureHit().finally(() => (settled = true));
  try {
    // Answered while the lock is still held: nothing waits for SQLite on the event loop.
    expect(await m.health()).toBe("SERVING");
    // Keep the lock for a second at least while the hit waits for it between attempts.
    while (performance.now() - heldFrom < 1000) {
      await new Promise((r) => setTimeout(r, 50));
      expect(await m.health()).toBe("SERVING");
    }
    expect(settled).toBe(false);
  } finally {
    await holder.release();
  }
  const heldMs = performance.now() - heldFrom;
  expect(await hit).toEqual({ cacheHit: true, path: m.lora.path });
  loop.disable();
  // Waiting inside SQLite would stall the loop for as long as the lock was held.
  expect(loop.max / 1e6).toBeLessThan(heldMs / 2);
  expect(getModelUses(m)).toBe(usesBefore + 1);
});

test("a lock held longer than the lock wait answers UNAVAILABLE / DEPENDENCY_UNAVAILABLE, never an internal error; the next call is a hit", async () => {
  const m = await machine("impatient", 200);
  const holder = await pythonLockHolder(m.dbFile);
  try {
    expect(await rpcFailure(m.ensureHit())).toMatchObject({
      code: "Unavailable",
      reason: "DEPENDENCY_UNAVAILABLE",
      metadata: expect.objectContaining({ dependency: "model_cache.db" }),
    });
    expect(await m.health()).toBe("SERVING");
  } finally {
    await holder.release();
  }
  expect(await m.ensureHit()).toEqual({ cacheHit: true, path: m.lora.path });
});

function getModelUses(m: Machine): number {
  const db = openDatabase(m.dbFile);
  try {
    return getModel(db, m.lora.path)?.use_count ?? 0;
  } finally {
    db.close();
  }
}
