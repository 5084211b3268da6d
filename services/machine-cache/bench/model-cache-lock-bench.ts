/**
 * The machine cache while another process holds model_cache.db's write lock
 * (Python's sqlite3, as the EmProps node package uses it, in BEGIN IMMEDIATE):
 * the longest event-loop stall of the service (perf_hooks
 * monitorEventLoopDelay, in this process), health-check latency polled every
 * 50 ms, and what a cached EnsureLoras answers and when, for a lock held
 * shorter and longer than the service's lock wait.
 *
 *   npm run bench:lock -w services/machine-cache
 *   BENCH_LOCK_SHORT_S=4 BENCH_LOCK_LONG_S=12 npm run bench:lock -w services/machine-cache
 *
 * No registry is needed: the hit is answered from the disk and model_cache.db.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { loadConfig, startMachineCache } from "@emprops/machine-cache";
import { mintToken } from "@emprops/platform";
import { startNatsServer } from "@emprops/testkit";
import Database from "better-sqlite3";

const SECRET = "model-cache-lock-bench-secret";
const USER = "6f1d2c3b-4a59-4e7d-8c11-0a1b2c3d4e5f";

function env(name: string, fallback: number): number {
  const value = Number(process.env[name] ?? fallback);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

/** Python holds BEGIN IMMEDIATE for `seconds`; resolves once it holds the lock, `released` when it committed. */
function holdLock(file: string, seconds: number): Promise<{ released: Promise<void> }> {
  const script = `
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute('BEGIN IMMEDIATE')
conn.execute("UPDATE settings SET value = value WHERE key = 'min_free_space_gb'")
print('locked', flush=True)
time.sleep(float(sys.argv[2]))
conn.execute('COMMIT')
`;
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", script, file, String(seconds)], { stdio: ["ignore", "pipe", "inherit"] });
    const released = new Promise<void>((ok, fail) =>
      child.on("exit", (code) => (code === 0 ? ok() : fail(new Error(`python exited ${code}`)))),
    );
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("locked")) resolve({ released });
    });
    child.on("error", reject);
    released.catch(reject);
  });
}

interface Phase {
  holdS: number;
  loopMaxMs: number;
  healthMedianMs: number;
  healthMaxMs: number;
  healthCalls: number;
  ensureMs: number;
  ensureAnswer: string;
}

async function main(): Promise<void> {
  const shortS = env("BENCH_LOCK_SHORT_S", 4);
  const longS = env("BENCH_LOCK_LONG_S", 12);
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-lock-bench-"));
  // A nats-server of its own: the service starts its invalidation consumer before it serves.
  const nats = await startNatsServer();
  const loraDir = path.join(root, "models", "loras");
  const dbFile = path.join(root, "model_cache.db");
  const cfg = loadConfig({
    JWT_SECRET: SECRET,
    LOG_LEVEL: "silent",
    NATS_URL: nats.url,
    NATS_NAMESPACE: `bench-lock-${randomUUID().slice(0, 8)}`,
    MACHINE_CACHE_PORT: "0",
    MACHINE_ID: `bench-lock-${randomUUID().slice(0, 8)}`,
    COMFYUI_LORA_DIR: loraDir,
    MODEL_CACHE_DB: dbFile,
    REGISTRY_URL: "http://127.0.0.1:1",
    LORA_REVALIDATE_AFTER_SECONDS: "86400",
    MIN_FREE_SPACE_GB: "0",
  });
  try {
    // A first start makes the schema; the cached LoRA is then put in place as a finished download leaves it.
    await (await startMachineCache(cfg)).stop();
    const file = path.join(loraDir, "users", USER, "1-bench.safetensors");
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, Buffer.alloc(1024, 7));
    const seed = new Database(dbFile);
    const now = new Date().toISOString().replace("Z", "000");
    seed
      .prepare(
        `INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date)
         VALUES (?, 'user_lora', '1-bench.safetensors', 1024, ?, 0, ?)`,
      )
      .run(file, now, now);
    seed
      .prepare(
        `INSERT INTO lora_files (path, source, identifier, user_id, file_name, sha256, size_bytes, validated_at_ms)
         VALUES (?, 'user', '1', ?, 'bench.safetensors', '', 1024, ?)`,
      )
      .run(file, USER, Date.now());
    seed.close();

    const cache = await startMachineCache(cfg);
    const token = await mintToken(SECRET, { subject: cfg.machineId, roles: ["machine"] });
    const post = async (rpc: string, body: unknown) => {
      const started = performance.now();
      const res = await fetch(`${cache.url}/${rpc}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      const json = (await res.json()) as Record<string, unknown>;
      return { ms: performance.now() - started, status: res.status, json };
    };
    const ensure = () =>
      post("emprops.cache.v1.MachineCacheService/EnsureLoras", {
        jobId: `bench-${randomUUID().slice(0, 8)}`,
        userId: USER,
        refs: [{ source: "LORA_SOURCE_USER", identifier: "1" }],
      });
    const health = () => post("grpc.health.v1.Health/Check", {});
    await ensure();
    await health();

    const phase = async (holdS: number): Promise<Phase> => {
      const loop = monitorEventLoopDelay({ resolution: 5 });
      const lock = await holdLock(dbFile, holdS);
      loop.enable();
      let held = true;
      void lock.released.then(() => (held = false));
      const ensured = ensure().then((r) => {
        const results = r.json.results as { cacheHit?: boolean; error?: { code?: string } }[] | undefined;
        const answer =
          r.status !== 200
            ? `HTTP ${r.status} ${String(r.json.code)}: ${String(r.json.message)}`
            : results?.[0]?.cacheHit
              ? "hit"
              : JSON.stringify(results?.[0]?.error ?? r.json);
        return { ms: r.ms, answer };
      });
      const healthMs: number[] = [];
      while (held) {
        healthMs.push((await health()).ms);
        await new Promise((r) => setTimeout(r, 50));
      }
      const ensuredAnswer = await ensured;
      loop.disable();
      const sorted = [...healthMs].sort((a, b) => a - b);
      return {
        holdS,
        loopMaxMs: loop.max / 1e6,
        healthMedianMs: sorted[Math.floor(sorted.length / 2)] ?? 0,
        healthMaxMs: sorted[sorted.length - 1] ?? 0,
        healthCalls: healthMs.length,
        ensureMs: ensuredAnswer.ms,
        ensureAnswer: ensuredAnswer.answer,
      };
    };
    const phases = [await phase(shortS), await phase(longS)];
    await cache.stop();

    const ms = (n: number) => `${n.toFixed(1)} ms`;
    console.log(`lock wait ${cfg.modelCacheDbLockWaitMs} ms`);
    console.log("| lock held | event-loop stall (max) | health p50 / max (calls) | cached EnsureLoras |");
    console.log("|---|---|---|---|");
    for (const p of phases) {
      console.log(
        `| ${p.holdS} s | ${ms(p.loopMaxMs)} | ${ms(p.healthMedianMs)} / ${ms(p.healthMaxMs)} (${p.healthCalls}) | ${p.ensureAnswer} after ${ms(p.ensureMs)} |`,
      );
    }
  } finally {
    await nats.stop();
    await fs.rm(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
