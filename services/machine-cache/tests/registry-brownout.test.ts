import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ErrorReason, LoraSource, MachineCacheService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import { testNamespace, type TestNamespace } from "@emprops/testkit";
import { loadConfig } from "../src/config.js";
import { findLoraFileByPath } from "../src/db/lora-files.js";
import { openDatabase } from "../src/db/open-database.js";
import { addTombstone } from "../src/db/tombstones.js";
import { type RunningMachineCache, startMachineCache } from "../src/service.js";
import { exists, type SeededLora, seedLora } from "./support/seed.js";

const SECRET = "machine-cache-brownout-test-secret";
const U = "7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b";
const HOUR = 3600 * 1000;

/** A registry that accepts connections and never answers (a hung process, a black-holed network). */
async function frozenRegistry(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let ns: TestNamespace;
let root: string;
let registry: Awaited<ReturnType<typeof frozenRegistry>>;
let cache: RunningMachineCache;
let client: Client<typeof MachineCacheService>;
let stale: SeededLora;
let deleted: SeededLora;
let dbFile: string;

const user = (id: string) => ({ source: LoraSource.USER, identifier: id });

beforeAll(async () => {
  ns = testNamespace("machine-cache-brownout");
  root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-brownout-"));
  registry = await frozenRegistry();
  const loraDir = path.join(root, "models", "loras");
  dbFile = path.join(root, "model_cache.db");
  const db = openDatabase(dbFile);
  const checkedLongAgo = { sizeBytes: 32, lastUsed: new Date(), validatedAtMs: Date.now() - 2 * HOUR };
  stale = await seedLora(db, loraDir, { relativePath: `users/${U}/1-stale.safetensors`, ...checkedLongAgo });
  deleted = await seedLora(db, loraDir, { relativePath: `users/${U}/2-deleted.safetensors`, ...checkedLongAgo });
  // Its LoraDeleted arrived (the tombstone) but the copy is still on disk.
  addTombstone(db, U, "2", Date.now());
  db.close();
  cache = await startMachineCache(
    loadConfig({
      JWT_SECRET: SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: ns.natsUrl,
      NATS_NAMESPACE: ns.namespace,
      MACHINE_CACHE_PORT: "0",
      MACHINE_ID: "brownout",
      COMFYUI_LORA_DIR: loraDir,
      MODEL_CACHE_DB: dbFile,
      REGISTRY_URL: registry.url,
      // Longer than the test's timeout: only the revalidation budget and the caller's deadline end a wait.
      REGISTRY_TIMEOUT_MS: "120000",
      LORA_REVALIDATE_BUDGET_MS: "300",
      MIN_FREE_SPACE_GB: "0",
    }),
  );
  const token = await mintToken(SECRET, { subject: "brownout", roles: ["machine"] });
  client = createClient(
    MachineCacheService,
    createConnectTransport({ baseUrl: cache.url, httpVersion: "1.1", interceptors: [bearerInterceptor(token)] }),
  );
});

afterAll(async () => {
  await cache?.stop();
  await registry?.close();
  await ns?.cleanup();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

test("a hit due for revalidation is served from the cache when the registry hangs, after the revalidation budget", async () => {
  const { results } = await client.ensureLoras({ jobId: "job-1", userId: U, refs: [user("1")] });
  expect(results[0]).toMatchObject({ cacheHit: true, absolutePath: stale.path });
  expect(results[0]?.error).toBeUndefined();
});

test("a copy whose deletion arrived (tombstone) is not served unchecked: NOT_FOUND, and the file goes", async () => {
  const { results } = await client.ensureLoras({ jobId: "job-2", userId: U, refs: [user("2"), user("1")] });
  expect(results[0]).toMatchObject({ path: "", error: { code: "not_found", reason: ErrorReason.LORA_NOT_FOUND } });
  expect(results[1]).toMatchObject({ cacheHit: true, absolutePath: stale.path });
  expect(await exists(deleted.path)).toBe(false);
  const db = openDatabase(dbFile);
  expect(findLoraFileByPath(db, deleted.path)).toBeUndefined();
  db.close();
});

test("a miss fails on its own within the caller's deadline with a retriable reason; the hits of its batch are served", async () => {
  const { results } = await client.ensureLoras(
    { jobId: "job-3", userId: U, refs: [user("1"), user("404")] },
    { timeoutMs: 3000 },
  );
  expect(results[0]).toMatchObject({ cacheHit: true, absolutePath: stale.path });
  expect(results[1]).toMatchObject({
    path: "",
    error: { code: "unavailable", reason: ErrorReason.DEPENDENCY_UNAVAILABLE },
  });
  expect(results[1]?.error?.message).toMatch(/registry/);
});
