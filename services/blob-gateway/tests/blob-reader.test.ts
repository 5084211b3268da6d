import { createHash, randomBytes } from "node:crypto";
import { BlobServiceClient } from "@azure/storage-blob";
import { ValidationStatus } from "@emprops/contracts";
import {
  buildSafetensors,
  createProxiedTestContainers,
  type FaultProxy,
  loraTensors,
  type TestContainers,
} from "@emprops/testkit";
import { type BlobReadSettings, openBlob } from "../src/storage/blob-reader.js";
import { newBlob, pathOf } from "./support/ids.js";
import { startGatewayForTest } from "./support/start-gateway.js";

const MIB = 1024 * 1024;

let containers: TestContainers;
let proxy: FaultProxy;
let stop: (() => Promise<void>) | undefined;
let n = 0;

beforeAll(async () => ({ containers, proxy, stop } = await createProxiedTestContainers("blob-reader")));
afterAll(() => stop?.());
beforeEach(() => proxy.reset());

/** A blob with `content`, and its client through the proxy (so requests are seen and faults apply). */
async function stored(content: Buffer) {
  const name = `read-${++n}.bin`;
  await containers.userBlob(name).client.uploadData(content);
  const through = BlobServiceClient.fromConnectionString(proxy.viaConnectionString(containers.connectionString));
  return { name, client: through.getContainerClient(containers.userContainer).getBlobClient(name) };
}

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(c);
  return Buffer.concat(parts);
}

const ranged: BlobReadSettings = { connections: 3, rangeBytes: MIB };
const gets = () => proxy.requests.filter((r) => r.method === "GET");

describe("openBlob", () => {
  test("ranged: the bytes in order, as ranges of rangeBytes with `connections` in flight", async () => {
    const content = randomBytes(5 * MIB + 123);
    const { client } = await stored(content);
    const opened = await openBlob(client, ranged);
    expect(opened.size).toBe(content.length);
    expect((await readAll(opened.chunks)).equals(content)).toBe(true);
    // Asked for at once, so they may reach storage in any order.
    const start = (range: string | undefined) => Number(/bytes=(\d+)/.exec(range ?? "")?.[1]);
    expect(
      gets()
        .map((r) => r.range)
        .sort((a, b) => start(a) - start(b)),
    ).toEqual([0, 1, 2, 3, 4, 5].map((i) => `bytes=${i * MIB}-${Math.min((i + 1) * MIB, content.length) - 1}`));
  });

  test("one stream with connections = 1, and for a blob no larger than one range", async () => {
    const content = randomBytes(2 * MIB);
    const { client } = await stored(content);
    expect((await readAll((await openBlob(client, { connections: 1, rangeBytes: MIB })).chunks)).equals(content)).toBe(
      true,
    );
    expect(gets().map((r) => r.range)).toEqual([undefined]);
    proxy.reset();
    const small = await stored(randomBytes(MIB));
    expect((await readAll((await openBlob(small.client, ranged)).chunks)).length).toBe(MIB);
    expect(gets()).toHaveLength(1);
  });

  test("an empty blob has size 0 and no bytes", async () => {
    const { client } = await stored(Buffer.alloc(0));
    const opened = await openBlob(client, ranged);
    expect(opened.size).toBe(0);
    expect((await readAll(opened.chunks)).length).toBe(0);
  });

  test("a range cut mid-stream is resumed; the bytes stay intact", async () => {
    const content = randomBytes(4 * MIB);
    const { client } = await stored(content);
    proxy.rules.push({ method: "GET", range: /^bytes=2097152-/, fault: { kind: "cut", afterBytes: 300 * 1024 } });
    const opened = await openBlob(client, ranged);
    expect((await readAll(opened.chunks)).equals(content)).toBe(true);
    expect(proxy.requests.some((r) => r.fault === "cut")).toBe(true);
    // One stream: asked again from the byte the cut left off at.
    proxy.reset();
    proxy.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: 300 * 1024 } });
    const single = await openBlob(client, { connections: 1, rangeBytes: MIB });
    expect((await readAll(single.chunks)).equals(content)).toBe(true);
    expect(gets().map((r) => [r.range?.split("-")[0], r.fault])).toEqual([
      [undefined, "cut"],
      [expect.stringMatching(/^bytes=\d+/), undefined],
    ]);
    expect(Number(/bytes=(\d+)/.exec(gets()[1]!.range!)![1])).toBeGreaterThan(0);
  });

  test("a blob replaced during the read fails instead of mixing two versions", async () => {
    const content = randomBytes(4 * MIB);
    const { name, client } = await stored(content);
    // Opened (the first range answered), then overwritten before the later ranges are asked for.
    const opened = await openBlob(client, ranged);
    await containers.userBlob(name).client.uploadData(randomBytes(4 * MIB));
    await expect(readAll(opened.chunks)).rejects.toMatchObject({ statusCode: 412 });
  });
});

describe("VerifyBlob reading in ranges", () => {
  test("verifies a LoRA read as parallel ranges exactly as one read in one stream", async () => {
    const file = buildSafetensors(loraTensors(24, 64, 1024), { ss_network_dim: "64" });
    expect(file.length).toBeGreaterThan(3 * MIB);
    const sha256 = createHash("sha256").update(file).digest("hex");
    for (const connections of ["1", "3"]) {
      const t = await startGatewayForTest("verify-ranged", {
        VERIFY_READ_CONNECTIONS: connections,
        VERIFY_READ_RANGE_MB: "1",
      });
      try {
        const blob = newBlob();
        await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(file);
        const { verification } = await t.client.verifyBlob({ blob });
        expect(verification).toMatchObject({
          status: ValidationStatus.SAFE,
          sha256,
          sizeBytes: BigInt(file.length),
          tensorCount: 72,
        });
      } finally {
        await t.stop();
      }
    }
  });
});
