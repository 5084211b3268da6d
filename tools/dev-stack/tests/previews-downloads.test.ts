import { createHash } from "node:crypto";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraService, PreviewSource } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";
import {
  buildSafetensors,
  eventually,
  kohyaMetadata,
  loraTensors,
  pngBomb,
  rpcFailure,
  stateDictPickle,
  testImage,
  torchZip,
  truncated,
} from "@emprops/testkit";
import { uploadLora } from "@emprops/upload-client";
import sharp from "sharp";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let t: TestStack;
let lora: Client<typeof LoraService>;
let other: Client<typeof LoraService>;

const clientFor = (token: string) =>
  createClient(
    LoraService,
    createGrpcTransport({ baseUrl: t.stack.registry.url, interceptors: [bearerInterceptor(token)] }),
  );

beforeAll(async () => {
  t = await startTestStack("previews-downloads", { env: { registry: { OUTBOX_POLL_MS: "500" } } });
  lora = clientFor(t.userToken);
  other = clientFor(await t.tokenFor("00000000-0000-4000-8000-00000000beef"));
});

afterAll(async () => {
  await t?.stop();
});

const upload = async (name: string, bytes: Uint8Array) =>
  (
    await uploadLora({
      client: lora,
      source: new Blob([bytes]),
      create: { name, tags: ["e2e"], uploadSource: "test" },
      retryDelayMs: 10,
    })
  ).lora;
const previewBlob = (loraId: string) => t.containers.userBlob(`users/${t.userId}/loras/${loraId}.preview.webp`).client;

describe("previews", () => {
  it("a safetensors file with a modelspec.thumbnail gets it as its preview at upload", async () => {
    const thumbnail = await testImage("png", 256, 256);
    const file = buildSafetensors(loraTensors(), {
      ...kohyaMetadata("with_thumb"),
      "modelspec.thumbnail": `data:image/png;base64,${thumbnail.toString("base64")}`,
    });
    const uploaded = await upload("with_thumb.safetensors", file);
    expect(uploaded.preview).toMatchObject({ source: PreviewSource.FILE, width: 256, height: 256 });

    const listed = (await lora.listLoras({ search: "with_thumb" })).loras[0]!;
    expect(listed.preview).toMatchObject({ source: PreviewSource.FILE, width: 256, height: 256 });
    const { previews } = await lora.getLoraPreviewUrls({ loraIds: [uploaded.id] });
    expect(previews.map((p) => p.loraId)).toEqual([uploaded.id]);
    const res = await fetch(previews[0]!.url);
    expect(res.headers.get("content-type")).toBe("image/webp");
    expect(await sharp(Buffer.from(await res.arrayBuffer())).metadata()).toMatchObject({
      format: "webp",
      width: 256,
      height: 256,
    });
  });

  it("a thumbnail that is not an image leaves the upload standing, without a preview", async () => {
    const file = buildSafetensors(loraTensors(), {
      ...kohyaMetadata("bad_thumb"),
      "modelspec.thumbnail": `data:image/png;base64,${pngBomb(30_000).toString("base64")}`,
    });
    const uploaded = await upload("bad_thumb.safetensors", file);
    expect(uploaded.preview).toBeUndefined();
    expect((await lora.getLora({ loraId: uploaded.id })).lora?.preview).toBeUndefined();
  });

  it("the owner sets, replaces and removes a preview; a bad image is refused and changes nothing", async () => {
    const uploaded = await upload("no_thumb.safetensors", buildSafetensors(loraTensors(), kohyaMetadata("no_thumb")));
    expect(uploaded.preview).toBeUndefined();

    const set = await lora.setLoraPreview({ loraId: uploaded.id, image: await testImage("jpeg", 1600, 900) });
    expect(set.lora?.preview).toMatchObject({ source: PreviewSource.UPLOADED, width: 1024, height: 576 });
    const stored = await previewBlob(uploaded.id).downloadToBuffer();

    for (const [image, reason] of [
      [pngBomb(40_000), "INVALID_IMAGE"],
      [truncated(await testImage("png", 300, 300)), "INVALID_IMAGE"],
      [Buffer.from("<svg xmlns='http://www.w3.org/2000/svg'/>"), "INVALID_IMAGE"],
      [Buffer.concat([await testImage("png", 8, 8), Buffer.alloc(2 * 1024 * 1024)]), "FILE_TOO_LARGE"],
    ] as const) {
      const failure = await rpcFailure(lora.setLoraPreview({ loraId: uploaded.id, image }));
      expect([failure.code, failure.reason]).toEqual(["InvalidArgument", reason]);
    }
    expect((await previewBlob(uploaded.id).downloadToBuffer()).equals(stored)).toBe(true);
    expect((await lora.getLora({ loraId: uploaded.id })).lora?.preview?.width).toBe(1024);

    const removed = await lora.deleteLoraPreview({ loraId: uploaded.id });
    expect(removed.lora?.preview).toBeUndefined();
    expect(await previewBlob(uploaded.id).exists()).toBe(false);
    expect((await lora.getLoraPreviewUrls({ loraIds: [uploaded.id] })).previews).toEqual([]);
    // Removing again is harmless.
    expect((await lora.deleteLoraPreview({ loraId: uploaded.id })).lora?.id).toBe(uploaded.id);
  });

  it("another user's LoRA is not found, and its preview is never signed", async () => {
    const mine = (await lora.listLoras({ search: "with_thumb" })).loras[0]!;
    const failure = await rpcFailure(other.setLoraPreview({ loraId: mine.id, image: await testImage("png", 8, 8) }));
    expect([failure.code, failure.reason]).toEqual(["NotFound", "LORA_NOT_FOUND"]);
    expect((await other.getLoraPreviewUrls({ loraIds: [mine.id, "999999"] })).previews).toEqual([]);
    expect((await rpcFailure(other.deleteLoraPreview({ loraId: mine.id }))).reason).toBe("LORA_NOT_FOUND");
    const tooMany = Array.from({ length: 201 }, (_, i) => String(i + 1));
    expect((await rpcFailure(lora.getLoraPreviewUrls({ loraIds: tooMany }))).reason).toBe("INVALID_REQUEST");
    expect((await rpcFailure(lora.getLoraPreviewUrls({ loraIds: ["x"] }))).metadata.field).toBe("lora_ids[0]");
  });

  it("a deleted LoRA's preview goes with it", async () => {
    const mine = (await lora.listLoras({ search: "with_thumb" })).loras[0]!;
    expect(await previewBlob(mine.id).exists()).toBe(true);
    await lora.deleteLora({ loraId: mine.id });
    await eventually(async () => expect(await previewBlob(mine.id).exists()).toBe(false));
  });
});

describe("owner download", () => {
  it("signs the owner's original file with a Content-Disposition naming it; the bytes match the sha256", async () => {
    const bytes = buildSafetensors(loraTensors(3), kohyaMetadata("to_download"));
    const uploaded = await upload("My Style (v2).safetensors", bytes);
    const dl = await lora.getLoraDownloadUrl({ loraId: uploaded.id });
    expect(dl).toMatchObject({
      fileName: "My Style (v2).safetensors",
      sizeBytes: BigInt(bytes.length),
      sha256: sha256(bytes),
    });
    const res = await fetch(dl.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-disposition")).toBe('attachment; filename="My Style (v2).safetensors"');
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(dl.sha256);
  });

  it("a .pt LoRA downloads as the .pt the owner uploaded", async () => {
    const tensors = [
      { name: "lora_unet_down.lora_down.weight", storage: "FloatStorage", key: "0", numel: 4 * 64, shape: [4, 64] },
      { name: "lora_unet_down.lora_up.weight", storage: "FloatStorage", key: "1", numel: 64 * 4, shape: [64, 4] },
    ];
    const storages = [Buffer.alloc(4 * 64 * 4, 1), Buffer.alloc(64 * 4 * 4, 2)];
    const pt = torchZip(stateDictPickle(tensors), storages, { root: "legacy" });
    const uploaded = await upload("legacy.pt", pt);
    const dl = await lora.getLoraDownloadUrl({ loraId: uploaded.id });
    expect(dl.fileName).toBe("legacy.pt");
    const got = Buffer.from(await (await fetch(dl.url)).arrayBuffer());
    expect(got.equals(pt)).toBe(true);
  });

  it("another user's id and a missing id are LORA_NOT_FOUND alike", async () => {
    const mine = (await lora.listLoras({ search: "My Style" })).loras[0]!;
    const theirs = await rpcFailure(other.getLoraDownloadUrl({ loraId: mine.id }));
    const missing = await rpcFailure(lora.getLoraDownloadUrl({ loraId: "987654321" }));
    expect([theirs.code, theirs.reason]).toEqual(["NotFound", "LORA_NOT_FOUND"]);
    expect([missing.code, missing.reason]).toEqual(["NotFound", "LORA_NOT_FOUND"]);
    expect(theirs.message.replace(mine.id, "ID")).toBe(missing.message.replace("987654321", "ID"));
    expect((await rpcFailure(lora.getLoraDownloadUrl({ loraId: "abc" }))).reason).toBe("INVALID_ID");
  });
});
