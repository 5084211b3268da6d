import { createHash } from "node:crypto";
import { ErrorReason, FileFormat, ValidationStatus } from "@emprops/contracts";
import { buildSafetensors, loraTensors, rpcFailure } from "@emprops/testkit";
import { newBlob, pathOf } from "./support/ids.js";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("verify-blob");
});

afterAll(async () => {
  await t?.stop();
});

type Blob = { userId: string; loraId: string; extension: string };

async function putBlob(blob: Blob, body: Buffer): Promise<void> {
  await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(body);
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

const KOHYA_METADATA: Record<string, string> = {
  ss_base_model_version: "sdxl_base_v1-0",
  ss_sd_model_name: "sd_xl_base_1.0.safetensors",
  ss_network_module: "networks.lora",
  ss_network_dim: "32",
  ss_network_alpha: "16.0",
  ss_num_epochs: "10",
  ss_num_train_images: "240",
  ss_resolution: "(1024, 1024)",
  ss_output_name: "ink_wash_style",
  ss_tag_frequency: JSON.stringify({
    "10_inkwash": { inkwash: 120, landscape: 80, mountain: 35, "1girl": 5 },
    "5_extra": { inkwash: 40, river: 60 },
  }),
  ss_learning_rate: "0.0001",
};

describe("VerifyBlob", () => {
  it("accepts a kohya LoRA and extracts its training metadata", async () => {
    const file = buildSafetensors(loraTensors(3), KOHYA_METADATA);
    const blob = newBlob();
    await putBlob(blob, file);

    const { verification: v } = await t.client.verifyBlob({
      blob,
      expectedSizeBytes: BigInt(file.length),
      expectedSha256: `sha256:${sha256(file).toUpperCase()}`,
    });
    expect(v).toMatchObject({
      status: ValidationStatus.SAFE,
      reason: ErrorReason.UNSPECIFIED,
      message: "",
      sha256: sha256(file),
      format: FileFormat.SAFETENSORS,
      detectedType: "safetensors",
      tensorCount: 9,
      unsafeGlobals: [],
    });
    expect(Number(v?.sizeBytes)).toBe(file.length);
    expect(v?.metadata).toMatchObject({
      baseModel: "SDXL",
      rank: 32,
      alpha: 16,
      // Summed over datasets, most frequent first.
      triggerWords: ["inkwash", "landscape", "river", "mountain", "1girl"],
      trainingEpochs: 10,
      trainingImages: 240,
      resolution: "1024x1024",
      title: "ink_wash_style",
      networkModule: "networks.lora",
      description: "",
    });
    expect(v?.metadata?.raw).toEqual(KOHYA_METADATA);
    // Verification reads; it never changes the blob.
    expect(await t.userContainer.getBlockBlobClient(pathOf(blob)).exists()).toBe(true);
  });

  it("prefers an explicit modelspec trigger phrase and title", async () => {
    const metadata = {
      "modelspec.architecture": "stable-diffusion-v1/lora",
      "modelspec.title": "Paper Cut",
      "modelspec.description": "Layered paper craft look",
      "modelspec.trigger_phrase": "papercut style, layered paper",
      "modelspec.resolution": "512x768",
      ss_tag_frequency: JSON.stringify({ a: { other: 99 } }),
    };
    const blob = newBlob();
    await putBlob(blob, buildSafetensors(loraTensors(1), metadata));
    const { verification: v } = await t.client.verifyBlob({ blob });
    expect(v?.status).toBe(ValidationStatus.SAFE);
    expect(v?.metadata).toMatchObject({
      baseModel: "SD1.5",
      title: "Paper Cut",
      description: "Layered paper craft look",
      triggerWords: ["papercut style", "layered paper"],
      resolution: "512x768",
      rank: 0,
      trainingEpochs: 0,
    });
  });

  it("reports a file without metadata as safe with empty metadata", async () => {
    const blob = newBlob();
    await putBlob(blob, buildSafetensors(loraTensors(1)));
    const { verification: v } = await t.client.verifyBlob({ blob });
    expect(v?.status).toBe(ValidationStatus.SAFE);
    expect(v?.metadata?.raw ?? {}).toEqual({});
    expect(v?.metadata?.triggerWords ?? []).toEqual([]);
  });

  it("rejects content that does not match its extension, naming what it is", async () => {
    const png = Buffer.concat([Buffer.from("89504e470d0a1a0a0000000d49484452", "hex"), Buffer.alloc(64)]);
    const asSafetensors = newBlob("safetensors");
    await putBlob(asSafetensors, png);
    const { verification: v } = await t.client.verifyBlob({ blob: asSafetensors });
    expect(v).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.INVALID_FILE_FORMAT,
      detectedType: "png",
      sha256: sha256(png),
    });
    expect(v?.message).toMatch(/PNG/);

    const safetensorsAsPt = newBlob("pt");
    await putBlob(safetensorsAsPt, buildSafetensors(loraTensors(1)));
    const { verification: w } = await t.client.verifyBlob({ blob: safetensorsAsPt });
    expect(w).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.INVALID_FILE_FORMAT,
      detectedType: "safetensors",
    });
  });

  it("rejects a blob above the size limit without reading it", async () => {
    const file = buildSafetensors(loraTensors(2));
    const blob = newBlob();
    await putBlob(blob, file);
    const { verification: v } = await t.client.verifyBlob({ blob, maxSizeBytes: BigInt(file.length - 1) });
    expect(v).toMatchObject({ status: ValidationStatus.REJECTED, reason: ErrorReason.FILE_TOO_LARGE, sha256: "" });
    expect(Number(v?.sizeBytes)).toBe(file.length);
    // A limit above the configured one does not raise it.
    const { verification: same } = await t.client.verifyBlob({ blob, maxSizeBytes: BigInt(2 ** 50) });
    expect(same?.status).toBe(ValidationStatus.SAFE);
  });

  it("rejects a size or checksum other than announced as CHECKSUM_MISMATCH", async () => {
    const file = buildSafetensors(loraTensors(1));
    const blob = newBlob();
    await putBlob(blob, file);
    const wrongSize = await t.client.verifyBlob({ blob, expectedSizeBytes: BigInt(file.length + 1) });
    expect(wrongSize.verification).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.CHECKSUM_MISMATCH,
      sha256: sha256(file),
    });
    const wrongSha = await t.client.verifyBlob({ blob, expectedSha256: "0".repeat(64) });
    expect(wrongSha.verification).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.CHECKSUM_MISMATCH,
    });
  });

  it("with report_uncommitted answers the staged blocks of an upload not committed yet, in the same call", async () => {
    const blob = newBlob();
    const client = t.userContainer.getBlockBlobClient(pathOf(blob));
    const nothing = await t.client.verifyBlob({ blob, reportUncommitted: true });
    expect(nothing).toMatchObject({ committed: false, uncommittedBlocks: [] });
    expect(nothing.verification).toBeUndefined();

    const file = buildSafetensors(loraTensors(1));
    const id = Buffer.from("block-000000").toString("base64");
    await client.stageBlock(id, file, file.length);
    const staged = await t.client.verifyBlob({ blob, reportUncommitted: true });
    expect(staged.committed).toBe(false);
    expect(staged.verification).toBeUndefined();
    expect(staged.uncommittedBlocks.map((b) => [b.blockId, b.sizeBytes])).toEqual([[id, BigInt(file.length)]]);

    await client.commitBlockList([id]);
    const done = await t.client.verifyBlob({ blob, reportUncommitted: true, expectedSha256: sha256(file) });
    expect(done.committed).toBe(true);
    expect(done.uncommittedBlocks).toEqual([]);
    expect(done.verification).toMatchObject({ status: ValidationStatus.SAFE, sha256: sha256(file) });
  });

  it("answers NOT_FOUND for a blob that does not exist, and INVALID_ARGUMENT for bad fields", async () => {
    const missing = await rpcFailure(t.client.verifyBlob({ blob: newBlob() }));
    expect([missing.code, missing.reason]).toEqual(["NotFound", "BLOB_NOT_FOUND"]);

    const blob = newBlob();
    await putBlob(blob, buildSafetensors(loraTensors(1)));
    const cases: [Parameters<typeof t.client.verifyBlob>[0], string][] = [
      [{ blob, expectedSha256: "abc" }, "INVALID_REQUEST"],
      [{ blob, expectedSha256: "g".repeat(64) }, "INVALID_REQUEST"],
      [{ blob, maxSizeBytes: -1n }, "INVALID_SIZE"],
      [{ blob, expectedSizeBytes: -1n }, "INVALID_SIZE"],
      [{ blob: { ...blob, userId: "nobody" } }, "INVALID_ID"],
      [{ blob: { ...blob, extension: "ckpt" } }, "INVALID_FILE_FORMAT"],
      [{}, "INVALID_REQUEST"],
    ];
    for (const [req, reason] of cases) {
      const failure = await rpcFailure(t.client.verifyBlob(req));
      expect([failure.code, failure.reason]).toEqual(["InvalidArgument", reason]);
    }
  });
});
