/**
 * Time to a served cache hit while the registry is frozen (it accepts
 * connections and never answers: a hung process, a black-holed network),
 * for a hit due for revalidation (older than LORA_REVALIDATE_AFTER_SECONDS)
 * and for one checked recently, and what a miss answers and when, in the
 * service in this process with its default settings.
 *
 *   npm run bench:frozen-registry -w services/machine-cache
 */
import net from "node:net";
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { loadConfig, startMachineCache } from "@emprops/machine-cache";
import { mintToken } from "@emprops/platform";
import { startNatsServer } from "@emprops/testkit";
import Database from "better-sqlite3";

const SECRET = "frozen-registry-bench-secret";
const USER = "6f1d2c3b-4a59-4e7d-8c11-0a1b2c3d4e5f";

async function main(): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 10);
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-frozen-bench-"));
  const nats = await startNatsServer();
  const sockets = new Set<net.Socket>();
  const frozen = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => frozen.listen(0, "127.0.0.1", resolve));
  const loraDir = path.join(root, "models", "loras");
  const dbFile = path.join(root, "model_cache.db");
  const cfg = loadConfig({
    JWT_SECRET: SECRET,
    LOG_LEVEL: "silent",
    NATS_URL: nats.url,
    NATS_NAMESPACE: `bench-frozen-${randomUUID().slice(0, 8)}`,
    MACHINE_CACHE_PORT: "0",
    MACHINE_ID: `bench-frozen-${randomUUID().slice(0, 8)}`,
    COMFYUI_LORA_DIR: loraDir,
    MODEL_CACHE_DB: dbFile,
    REGISTRY_URL: `http://127.0.0.1:${(frozen.address() as net.AddressInfo).port}`,
    MIN_FREE_SPACE_GB: "0",
  });
  try {
    await (await startMachineCache(cfg)).stop();
    const seed = new Database(dbFile);
    const now = new Date().toISOString().replace("Z", "000");
    for (const [id, validatedAt] of [
      ["1", 0],
      ["2", Date.now() + 24 * 3600 * 1000],
    ] as const) {
      const file = path.join(loraDir, "users", USER, `${id}-bench.safetensors`);
      await fs.mkdir(path.dirname(file), { recursive: true });
      await fs.writeFile(file, Buffer.alloc(1024, 7));
      seed
        .prepare(
          `INSERT INTO models (path, model_type, filename, size_bytes, last_used, use_count, download_date)
           VALUES (?, 'user_lora', ?, 1024, ?, 0, ?)`,
        )
        .run(file, path.basename(file), now, now);
      seed
        .prepare(
          `INSERT INTO lora_files (path, source, identifier, user_id, file_name, sha256, size_bytes, validated_at_ms)
           VALUES (?, 'user', ?, ?, 'bench.safetensors', '', 1024, ?)`,
        )
        .run(file, id, USER, validatedAt);
    }
    seed.close();
    const cache = await startMachineCache(cfg);
    const token = await mintToken(SECRET, { subject: cfg.machineId, roles: ["machine"] });
    const ensure = async (identifier: string) => {
      const started = performance.now();
      const res = await fetch(`${cache.url}/emprops.cache.v1.MachineCacheService/EnsureLoras`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ jobId: "bench", userId: USER, refs: [{ source: "LORA_SOURCE_USER", identifier }] }),
      });
      const json = (await res.json()) as { results: { cacheHit?: boolean; error?: { reason?: string } }[] };
      const r = json.results[0];
      return { ms: performance.now() - started, answer: r?.cacheHit ? "hit" : String(r?.error?.reason) };
    };
    const row = async (label: string, identifier: string, n: number) => {
      const samples = [];
      for (let i = 0; i < n; i++) samples.push(await ensure(identifier));
      const ms = samples.map((s) => s.ms).sort((x, y) => x - y);
      const answers = [...new Set(samples.map((s) => s.answer))].join(", ");
      console.log(
        `| ${label} | ${answers} | ${ms[Math.floor(ms.length / 2)]!.toFixed(1)} ms | ${ms[ms.length - 1]!.toFixed(1)} ms | ${n} |`,
      );
    };
    console.log(
      `registry frozen; LORA_REVALIDATE_BUDGET_MS ${cfg.revalidateBudgetMs}, REGISTRY_TIMEOUT_MS ${cfg.registryTimeoutMs}`,
    );
    console.log("| EnsureLoras | answer | median | max | calls |");
    console.log("|---|---|---|---|---|");
    await row("hit checked recently", "2", rounds);
    await row("hit due for revalidation", "1", rounds);
    await row("miss", "404", Math.min(rounds, 3));
    await cache.stop();
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => frozen.close(() => resolve()));
    await nats.stop();
    await fs.rm(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
