import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type InMemoryTelemetry, startInMemoryTelemetry } from "@emprops/platform";
import { testNamespace, type TestNamespace } from "@emprops/testkit";
import { loadConfig } from "../src/config.js";
import { startMachineCache } from "../src/service.js";

let telemetry: InMemoryTelemetry;
let ns: TestNamespace;
let root: string;

beforeAll(async () => {
  // Before the service: its instruments bind to the providers registered now.
  telemetry = startInMemoryTelemetry();
  ns = testNamespace("machine-cache-gauges");
  root = await fs.mkdtemp(path.join(os.tmpdir(), "mc-gauges-"));
});

afterAll(async () => {
  await telemetry?.stop();
  await ns?.cleanup();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

const gauge = async (name: string) => (await telemetry.collect()).filter((p) => p.name === name);

test("the cache gauges report while the service runs and no longer read its database once it stopped", async () => {
  const cache = await startMachineCache(
    loadConfig({
      JWT_SECRET: "machine-cache-gauges-test-secret",
      LOG_LEVEL: "silent",
      NATS_URL: ns.natsUrl,
      NATS_NAMESPACE: ns.namespace,
      MACHINE_CACHE_PORT: "0",
      MACHINE_ID: "gauges-test",
      COMFYUI_LORA_DIR: path.join(root, "models", "loras"),
      MODEL_CACHE_DB: path.join(root, "model_cache.db"),
      REGISTRY_URL: "http://127.0.0.1:1",
      LORA_CACHE_MAX_GB: "1",
      MIN_FREE_SPACE_GB: "0",
    }),
  );
  expect(await gauge("machine_cache.utilization")).toEqual([expect.objectContaining({ value: 0 })]);
  await cache.stop();
  // A callback left registered reads the closed model_cache.db, and the collection fails.
  await expect(telemetry.collect()).resolves.toEqual(expect.any(Array));
});
