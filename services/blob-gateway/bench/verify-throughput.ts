/**
 * VerifyBlob throughput against a plain sequential read of the same blob with
 * the same client (@azure/storage-blob), side by side in one run, and the
 * gateway's memory while it verifies. A parallel ranged read (4 × 8 MiB in
 * flight) shows whether splitting the download could make verification faster.
 *
 *   npm run bench -w services/blob-gateway            # 500 MiB, 3 rounds
 *   BENCH_SIZE_MIB=100 BENCH_ROUNDS=1 npm run bench -w services/blob-gateway
 *   BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -w services/blob-gateway
 *
 * Azurite (in memory) and each gateway run as child processes; the gateway's
 * memory is read from /proc/<pid>/status: VmRSS sampled every 10 ms during the
 * call, and VmHWM (the kernel's high-water mark of the resident set).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { BlobServiceClient, type BlockBlobClient } from "@azure/storage-blob";
import { BlobGatewayService, ValidationStatus } from "@emprops/contracts";
import { createServiceClient, mintToken } from "@emprops/platform";
import { startAzurite } from "@emprops/testkit";

const MiB = 1024 * 1024;
const SIZE_MIB = Number(process.env.BENCH_SIZE_MIB ?? 500);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const RANGES_IN_FLIGHT = 4;
const RANGE_BYTES = 8 * MiB;
const SECRET = "bench-secret-0123456789abcdef";
const TENSOR_BYTES = 2 * MiB;
const USER_ID = "00000000-0000-4000-8000-000000000001";
const BLOB = { userId: USER_ID, loraId: "1", extension: "safetensors" };
const BLOB_PATH = `users/${USER_ID}/loras/1.safetensors`;

/** Header + data of a safetensors file of `tensors` F16 tensors of 2 MiB, as 8 MiB blocks. */
function* safetensorsBlocks(tensors: number): Generator<Buffer> {
  const header: Record<string, unknown> = { __metadata__: { ss_network_dim: "64", ss_network_alpha: "32" } };
  for (let i = 0; i < tensors; i++) {
    header[`lora_unet_block_${i}.lora_down.weight`] = {
      dtype: "F16",
      shape: [1024, 1024],
      data_offsets: [i * TENSOR_BYTES, (i + 1) * TENSOR_BYTES],
    };
  }
  let text = Buffer.from(JSON.stringify(header));
  text = Buffer.concat([text, Buffer.alloc((8 - (text.length % 8)) % 8, " ")]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(text.length));
  const noise = randomBytes(8 * MiB);
  let pending = Buffer.concat([length, text]);
  let remaining = tensors * TENSOR_BYTES;
  while (remaining > 0) {
    const take = Math.min(remaining, 8 * MiB - pending.length);
    yield Buffer.concat([pending, noise.subarray(0, take)]);
    pending = Buffer.alloc(0);
    remaining -= take;
  }
}

async function uploadBenchBlob(blob: BlockBlobClient, tensors: number): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  const ids: string[] = [];
  let size = 0;
  const inFlight = new Set<Promise<unknown>>();
  for (const block of safetensorsBlocks(tensors)) {
    const id = Buffer.from(String(ids.length).padStart(8, "0")).toString("base64");
    ids.push(id);
    hash.update(block);
    size += block.length;
    const p = blob.stageBlock(id, block, block.length).finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= 4) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await blob.commitBlockList(ids);
  return { size, sha256: hash.digest("hex") };
}

/** One plain sequential download, bytes discarded (optionally hashed). */
async function plainRead(blob: BlockBlobClient, hash: boolean): Promise<number> {
  const started = performance.now();
  const res = await blob.download(0);
  const h = hash ? createHash("sha256") : undefined;
  let n = 0;
  for await (const chunk of res.readableStreamBody as AsyncIterable<Buffer>) {
    n += chunk.length;
    h?.update(chunk);
  }
  h?.digest();
  const seconds = (performance.now() - started) / 1000;
  if (n !== res.contentLength) throw new Error(`read ${n} of ${res.contentLength} bytes`);
  return seconds;
}

/** The same bytes as RANGES_IN_FLIGHT ranged reads at a time, taken in order. */
async function rangedRead(blob: BlockBlobClient, size: number): Promise<number> {
  const started = performance.now();
  const inFlight: Promise<Buffer>[] = [];
  let next = 0;
  let n = 0;
  const fill = () => {
    while (inFlight.length < RANGES_IN_FLIGHT && next < size) {
      inFlight.push(blob.downloadToBuffer(next, Math.min(RANGE_BYTES, size - next)));
      next += RANGE_BYTES;
    }
  };
  fill();
  while (inFlight.length > 0) {
    n += (await inFlight.shift()!).length;
    fill();
  }
  if (n !== size) throw new Error(`read ${n} of ${size} bytes`);
  return (performance.now() - started) / 1000;
}

interface Gateway {
  child: ChildProcess;
  url: string;
  stop(): Promise<void>;
}

async function startGateway(connectionString: string): Promise<Gateway> {
  const main = path.resolve(__dirname, "../../dist/main.js");
  // e.g. BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the gateway.
  const nodeArgs = (process.env.BENCH_GATEWAY_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, main], {
    env: {
      ...process.env,
      GATEWAY_PORT: "0",
      JWT_SECRET: SECRET,
      NATS_URL: "memory",
      LOG_LEVEL: "info",
      AZURE_STORAGE_CONNECTION_STRING: connectionString,
      USER_LORA_CONTAINER: "bench-user-loras",
      CLOUD_STORAGE_CONTAINER: "bench-shared",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*blob-gateway listening/.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", (code) => reject(new Error(`gateway exited with ${code}:\n${out}`)));
  });
  return {
    child,
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}

async function verifyOnce(gateway: Gateway, token: string, expected: { size: number; sha256: string }) {
  const client = createServiceClient(BlobGatewayService, gateway.url, token);
  const pid = gateway.child.pid as number;
  const before = memoryOf(pid);
  let peakRss = before.rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, memoryOf(pid).rss);
  }, 10);
  const started = performance.now();
  const { verification: v } = await client.verifyBlob({ blob: BLOB }, { timeoutMs: 600_000 });
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  const after = memoryOf(pid);
  if (v?.status !== ValidationStatus.SAFE || v.sha256 !== expected.sha256 || Number(v.sizeBytes) !== expected.size) {
    throw new Error(`unexpected verification: ${JSON.stringify({ status: v?.status, message: v?.message })}`);
  }
  return { seconds, rssBefore: before.rss, peakRss: Math.max(peakRss, after.rss), hwm: after.hwm };
}

const mb = (bytes: number) => bytes / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  // Holds the process open: with only storage calls pending, Node was seen exiting mid-request here.
  const alive = setInterval(() => {}, 60_000);
  const azurite = await startAzurite();
  let gateway: Gateway | undefined;
  try {
    const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
    const container = service.getContainerClient("bench-user-loras");
    await container.createIfNotExists();
    const blob = container.getBlockBlobClient(BLOB_PATH);
    const tensors = Math.max(1, Math.floor((SIZE_MIB * MiB) / TENSOR_BYTES));
    const expected = await uploadBenchBlob(blob, tensors);
    console.log(`blob: ${BLOB_PATH}, ${expected.size} bytes (${mb(expected.size).toFixed(1)} MB), ${tensors} tensors`);

    const token = await mintToken(SECRET, { subject: "bench", roles: ["service"] });
    gateway = await startGateway(azurite.connectionString);

    const rows: Record<string, number[]> = {
      "plain sequential read": [],
      "plain read + sha256": [],
      [`ranged read (${RANGES_IN_FLIGHT} x 8 MiB)`]: [],
      VerifyBlob: [],
    };
    const memory = { base: 0, peak: 0, hwm: 0 };
    await plainRead(blob, false); // warm-up: Azurite's first read of an extent is slower
    for (let round = 1; round <= ROUNDS; round++) {
      rows["plain sequential read"]!.push(await plainRead(blob, false));
      rows["plain read + sha256"]!.push(await plainRead(blob, true));
      rows[`ranged read (${RANGES_IN_FLIGHT} x 8 MiB)`]!.push(await rangedRead(blob, expected.size));
      const r = await verifyOnce(gateway, token, expected);
      rows.VerifyBlob!.push(r.seconds);
      if (round === 1) memory.base = r.rssBefore;
      memory.peak = Math.max(memory.peak, r.peakRss);
      memory.hwm = Math.max(memory.hwm, r.hwm);
      console.log(`round ${round}/${ROUNDS} done`);
    }

    console.log(`\n${"".padEnd(30)} ${"median s".padStart(9)} ${"MB/s".padStart(8)}   (all rounds, s)`);
    for (const [label, seconds] of Object.entries(rows)) {
      const s = median(seconds);
      console.log(
        `${label.padEnd(30)} ${s.toFixed(2).padStart(9)} ${(mb(expected.size) / s).toFixed(0).padStart(8)}   ${seconds.map((x) => x.toFixed(2)).join(" ")}`,
      );
    }
    console.log(
      `\ngateway memory (child process, /proc/<pid>/status): RSS before the first call ${mb(memory.base).toFixed(0)} MB, ` +
        `peak RSS sampled during the calls ${mb(memory.peak).toFixed(0)} MB, VmHWM ${mb(memory.hwm).toFixed(0)} MB`,
    );
  } finally {
    await gateway?.stop();
    await azurite.stop();
    clearInterval(alive);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
