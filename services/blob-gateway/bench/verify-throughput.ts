/**
 * VerifyBlob throughput against a plain sequential read of the same blob with
 * the same client (@azure/storage-blob), side by side in one run, against
 * sha256 of the same bytes in memory (the physical limit of this step), and
 * the gateway's memory while it verifies. A parallel ranged read (4 × 8 MiB in
 * flight) shows whether splitting the download could make verification faster.
 *
 *   npm run bench -w services/blob-gateway            # 500 MiB, 3 rounds
 *   BENCH_SIZE_MIB=100 BENCH_ROUNDS=1 npm run bench -w services/blob-gateway
 *   BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench -w services/blob-gateway
 *
 * Azurite (in memory) and the gateway run as child processes; the gateway's
 * memory is read from /proc/<pid>/status: VmRSS sampled every 10 ms during the
 * call, and VmHWM (the kernel's high-water mark of the resident set). The
 * suite (`npm run bench`, bench/) runs verifyThroughput() on a LoRA uploaded
 * through the registry.
 */
import { createHash } from "node:crypto";
import { BlobServiceClient, type BlockBlobClient } from "@azure/storage-blob";
import { BlobGatewayService, ValidationStatus } from "@emprops/contracts";
import { createServiceClient, mintToken } from "@emprops/platform";
import { startAzurite } from "@emprops/testkit";
import { type PeakMemory, peakMemoryDuring } from "../../../bench/src/harness/memory.js";
import { safetensorsBlocks } from "../../../bench/src/harness/safetensors.js";
import { startServiceProcess } from "../../../bench/src/harness/service-process.js";
import { mb, median, MiB } from "../../../bench/src/harness/stats.js";
import { rotatedRounds } from "../../../bench/src/harness/rounds.js";
import { putBlocks } from "../../../bench/src/harness/upload.js";

const RANGES_IN_FLIGHT = 4;
const RANGE_BYTES = 8 * MiB;
const SECRET = "bench-secret-0123456789abcdef";

/** A blob the gateway verifies, and what it must find. */
export interface VerifyTarget {
  blob: BlockBlobClient;
  ref: { userId: string; loraId: string; extension: string };
  size: number;
  sha256: string;
}

/** The gateway under measurement: its URL and process id. */
export interface GatewayUnderTest {
  url: string;
  pid: number;
}

export const PLAIN_READ = "plain sequential read";
export const PLAIN_READ_SHA = "plain read + sha256";
export const RANGED_READ = `ranged read (${RANGES_IN_FLIGHT} x 8 MiB)`;
export const SHA_IN_MEMORY = "sha256 of the bytes in memory";
export const VERIFY = "VerifyBlob";
export const VERIFY_ONE_STREAM = "VerifyBlob, one stream (VERIFY_READ_CONNECTIONS=1)";

/** One plain sequential download, bytes discarded (optionally hashed); seconds. */
export async function plainRead(blob: BlockBlobClient, hash: boolean): Promise<number> {
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

/** The same bytes as RANGES_IN_FLIGHT ranged reads at a time, taken in order; seconds. */
export async function rangedRead(blob: BlockBlobClient, size: number): Promise<number> {
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

/** sha256 of the blob's bytes already in memory, in 8 MiB slices as a stream would feed it; seconds per pass. */
export function sha256InMemory(bytes: Buffer, expected: string): number {
  const started = performance.now();
  const hash = createHash("sha256");
  for (let offset = 0; offset < bytes.length; offset += 8 * MiB) hash.update(bytes.subarray(offset, offset + 8 * MiB));
  const digest = hash.digest("hex");
  const seconds = (performance.now() - started) / 1000;
  if (digest !== expected) throw new Error("the bytes in memory are not the blob's");
  return seconds;
}

/** One VerifyBlob call, checked, with the gateway's memory while it ran. */
export async function verifyOnce(
  gateway: GatewayUnderTest,
  token: string,
  target: VerifyTarget,
): Promise<{ seconds: number; memory: PeakMemory }> {
  const client = createServiceClient(BlobGatewayService, gateway.url, token);
  const started = performance.now();
  const { result, memory } = await peakMemoryDuring(gateway.pid, () =>
    client.verifyBlob({ blob: target.ref }, { timeoutMs: 1_200_000 }),
  );
  const seconds = (performance.now() - started) / 1000;
  const v = result.verification;
  if (v?.status !== ValidationStatus.SAFE || v.sha256 !== target.sha256 || Number(v.sizeBytes) !== target.size) {
    throw new Error(`unexpected verification: ${JSON.stringify({ status: v?.status, message: v?.message })}`);
  }
  return { seconds, memory };
}

export interface VerifyThroughput {
  /** Seconds per round for each way of reading the blob. */
  rows: Record<string, number[]>;
  /** The gateway's memory over all VerifyBlob calls. */
  memory: PeakMemory;
}

/** Rounds of: plain read, read + sha256, ranged read, sha256 in memory, VerifyBlob — interleaved, rotated. */
export async function verifyThroughput(opts: {
  target: VerifyTarget;
  gateway: GatewayUnderTest;
  /** A gateway reading blobs as one stream, to compare with the default reads. */
  oneStream?: GatewayUnderTest;
  token: string;
  rounds: number;
  log?: (line: string) => void;
}): Promise<VerifyThroughput> {
  const { target, gateway, token, rounds, oneStream } = opts;
  const rows: Record<string, number[]> = {
    [PLAIN_READ]: [],
    [PLAIN_READ_SHA]: [],
    [RANGED_READ]: [],
    [SHA_IN_MEMORY]: [],
    [VERIFY]: [],
    ...(oneStream ? { [VERIFY_ONE_STREAM]: [] } : {}),
  };
  const memory: PeakMemory = { before: 0, peak: 0, hwm: 0 };
  await plainRead(target.blob, false); // warm-up: Azurite's first read of an extent is slower
  const bytes = await target.blob.downloadToBuffer(0, target.size);
  let first = true;
  await rotatedRounds(
    rounds,
    [
      async () => void rows[PLAIN_READ]!.push(await plainRead(target.blob, false)),
      async () => void rows[PLAIN_READ_SHA]!.push(await plainRead(target.blob, true)),
      async () => void rows[RANGED_READ]!.push(await rangedRead(target.blob, target.size)),
      async () => void rows[SHA_IN_MEMORY]!.push(sha256InMemory(bytes, target.sha256)),
      async () => {
        const r = await verifyOnce(gateway, token, target);
        rows[VERIFY]!.push(r.seconds);
        if (first) memory.before = r.memory.before;
        first = false;
        memory.peak = Math.max(memory.peak, r.memory.peak);
        memory.hwm = Math.max(memory.hwm, r.memory.hwm);
      },
      ...(oneStream
        ? [async () => void rows[VERIFY_ONE_STREAM]!.push((await verifyOnce(oneStream, token, target)).seconds)]
        : []),
    ],
    (round) => opts.log?.(`verify round ${round}/${rounds} done`),
  );
  return { rows, memory };
}

/** Uploads a bench LoRA straight to the container (no registry), hashing it on the way. */
export async function uploadBenchBlob(blob: BlockBlobClient, size: number): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  const blocks = function* () {
    for (const block of safetensorsBlocks(size)) {
      hash.update(block);
      yield block;
    }
  };
  const written = await putBlocks(blob, blocks());
  return { size: written, sha256: hash.digest("hex") };
}

async function main(): Promise<void> {
  const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 500);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  // Holds the process open: with only storage calls pending, Node was seen exiting mid-request here.
  const alive = setInterval(() => {}, 60_000);
  const azurite = await startAzurite();
  let gateway: Awaited<ReturnType<typeof startServiceProcess>> | undefined;
  try {
    const service = BlobServiceClient.fromConnectionString(azurite.connectionString);
    const container = service.getContainerClient("bench-user-loras");
    await container.createIfNotExists();
    const ref = { userId: "00000000-0000-4000-8000-000000000001", loraId: "1", extension: "safetensors" };
    const blob = container.getBlockBlobClient(`users/${ref.userId}/loras/1.safetensors`);
    const expected = await uploadBenchBlob(blob, sizeMiB * MiB);
    console.log(`blob: ${blob.name}, ${expected.size} bytes (${mb(expected.size).toFixed(1)} MB)`);

    const token = await mintToken(SECRET, { subject: "bench", roles: ["service"] });
    // e.g. BENCH_GATEWAY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the gateway.
    gateway = await startServiceProcess(
      "blob-gateway",
      {
        GATEWAY_PORT: "0",
        JWT_SECRET: SECRET,
        NATS_URL: "memory",
        AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString,
        USER_LORA_CONTAINER: "bench-user-loras",
        CLOUD_STORAGE_CONTAINER: "bench-shared",
      },
      (process.env.BENCH_GATEWAY_NODE_ARGS ?? "").split(" ").filter(Boolean),
    );
    const { rows, memory } = await verifyThroughput({
      target: { blob, ref, ...expected },
      gateway,
      token,
      rounds,
      log: console.log,
    });
    console.log(`\n${"".padEnd(30)} ${"median s".padStart(9)} ${"MB/s".padStart(8)}   (all rounds, s)`);
    for (const [label, seconds] of Object.entries(rows)) {
      const s = median(seconds);
      console.log(
        `${label.padEnd(30)} ${s.toFixed(2).padStart(9)} ${(mb(expected.size) / s).toFixed(0).padStart(8)}   ${seconds.map((x) => x.toFixed(2)).join(" ")}`,
      );
    }
    console.log(
      `\ngateway memory (child process, /proc/<pid>/status): RSS before the first call ${mb(memory.before).toFixed(0)} MB, ` +
        `peak RSS sampled during the calls ${mb(memory.peak).toFixed(0)} MB, VmHWM ${mb(memory.hwm).toFixed(0)} MB`,
    );
  } finally {
    await gateway?.stop();
    await azurite.stop();
    clearInterval(alive);
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
