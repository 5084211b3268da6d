/**
 * The machine cache against the real registry, gateway and Azurite, measured
 * side by side in one run:
 *   1. cold fetch of a 500 MiB LoRA through EnsureLoras against a plain
 *      download of the same blob with the same HTTP client (undici), and the
 *      plain download followed by a sha256 of the file (what hashing after the
 *      download would cost);
 *   2. three LoRAs in one EnsureLoras against three sequential requests;
 *   3. a cached EnsureLoras against a health check on the same server (p50/p99);
 *   4. the service's peak memory while it fetches a 2 GB LoRA.
 *
 *   npm run bench -w services/machine-cache
 *   BENCH_SIZE_MIB=100 BENCH_BIG_BYTES=500000000 BENCH_ROUNDS=1 npm run bench -w services/machine-cache
 *
 * The registry and gateway run in this process (startStack); the machine
 * cache under test runs as a child process (its built dist/main.js), so its
 * memory is its own: VmRSS sampled every 20 ms and VmHWM from /proc. Azurite
 * keeps its blobs on disk; every file is deleted at the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { createWriteStream, readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { BlockBlobClient } from "@azure/storage-blob";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraResolverService, LoraService, LoraSource } from "@emprops/contracts";
import { startStack } from "@emprops/dev-stack";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import {
  createTestContainers,
  createTestDatabase,
  provideTestDependencies,
  startAzurite,
  testNamespace,
} from "@emprops/testkit";
import { Agent, request } from "undici";

const MiB = 1024 * 1024;
const SIZE = Number(process.env.BENCH_SIZE_MIB ?? 500) * MiB;
const THREE_SIZE = Number(process.env.BENCH_THREE_MIB ?? 150) * MiB;
const BIG = Number(process.env.BENCH_BIG_BYTES ?? 2_000_000_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LATENCY_CALLS = Number(process.env.BENCH_LATENCY_CALLS ?? 2000);
/** Ranged parts in flight per file for the cold fetch, one child process each ("1" is a single stream). */
const PARTS = (process.env.BENCH_PARTS ?? "4,1").split(",").map(Number);
const SECRET = "machine-cache-bench-secret-0123456789";
const USER = randomUUID();

const mb = (bytes: number) => bytes / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const percentile = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
};

/** A valid safetensors file of `size` bytes in 8 MiB blocks: one U8 tensor of random noise. */
function* safetensorsBlocks(size: number): Generator<Buffer> {
  const probe = (n: number) =>
    JSON.stringify({ "lora_unet.lora_down.weight": { dtype: "U8", shape: [n], data_offsets: [0, n] } });
  let dataBytes = size - 8 - probe(size).length;
  let text = probe(dataBytes);
  text += " ".repeat(size - 8 - dataBytes - text.length);
  if (8 + text.length + dataBytes !== size) throw new Error("header arithmetic");
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(text.length));
  const noise = randomBytes(8 * MiB);
  let head: Buffer = Buffer.concat([length, Buffer.from(text)]);
  while (dataBytes > 0) {
    const take = Math.min(dataBytes, 8 * MiB - head.length);
    yield Buffer.concat([head, noise.subarray(0, take)]);
    head = Buffer.alloc(0);
    dataBytes -= take;
  }
}

/** Uploads a LoRA of `size` bytes through the registry's public flow; returns its id. */
async function uploadLora(lora: Client<typeof LoraService>, name: string, size: number): Promise<string> {
  const created = await lora.createLoraUpload({ name, sizeBytes: BigInt(size) });
  const blob = new BlockBlobClient(created.uploadUrl);
  const ids: string[] = [];
  const inFlight = new Set<Promise<unknown>>();
  for (const block of safetensorsBlocks(size)) {
    const id = Buffer.from(String(ids.length).padStart(8, "0")).toString("base64");
    ids.push(id);
    const p = blob.stageBlock(id, block, block.length).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= 4) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await blob.commitBlockList(ids);
  const done = await lora.completeLoraUpload({ uploadId: created.upload!.uploadId }, { timeoutMs: 600_000 });
  return done.lora!.id;
}

interface Child {
  process: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

/** The machine cache as a node runs it: its own process, configured by environment. */
async function startMachineCacheProcess(env: NodeJS.ProcessEnv): Promise<Child> {
  const main = path.resolve(__dirname, "../../dist/main.js");
  const child = spawn(process.execPath, [main], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*machine-cache listening/.exec(out);
      if (m?.[1]) resolve(m[1]);
      if (out.length > 1e6) out = out.slice(-1e5);
    });
    child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", (code) => reject(new Error(`machine-cache exited with ${code}:\n${out}`)));
  });
  const handle: Child = {
    process: child,
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
  started.push(handle);
  return handle;
}

/** Every machine-cache process started, so that all are stopped at the end. */
const started: Child[] = [];

function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}

/** Connect JSON over HTTP/1.1 with keep-alive, as ComfyUI's node posts it. */
function connectJson(baseUrl: string, token: string, dispatcher: Agent) {
  return async (method: string, body: unknown): Promise<{ ms: number; json: Record<string, unknown> }> => {
    const started = performance.now();
    const res = await request(`${baseUrl}/${method}`, {
      method: "POST",
      dispatcher,
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
      headersTimeout: 600_000,
      bodyTimeout: 600_000,
    });
    const json = (await res.body.json()) as Record<string, unknown>;
    const ms = performance.now() - started;
    if (res.statusCode !== 200) throw new Error(`${method}: HTTP ${res.statusCode} ${JSON.stringify(json)}`);
    return { ms, json };
  };
}

async function main(): Promise<void> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), "machine-cache-bench-"));
  // In memory by default (as the gateway's bench); BENCH_AZURITE_DISK=1 keeps blobs on local disk instead.
  const onDisk = process.env.BENCH_AZURITE_DISK === "1";
  const azurite = await startAzurite(onDisk ? { persistent: true, dataDir: path.join(work, "azurite") } : {});
  const deps = await provideTestDependencies({
    ...process.env,
    AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
  });
  Object.assign(process.env, deps.env);
  console.log(deps.summary);
  const [db, containers] = await Promise.all([createTestDatabase("mc-bench"), createTestContainers("mc-bench")]);
  const ns = testNamespace("mc-bench");
  const stack = await startStack({
    databaseUrl: db.url,
    natsUrl: ns.natsUrl,
    natsNamespace: ns.namespace,
    azureConnectionString: containers.connectionString,
    userContainer: containers.userContainer,
    sharedContainer: containers.sharedContainer,
    jwtSecret: SECRET,
    machineDir: path.join(work, "unused-machine"),
    logLevel: "warn",
  });
  const dispatcher = new Agent({ connections: 16 });
  let child: Child | undefined;
  const cacheEnv = {
    JWT_SECRET: SECRET,
    NATS_URL: ns.natsUrl,
    NATS_NAMESPACE: ns.namespace,
    LOG_LEVEL: "info",
    MACHINE_CACHE_PORT: "0",
    MACHINE_ID: "bench-machine",
    COMFYUI_LORA_DIR: path.join(work, "machine", "models", "loras"),
    MODEL_CACHE_DB: path.join(work, "machine", "model_cache.db"),
    REGISTRY_URL: stack.registry.url,
    MIN_FREE_SPACE_GB: "0",
    LORA_CACHE_MAX_GB: "20",
  };
  try {
    const userToken = () => mintToken(SECRET, { subject: USER, roles: [] });
    const lora = createClient(
      LoraService,
      createGrpcTransport({ baseUrl: stack.registry.url, interceptors: [bearerInterceptor(userToken)] }),
    );
    const machineToken = await mintToken(SECRET, { subject: "bench-machine", roles: ["machine"], ttlSeconds: 86_400 });
    const adminToken = await mintToken(SECRET, { subject: "bench-admin", roles: ["admin"], ttlSeconds: 86_400 });
    const resolver = createClient(
      LoraResolverService,
      createGrpcTransport({ baseUrl: stack.registry.url, interceptors: [bearerInterceptor(machineToken)] }),
    );

    console.log("uploading LoRAs through the registry (CreateLoraUpload, Put Block, CompleteLoraUpload) ...");
    const mainId = await uploadLora(lora, "bench-main.safetensors", SIZE);
    const threeIds = [];
    for (const n of [1, 2, 3]) threeIds.push(await uploadLora(lora, `bench-three-${n}.safetensors`, THREE_SIZE));
    const bigId = await uploadLora(lora, "bench-big.safetensors", BIG);
    console.log(`  ${mb(SIZE).toFixed(0)} MB, 3 × ${mb(THREE_SIZE).toFixed(0)} MB, ${mb(BIG).toFixed(0)} MB uploaded`);

    // One machine-cache process per parts setting, each with its own directory; the first serves phases 2 and 3.
    const variants: { parts: number; child: Child }[] = [];
    for (const parts of PARTS) {
      const dir = path.join(work, `machine-parts-${parts}`);
      variants.push({
        parts,
        child: await startMachineCacheProcess({
          ...cacheEnv,
          MACHINE_ID: `bench-machine-parts-${parts}`,
          COMFYUI_LORA_DIR: path.join(dir, "models", "loras"),
          MODEL_CACHE_DB: path.join(dir, "model_cache.db"),
          LORA_DOWNLOAD_PARTS: String(parts),
        }),
      });
    }
    child = variants[0]!.child;
    const ref = (id: string) => ({ source: "LORA_SOURCE_USER", identifier: id });
    const ensureOn = (c: Child, ids: string[], job: string) =>
      connectJson(
        c.url,
        machineToken,
        dispatcher,
      )("emprops.cache.v1.MachineCacheService/EnsureLoras", {
        jobId: job,
        userId: USER,
        refs: ids.map(ref),
      });
    const evictOn = (c: Child, ids: string[]) =>
      connectJson(
        c.url,
        adminToken,
        dispatcher,
      )("emprops.cache.v1.MachineCacheService/EvictLoras", {
        refs: ids.map(ref),
      });
    const ensure = (ids: string[], job: string) => ensureOn(child!, ids, job);
    const evict = (ids: string[]) => evictOn(child!, ids);
    const call = connectJson(child.url, machineToken, dispatcher);
    const checkResults = (json: Record<string, unknown>, n: number) => {
      const results = json.results as { error?: unknown; cacheHit?: boolean; attempts?: number }[];
      if (results.length !== n || results.some((r) => r.error || r.cacheHit)) {
        throw new Error(`unexpected EnsureLoras answer: ${JSON.stringify(results)}`);
      }
    };

    // 1. Cold fetch against a plain download with the same client.
    const plainFile = path.join(work, "plain.download");
    const plain = async (hashAfter: boolean) => {
      const { results } = await resolver.resolveLoras({
        userId: USER,
        jobId: "bench",
        machineId: "bench",
        refs: [{ source: LoraSource.USER, identifier: mainId }],
      });
      const url = results[0]!.outcome.case === "lora" ? results[0]!.outcome.value.downloadUrl : "";
      const started = performance.now();
      const res = await request(url, { dispatcher, headersTimeout: 600_000, bodyTimeout: 600_000 });
      await pipeline(res.body, createWriteStream(plainFile));
      if (hashAfter) {
        const hash = createHash("sha256");
        await pipeline((await fs.open(plainFile)).createReadStream({ highWaterMark: 4 * MiB }), hash);
        hash.digest("hex");
      }
      const seconds = (performance.now() - started) / 1000;
      await fs.rm(plainFile);
      return seconds;
    };
    await plain(false); // warm-up: Azurite's first read of its extents is slower
    const label = (parts: number) =>
      parts === 1 ? "EnsureLoras, cold, 1 stream" : `EnsureLoras, cold, ${parts} parts`;
    const rows: Record<string, number[]> = {
      "plain download to a file": [],
      "plain download + sha256 after": [],
      ...Object.fromEntries(variants.map((v) => [label(v.parts), []])),
    };
    // Interleaved, so each round compares the same moment of a shared machine.
    for (let round = 1; round <= ROUNDS; round++) {
      rows["plain download to a file"]!.push(await plain(false));
      rows["plain download + sha256 after"]!.push(await plain(true));
      for (const v of variants) {
        await evictOn(v.child, [mainId]);
        const { ms, json } = await ensureOn(v.child, [mainId], `cold-${round}`);
        checkResults(json, 1);
        rows[label(v.parts)]!.push(ms / 1000);
      }
      console.log(`  cold fetch round ${round}/${ROUNDS}`);
    }
    for (const v of variants.slice(1)) {
      await evictOn(v.child, [mainId]);
      await v.child.stop();
    }

    // 2. Three LoRAs in one request against three sequential requests.
    const three: Record<string, number[]> = { "3 LoRAs, one EnsureLoras": [], "3 LoRAs, 3 sequential EnsureLoras": [] };
    for (let round = 1; round <= ROUNDS; round++) {
      await evict(threeIds);
      const together = await ensure(threeIds, `three-${round}`);
      checkResults(together.json, 3);
      three["3 LoRAs, one EnsureLoras"]!.push(together.ms / 1000);
      await evict(threeIds);
      let sequential = 0;
      for (const id of threeIds) {
        const one = await ensure([id], `seq-${round}-${id}`);
        checkResults(one.json, 1);
        sequential += one.ms;
      }
      three["3 LoRAs, 3 sequential EnsureLoras"]!.push(sequential / 1000);
      console.log(`  three LoRAs round ${round}/${ROUNDS}`);
    }

    // 3. A cached EnsureLoras against a health check on the same server.
    const health = () => call("grpc.health.v1.Health/Check", {});
    for (let i = 0; i < 200; i++) {
      await ensure([mainId], "warm-up");
      await health();
    }
    const hitMs: number[] = [];
    const healthMs: number[] = [];
    for (let i = 0; i < LATENCY_CALLS; i++) {
      const hit = await ensure([mainId], `hit-${i}`);
      if (!(hit.json.results as { cacheHit?: boolean }[])[0]?.cacheHit) throw new Error("expected a cache hit");
      hitMs.push(hit.ms);
      healthMs.push((await health()).ms);
    }

    console.log(`  ${LATENCY_CALLS} cached EnsureLoras and health checks`);

    // 4. Peak memory while a fresh process fetches the 2 GB LoRA.
    await child.stop();
    child = await startMachineCacheProcess(cacheEnv);
    const bigCall = connectJson(child.url, machineToken, dispatcher);
    const pid = child.process.pid as number;
    const before = memoryOf(pid);
    let peak = before.rss;
    const sampler = setInterval(() => (peak = Math.max(peak, memoryOf(pid).rss)), 20);
    const big = await bigCall("emprops.cache.v1.MachineCacheService/EnsureLoras", {
      jobId: "big",
      userId: USER,
      refs: [ref(bigId)],
    });
    clearInterval(sampler);
    checkResults(big.json, 1);
    const after = memoryOf(pid);

    console.log(
      `\nmachine: ${os.cpus().length} cores, ${(os.totalmem() / 1e9).toFixed(0)} GB RAM, load average ${os.loadavg()[0]!.toFixed(1)}; Azurite ${onDisk ? "on local disk" : "in memory"}`,
    );
    console.log(`\n1. cold fetch of ${mb(SIZE).toFixed(0)} MB (${ROUNDS} rounds, median)`);
    const plainS = median(rows["plain download to a file"]!);
    for (const [label, seconds] of Object.entries(rows)) {
      const s = median(seconds);
      console.log(
        `   ${label.padEnd(34)} ${s.toFixed(2).padStart(6)} s ${(mb(SIZE) / s).toFixed(0).padStart(6)} MB/s  ${(plainS / s).toFixed(2)} × plain   [${seconds.map((x) => x.toFixed(2)).join(" ")}]`,
      );
    }
    console.log(`\n2. three LoRAs of ${mb(THREE_SIZE).toFixed(0)} MB (${ROUNDS} rounds, median)`);
    for (const [label, seconds] of Object.entries(three)) {
      const s = median(seconds);
      console.log(
        `   ${label.padEnd(34)} ${s.toFixed(2).padStart(6)} s ${((3 * mb(THREE_SIZE)) / s).toFixed(0).padStart(6)} MB/s   [${seconds.map((x) => x.toFixed(2)).join(" ")}]`,
      );
    }
    console.log(`\n3. latency over ${LATENCY_CALLS} calls each (Connect JSON, HTTP/1.1 keep-alive)`);
    for (const [label, xs] of [
      ["EnsureLoras, cached", hitMs],
      ["health check", healthMs],
    ] as const) {
      console.log(
        `   ${label.padEnd(34)} p50 ${percentile(xs, 50).toFixed(2)} ms   p99 ${percentile(xs, 99).toFixed(2)} ms`,
      );
    }
    console.log(`\n4. fetching ${mb(BIG).toFixed(0)} MB in a fresh machine-cache process`);
    console.log(`   ${(big.ms / 1000).toFixed(2)} s, ${(mb(BIG) / (big.ms / 1000)).toFixed(0)} MB/s`);
    console.log(
      `   RSS before ${mb(before.rss).toFixed(0)} MB, peak RSS sampled ${mb(Math.max(peak, after.rss)).toFixed(0)} MB, VmHWM ${mb(after.hwm).toFixed(0)} MB`,
    );
  } finally {
    for (const c of started) await c.stop();
    await dispatcher.close();
    await stack.stop();
    await Promise.all([containers.cleanup(), db.cleanup(), ns.cleanup()]);
    await azurite.stop();
    await deps.stop();
    await fs.rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
