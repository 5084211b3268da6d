import { extractLoraMetadata, normalizeBaseModel } from "../src/index.js";

describe("extractLoraMetadata", () => {
  it.each<[Record<string, string>, string]>([
    [{ "modelspec.architecture": "stable-diffusion-xl-v1-base/lora" }, "SDXL"],
    [{ "modelspec.architecture": "stable-diffusion-v1/lora" }, "SD1.5"],
    [{ "modelspec.architecture": "stable-diffusion-v2-768-v/lora" }, "SD2"],
    [{ "modelspec.architecture": "stable-diffusion-3-medium/lora" }, "SD3"],
    [{ "modelspec.architecture": "flux-1-dev/lora" }, "FLUX.1"],
    [{ ss_base_model_version: "sdxl_base_v1-0" }, "SDXL"],
    [{ ss_base_model_version: "sd_v1" }, "SD1.5"],
    [{ ss_base_model_version: "sd_v2" }, "SD2"],
    [{ ss_base_model_version: "flux1" }, "FLUX.1"],
    [{ ss_base_model_version: "sd3" }, "SD3"],
    [{ ss_sd_model_name: "v1-5-pruned-emaonly.safetensors" }, "SD1.5"],
    [{ ss_sd_model_name: "v2-1_768-ema-pruned.ckpt" }, "SD2"],
    [{ ss_sd_model_name: "ponyDiffusionV6XL_v6StartWithThisOne.safetensors" }, "SDXL"],
    [{ ss_sd_model_name: "myCustomMix_v3.safetensors" }, "myCustomMix_v3.safetensors"],
    [{ ss_sd_model_name: "runwayml/stable-diffusion", ss_v2: "True" }, "SD2"],
    [{ "modelspec.architecture": "new-arch-9/lora" }, "new-arch-9"],
    [{ "modelspec.architecture": "stable-diffusion-xl-v1-base/lora", ss_base_model_version: "sd_v1" }, "SDXL"],
    [{}, ""],
  ])("maps %j to base model %j", (meta, expected) => {
    expect(extractLoraMetadata(meta).baseModel).toBe(expected);
  });

  it("ignores bad values instead of throwing", () => {
    const meta = {
      ss_network_dim: "sixteen",
      ss_network_alpha: "None",
      ss_num_epochs: "-3",
      ss_epoch: "7",
      ss_num_train_images: "1e400",
      ss_resolution: "big",
      ss_tag_frequency: "{not json",
    };
    expect(extractLoraMetadata(meta)).toEqual({
      baseModel: "",
      rank: 0,
      alpha: 0,
      triggerWords: [],
      trainingEpochs: 7,
      trainingImages: 0,
      resolution: "",
      description: "",
      title: "",
      networkModule: "",
      raw: meta,
    });
  });

  it("reads numbers written the way kohya writes them", () => {
    const extract = extractLoraMetadata({
      ss_network_dim: "16.0",
      ss_network_alpha: "0.5",
      ss_num_epochs: "12",
      ss_num_train_images: "1500",
    });
    expect([extract.rank, extract.alpha, extract.trainingEpochs, extract.trainingImages]).toEqual([16, 0.5, 12, 1500]);
  });

  it.each([
    ["(1024, 1024)", "1024x1024"],
    ["(768,512)", "768x512"],
    ["[512, 768]", "512x768"],
    ["1024x1024", "1024x1024"],
    ["512", "512x512"],
    ["1024.0", ""],
  ])("normalises resolution %j", (value, expected) => {
    expect(extractLoraMetadata({ ss_resolution: value }).resolution).toBe(expected);
  });

  it("prefers modelspec fields and falls back to kohya ones", () => {
    const both = extractLoraMetadata({
      "modelspec.title": "Nice",
      ss_output_name: "nice_v1",
      "modelspec.resolution": "896x1152",
      ss_resolution: "(512, 512)",
    });
    expect([both.title, both.resolution]).toEqual(["Nice", "896x1152"]);
    const kohya = extractLoraMetadata({
      ss_output_name: "nice_v1",
      ss_resolution: "(512, 512)",
      ss_network_module: "lycoris.kohya",
    });
    expect([kohya.title, kohya.resolution, kohya.networkModule]).toEqual(["nice_v1", "512x512", "lycoris.kohya"]);
  });

  it("takes the ten most frequent tags summed over datasets", () => {
    const frequency: Record<string, Record<string, number>> = { a: {}, b: {} };
    for (let i = 0; i < 15; i++) (frequency.a as Record<string, number>)[`tag${i}`] = i;
    (frequency.b as Record<string, number>).tag0 = 100;
    (frequency.b as Record<string, number>)["tag1 "] = 1;
    const words = extractLoraMetadata({ ss_tag_frequency: JSON.stringify(frequency) }).triggerWords;
    expect(words).toEqual(["tag0", "tag14", "tag13", "tag12", "tag11", "tag10", "tag9", "tag8", "tag7", "tag6"]);
  });

  it("survives hostile tag frequency JSON", () => {
    for (const json of ["[]", "null", '{"a":[1,2]}', '{"a":{"__proto__":5,"x":"3"}}', "[".repeat(100_000)]) {
      expect(() => extractLoraMetadata({ ss_tag_frequency: json })).not.toThrow();
    }
    expect(extractLoraMetadata({ ss_tag_frequency: '{"a":{"__proto__":5}}' }).triggerWords).toEqual(["__proto__"]);
  });

  it("exposes the family mapping on its own", () => {
    expect(normalizeBaseModel("sd_xl_base_1.0.safetensors")).toBe("SDXL");
    expect(normalizeBaseModel("something")).toBeUndefined();
  });
});
