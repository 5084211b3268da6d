import { createHash } from "node:crypto";
import { LoraVerifier, verifyStream, type VerificationResult, type VerifierOptions } from "../src/index.js";
import { buildSafetensors, chunked, type TensorSpec } from "@emprops/testkit";

const MiB = 1024 * 1024;

function verify(bytes: Uint8Array, options: Partial<VerifierOptions> = {}, chunkSize = 64 * 1024): VerificationResult {
  const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: 64 * MiB, ...options });
  for (const chunk of chunked(bytes, chunkSize)) verifier.update(chunk);
  return verifier.finish();
}

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

function kohyaTensors(): TensorSpec[] {
  const tensors: TensorSpec[] = [];
  for (const module of [
    "lora_unet_down_blocks_0_attentions_0_proj_in",
    "lora_te1_text_model_encoder_layers_0_mlp_fc1",
  ]) {
    tensors.push({ name: `${module}.alpha`, dtype: "F16", shape: [] });
    tensors.push({ name: `${module}.lora_down.weight`, dtype: "F16", shape: [32, 320] });
    tensors.push({ name: `${module}.lora_up.weight`, dtype: "F16", shape: [320, 32] });
  }
  return tensors;
}

const KOHYA_METADATA: Record<string, string> = {
  "modelspec.sai_model_spec": "1.0.0",
  "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
  "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
  "modelspec.title": "Pixel Art Style",
  "modelspec.description": "Crisp 16-bit pixel art.",
  "modelspec.resolution": "1024x1024",
  ss_sd_model_name: "sd_xl_base_1.0.safetensors",
  ss_base_model_version: "sdxl_base_v1-0",
  ss_network_module: "networks.lora",
  ss_network_dim: "32",
  ss_network_alpha: "16.0",
  ss_num_epochs: "10",
  ss_epoch: "8",
  ss_num_train_images: "420",
  ss_resolution: "(1024, 1024)",
  ss_output_name: "pixel_art_v2",
  ss_tag_frequency: JSON.stringify({
    "10_pixelart": { "pixel art": 40, "1girl": 12, solo: 9, "blue sky": 3 },
    "5_scenery": { "pixel art": 20, landscape: 15, " solo ": 4, tree: 2, "": 99, bogus: "x" },
  }),
};

describe("LoraVerifier on safetensors", () => {
  const file = buildSafetensors(kohyaTensors(), KOHYA_METADATA);

  it("accepts a kohya LoRA and extracts its metadata", () => {
    const result = verify(file);
    expect(result).toMatchObject({
      ok: true,
      sizeBytes: file.length,
      sha256: sha256(file),
      format: "safetensors",
      detectedType: "safetensors",
      unsafeGlobals: [],
      tensorCount: 6,
    });
    expect(result.reason).toBeUndefined();
    expect(result.metadata).toEqual({
      baseModel: "SDXL",
      rank: 32,
      alpha: 16,
      triggerWords: ["pixel art", "landscape", "solo", "1girl", "blue sky", "tree"],
      trainingEpochs: 10,
      trainingImages: 420,
      resolution: "1024x1024",
      description: "Crisp 16-bit pixel art.",
      title: "Pixel Art Style",
      networkModule: "networks.lora",
      raw: KOHYA_METADATA,
    });
  });

  it("gives the same result in 1-byte, 7-byte and 64 KiB chunks", () => {
    const results = [1, 7, 64 * 1024].map((size) => verify(file, {}, size));
    expect(results[0]?.sha256).toBe(sha256(file));
    for (const result of results) expect(result).toEqual(results[0]);
  });

  it("uses the modelspec trigger phrase when present", () => {
    const bytes = buildSafetensors(kohyaTensors(), {
      ...KOHYA_METADATA,
      "modelspec.trigger_phrase": "pxart, retro style ,, pxart",
    });
    expect(verify(bytes).metadata?.triggerWords).toEqual(["pxart", "retro style"]);
  });

  it("accepts a file without __metadata__ and reports empty metadata", () => {
    const result = verify(buildSafetensors([{ name: "w", dtype: "F32", shape: [4] }]));
    expect(result.ok).toBe(true);
    expect(result.metadata).toMatchObject({ baseModel: "", rank: 0, alpha: 0, triggerWords: [], raw: {} });
  });

  it("rejects a file above maxSizeBytes as soon as the running size passes it", () => {
    const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: 1000 });
    verifier.update(file.subarray(0, 1000));
    expect(verifier.rejection).toBeUndefined();
    verifier.update(file.subarray(1000, 1001));
    expect(verifier.rejection).toEqual({
      reason: "FILE_TOO_LARGE",
      message: "The file exceeds the size limit of 1,000 bytes.",
    });
    verifier.update(file.subarray(1001));
    const result = verifier.finish();
    expect(result).toMatchObject({ ok: false, reason: "FILE_TOO_LARGE", sizeBytes: file.length, sha256: sha256(file) });
  });

  it("reports CHECKSUM_MISMATCH when the size or the SHA-256 differ from the announced ones", () => {
    expect(verify(file, { expectedSizeBytes: file.length, expectedSha256: sha256(file).toUpperCase() }).ok).toBe(true);
    const short = verify(file.subarray(0, file.length - 10), { expectedSizeBytes: file.length });
    expect(short.reason).toBe("CHECKSUM_MISMATCH");
    expect(short.message).toMatch(new RegExp(`The file is ${(file.length - 10).toLocaleString("en-US")} bytes but`));
    const wrongHash = verify(file, { expectedSha256: "0".repeat(64) });
    expect(wrongHash).toMatchObject({ ok: false, reason: "CHECKSUM_MISMATCH" });
    expect(wrongHash.message).toContain(`Its SHA-256 is ${sha256(file)} but ${"0".repeat(64)} was announced.`);
  });

  it("knows a size mismatch early when more bytes arrive than announced", () => {
    const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: MiB, expectedSizeBytes: 100 });
    verifier.update(file.subarray(0, 101));
    expect(verifier.rejection?.reason).toBe("CHECKSUM_MISMATCH");
  });

  it("rejects a truncated file with a precise message", () => {
    const result = verify(file.subarray(0, file.length - 1));
    expect(result).toMatchObject({ ok: false, reason: "INVALID_FILE_FORMAT", format: "safetensors" });
    expect(result.message).toMatch(
      /need a data section of [\d,]+ bytes but the file has [\d,]+ bytes after the header: the file is truncated/,
    );
  });

  it("keeps hashing after a rejection so size and hash cover every byte", () => {
    const broken = Uint8Array.from(file);
    broken[8] = 0x5b; // "[" instead of "{"
    const result = verify(broken, {}, 3);
    expect(result).toMatchObject({
      ok: false,
      reason: "INVALID_FILE_FORMAT",
      sizeBytes: broken.length,
      sha256: sha256(broken),
    });
    expect(result.message).toMatch(/must be a JSON object, but it starts with the character "\["/);
  });

  it("validates its options and refuses use after finish", () => {
    expect(() => new LoraVerifier({ expectedExtension: "bin" as "pt", maxSizeBytes: 1 })).toThrow(TypeError);
    expect(() => new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 0 })).toThrow(RangeError);
    expect(() => new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 1, expectedSha256: "abc" })).toThrow(
      TypeError,
    );
    const verifier = new LoraVerifier({ expectedExtension: "pt", maxSizeBytes: 10 });
    verifier.finish();
    expect(() => verifier.update(new Uint8Array(1))).toThrow(/after finish/);
  });
});

describe("verifyStream", () => {
  async function* source(bytes: Uint8Array, size: number, onRead?: () => void): AsyncGenerator<Uint8Array> {
    for (const chunk of chunked(bytes, size)) {
      onRead?.();
      yield chunk;
    }
  }

  it("verifies an async iterable of chunks", async () => {
    const file = buildSafetensors(kohyaTensors(), KOHYA_METADATA);
    const result = await verifyStream(source(file, 4096), { expectedExtension: "safetensors", maxSizeBytes: MiB });
    expect(result).toMatchObject({ ok: true, sha256: sha256(file), sizeBytes: file.length, tensorCount: 6 });
  });

  it("stops reading once the file is known to be too large", async () => {
    const file = buildSafetensors([{ name: "w", dtype: "U8", shape: [100_000] }]);
    let reads = 0;
    const result = await verifyStream(
      source(file, 1000, () => reads++),
      { expectedExtension: "safetensors", maxSizeBytes: 10_000 },
    );
    expect(result).toMatchObject({ ok: false, reason: "FILE_TOO_LARGE", sizeBytes: 11_000 });
    expect(reads).toBe(11);
  });

  it("lets errors of the source propagate", async () => {
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield new Uint8Array(8);
      throw new Error("connection reset");
    }
    await expect(verifyStream(failing(), { expectedExtension: "pt", maxSizeBytes: MiB })).rejects.toThrow(
      "connection reset",
    );
  });
});
