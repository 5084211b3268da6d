import { createHash, randomBytes, randomUUID } from "node:crypto";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BlobServiceClient } from "@azure/storage-blob";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  ErrorReason,
  FileFormat,
  LoraAdminService,
  LoraResolverService,
  LoraService,
  LoraSource,
  LoraState,
  UploadState,
} from "@emprops/contracts";
import { bearerInterceptor, errorMetadata, errorReason, ManualClock, mintToken, type Role } from "@emprops/platform";
import { loadConfig as registryConfig, type RunningRegistry, startLoraRegistry } from "@emprops/lora-registry";
import {
  callPickle,
  createTestDatabase,
  eventually,
  rpcFailure,
  type TestContainers,
  type TestDatabase,
  randomLoraSafetensors,
  torchZip,
} from "@emprops/testkit";
import { type RunningStack } from "../src/index.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const SECRET = "upload-e2e-test-secret-0123456789";

let t: TestStack;
let containers: TestContainers;
let stack: RunningStack;

beforeAll(async () => {
  t = await startTestStack("upload-e2e", { jwtSecret: SECRET, env: { registry: { OUTBOX_POLL_MS: "500" } } });
  ({ stack, containers } = t);
});

afterAll(async () => {
  await t?.stop();
});

function clients(baseUrl: string, subject: string, roles: Role[] = []) {
  const transport = createGrpcTransport({
    baseUrl,
    interceptors: [bearerInterceptor(() => mintToken(SECRET, { subject, roles }))],
  });
  return {
    lora: createClient(LoraService, transport),
    admin: createClient(LoraAdminService, transport),
    resolver: createClient(LoraResolverService, transport),
  };
}
const as = (subject: string, roles: Role[] = []) => clients(stack.registry.url, subject, roles);

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A torch checkpoint whose pickle calls os.system("id") when loaded. */
function evilPickle(): Buffer {
  return torchZip(callPickle("os", "system", "id"));
}

const blockId = (i: number) => Buffer.from(`block-${String(i).padStart(6, "0")}`).toString("base64");

/** Put Block, as a browser does with the signed URL. */
async function putBlock(url: string, i: number, body: Buffer) {
  const res = await fetch(`${url}&comp=block&blockid=${encodeURIComponent(blockId(i))}`, { method: "PUT", body });
  if (res.status !== 201) throw new Error(`Put Block answered ${res.status}: ${await res.text()}`);
}

async function putBlockList(url: string, count: number) {
  const ids = Array.from({ length: count }, (_, i) => `<Latest>${blockId(i)}</Latest>`).join("");
  const res = await fetch(`${url}&comp=blocklist`, {
    method: "PUT",
    body: `<?xml version="1.0" encoding="utf-8"?><BlockList>${ids}</BlockList>`,
  });
  if (res.status !== 201) throw new Error(`Put Block List answered ${res.status}: ${await res.text()}`);
}

/** Uploads the whole file in blocks of `blockSize` and commits it. */
async function uploadAll(url: string, file: Buffer, blockSize = 64 * 1024) {
  let n = 0;
  for (let at = 0; at < file.length; at += blockSize) await putBlock(url, n++, file.subarray(at, at + blockSize));
  await putBlockList(url, n);
}

/** Whether a committed blob is at this path of the user container (what any reader could get). */
const finalBlobExists = (userId: string, loraId: string, extension = "safetensors") =>
  BlobServiceClient.fromConnectionString(containers.connectionString)
    .getContainerClient(containers.userContainer)
    .getBlockBlobClient(`users/${userId}/loras/${loraId}.${extension}`)
    .exists();

/** What the staging blob of an upload holds now (size, lease), as storage sees it. */
const stagingBlob = async (userId: string, uploadId: string, extension = "safetensors") =>
  BlobServiceClient.fromConnectionString(containers.connectionString)
    .getContainerClient(containers.userContainer)
    .getBlockBlobClient(`staging/${userId}/${uploadId}.${extension}`)
    .getProperties();

/** Staged and sealed: emptied, under the upload's lease; the old URL can write nothing. */
async function expectSealed(userId: string, uploadId: string, uploadUrl: string, extension = "safetensors") {
  const props = await stagingBlob(userId, uploadId, extension);
  expect([props.contentLength, props.leaseState, props.leaseDuration]).toEqual([0, "leased", "infinite"]);
  const blocked = await fetch(`${uploadUrl}&comp=block&blockid=${encodeURIComponent(blockId(9))}`, {
    method: "PUT",
    body: randomBytes(100),
  });
  expect(blocked.status).toBe(412);
}

describe("upload through the registry and the gateway", () => {
  it("reserves, hands out a URL, resumes, verifies, publishes, resolves and deletes", async () => {
    const user = randomUUID();
    const me = as(user);
    const file = randomLoraSafetensors(300 * 1024, { ss_num_epochs: "10" });
    const created = await me.lora.createLoraUpload({
      name: "My_Anime_Style.safetensors",
      sizeBytes: BigInt(file.length),
      tags: ["style", "anime"],
      metadata: { triggerWords: ["anime style"], description: "vibrant" },
      sha256: sha256(file),
      uploadSource: "emprops_studio",
    });
    const uploadId = created.upload!.uploadId;
    const loraId = created.lora!.id;
    expect(created.upload).toMatchObject({
      state: UploadState.PENDING,
      loraId,
      declaredSizeBytes: BigInt(file.length),
    });
    expect(created.lora).toMatchObject({ state: LoraState.PENDING, tags: ["lora", "style", "anime"] });
    // The URL writes the upload's staging blob only, never the LoRA's final path.
    expect(new URL(created.uploadUrl).pathname).toContain(`/staging/${user}/${uploadId}.safetensors`);
    expect(created.uploadUrl).toContain("sig=");
    expect(Number(created.blockSizeBytes)).toBeGreaterThan(0);
    expect(created.quota).toMatchObject({ reservedBytes: BigInt(file.length), reservedCount: 1, usedCount: 0 });
    expect(timestampDate(created.uploadUrlExpireTime!).getTime()).toBeGreaterThan(Date.now() + 3600_000);
    // Pending LoRAs are not listed, but they count against the quota.
    expect((await me.lora.listLoras({})).totalSize).toBe(0);
    expect((await me.lora.getQuota({})).loras).toEqual([
      expect.objectContaining({ id: loraId, pending: true, sizeBytes: BigInt(file.length) }),
    ]);

    // Two of five blocks, then the browser tab dies; the session tells what was staged.
    const block = 64 * 1024;
    await putBlock(created.uploadUrl, 0, file.subarray(0, block));
    await putBlock(created.uploadUrl, 1, file.subarray(block, 2 * block));
    const resumed = await me.lora.getLoraUpload({ uploadId });
    expect(resumed.upload?.state).toBe(UploadState.PENDING);
    expect(resumed.committed).toBe(false);
    expect(resumed.stagedBlocks.map((b) => [b.blockId, b.sizeBytes]).sort()).toEqual([
      [blockId(0), BigInt(block)],
      [blockId(1), BigInt(block)],
    ]);
    expect(resumed.uploadUrl).toContain("sig=");
    expect(await rpcFailure(me.lora.completeLoraUpload({ uploadId }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "UPLOAD_INCOMPLETE",
    });
    // The rest with the fresh URL.
    let n = 2;
    for (let at = 2 * block; at < file.length; at += block) {
      await putBlock(resumed.uploadUrl, n++, file.subarray(at, at + block));
    }
    await putBlockList(resumed.uploadUrl, n);

    const done = await me.lora.completeLoraUpload({ uploadId });
    expect(done.lora).toMatchObject({
      id: loraId,
      name: "My_Anime_Style.safetensors",
      sizeBytes: BigInt(file.length),
      sha256: sha256(file),
      state: LoraState.READY,
      format: FileFormat.SAFETENSORS,
      uploadSource: "emprops_studio",
      validationStatus: "safe",
    });
    expect(done.lora?.metadata).toMatchObject({
      rank: 16,
      alpha: 8,
      trainingEpochs: 10,
      triggerWords: ["anime style"],
      description: "vibrant",
    });
    expect(done.lora?.metadata?.raw).toMatchObject({ ss_network_dim: "16" });
    expect(done.quota).toMatchObject({
      usedBytes: BigInt(file.length),
      usedCount: 1,
      reservedBytes: 0n,
      reservedCount: 0,
    });
    expect((await me.lora.getLoraUpload({ uploadId })).upload?.state).toBe(UploadState.COMPLETED);
    expect(await rpcFailure(me.lora.completeLoraUpload({ uploadId }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "UPLOAD_STATE_CONFLICT",
    });
    const listed = await me.lora.listLoras({ search: "anime" });
    expect(listed.loras.map((l) => l.id)).toEqual([loraId]);

    // A machine resolves it for this user's job and downloads exactly these bytes.
    const sharedFile = randomLoraSafetensors(4000);
    await BlobServiceClient.fromConnectionString(containers.connectionString)
      .getContainerClient(containers.sharedContainer)
      .getBlockBlobClient("models/loras/popular_style.safetensors")
      .uploadData(sharedFile);
    const machine = as("gpu-1", ["machine"]);
    const resolved = await machine.resolver.resolveLoras({
      userId: user,
      jobId: "job-42",
      machineId: "gpu-1",
      refs: [
        { source: LoraSource.USER, identifier: loraId },
        { source: LoraSource.SHARED, identifier: "no-such-shared.safetensors" },
        { source: LoraSource.SHARED, identifier: "popular_style.safetensors" },
      ],
    });
    const [mine, shared, popular] = resolved.results.map((r) => r.outcome);
    expect(mine?.case).toBe("lora");
    if (mine?.case !== "lora") return;
    expect(mine.value).toMatchObject({ loraId, userId: user, sha256: sha256(file), sizeBytes: BigInt(file.length) });
    const downloaded = Buffer.from(await (await fetch(mine.value.downloadUrl)).arrayBuffer());
    expect(sha256(downloaded)).toBe(sha256(file));
    expect(shared?.case).toBe("error");
    if (shared?.case === "error") expect(shared.value.code).toBe("not_found");
    // A shared LoRA resolves by name from the shared container, sized by the gateway.
    expect(popular?.case).toBe("lora");
    if (popular?.case !== "lora") return;
    expect(popular.value).toMatchObject({ loraId: "", userId: "", fileName: "popular_style.safetensors" });
    expect(popular.value.sizeBytes).toBe(BigInt(sharedFile.length));
    const sharedBytes = Buffer.from(await (await fetch(popular.value.downloadUrl)).arrayBuffer());
    expect(sha256(sharedBytes)).toBe(sha256(sharedFile));

    // Delete: the gateway's consumer of the deletion event removes the blob.
    await me.lora.deleteLora({ loraId });
    await eventually(async () => expect(await finalBlobExists(user, loraId)).toBe(false));
    expect((await me.lora.getQuota({})).quota).toMatchObject({ usedBytes: 0n, usedCount: 0 });
    const actions = (await as("root", ["admin"]).admin.listAuditEvents({ userId: user })).events.map((e) => e.action);
    expect(actions).toEqual([
      "lora.delete",
      "lora.resolve",
      "lora.resolve",
      "lora.resolve",
      "lora.upload.complete",
      "lora.upload.create",
    ]);
  });

  it.each([
    [
      "a pickle calling os.system",
      "evil.pt",
      () => evilPickle(),
      undefined,
      "UNSAFE_PICKLE",
      { unsafe_globals: "os.system" },
    ],
    [
      "a PNG named .safetensors",
      "image.safetensors",
      () => Buffer.concat([Buffer.from("\x89PNG\r\n\x1a\n", "latin1"), randomBytes(2000)]),
      undefined,
      "INVALID_FILE_FORMAT",
      { detected_format: "png" },
    ],
    [
      "a file whose sha256 differs from the declared one",
      "sum.safetensors",
      () => randomLoraSafetensors(1000),
      "f".repeat(64),
      "CHECKSUM_MISMATCH",
      {},
    ],
  ])(
    "rejects %s: blob deleted, reservation returned, session FAILED",
    async (_name, name, make, declaredSha, reason, metadata) => {
      const user = randomUUID();
      const me = as(user);
      const file = make();
      const created = await me.lora.createLoraUpload({
        name,
        sizeBytes: BigInt(file.length),
        sha256: declaredSha ?? "",
      });
      await uploadAll(created.uploadUrl, file);
      const rejected = await rpcFailure(me.lora.completeLoraUpload({ uploadId: created.upload!.uploadId }));
      expect(rejected).toMatchObject({ code: "InvalidArgument", reason });
      expect(rejected.metadata).toMatchObject(metadata);
      const ext = name.endsWith(".pt") ? "pt" : "safetensors";
      expect(await finalBlobExists(user, created.lora!.id, ext)).toBe(false);
      await expectSealed(user, created.upload!.uploadId, created.uploadUrl, ext);
      const { quota, loras } = await me.lora.getQuota({});
      expect(quota).toMatchObject({ reservedBytes: 0n, reservedCount: 0, usedCount: 0 });
      expect(loras).toEqual([]);
      const session = await me.lora.getLoraUpload({ uploadId: created.upload!.uploadId });
      expect(session.upload).toMatchObject({ state: UploadState.FAILED, failureReason: reason });
      expect(session.uploadUrl).toBe("");
      expect((await me.lora.listLoras({})).totalSize).toBe(0);
    },
  );

  it("rejects a file larger than declared without verifying it", async () => {
    const user = randomUUID();
    const me = as(user);
    const file = randomLoraSafetensors(5000);
    const created = await me.lora.createLoraUpload({ name: "big.safetensors", sizeBytes: BigInt(file.length - 1) });
    await uploadAll(created.uploadUrl, file);
    const rejected = await rpcFailure(me.lora.completeLoraUpload({ uploadId: created.upload!.uploadId }));
    expect(rejected).toMatchObject({ code: "InvalidArgument", reason: "CHECKSUM_MISMATCH" });
    expect(rejected.metadata).toMatchObject({
      size_bytes: String(file.length),
      declared_size_bytes: String(file.length - 1),
    });
    expect((await me.lora.getQuota({})).quota).toMatchObject({ reservedBytes: 0n, usedBytes: 0n });
  });

  it("aborts: blob deleted, reservation returned; aborting twice is harmless", async () => {
    const user = randomUUID();
    const me = as(user);
    const file = randomLoraSafetensors(2000);
    const created = await me.lora.createLoraUpload({ name: "a.safetensors", sizeBytes: BigInt(file.length) });
    await uploadAll(created.uploadUrl, file);
    const uploadId = created.upload!.uploadId;
    await me.lora.abortLoraUpload({ uploadId });
    await me.lora.abortLoraUpload({ uploadId });
    await expectSealed(user, uploadId, created.uploadUrl);
    expect(await finalBlobExists(user, created.lora!.id)).toBe(false);
    expect((await me.lora.getQuota({})).quota).toMatchObject({ reservedBytes: 0n, reservedCount: 0 });
    expect((await me.lora.getLoraUpload({ uploadId })).upload?.state).toBe(UploadState.ABORTED);
    expect(await rpcFailure(me.lora.completeLoraUpload({ uploadId }))).toMatchObject({
      reason: "UPLOAD_STATE_CONFLICT",
    });
  });
});

describe("the quota warning", () => {
  it("comes with CreateLoraUpload's answer once the reservation passes 80 %", async () => {
    const user = randomUUID();
    await as("root", ["admin"]).admin.setUserQuota({ userId: user, maxBytes: 10_000n });
    const me = as(user);
    const first = await me.lora.createLoraUpload({ name: "a.safetensors", sizeBytes: 7_000n });
    expect(first.quota).toMatchObject({ utilizationPercent: 70, warning: false, availableBytes: 3_000n });
    const second = await me.lora.createLoraUpload({ name: "b.safetensors", sizeBytes: 1_500n });
    expect(second.quota).toMatchObject({ utilizationPercent: 85, warning: true, warningThresholdPercent: 80 });
    expect((await me.lora.getQuota({})).quota).toMatchObject({ warning: true, reservedBytes: 8_500n });
  });
});

describe("50 concurrent CreateLoraUpload calls at the quota edge", () => {
  it("never overshoot the byte limit by a single byte, and exactly the calls that fit succeed", async () => {
    const user = randomUUID();
    const admin = as("root", ["admin"]).admin;
    await admin.setUserQuota({ userId: user, maxBytes: 100_000n, maxCount: 1000 });
    // Sizes vary so that the outcome depends on the order the reservations win.
    const sizes = Array.from({ length: 50 }, (_, i) => 3_000 + ((i * 7919) % 50) * 97);
    const me = as(user);
    const results = await Promise.allSettled(
      sizes.map((size, i) => me.lora.createLoraUpload({ name: `c${i}.safetensors`, sizeBytes: BigInt(size) })),
    );
    const accepted = sizes.filter((_, i) => results[i]!.status === "fulfilled");
    const refused = sizes.filter((_, i) => results[i]!.status === "rejected");
    for (const r of results) {
      if (r.status === "rejected") expect(errorReason(r.reason)).toBe("QUOTA_EXCEEDED");
    }
    const reserved = accepted.reduce((a, b) => a + b, 0);
    const { quota } = await me.lora.getQuota({});
    expect(Number(quota!.reservedBytes)).toBe(reserved);
    expect(quota!.reservedCount).toBe(accepted.length);
    expect(reserved).toBeLessThanOrEqual(100_000);
    expect(refused.length).toBeGreaterThan(0);
    // Reservations only grew, so each refused call would still not fit now: none was refused that fitted.
    for (const size of refused) expect(reserved + size).toBeGreaterThan(100_000);
    expect((await admin.reconcileQuota({ userId: user })).drifts).toEqual([]);
  });

  it("never overshoot the count limit, and exactly the calls that fit succeed", async () => {
    const user = randomUUID();
    const admin = as("root", ["admin"]).admin;
    await admin.setUserQuota({ userId: user, maxCount: 7 });
    const me = as(user);
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, (_, i) => me.lora.createLoraUpload({ name: `n${i}.pt`, sizeBytes: 100n })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(7);
    for (const r of results)
      if (r.status === "rejected") expect(errorMetadata(r.reason)).toMatchObject({ limit: "count" });
    expect((await me.lora.getQuota({})).quota).toMatchObject({ reservedCount: 7, reservedBytes: 700n });
    expect((await admin.reconcileQuota({ userId: user })).drifts).toEqual([]);
  });
});

describe("the gateway's own refusals", () => {
  let refusalDb: TestDatabase;
  let registry: RunningRegistry;

  beforeAll(async () => {
    refusalDb = await createTestDatabase("upload-refusals");
    // This registry accepts LoRAs twice as large as the gateway does (2 GiB), and asks for longer read URLs.
    registry = await startLoraRegistry(
      registryConfig({
        REGISTRY_PORT: "0",
        DATABASE_URL: refusalDb.url,
        JWT_SECRET: SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: "memory",
        BLOB_GATEWAY_URL: stack.gateway.url,
        MAX_LORA_BYTES: String(4 * 1024 ** 3),
        // Longer than the gateway signs read URLs for (at most an hour).
        DOWNLOAD_URL_TTL_SECONDS: "7200",
      }),
    );
  });

  afterAll(async () => {
    await registry?.stop();
    await refusalDb?.cleanup();
  });

  it("reach the caller with the gateway's code, reason and message, not as storage being unavailable", async () => {
    const user = randomUUID();
    const me = clients(registry.url, user);
    const refused = await rpcFailure(
      me.lora.createLoraUpload({ name: "huge.safetensors", sizeBytes: 3n * 1024n ** 3n }),
    );
    expect(refused).toMatchObject({
      code: "InvalidArgument",
      reason: "FILE_TOO_LARGE",
      message: `size_bytes is larger than the limit of ${2 * 1024 ** 3} bytes`,
      metadata: { max_size_bytes: String(2 * 1024 ** 3) },
    });
    // No URL, no upload: the reservation is back and the session says why.
    expect((await me.lora.getQuota({})).quota).toMatchObject({ reservedBytes: 0n, reservedCount: 0 });
    const audit = await clients(registry.url, "root", ["admin"]).admin.listAuditEvents({ action: "lora.upload.fail" });
    expect(audit.events.map((e) => e.userId)).toEqual([user]);

    // A reference the gateway refuses to sign fails with the gateway's reason, not as storage being down.
    const resolved = await clients(registry.url, "gpu-1", ["machine"]).resolver.resolveLoras({
      userId: user,
      jobId: "job-7",
      machineId: "gpu-1",
      refs: [{ source: LoraSource.SHARED, identifier: "popular_style.safetensors" }],
    });
    expect(resolved.results[0]?.outcome).toMatchObject({
      case: "error",
      value: {
        code: "invalid_argument",
        reason: ErrorReason.INVALID_REQUEST,
        message: "ttl_seconds must be at most 3600",
        metadata: { max_ttl_seconds: "3600" },
      },
    });
  });
});

describe("expired upload sessions", () => {
  let clockDb: TestDatabase;
  let registry: RunningRegistry;
  const clock = new ManualClock(new Date());

  beforeAll(async () => {
    clockDb = await createTestDatabase("upload-expiry");
    registry = await startLoraRegistry(
      registryConfig({
        REGISTRY_PORT: "0",
        DATABASE_URL: clockDb.url,
        JWT_SECRET: SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: "memory",
        BLOB_GATEWAY_URL: stack.gateway.url,
        UPLOAD_SESSION_TTL_SECONDS: "3600",
        UPLOAD_REAPER_CRON: "* * * * * *",
      }),
      { clock },
    );
  });

  afterAll(async () => {
    await registry?.stop();
    await clockDb?.cleanup();
  });

  it("are reaped: blob deleted, reservation returned, state EXPIRED", async () => {
    const user = randomUUID();
    const me = clients(registry.url, user);
    const file = randomLoraSafetensors(3000);
    const created = await me.lora.createLoraUpload({ name: "late.safetensors", sizeBytes: BigInt(file.length) });
    expect(timestampDate(created.upload!.expireTime!).getTime()).toBe(clock.now().getTime() + 3600_000);
    await uploadAll(created.uploadUrl, file);
    const uploadId = created.upload!.uploadId;
    expect((await stagingBlob(user, uploadId)).contentLength).toBe(file.length);

    clock.advance(3600_000 + 1000);
    // Past its expiry the session is expired at once, reaper or not.
    expect((await me.lora.getLoraUpload({ uploadId })).upload?.state).toBe(UploadState.EXPIRED);
    expect(await rpcFailure(me.lora.completeLoraUpload({ uploadId }))).toMatchObject({
      code: "FailedPrecondition",
      reason: "UPLOAD_EXPIRED",
    });
    await eventually(async () => expect((await me.lora.getQuota({})).quota!.reservedCount).toBe(0));
    await expectSealed(user, uploadId, created.uploadUrl);
    expect((await me.lora.getQuota({})).quota).toMatchObject({ reservedBytes: 0n, usedBytes: 0n });
    const audit = await clients(registry.url, "root", ["admin"]).admin.listAuditEvents({
      action: "lora.upload.expire",
    });
    expect(audit.events).toHaveLength(1);
    expect(audit.events[0]).toMatchObject({ actorRole: "system", userId: user, loraId: created.lora!.id });
  });
});
