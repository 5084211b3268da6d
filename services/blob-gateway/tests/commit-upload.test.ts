import { createHash } from "node:crypto";
import { ValidationStatus } from "@emprops/contracts";
import { parseSafetensorsHeader } from "@emprops/lora-formats";
import {
  blobEndpointOf,
  callPickle,
  eventually,
  type FaultProxy,
  loraStorages,
  LORA_TENSORS,
  randomLoraSafetensors,
  rpcFailure,
  startFaultProxy,
  stateDictPickle,
  torchZip,
} from "@emprops/testkit";
import { finalBlobOf, newUpload, pathOf, stagedPathOf } from "./support/ids.js";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let t: GatewayUnderTest;
let proxy: FaultProxy;

beforeAll(async () => {
  // The gateway reaches storage through a fault proxy, so a test can hold one of its requests back.
  t = await startGatewayForTest("commit-upload", {}, async (containers) => {
    proxy = await startFaultProxy(blobEndpointOf(containers.connectionString));
    return proxy.viaConnectionString(containers.connectionString);
  });
});

afterAll(async () => {
  await t?.stop();
  await proxy?.close();
});

const blockId = (i: number) => Buffer.from(`block-${String(i).padStart(6, "0")}`).toString("base64");

/** Put Block, Put Block List and Put Blob with a signed URL, as a browser (or an attacker holding it) sends them. */
const write = {
  block: (url: string, i: number, body: Uint8Array) =>
    fetch(`${url}&comp=block&blockid=${encodeURIComponent(blockId(i))}`, { method: "PUT", body }),
  blockList: (url: string, ids: string[]) =>
    fetch(`${url}&comp=blocklist`, {
      method: "PUT",
      body: `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`,
    }),
  blob: (url: string, body: Uint8Array) =>
    fetch(url, { method: "PUT", headers: { "x-ms-blob-type": "BlockBlob" }, body }),
};

async function stage(extension: "safetensors" | "pt", file: Buffer, userId?: string) {
  const upload = newUpload(extension, userId);
  const { uploadUrl } = await t.client.createUploadUrl({ upload, sizeBytes: BigInt(file.length) });
  expect((await write.block(uploadUrl, 0, file)).status).toBe(201);
  expect((await write.blockList(uploadUrl, [blockId(0)])).status).toBe(201);
  return { upload, uploadUrl, destination: finalBlobOf(upload) };
}

const bytesAt = async (path: string) => t.userContainer.getBlockBlobClient(path).downloadToBuffer();
const exists = (path: string) => t.userContainer.getBlockBlobClient(path).exists();

describe("CommitUpload", () => {
  it("stores the verified file at its final path; the old URL then changes nothing", async () => {
    const file = randomLoraSafetensors(20_000);
    const { upload, uploadUrl, destination } = await stage("safetensors", file);
    const res = await t.client.commitUpload({ upload, destination, maxSizeBytes: BigInt(file.length) });
    expect(res.committed).toBe(true);
    expect(res.verification?.status).toBe(ValidationStatus.SAFE);
    expect(res.stored).toMatchObject({
      blobPath: pathOf(destination),
      sizeBytes: BigInt(file.length),
      sha256: sha256(file),
    });
    expect(res.converted).toBeUndefined();

    const final = t.userContainer.getBlockBlobClient(pathOf(destination));
    const props = await final.getProperties();
    expect(props.etag?.replace(/"/g, "")).toBe(res.stored?.etag);
    expect(props.metadata).toEqual({
      sha256: sha256(file),
      verified_etag: res.verifiedEtag,
      upload_id: upload.uploadId,
    });
    expect(await bytesAt(pathOf(destination))).toEqual(file);

    // The staging blob is under the upload's lease from verification on: every write with the URL fails.
    const evil = randomLoraSafetensors(20_000);
    expect((await write.block(uploadUrl, 1, evil)).status).toBe(412);
    expect((await write.blockList(uploadUrl, [blockId(0)])).status).toBe(412);
    expect((await write.blob(uploadUrl, evil)).status).toBe(412);
    expect(await bytesAt(stagedPathOf(upload))).toEqual(file);

    // Sealed: emptied, still leased; the URL still writes nothing, not even staged blocks.
    await t.client.sealUpload({ upload });
    await t.client.sealUpload({ upload });
    expect((await write.block(uploadUrl, 2, evil)).status).toBe(412);
    expect((await write.blob(uploadUrl, evil)).status).toBe(412);
    const sealed = await t.client.getUploadState({ upload });
    expect(sealed).toMatchObject({ committed: true, committedSizeBytes: 0n, uncommittedBlocks: [] });
    // Neither the final blob nor anything a reader sees changed.
    expect(await bytesAt(pathOf(destination))).toEqual(file);
    expect((await final.getProperties()).etag).toBe(props.etag);
    // A completion after sealing is refused.
    expect(await rpcFailure(t.client.commitUpload({ upload, destination }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "UPLOAD_STATE_CONFLICT",
    });
  });

  it("answers committed = false while only blocks are staged, and leaves the URL working", async () => {
    const file = randomLoraSafetensors(5000);
    const upload = newUpload();
    const { uploadUrl } = await t.client.createUploadUrl({ upload, sizeBytes: BigInt(file.length) });
    expect((await write.block(uploadUrl, 0, file)).status).toBe(201);
    const res = await t.client.commitUpload({ upload, destination: finalBlobOf(upload) });
    expect(res.committed).toBe(false);
    expect(res.uncommittedBlocks.map((b) => [b.blockId, b.sizeBytes])).toEqual([[blockId(0), BigInt(file.length)]]);
    // The lease taken to look was given back: the upload goes on.
    expect((await write.blockList(uploadUrl, [blockId(0)])).status).toBe(201);
    expect((await t.client.commitUpload({ upload, destination: finalBlobOf(upload) })).verification?.status).toBe(
      ValidationStatus.SAFE,
    );
  });

  it("stores nothing for a rejected file", async () => {
    const file = torchZip(callPickle("os", "system", "id"));
    const { upload, destination } = await stage("pt", file);
    const res = await t.client.commitUpload({ upload, destination });
    expect(res.verification).toMatchObject({ status: ValidationStatus.REJECTED, unsafeGlobals: ["os.system"] });
    expect(res.stored).toBeUndefined();
    expect(await exists(pathOf(destination))).toBe(false);
    expect(await exists(pathOf({ ...destination, extension: "safetensors" }))).toBe(false);
  });

  it("refuses a file larger than the limit from its size alone", async () => {
    const file = randomLoraSafetensors(5000);
    const { upload, destination } = await stage("safetensors", file);
    proxy.reset();
    const res = await t.client.commitUpload({ upload, destination, maxSizeBytes: BigInt(file.length - 1) });
    expect(res.verification).toMatchObject({ status: ValidationStatus.REJECTED, reason: 3 /* FILE_TOO_LARGE */ });
    expect(proxy.requests.filter((r) => r.method === "GET" && r.path.includes(stagedPathOf(upload)))).toEqual([]);
  });

  it("is idempotent: a retried completion finds its own stored blob", async () => {
    const file = randomLoraSafetensors(3000);
    const { upload, destination } = await stage("safetensors", file);
    const first = await t.client.commitUpload({ upload, destination });
    const again = await t.client.commitUpload({ upload, destination });
    expect(again.stored).toEqual(first.stored);
    // Another upload may not take the same final path.
    const other = await stage("safetensors", file, upload.userId);
    const refused = await rpcFailure(t.client.commitUpload({ upload: other.upload, destination }));
    expect(refused).toMatchObject({ code: "AlreadyExists", reason: "UPLOAD_STATE_CONFLICT" });
  });

  it("copies nothing when the staging blob changed after verification (even past the lease)", async () => {
    const file = randomLoraSafetensors(8000);
    const { upload, destination } = await stage("safetensors", file);
    // Hold the copy to the final path back; meanwhile the staging blob is replaced with the account key.
    proxy.rules.push({ method: "PUT", path: (p) => p.split("?")[0]!.endsWith(pathOf(destination)), delayMs: 1500 });
    const committing = t.client.commitUpload({ upload, destination });
    const staging = t.userContainer.getBlockBlobClient(stagedPathOf(upload));
    await eventually(async () => expect((await staging.getProperties()).leaseState).toBe("leased"));
    await eventually(() => expect(proxy.requests.some((r) => r.fault === "delay")).toBe(true));
    await staging.getBlobLeaseClient(upload.uploadId).breakLease(0);
    await staging.uploadData(randomLoraSafetensors(8000));
    const failure = await rpcFailure(committing);
    expect(failure).toMatchObject({ code: "Aborted", reason: "UPLOAD_STATE_CONFLICT" });
    expect(await exists(pathOf(destination))).toBe(false);
  });
});

describe("CommitUpload of a .pt", () => {
  it("converts it into the .safetensors beside it, re-read and checked; the original stays", async () => {
    const file = torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
    const { upload, destination } = await stage("pt", file);
    const res = await t.client.commitUpload({ upload, destination });
    expect(res.verification?.status).toBe(ValidationStatus.SAFE);
    expect(res.stored).toMatchObject({ blobPath: pathOf(destination), sha256: sha256(file) });
    const convertedPath = pathOf({ ...destination, extension: "safetensors" });
    expect(res.converted?.blobPath).toBe(convertedPath);

    expect(await bytesAt(pathOf(destination))).toEqual(file);
    const converted = await bytesAt(convertedPath);
    expect(res.converted).toMatchObject({ sizeBytes: BigInt(converted.length), sha256: sha256(converted) });
    const props = await t.userContainer.getBlockBlobClient(convertedPath).getProperties();
    expect(props.metadata).toEqual({
      sha256: sha256(converted),
      source_sha256: sha256(file),
      upload_id: upload.uploadId,
    });
    expect(props.etag?.replace(/"/g, "")).toBe(res.converted?.etag);

    const n = Number(converted.readBigUInt64LE(0));
    const header = parseSafetensorsHeader(converted.subarray(8, 8 + n), converted.length - 8 - n);
    const storages = loraStorages();
    const data = converted.subarray(8 + n);
    expect(
      Object.fromEntries(
        header.tensors.map((x) => [x.name, [x.dtype, x.shape, sha256(data.subarray(...x.dataOffsets))]]),
      ),
    ).toEqual(
      Object.fromEntries(
        LORA_TENSORS.map((x, i) => [
          x.name,
          [x.storage === "HalfStorage" ? "F16" : "F32", x.shape, sha256(storages[i]!)],
        ]),
      ),
    );

    // A retry reuses both blobs.
    const again = await t.client.commitUpload({ upload, destination });
    expect(again.converted).toEqual(res.converted);
  });
});
