import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { LoraSource, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor, createLogger, mintToken } from "@emprops/platform";
import { testNamespace, type TestNamespace } from "@emprops/testkit";
import { loadConfig } from "../src/config.js";
import { openDatabase } from "../src/db/open-database.js";
import { type RunningMachineCache, startMachineCache } from "../src/service.js";
import { type SeededLora, seedLora } from "./support/seed.js";

const run = promisify(execFile);
const SECRET = "machine-cache-node-package-db-secret";
const USER = "3f0c2a4e-8b1d-4c6e-9a7f-5d4e3c2b1a09";
const FIXTURE = path.join(__dirname, "fixtures", "emprops_model_cache.py");

interface PackageRow {
  path: string;
  model_type: string;
  use_count: number;
  last_used: string;
  protected: boolean;
  is_ignore: boolean;
}

/** A ComfyUI directory with the EmProps node package's db module installed (or not). */
async function comfyUi(withPackage: boolean): Promise<{ root: string; loraDir: string; packageDb: string }> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "comfyui-"));
  const loraDir = path.join(root, "models", "loras");
  await fs.mkdir(loraDir, { recursive: true });
  const packageDir = path.join(root, "custom_nodes", "emprops_comfy_nodes", "db");
  if (withPackage) {
    await fs.mkdir(packageDir, { recursive: true });
    await fs.copyFile(FIXTURE, path.join(packageDir, "model_cache.py"));
  }
  return { root, loraDir, packageDb: path.join(packageDir, "model_cache.db") };
}

describe("model_cache.db is chosen where the EmProps node package keeps its own", () => {
  const roots: string[] = [];
  afterAll(async () => {
    for (const root of roots) await fs.rm(root, { recursive: true, force: true });
  });

  test("the package's db/model_cache.db when it is installed, even before ComfyUI made the file", async () => {
    const comfy = await comfyUi(true);
    roots.push(comfy.root);
    const cfg = loadConfig({ JWT_SECRET: SECRET, COMFYUI_LORA_DIR: comfy.loraDir });
    expect([cfg.modelCacheDbPath, cfg.modelCacheDbChosenBy]).toEqual([comfy.packageDb, "emprops_comfy_nodes"]);
  });

  test("otherwise model_cache.db beside ComfyUI; MODEL_CACHE_DB always wins", async () => {
    const bare = await comfyUi(false);
    const installed = await comfyUi(true);
    roots.push(bare.root, installed.root);
    const cfg = loadConfig({ JWT_SECRET: SECRET, COMFYUI_LORA_DIR: bare.loraDir });
    expect([cfg.modelCacheDbPath, cfg.modelCacheDbChosenBy]).toEqual([
      path.join(bare.root, "model_cache.db"),
      "default",
    ]);
    const chosen = path.join(installed.root, "elsewhere.db");
    const explicit = loadConfig({ JWT_SECRET: SECRET, COMFYUI_LORA_DIR: installed.loraDir, MODEL_CACHE_DB: chosen });
    expect([explicit.modelCacheDbPath, explicit.modelCacheDbChosenBy]).toEqual([chosen, "MODEL_CACHE_DB"]);
  });
});

/**
 * The machine-cache and the node package's own model_cache.py (the fixture,
 * installed where the package keeps it) reading and writing the one file
 * while the service runs.
 */
describe("one model_cache.db shared with the node package's model_cache.py", () => {
  let ns: TestNamespace;
  let comfy: Awaited<ReturnType<typeof comfyUi>>;
  let cache: RunningMachineCache;
  let cached: SeededLora;
  let checkpoint: string;
  const logged: { msg: string; path?: string; chosen_by?: string }[] = [];

  /** Runs one of the package's calls, in its own process, exactly as ComfyUI would. */
  const pkg = async <T>(command: string, ...args: string[]): Promise<T> => {
    const script = path.join(path.dirname(comfy.packageDb), "model_cache.py");
    const { stdout } = await run("python3", [script, command, ...args], { timeout: 30_000 });
    return JSON.parse(stdout) as T;
  };
  const machine = async () =>
    createClient(
      MachineCacheService,
      createConnectTransport({
        baseUrl: cache.url,
        httpVersion: "1.1",
        interceptors: [bearerInterceptor(await mintToken(SECRET, { subject: "node", roles: ["machine"] }))],
      }),
    );

  beforeAll(async () => {
    ns = testNamespace("node-package-db");
    comfy = await comfyUi(true);
    // ComfyUI started first: the package made its database and registered a checkpoint it downloaded.
    await pkg("init");
    checkpoint = path.join(comfy.root, "models", "checkpoints", "sdxl_base.safetensors");
    await fs.mkdir(path.dirname(checkpoint), { recursive: true });
    await fs.writeFile(checkpoint, Buffer.alloc(2048, 1));
    await pkg("register_model", checkpoint, "checkpoint", "2048");
    // A user LoRA this cache downloaded in an earlier run.
    const earlier = openDatabase(comfy.packageDb);
    cached = await seedLora(earlier, comfy.loraDir, {
      relativePath: `users/${USER}/12-portrait.safetensors`,
      sizeBytes: 512,
      lastUsed: new Date(Date.now() - 3600_000),
      validatedAtMs: Date.now(),
    });
    earlier.close();

    const logger = createLogger("machine-cache", "info", {
      write: (line: string) => void logged.push(JSON.parse(line) as (typeof logged)[number]),
    });
    cache = await startMachineCache(
      loadConfig({
        JWT_SECRET: SECRET,
        NATS_URL: ns.natsUrl,
        NATS_NAMESPACE: ns.namespace,
        MACHINE_CACHE_PORT: "0",
        MACHINE_ID: `node-package-db-${randomUUID().slice(0, 8)}`,
        COMFYUI_LORA_DIR: comfy.loraDir,
        // Nothing listens here: the LoRA above is a hit served from disk.
        REGISTRY_URL: "http://127.0.0.1:1",
        LORA_REVALIDATE_AFTER_SECONDS: "3600",
        MIN_FREE_SPACE_GB: "0",
      }),
      { logger },
    );
  });

  afterAll(async () => {
    await cache?.stop();
    await ns?.cleanup();
    if (comfy) await fs.rm(comfy.root, { recursive: true, force: true });
  });

  test("the service says at start which file it uses and why", () => {
    expect(logged).toContainEqual(
      expect.objectContaining({
        msg: "model_cache.db in use",
        path: comfy.packageDb,
        chosen_by: "emprops_comfy_nodes",
      }),
    );
  });

  test("the package's rows are the service's, and the service's rows are the package's", async () => {
    const { models } = await (await machine()).listCachedModels({});
    expect(models.map((m) => [m.path, m.modelType])).toEqual(
      expect.arrayContaining([
        [checkpoint, "checkpoint"],
        [cached.path, "user_lora"],
      ]),
    );
    const rows = await pkg<PackageRow[]>("get_all_models");
    expect(rows.map((r) => [r.path, r.model_type])).toEqual(
      expect.arrayContaining([
        [checkpoint, "checkpoint"],
        [cached.path, "user_lora"],
      ]),
    );
    // The settings the service seeded sit beside the package's own.
    expect(await pkg("get_setting", "min_free_space_gb")).toBe("0");
    expect(await pkg("get_setting", "lora_cache_max_gb")).toBe("50");
  });

  test("a use recorded by either side is seen by the other, in one LRU order", async () => {
    const machineCache = await machine();
    // The node package's loader records a use of the LoRA (update_model_usage, by absolute path).
    const before = (await pkg<PackageRow>("get_model_info", cached.path)).use_count;
    await pkg("update_model_usage", cached.path);
    const afterPackage = (await machineCache.listCachedModels({ modelType: "user_lora" })).models.find(
      (m) => m.path === cached.path,
    );
    expect(Number(afterPackage?.useCount)).toBe(before + 1);

    // A job uses it through the service: the package sees the use and the time, in its own text format.
    const { results } = await machineCache.ensureLoras({
      jobId: "job-1",
      userId: USER,
      refs: [{ source: LoraSource.USER, identifier: "12" }],
    });
    expect(results[0]).toEqual(expect.objectContaining({ path: "", absolutePath: cached.path }));
    expect(results[0]?.cacheHit).toBe(true);
    const row = await pkg<PackageRow>("get_model_info", cached.path);
    expect(row.use_count).toBe(before + 2);
    expect(row.last_used).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$/);

    // The package's LRU query orders both writers' rows: the checkpoint (used earlier) first.
    const lru = await pkg<PackageRow[]>("get_least_recently_used_models", "10");
    expect(lru.map((r) => r.path)).toEqual([checkpoint, cached.path]);
  });

  test("the package writes while the service holds the database open, and the service reads it", async () => {
    const lora = path.join(comfy.root, "models", "loras", "old_style.safetensors");
    await fs.writeFile(lora, Buffer.alloc(64, 2));
    await pkg("register_model", lora, "lora", "64");
    const { models } = await (await machine()).listCachedModels({ modelType: "lora" });
    expect(models.map((m) => [m.path, Number(m.sizeBytes), Number(m.useCount)])).toEqual([[lora, 64, 1]]);
  });
});
