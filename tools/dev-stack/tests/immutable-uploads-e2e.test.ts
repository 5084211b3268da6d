import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { BlobServiceClient, type ContainerClient } from "@azure/storage-blob";
import { toJson } from "@bufbuild/protobuf";
import { FileFormat, LoraSchema, LoraSource, type Lora } from "@emprops/contracts";
import { parseSafetensorsHeader } from "@emprops/lora-formats";
import {
  blobEndpointOf,
  eventually,
  type FaultProxy,
  randomLoraSafetensors,
  rpcFailure,
  SAFETENSORS_DTYPE_OF_TORCH,
  startFaultProxy,
  torchSaveFixture,
  torchSaveFixtures,
} from "@emprops/testkit";
import { machineClient, resolverClient, sha256, userClient } from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * A verified LoRA cannot change under its owner or the machines: uploads
 * write a staging blob only, CompleteLoraUpload leases it before verifying
 * and copies it server side to a path no signed URL can write, and after
 * Complete or Abort the old upload URL stores nothing. Machines receive a
 * .pt as the safetensors converted from it. The stack reaches storage
 * through a fault proxy, so a test can hold the gateway's copy back.
 */

const SECRET = "immutable-uploads-e2e-secret-0123456789";
const expected = torchSaveFixtures();

let t: TestStack;
let proxy: FaultProxy;
let container: ContainerClient;

beforeAll(async () => {
  t = await startTestStack("immutable-uploads", {
    jwtSecret: SECRET,
    azureConnectionString: async (c) => {
      proxy = await startFaultProxy(blobEndpointOf(c.connectionString));
      return proxy.viaConnectionString(c.connectionString);
    },
    env: { machineCache: { MIN_FREE_SPACE_GB: "0" } },
  });
  container = BlobServiceClient.fromConnectionString(t.containers.connectionString).getContainerClient(
    t.containers.userContainer,
  );
});

afterAll(async () => {
  await t?.stop();
  await proxy?.close();
});

beforeEach(() => proxy.reset());

const blockId = (i: number) => Buffer.from(`block-${String(i).padStart(6, "0")}`).toString("base64");

/** The three writes a signed upload URL allows, as a browser (or whoever kept the URL) sends them. */
const writeWith = {
  putBlock: (url: string, i: number, body: Uint8Array) =>
    fetch(`${url}&comp=block&blockid=${encodeURIComponent(blockId(i))}`, { method: "PUT", body }),
  putBlockList: (url: string, ids: string[]) =>
    fetch(`${url}&comp=blocklist`, {
      method: "PUT",
      body: `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join("")}</BlockList>`,
    }),
  putBlob: (url: string, body: Uint8Array) =>
    fetch(url, { method: "PUT", headers: { "x-ms-blob-type": "BlockBlob" }, body }),
};

/** Every write the old URL can attempt: a whole blob, a staged block, and a block list committing it. */
async function attackWith(url: string, bytes: Uint8Array): Promise<number[]> {
  return [
    (await writeWith.putBlob(url, bytes)).status,
    (await writeWith.putBlock(url, 7, bytes)).status,
    (await writeWith.putBlockList(url, [blockId(7)])).status,
  ];
}

async function startUpload(userId: string, name: string, file: Buffer) {
  const lora = userClient(t.stack.registry.url, SECRET, userId);
  const created = await lora.createLoraUpload({ name, sizeBytes: BigInt(file.length), sha256: sha256(file) });
  expect((await writeWith.putBlock(created.uploadUrl, 0, file)).status).toBe(201);
  expect((await writeWith.putBlockList(created.uploadUrl, [blockId(0)])).status).toBe(201);
  return { lora, created, uploadId: created.upload!.uploadId, loraId: created.lora!.id };
}

/** What the staging path holds now: bytes committed and blocks staged (an attacker's leftovers would show here). */
async function stagingContents(userId: string, uploadId: string, ext: string) {
  const blob = container.getBlockBlobClient(`staging/${userId}/${uploadId}.${ext}`);
  const list = await blob.getBlockList("all");
  return { size: (await blob.getProperties()).contentLength, staged: list.uncommittedBlocks?.length ?? 0 };
}

/** The bytes a machine receives for a user LoRA: ResolveLoras, then its signed read URL. */
async function machineBytes(userId: string, loraId: string) {
  const resolver = resolverClient(t.stack.registry.url, SECRET);
  const { results } = await resolver.resolveLoras({
    userId,
    jobId: "job-immutable",
    machineId: "m",
    refs: [{ source: LoraSource.USER, identifier: loraId }],
  });
  const outcome = results[0]?.outcome;
  if (outcome?.case !== "lora") throw new Error(`not resolved: ${JSON.stringify(outcome?.value)}`);
  const bytes = Buffer.from(await (await fetch(outcome.value.downloadUrl)).arrayBuffer());
  return { resolved: outcome.value, bytes };
}

describe("after CompleteLoraUpload", () => {
  it("a PUT, Put Block or Put Block List with the old URL changes nothing any reader sees, and stores nothing", async () => {
    const user = randomUUID();
    const file = randomLoraSafetensors(50_000);
    const { lora, created, uploadId, loraId } = await startUpload(user, "kept.safetensors", file);
    const done = await lora.completeLoraUpload({ uploadId });
    expect(done.lora).toMatchObject({ sha256: sha256(file), sizeBytes: BigInt(file.length) });

    const evil = randomLoraSafetensors(50_000);
    expect(await attackWith(created.uploadUrl, evil)).toEqual([412, 412, 412]);

    // The owner, a machine and storage itself still see exactly the verified bytes.
    expect((await lora.getLora({ loraId })).lora).toMatchObject({
      sha256: sha256(file),
      sizeBytes: BigInt(file.length),
    });
    const { resolved, bytes } = await machineBytes(user, loraId);
    expect(resolved.sha256).toBe(sha256(file));
    expect(sha256(bytes)).toBe(sha256(file));
    expect(await container.getBlockBlobClient(`users/${user}/loras/${loraId}.safetensors`).downloadToBuffer()).toEqual(
      file,
    );
    // The staging path holds an empty placeholder and no staged block: nothing untracked is kept.
    expect(await stagingContents(user, uploadId, "safetensors")).toEqual({ size: 0, staged: 0 });
  });

  it("a write racing the completion, between verification and the copy, cannot land", async () => {
    const user = randomUUID();
    const file = randomLoraSafetensors(60_000);
    const { lora, created, uploadId, loraId } = await startUpload(user, "raced.safetensors", file);
    const finalPath = `users/${user}/loras/${loraId}.safetensors`;
    // The gateway's copy to the final path waits here, after verification.
    proxy.rules.push({ method: "PUT", path: (p) => p.split("?")[0]!.endsWith(finalPath), delayMs: 1500 });
    const completing = lora.completeLoraUpload({ uploadId });
    await eventually(() => expect(proxy.requests.some((r) => r.fault === "delay")).toBe(true));
    const evil = randomLoraSafetensors(60_000);
    expect(await attackWith(created.uploadUrl, evil)).toEqual([412, 412, 412]);
    const done = await completing;
    expect(done.lora?.sha256).toBe(sha256(file));
    expect(await container.getBlockBlobClient(finalPath).downloadToBuffer()).toEqual(file);
    expect(sha256((await machineBytes(user, loraId)).bytes)).toBe(sha256(file));
  });
});

describe("after AbortLoraUpload", () => {
  it("the old URL stores nothing and no reader sees anything", async () => {
    const user = randomUUID();
    const file = randomLoraSafetensors(20_000);
    const { lora, created, uploadId, loraId } = await startUpload(user, "dropped.safetensors", file);
    await lora.abortLoraUpload({ uploadId });
    expect(await attackWith(created.uploadUrl, randomLoraSafetensors(20_000))).toEqual([412, 412, 412]);
    expect(await stagingContents(user, uploadId, "safetensors")).toEqual({ size: 0, staged: 0 });
    expect(await container.getBlockBlobClient(`users/${user}/loras/${loraId}.safetensors`).exists()).toBe(false);
    expect(await rpcFailure(lora.getLora({ loraId }))).toMatchObject({ reason: "LORA_NOT_FOUND" });
    expect((await lora.getQuota({})).quota).toMatchObject({ usedBytes: 0n, reservedBytes: 0n });
  });

  it("an upload aborted before any block was sent leaves a placeholder the URL cannot write", async () => {
    const user = randomUUID();
    const lora = userClient(t.stack.registry.url, SECRET, user);
    const created = await lora.createLoraUpload({ name: "never.safetensors", sizeBytes: 1000n });
    await lora.abortLoraUpload({ uploadId: created.upload!.uploadId });
    expect(await attackWith(created.uploadUrl, randomLoraSafetensors(1000))).toEqual([412, 412, 412]);
    expect(await stagingContents(user, created.upload!.uploadId, "safetensors")).toEqual({ size: 0, staged: 0 });
  });
});

describe("a .pt upload", () => {
  it.each(["kohya_fp16.pt", "views.pt"])(
    "%s: the machine's file is the converted safetensors, tensor for tensor as torch saved it",
    async (fixture) => {
      const user = randomUUID();
      const file = torchSaveFixture(fixture);
      const { lora, uploadId, loraId } = await startUpload(user, `My ${fixture}`, file);
      const done = await lora.completeLoraUpload({ uploadId });
      // The owner sees the file as uploaded.
      expect(done.lora).toMatchObject({ sha256: sha256(file), format: FileFormat.TORCH_ZIP, name: `My ${fixture}` });
      const original = await container.getBlockBlobClient(`users/${user}/loras/${loraId}.pt`).downloadToBuffer();
      expect(original).toEqual(file);
      const converted = await container
        .getBlockBlobClient(`users/${user}/loras/${loraId}.safetensors`)
        .downloadToBuffer();

      // The machine gets the safetensors, under a .safetensors path, checked against its sha256.
      const machine = machineClient(t.stack.machineCache.url, SECRET);
      const { results } = await machine.ensureLoras({
        jobId: "job-pt",
        userId: user,
        refs: [{ source: LoraSource.USER, identifier: loraId }],
      });
      const stem = fixture.replace(/\.pt$/, "");
      expect(results[0]?.sha256).toBe(sha256(converted));
      expect(path.basename(results[0]!.absolutePath)).toBe(`${loraId}-My ${stem}.safetensors`);
      const onDisk = await fs.readFile(results[0]!.absolutePath);
      expect(onDisk).toEqual(converted);

      const n = Number(onDisk.readBigUInt64LE(0));
      const header = parseSafetensorsHeader(onDisk.subarray(8, 8 + n), onDisk.length - 8 - n);
      const data = onDisk.subarray(8 + n);
      const got = Object.fromEntries(
        header.tensors.map((x) => [
          x.name,
          { dtype: x.dtype, shape: x.shape, sha256: sha256(data.subarray(...x.dataOffsets)) },
        ]),
      );
      const want = Object.fromEntries(
        Object.entries(expected.files[fixture]?.tensors ?? {}).map(([name, x]) => [
          name,
          { dtype: SAFETENSORS_DTYPE_OF_TORCH[x.dtype], shape: x.shape, sha256: x.sha256 },
        ]),
      );
      expect(got).toEqual(want);
      // Only the bytes the user uploaded count against the quota.
      expect((await lora.getQuota({})).quota).toMatchObject({ usedBytes: BigInt(file.length), usedCount: 1 });
    },
  );

  it("one that cannot be represented as safetensors is refused with the reason; nothing is kept", async () => {
    const user = randomUUID();
    const file = torchSaveFixture("complex128.pt");
    const { lora, uploadId, loraId } = await startUpload(user, "complex.pt", file);
    const refused = await rpcFailure(lora.completeLoraUpload({ uploadId }));
    expect(refused).toMatchObject({ code: "InvalidArgument", reason: "INVALID_FILE_FORMAT" });
    expect(refused.message).toMatch(/ComplexDoubleStorage, which has no safetensors dtype/);
    expect((await lora.getQuota({})).quota).toMatchObject({ reservedBytes: 0n, usedBytes: 0n });
    for (const ext of ["pt", "safetensors"]) {
      expect(await container.getBlockBlobClient(`users/${user}/loras/${loraId}.${ext}`).exists()).toBe(false);
    }
    expect(await stagingContents(user, uploadId, "pt")).toEqual({ size: 0, staged: 0 });
  });
});

describe("the Lora message", () => {
  it("carries no storage address a user could not use", async () => {
    const user = randomUUID();
    const file = randomLoraSafetensors(4000);
    const { lora, uploadId, loraId } = await startUpload(user, "private.safetensors", file);
    const messages: Lora[] = [
      (await lora.completeLoraUpload({ uploadId })).lora!,
      (await lora.getLora({ loraId })).lora!,
      ...(await lora.listLoras({})).loras,
    ];
    const endpoint = new URL(blobEndpointOf(t.containers.connectionString));
    for (const m of messages) {
      const json = JSON.stringify(toJson(LoraSchema, m));
      for (const leak of [endpoint.host, proxy.origin, "devstoreaccount1", `users/${user}/loras`]) {
        expect(json).not.toContain(leak);
      }
    }
  });
});

describe("a copy whose source storage cannot read", () => {
  it("fails saying so, stores nothing, and the upload completes when tried again", async () => {
    const user = randomUUID();
    const file = randomLoraSafetensors(40_000);
    const { lora, uploadId, loraId } = await startUpload(user, "copied.safetensors", file);
    const finalPath = `users/${user}/loras/${loraId}.safetensors`;
    // Storage's answer when it cannot read a copy's source URL (Azurite: the URL names another host).
    proxy.rules.push({
      method: "PUT",
      path: (p) => p.split("?")[0]!.endsWith(finalPath),
      fault: { kind: "status", status: 404, errorCode: "CannotVerifyCopySource" },
    });
    const failure = await rpcFailure(lora.completeLoraUpload({ uploadId }));
    expect(failure).toMatchObject({ code: "Internal", reason: "UNSPECIFIED" });
    expect(failure.message).toContain("as the source of a server-side copy (404 CannotVerifyCopySource)");
    expect(await container.getBlockBlobClient(finalPath).exists()).toBe(false);
    const done = await lora.completeLoraUpload({ uploadId });
    expect(done.lora).toMatchObject({ sha256: sha256(file), sizeBytes: BigInt(file.length) });
    expect(await container.getBlockBlobClient(finalPath).downloadToBuffer()).toEqual(file);
  });
});

describe("a LoRA larger than 256 MiB", () => {
  // Beyond what Copy Blob From URL takes at once, the gateway copies it with Copy Blob (asynchronous, polled).
  it("is copied to its final path and completes, sha256 and size checked", async () => {
    const user = randomUUID();
    const file = randomLoraSafetensors(256 * 1024 * 1024 + 4096);
    const lora = userClient(t.stack.registry.url, SECRET, user);
    const created = await lora.createLoraUpload({ name: "big.safetensors", sizeBytes: BigInt(file.length) });
    const blockBytes = Number(created.blockSizeBytes);
    const ids: string[] = [];
    for (let offset = 0; offset < file.length; offset += blockBytes) {
      const put = await writeWith.putBlock(created.uploadUrl, ids.length, file.subarray(offset, offset + blockBytes));
      expect(put.status).toBe(201);
      ids.push(blockId(ids.length));
    }
    expect((await writeWith.putBlockList(created.uploadUrl, ids)).status).toBe(201);
    const done = await lora.completeLoraUpload({ uploadId: created.upload!.uploadId }, { timeoutMs: 300_000 });
    expect(done.lora).toMatchObject({ sha256: sha256(file), sizeBytes: BigInt(file.length) });
    const stored = await container
      .getBlockBlobClient(`users/${user}/loras/${done.lora!.id}.safetensors`)
      .getProperties();
    expect({ size: stored.contentLength, sha256: stored.metadata?.sha256 }).toEqual({
      size: file.length,
      sha256: sha256(file),
    });
    expect(await stagingContents(user, created.upload!.uploadId, "safetensors")).toEqual({ size: 0, staged: 0 });
  }, 300_000);
});
