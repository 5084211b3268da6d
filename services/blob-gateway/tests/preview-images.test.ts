import { createHash } from "node:crypto";
import { jpegClaiming, pngBomb, rpcFailure, testImage, torchZip, callPickle, truncated } from "@emprops/testkit";
import sharp from "sharp";
import { newBlob } from "./support/ids.js";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("preview-images");
});

afterAll(async () => {
  await t?.stop();
});

const MiB = 1024 * 1024;
const previewOf = () => {
  const { userId, loraId } = newBlob();
  return { userId, loraId };
};
const storedBytes = async (blob: { userId: string; loraId: string }) =>
  t.userContainer.getBlockBlobClient(`users/${blob.userId}/loras/${blob.loraId}.preview.webp`).downloadToBuffer();
const stored = (blob: { userId: string; loraId: string }) =>
  t.userContainer.getBlockBlobClient(`users/${blob.userId}/loras/${blob.loraId}.preview.webp`).exists();

describe("StorePreview accepts PNG, JPEG and WebP and stores a fresh WebP", () => {
  it.each([
    ["png", 1280, 960, 1024, 768],
    ["jpeg", 3000, 2000, 1024, 683],
    ["webp", 2000, 3000, 683, 1024],
  ] as const)("a %s of %d×%d becomes a WebP of %d×%d", async (format, w, h, width, height) => {
    const blob = previewOf();
    const image = await testImage(format, w, h);
    const res = await t.client.storePreview({ blob, image });
    expect(res).toMatchObject({
      width,
      height,
      sourceFormat: format,
      sourceWidth: w,
      sourceHeight: h,
      blobPath: `users/${blob.userId}/loras/${blob.loraId}.preview.webp`,
    });
    const bytes = await storedBytes(blob);
    expect(bytes.subarray(0, 4).toString("latin1")).toBe("RIFF");
    expect(bytes.subarray(8, 12).toString("latin1")).toBe("WEBP");
    expect(Number(res.sizeBytes)).toBe(bytes.length);
    expect(res.sha256).toBe(createHash("sha256").update(bytes).digest("hex"));
    expect(await sharp(bytes).metadata()).toMatchObject({ format: "webp", width, height });
  });

  it("keeps a small image's size and drops its metadata (EXIF with a location)", async () => {
    const blob = previewOf();
    const image = await testImage("jpeg", 200, 100, { exif: { IFD0: { Artist: "someone", Copyright: "secret" } } });
    expect((await sharp(image).metadata()).exif).toBeDefined();
    const res = await t.client.storePreview({ blob, image });
    expect(res).toMatchObject({ width: 200, height: 100 });
    const meta = await sharp(await storedBytes(blob)).metadata();
    expect(meta.exif).toBeUndefined();
    expect((await storedBytes(blob)).includes(Buffer.from("secret"))).toBe(false);
  });

  it("serves it through a read URL as image/webp", async () => {
    const blob = previewOf();
    await t.client.storePreview({ blob, image: await testImage("png", 64, 64) });
    const { urls } = await t.client.createDownloadUrls({ targets: [{ target: { case: "loraPreview", value: blob } }] });
    const res = await fetch(urls[0]!.url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/webp");
    expect(res.headers.get("cache-control")).toBe("private, max-age=600");
    expect(Buffer.from(await res.arrayBuffer()).equals(await storedBytes(blob))).toBe(true);
  });

  it("replaces an earlier preview; DeletePreview removes it, twice is harmless", async () => {
    const blob = previewOf();
    const first = await t.client.storePreview({ blob, image: await testImage("png", 100, 100) });
    const second = await t.client.storePreview({ blob, image: await testImage("png", 50, 80) });
    expect(second.sha256).not.toBe(first.sha256);
    expect(await sharp(await storedBytes(blob)).metadata()).toMatchObject({ width: 50, height: 80 });
    expect(await t.client.deletePreview({ blob })).toMatchObject({ deleted: true });
    expect(await stored(blob)).toBe(false);
    expect(await t.client.deletePreview({ blob })).toMatchObject({ deleted: false });
  });
});

describe("StorePreview refuses bad images, storing nothing and keeping the earlier preview", () => {
  let blob: { userId: string; loraId: string };
  let before: Buffer;

  beforeAll(async () => {
    blob = previewOf();
    await t.client.storePreview({ blob, image: await testImage("png", 40, 40) });
    before = await storedBytes(blob);
  });

  afterEach(async () => {
    expect((await storedBytes(blob)).equals(before)).toBe(true);
  });

  const refused = async (image: Uint8Array) => rpcFailure(t.client.storePreview({ blob, image }));

  it("a decompression bomb, from its header alone: 40,000 × 40,000 pixels in a file of kilobytes", async () => {
    const bomb = pngBomb(40_000);
    expect(bomb.length).toBeLessThan(MiB);
    const failure = await refused(bomb);
    expect(failure).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_IMAGE",
      metadata: { width: "40000", height: "40000", max_pixels: "25000000" },
    });
    expect(failure.message).toBe(
      "the image is 40000×40000 pixels; a preview may have at most 25,000,000 pixels and 12000 on a side",
    );
  });

  it("a JPEG whose frame header claims 60,000 × 60,000 over a small image's data", async () => {
    const failure = await refused(await jpegClaiming(60_000, 60_000));
    expect(failure).toMatchObject({ reason: "INVALID_IMAGE", metadata: { width: "60000", height: "60000" } });
  });

  it("a strip within the pixel limit but longer than a side may be", async () => {
    const failure = await refused(await jpegClaiming(20_000, 8));
    expect(failure).toMatchObject({ reason: "INVALID_IMAGE", metadata: { width: "20000", height: "8" } });
  });

  it.each([
    [
      "GIF",
      Buffer.from(
        "GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
        "latin1",
      ),
    ],
    [
      "SVG",
      Buffer.from(
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
      ),
    ],
    ["BMP", Buffer.concat([Buffer.from("BM"), Buffer.alloc(60)])],
    ["a safetensors file", Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":1}         ')])],
    ["a torch pickle", torchZip(callPickle("os", "system", "ls"))],
    ["text", Buffer.from("just some text, named preview.png")],
  ])("wrong first bytes: %s", async (_name, image) => {
    const failure = await refused(image);
    expect(failure).toMatchObject({ code: "InvalidArgument", reason: "INVALID_IMAGE" });
    expect(failure.message).toBe("the image must be a PNG, JPEG or WebP file (its first bytes are none of them)");
  });

  it("PNG's signature followed by a JPEG", async () => {
    const jpeg = await testImage("jpeg", 32, 32);
    const forged = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), jpeg]);
    expect(await refused(forged)).toMatchObject({ reason: "INVALID_IMAGE" });
  });

  it.each(["png", "jpeg", "webp"] as const)("a truncated %s", async (format) => {
    const failure = await refused(truncated(await testImage(format, 400, 300), 0.6));
    expect(failure).toMatchObject({ code: "InvalidArgument", reason: "INVALID_IMAGE" });
    expect(failure.message).toMatch(/^the image cannot be (read|decoded): /);
  });

  it("more than 2 MiB: FILE_TOO_LARGE", async () => {
    const image = Buffer.concat([await testImage("png", 16, 16), Buffer.alloc(2 * MiB)]);
    expect(await refused(image)).toMatchObject({
      code: "InvalidArgument",
      reason: "FILE_TOO_LARGE",
      metadata: { max_bytes: String(2 * MiB) },
    });
  });

  it("an empty image", async () => {
    expect(await refused(new Uint8Array())).toMatchObject({ reason: "INVALID_IMAGE" });
  });
});

describe("polyglots: whatever rides along an image is not stored", () => {
  it.each([
    ["a PNG with a torch zip (a pickle calling os.system) appended", "png", torchZip(callPickle("os", "system", "ls"))],
    ["a JPEG with an HTML page appended", "jpeg", Buffer.from("<html><script>alert(document.cookie)</script></html>")],
    ["a WebP with a ZIP end record appended", "webp", Buffer.from("PK\x05\x06" + "\0".repeat(18), "latin1")],
  ] as const)("%s: the stored WebP is new bytes without the payload", async (_name, format, payload) => {
    const blob = previewOf();
    const image = Buffer.concat([await testImage(format, 120, 90), payload]);
    await t.client.storePreview({ blob, image });
    const bytes = await storedBytes(blob);
    expect(bytes.subarray(8, 12).toString("latin1")).toBe("WEBP");
    expect(bytes.includes(payload.subarray(0, 16))).toBe(false);
    expect(bytes.includes(Buffer.from("PK"))).toBe(false);
  });
});

describe("bad ids", () => {
  it("refuses them before reading the image", async () => {
    const image = await testImage("png", 16, 16);
    for (const blob of [
      { userId: "not-a-uuid", loraId: "1" },
      { userId: previewOf().userId, loraId: "1/../2" },
    ]) {
      expect(await rpcFailure(t.client.storePreview({ blob, image }))).toMatchObject({ reason: "INVALID_ID" });
    }
    expect(await rpcFailure(t.client.storePreview({ image }))).toMatchObject({ reason: "INVALID_REQUEST" });
  });
});
