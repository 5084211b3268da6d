import { randomUUID } from "node:crypto";
import { BlobArea, ListedBlobKind } from "@emprops/contracts";
import { mintToken } from "@emprops/platform";
import { randomLoraSafetensors, rpcFailure } from "@emprops/testkit";
import { finalBlobOf, newUpload, pathOf, stagedPathOf } from "./support/ids.js";
import { type GatewayUnderTest, JWT_SECRET, startGatewayForTest } from "./support/start-gateway.js";

/*
 * ListBlobs and DeleteListedBlob, the consistency sweep's view of storage:
 * pages of users/ or staging/ with what each name identifies, and a delete
 * that keeps a blob written since it was listed.
 */

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("list-blobs");
});

afterAll(async () => {
  await t?.stop();
});

const put = (path: string, bytes: Uint8Array, metadata: Record<string, string> = {}) =>
  t.userContainer.getBlockBlobClient(path).upload(bytes, bytes.length, { metadata });
const exists = (path: string) => t.userContainer.getBlockBlobClient(path).exists();

/** Every page of a listing, following next_page_token. */
async function listAll(area: BlobArea, userId = "", pageSize = 0) {
  const blobs = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await t.client.listBlobs({ area, userId, pageSize, pageToken });
    blobs.push(...page.blobs);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken);
  return { blobs, pages };
}

describe("ListBlobs", () => {
  const userId = randomUUID();
  const lora = { userId, loraId: "41", extension: "pt" };
  const file = randomLoraSafetensors(3_000);

  beforeAll(async () => {
    await put(pathOf(lora), file, { sha256: "ab".repeat(32) });
    await put(pathOf({ ...lora, extension: "safetensors" }), file);
    await put(`users/${userId}/loras/41.preview.webp`, Buffer.from("webp"));
    await put(`users/${userId}/loras/notes.txt`, Buffer.from("?"));
    await put(pathOf({ userId: randomUUID(), loraId: "7", extension: "safetensors" }), file);
  });

  it("lists one user's blobs in name order with size, ETag, last-modified, metadata and the ids of each name", async () => {
    const { blobs } = await listAll(BlobArea.USERS, userId.toUpperCase());
    expect(blobs.map((b) => b.blobPath)).toEqual([
      `users/${userId}/loras/41.preview.webp`,
      `users/${userId}/loras/41.pt`,
      `users/${userId}/loras/41.safetensors`,
      `users/${userId}/loras/notes.txt`,
    ]);
    const [preview, pt, converted, unknown] = blobs;
    const props = await t.userContainer.getBlockBlobClient(pathOf(lora)).getProperties();
    expect(pt).toMatchObject({
      kind: ListedBlobKind.LORA,
      userId,
      loraId: "41",
      extension: "pt",
      sizeBytes: BigInt(file.length),
      etag: props.etag!.replace(/"/g, ""),
      metadata: { sha256: "ab".repeat(32) },
      leased: false,
    });
    expect(Math.abs(Number(pt!.lastModified!.seconds) * 1000 - props.lastModified!.getTime())).toBeLessThan(1000);
    expect(converted).toMatchObject({ kind: ListedBlobKind.LORA, loraId: "41", extension: "safetensors" });
    expect(preview).toMatchObject({ kind: ListedBlobKind.PREVIEW, userId, loraId: "41", sizeBytes: 4n });
    expect(unknown).toMatchObject({ kind: ListedBlobKind.UNSPECIFIED, userId, loraId: "" });
  });

  it("pages through users/ with tokens bound to their listing", async () => {
    const all = await listAll(BlobArea.USERS, "", 2);
    expect(all.blobs).toHaveLength(5);
    expect(all.pages).toBe(3);
    const first = await t.client.listBlobs({ area: BlobArea.USERS, pageSize: 2 });
    expect(
      await rpcFailure(t.client.listBlobs({ area: BlobArea.STAGING, pageToken: first.nextPageToken })),
    ).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_TOKEN",
    });
  });

  it("lists staging blobs with their upload, also one with staged blocks only, and a sealed one leased", async () => {
    const sealed = newUpload("safetensors", userId);
    await t.client.sealUpload({ upload: sealed });
    const staged = newUpload("pt", userId);
    const { uploadUrl } = await t.client.createUploadUrl({ upload: staged, sizeBytes: 10n });
    const blockId = Buffer.from("block-000000").toString("base64");
    expect(
      (await fetch(`${uploadUrl}&comp=block&blockid=${encodeURIComponent(blockId)}`, { method: "PUT", body: "x" }))
        .status,
    ).toBe(201);

    const { blobs } = await listAll(BlobArea.STAGING, userId);
    const byUpload = new Map(blobs.map((b) => [b.uploadId, b]));
    expect(byUpload.get(sealed.uploadId)).toMatchObject({
      kind: ListedBlobKind.STAGED,
      blobPath: stagedPathOf(sealed),
      userId,
      extension: "safetensors",
      sizeBytes: 0n,
      metadata: { sealed: "true", upload_id: sealed.uploadId },
      leased: true,
    });
    expect(byUpload.get(staged.uploadId)).toMatchObject({
      kind: ListedBlobKind.STAGED,
      blobPath: stagedPathOf(staged),
      extension: "pt",
      sizeBytes: 0n,
    });
  });

  it("refuses a missing area, a bad user id and a negative page size, each with its reason", async () => {
    expect(await rpcFailure(t.client.listBlobs({}))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_REQUEST",
    });
    expect(await rpcFailure(t.client.listBlobs({ area: BlobArea.USERS, userId: "../x" }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ID",
    });
    expect(await rpcFailure(t.client.listBlobs({ area: BlobArea.USERS, pageSize: -1 }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_SIZE",
    });
    expect(await rpcFailure(t.client.listBlobs({ area: BlobArea.USERS, pageToken: "%%" }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_PAGE_TOKEN",
    });
  });

  it("is for the service role only: an admin token is refused", async () => {
    const admin = t.clientWith(await mintToken(JWT_SECRET, { subject: "ops", roles: ["admin"] }));
    expect(await rpcFailure(admin.listBlobs({ area: BlobArea.USERS }))).toMatchObject({ code: "PermissionDenied" });
    expect(await rpcFailure(admin.deleteListedBlob({ blobPath: "users/x", etag: "1" }))).toMatchObject({
      code: "PermissionDenied",
    });
  });
});

describe("DeleteListedBlob", () => {
  const listedOne = async (path: string) => {
    const { blobs } = await listAll(
      path.startsWith("staging/") ? BlobArea.STAGING : BlobArea.USERS,
      path.split("/")[1],
    );
    const blob = blobs.find((b) => b.blobPath === path);
    expect(blob).toBeDefined();
    return blob!;
  };

  it("deletes exactly the listed LoRA blob (not the converted copy beside a .pt)", async () => {
    const lora = finalBlobOf(newUpload("pt"));
    await put(pathOf(lora), Buffer.from("pt"));
    await put(pathOf({ ...lora, extension: "safetensors" }), Buffer.from("st"));
    const listed = await listedOne(pathOf(lora));
    expect(await t.client.deleteListedBlob({ blobPath: listed.blobPath, etag: listed.etag })).toMatchObject({
      deleted: true,
    });
    expect(await exists(pathOf(lora))).toBe(false);
    expect(await exists(pathOf({ ...lora, extension: "safetensors" }))).toBe(true);
    // Already gone: nothing to do.
    expect(await t.client.deleteListedBlob({ blobPath: listed.blobPath, etag: listed.etag })).toMatchObject({
      deleted: false,
    });
  });

  it("keeps a blob written after it was listed", async () => {
    const lora = finalBlobOf(newUpload("safetensors"));
    await put(pathOf(lora), Buffer.from("first"));
    const listed = await listedOne(pathOf(lora));
    await put(pathOf(lora), Buffer.from("second"));
    expect(await t.client.deleteListedBlob({ blobPath: listed.blobPath, etag: listed.etag })).toMatchObject({
      deleted: false,
    });
    expect((await t.userContainer.getBlockBlobClient(pathOf(lora)).downloadToBuffer()).toString()).toBe("second");
  });

  it("deletes a sealed staging blob under its upload's lease", async () => {
    const upload = newUpload("safetensors");
    await t.client.sealUpload({ upload });
    const listed = await listedOne(stagedPathOf(upload));
    expect(await t.client.deleteListedBlob({ blobPath: listed.blobPath, etag: listed.etag })).toMatchObject({
      deleted: true,
    });
    expect(await exists(stagedPathOf(upload))).toBe(false);
  });

  it("refuses a path the gateway does not name, and a missing ETag", async () => {
    for (const blobPath of ["models/loras/x.safetensors", "users/../x", `users/${randomUUID()}/loras/notes.txt`, ""]) {
      expect(await rpcFailure(t.client.deleteListedBlob({ blobPath, etag: "0x1" }))).toMatchObject({
        code: "InvalidArgument",
        reason: "INVALID_REQUEST",
      });
    }
    const path = pathOf(finalBlobOf(newUpload("safetensors")));
    expect(await rpcFailure(t.client.deleteListedBlob({ blobPath: path }))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_REQUEST",
    });
  });
});
