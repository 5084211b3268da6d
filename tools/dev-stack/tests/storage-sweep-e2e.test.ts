import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { BlobServiceClient, BlockBlobClient, type ContainerClient } from "@azure/storage-blob";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  LoraAdminService,
  type StorageConsistencyReport,
  StorageFindingAction as Action,
  StorageFindingReason as Reason,
} from "@emprops/contracts";
import { bearerInterceptor, type InMemoryTelemetry, mintToken, startInMemoryTelemetry } from "@emprops/platform";
import {
  createTestContainers,
  createTestDatabase,
  randomLoraSafetensors,
  rpcFailure,
  testEnv,
  testImage,
  testNamespace,
  type TestContainers,
  type TestDatabase,
  type TestNamespace,
} from "@emprops/testkit";
import { loadConfig as gatewayConfig, type RunningGateway, startBlobGateway } from "@emprops/blob-gateway";
import {
  loadConfig as registryConfig,
  runStorageSweep,
  type RunningRegistry,
  startLoraRegistry,
  sweepLockKey,
} from "@emprops/lora-registry";
import pg from "pg";
import { adminClient, sha256, uploadUserLora, userClient } from "./machine-support.js";

/*
 * The storage consistency sweep against real PostgreSQL and Azurite, through
 * the registry's admin RPCs: flat_file rows against users/, upload sessions
 * against staging/. The registry's clock is moved forward to pass the grace
 * period and the sessions' expiry (Azurite's last-modified times stay real).
 */

const SECRET = "storage-sweep-e2e-secret-0123456789";
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

let telemetry: InMemoryTelemetry;
let db: TestDatabase;
let containers: TestContainers;
let ns: TestNamespace;
let gateway: RunningGateway;
let registry: RunningRegistry;
let container: ContainerClient;
/** How far the registry's clock runs ahead of the real one. */
let offset = 0;

beforeAll(async () => {
  telemetry = startInMemoryTelemetry();
  [db, containers] = await Promise.all([createTestDatabase("storage-sweep"), createTestContainers("storage-sweep")]);
  ns = testNamespace("storage-sweep");
  const common = { JWT_SECRET: SECRET, NATS_URL: testEnv().natsUrl, NATS_NAMESPACE: ns.namespace, LOG_LEVEL: "silent" };
  gateway = await startBlobGateway(
    gatewayConfig({
      ...common,
      GATEWAY_PORT: "0",
      AZURE_STORAGE_CONNECTION_STRING: containers.connectionString,
      USER_LORA_CONTAINER: containers.userContainer,
      CLOUD_STORAGE_CONTAINER: containers.sharedContainer,
      UPLOAD_URL_MAX_TTL_SECONDS: String(7 * 24 * 3600),
    }),
  );
  registry = await startLoraRegistry(
    registryConfig({
      ...common,
      REGISTRY_PORT: "0",
      DATABASE_URL: db.url,
      BLOB_GATEWAY_URL: gateway.url,
      // Sessions outlive the grace, so a live one is still live when orphans beside it are old enough to go.
      UPLOAD_SESSION_TTL_SECONDS: String(7 * 24 * 3600),
      UPLOAD_URL_TTL_SECONDS: String(7 * 24 * 3600),
      STORAGE_ORPHAN_GRACE_HOURS: "24",
      // Only the tests run it (a yearly tick never comes during a run).
      STORAGE_SWEEP_CRON: "0 0 0 1 1 *",
    }),
    { clock: { now: () => new Date(Date.now() + offset) } },
  );
  container = BlobServiceClient.fromConnectionString(containers.connectionString).getContainerClient(
    containers.userContainer,
  );
});

afterAll(async () => {
  await registry?.stop();
  await gateway?.stop();
  await Promise.all([db?.cleanup(), containers?.cleanup(), ns?.cleanup()]);
  await telemetry?.stop();
});

const admin = () => adminClient(registry.url, SECRET);
const sweep = async (dryRun = false) => (await admin().checkStorageConsistency({ dryRun })).report!;
const blob = (path: string) => container.getBlockBlobClient(path);
const put = (path: string, bytes: Uint8Array) => blob(path).upload(bytes, bytes.length);
const etagOf = async (path: string) => (await blob(path).getProperties()).etag!.replace(/"/g, "");
const loraPath = (userId: string, id: string, ext = "safetensors") => `users/${userId}/loras/${id}.${ext}`;

/** The report's finding about this path, if it names one. */
const findingAt = (report: StorageConsistencyReport, path: string) => report.findings.find((f) => f.blobPath === path);

/** A session whose staging blob holds a committed file, not completed. */
async function stagedUpload(userId: string, file: Buffer, name = "staged.safetensors") {
  const lora = userClient(registry.url, SECRET, userId);
  const created = await lora.createLoraUpload({ name, sizeBytes: BigInt(file.length), sha256: sha256(file) });
  const url = new BlockBlobClient(created.uploadUrl);
  const id = Buffer.from("000000").toString("base64");
  await url.stageBlock(id, file, file.length);
  await url.commitBlockList([id]);
  const uploadId = created.upload!.uploadId;
  return { lora, uploadId, loraId: created.lora!.id, stagingPath: `staging/${userId}/${uploadId}.safetensors` };
}

test("a visible LoRA whose blob is missing, has another size or another ETag is reported with its reason; nothing is deleted", async () => {
  offset = 0;
  const userId = randomUUID();
  const [gone, resized, rewritten, fine] = await Promise.all(
    ["gone", "resized", "rewritten", "fine"].map((n) =>
      uploadUserLora(registry.url, SECRET, userId, `${n}.safetensors`, randomLoraSafetensors(4_000)),
    ),
  );
  await blob(loraPath(userId, gone!.id)).delete();
  await put(loraPath(userId, resized!.id), randomLoraSafetensors(5_000));
  const recordedEtag = await etagOf(loraPath(userId, rewritten!.id));
  await put(loraPath(userId, rewritten!.id), randomLoraSafetensors(4_000));

  const report = await sweep();
  expect(findingAt(report, loraPath(userId, gone!.id))).toMatchObject({
    reason: Reason.BLOB_MISSING,
    action: Action.REPORTED,
    userId,
    loraId: gone!.id,
    expectedSizeBytes: BigInt(gone!.bytes.length),
    actualSizeBytes: -1n,
  });
  expect(findingAt(report, loraPath(userId, resized!.id))).toMatchObject({
    reason: Reason.SIZE_MISMATCH,
    action: Action.REPORTED,
    loraId: resized!.id,
    expectedSizeBytes: BigInt(resized!.bytes.length),
    actualSizeBytes: BigInt((await blob(loraPath(userId, resized!.id)).getProperties()).contentLength!),
  });
  expect(findingAt(report, loraPath(userId, rewritten!.id))).toMatchObject({
    reason: Reason.ETAG_MISMATCH,
    action: Action.REPORTED,
    expectedEtag: recordedEtag,
    actualEtag: await etagOf(loraPath(userId, rewritten!.id)),
  });
  expect(findingAt(report, loraPath(userId, fine!.id))).toBeUndefined();
  expect(report).toMatchObject({ missingBlobs: 1n, sizeMismatches: 1n, etagMismatches: 1n, deletedBlobs: 0n });
  expect(report.rowsChecked).toBeGreaterThanOrEqual(4n);
  // Differing blobs are a live row's: kept as they are.
  expect(await blob(loraPath(userId, resized!.id)).exists()).toBe(true);

  // Any replica answers with the latest report, and the gauges carry its counts.
  const { report: latest } = await admin().getStorageConsistencyReport({});
  expect(latest).toMatchObject({ runId: report.runId, missingBlobs: 1n, trigger: "rpc" });
  const points = await telemetry.collect();
  const gauge = (reason: string) =>
    points.find((p) => p.name === "lora_registry.storage_sweep.findings" && p.attributes.reason === reason)?.value;
  expect(gauge("blob_missing")).toBe(1);
  expect(gauge("size_mismatch")).toBe(1);
  expect(gauge("etag_mismatch")).toBe(1);

  // The original bytes written back are still not the verified blob: another ETag.
  await Promise.all([gone, resized, rewritten].map((l) => put(loraPath(userId, l!.id), l!.bytes)));
  const after = await sweep();
  for (const l of [gone, resized, rewritten]) {
    expect(findingAt(after, loraPath(userId, l!.id))).toMatchObject({ reason: Reason.ETAG_MISMATCH });
  }
  expect(after).toMatchObject({ missingBlobs: 0n, sizeMismatches: 0n, etagMismatches: 3n, deletedBlobs: 0n });
});

test("a .pt's converted .safetensors and a recorded preview belong to their LoRA; either missing is reported, neither is ever an orphan", async () => {
  offset = 0;
  const userId = randomUUID();
  const file = readFileSync(path.join(__dirname, "../../../libs/lora-formats/fixtures/torch/kohya_fp16.pt"));
  const pt = await uploadUserLora(registry.url, SECRET, userId, "trained.pt", file);
  const lora = userClient(registry.url, SECRET, userId);
  await lora.setLoraPreview({ loraId: pt.id, image: await testImage("png", 64, 64) });
  const converted = loraPath(userId, pt.id, "safetensors");
  const preview = `users/${userId}/loras/${pt.id}.preview.webp`;
  expect(await blob(converted).exists()).toBe(true);

  // Long past the grace: still theirs.
  offset = 3 * DAY;
  const clean = await sweep();
  for (const p of [loraPath(userId, pt.id, "pt"), converted, preview]) {
    expect(findingAt(clean, p)).toBeUndefined();
    expect(await blob(p).exists()).toBe(true);
  }

  await Promise.all([blob(converted).delete(), blob(preview).delete()]);
  const report = await sweep();
  expect(findingAt(report, converted)).toMatchObject({ reason: Reason.BLOB_MISSING, loraId: pt.id });
  expect(findingAt(report, preview)).toMatchObject({ reason: Reason.BLOB_MISSING, loraId: pt.id });
  expect(await blob(loraPath(userId, pt.id, "pt")).exists()).toBe(true);
});

test("orphans under users/ are kept within the grace and deleted after it; staging blobs without a live session are sealed, then deleted once their URLs expired; a live row's and a live session's blobs are never touched", async () => {
  offset = 0;
  const userId = randomUUID();
  const kept = await uploadUserLora(registry.url, SECRET, userId, "kept.safetensors", randomLoraSafetensors(3_000));
  const keptEtag = await etagOf(loraPath(userId, kept.id));
  const liveFile = randomLoraSafetensors(3_500);
  const live = await stagedUpload(userId, liveFile, "live.safetensors");
  const liveEtag = await etagOf(live.stagingPath);
  const aborted = await stagedUpload(userId, randomLoraSafetensors(2_000), "aborted.safetensors");
  await aborted.lora.abortLoraUpload({ uploadId: aborted.uploadId });
  // Orphans: a LoRA file no row names, and a preview beside a live LoRA that recorded none.
  const orphan = loraPath(userId, "987654321");
  const orphanPreview = `users/${userId}/loras/${kept.id}.preview.webp`;
  const stagedNoSession = `staging/${userId}/${randomUUID()}.safetensors`;
  await Promise.all([
    put(orphan, randomLoraSafetensors(1_000)),
    put(orphanPreview, Buffer.from("RIFF....WEBP")),
    put(stagedNoSession, randomLoraSafetensors(1_000)),
  ]);

  const first = await sweep();
  expect(findingAt(first, orphan)).toMatchObject({ reason: Reason.ORPHAN_BLOB, action: Action.KEPT_IN_GRACE });
  expect(findingAt(first, orphanPreview)).toMatchObject({ reason: Reason.ORPHAN_BLOB, action: Action.KEPT_IN_GRACE });
  expect(findingAt(first, stagedNoSession)).toMatchObject({
    reason: Reason.STAGING_ORPHAN,
    action: Action.KEPT_IN_GRACE,
  });
  // The aborted upload's sealed placeholder waits for its URL to expire: expected, not a finding.
  expect(findingAt(first, aborted.stagingPath)).toBeUndefined();
  expect(first.sealedPlaceholders).toBeGreaterThanOrEqual(1n);
  for (const path of [orphan, orphanPreview, stagedNoSession, aborted.stagingPath]) {
    expect(await blob(path).exists()).toBe(true);
  }

  offset = 25 * HOUR;
  const second = await sweep();
  expect(findingAt(second, orphan)).toMatchObject({
    reason: Reason.ORPHAN_BLOB,
    action: Action.DELETED,
    loraId: "987654321",
  });
  expect(findingAt(second, orphanPreview)).toMatchObject({ action: Action.DELETED });
  expect(await blob(orphan).exists()).toBe(false);
  expect(await blob(orphanPreview).exists()).toBe(false);
  // No session at all, past the grace: sealed (a URL might still be valid), deleted later.
  expect(findingAt(second, stagedNoSession)).toMatchObject({ reason: Reason.STAGING_ORPHAN, action: Action.SEALED });
  const sealed = await blob(stagedNoSession).getProperties();
  expect(sealed).toMatchObject({ contentLength: 0, leaseState: "leased", metadata: { sealed: "true" } });
  expect(await blob(aborted.stagingPath).exists()).toBe(true);
  // The live row's and the live session's blobs are as they were.
  for (const report of [first, second]) {
    expect(findingAt(report, loraPath(userId, kept.id))).toBeUndefined();
    expect(findingAt(report, live.stagingPath)).toBeUndefined();
  }
  expect(await etagOf(loraPath(userId, kept.id))).toBe(keptEtag);
  expect(await etagOf(live.stagingPath)).toBe(liveEtag);
  // The live session completes with the bytes it uploaded.
  const done = await live.lora.completeLoraUpload({ uploadId: live.uploadId });
  expect(done.lora?.sha256).toBe(sha256(liveFile));

  // Past every session's expiry: sealed placeholders and ended uploads' staging blobs go.
  offset = 8 * DAY;
  const third = await sweep();
  for (const path of [stagedNoSession, aborted.stagingPath, live.stagingPath]) {
    expect(findingAt(third, path)).toMatchObject({ reason: Reason.STAGING_ORPHAN, action: Action.DELETED });
    expect(await blob(path).exists()).toBe(false);
  }
  expect(findingAt(third, loraPath(userId, kept.id))).toBeUndefined();
  expect(findingAt(third, loraPath(userId, live.loraId))).toBeUndefined();
  expect(await etagOf(loraPath(userId, kept.id))).toBe(keptEtag);
  expect(await blob(loraPath(userId, live.loraId)).exists()).toBe(true);

  const points = await telemetry.collect();
  const deleted = points.filter(
    (p) => p.name === "lora_registry.storage_sweep.actions" && p.attributes.action === "deleted",
  );
  expect(deleted.reduce((n, p) => n + (p.value as number), 0)).toBeGreaterThanOrEqual(5);
});

test("a dry run reports orphans past the grace and deletes nothing", async () => {
  offset = 0;
  const orphan = loraPath(randomUUID(), "555");
  await put(orphan, randomLoraSafetensors(1_000));
  offset = 2 * DAY;
  const report = await sweep(true);
  expect(report.dryRun).toBe(true);
  expect(findingAt(report, orphan)).toMatchObject({ reason: Reason.ORPHAN_BLOB, action: Action.REPORTED });
  expect(await blob(orphan).exists()).toBe(true);
});

test("a row created between the listing and the deletion keeps its blob: the database is asked again just before", async () => {
  offset = 0;
  const userId = randomUUID();
  // The blob of the next LoRA id, there before its row (a writer that stores first and records after).
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  const { rows } = await pool.query<{ next: string }>(
    "SELECT nextval(pg_get_serial_sequence('flat_file', 'id'))::text AS next",
  );
  const nextId = rows[0]!.next;
  await pool.query("SELECT setval(pg_get_serial_sequence('flat_file', 'id'), $1, false)", [nextId]);
  await pool.end();
  const path = loraPath(userId, nextId);
  await put(path, randomLoraSafetensors(1_000));
  offset = 2 * DAY;

  let created: { loraId: string } | undefined;
  const report = await runStorageSweep(registry.ctx, {
    trigger: "rpc",
    dryRun: false,
    beforeActing: async (orphans) => {
      if (!orphans.some((o) => o.blobPath === path) || created) return;
      const upload = await userClient(registry.url, SECRET, userId).createLoraUpload({
        name: "late.safetensors",
        sizeBytes: 1000n,
      });
      created = { loraId: upload.lora!.id };
    },
  });
  expect(created?.loraId).toBe(nextId);
  expect(findingAt(report!, path)).toMatchObject({ reason: Reason.ORPHAN_BLOB, action: Action.KEPT_REFERENCED });
  expect(report!.keptReferenced).toBeGreaterThanOrEqual(1n);
  expect(await blob(path).exists()).toBe(true);
});

test("one sweep at a time: while one holds the advisory lock (this replica or another), CheckStorageConsistency is ABORTED with STORAGE_SWEEP_RUNNING", async () => {
  offset = 2 * DAY;
  // Another replica's sweep: the lock held by another database session.
  const other = new pg.Client({ connectionString: db.url });
  await other.connect();
  await other.query("SELECT pg_advisory_lock($1)", [sweepLockKey.toString()]);
  try {
    expect(await rpcFailure(admin().checkStorageConsistency({}))).toMatchObject({
      code: "Aborted",
      reason: "STORAGE_SWEEP_RUNNING",
    });
    expect(await runStorageSweep(registry.ctx, { trigger: "schedule", dryRun: false })).toBeUndefined();
  } finally {
    await other.query("SELECT pg_advisory_unlock($1)", [sweepLockKey.toString()]);
    await other.end();
  }

  // Two at once on this replica: the second is refused while the first is between listing and deleting.
  const orphan = loraPath(randomUUID(), "777");
  await put(orphan, randomLoraSafetensors(1_000));
  offset = 4 * DAY;
  let during: unknown;
  const first = await runStorageSweep(registry.ctx, {
    trigger: "rpc",
    dryRun: false,
    beforeActing: async () => {
      during ??= await rpcFailure(admin().checkStorageConsistency({}));
    },
  });
  expect(during).toMatchObject({ code: "Aborted", reason: "STORAGE_SWEEP_RUNNING" });
  expect(findingAt(first!, orphan)).toMatchObject({ action: Action.DELETED });
  // Once it finished, the next one runs.
  expect((await sweep()).runId).not.toBe(first!.runId);

  const points = await telemetry.collect();
  const skipped = points.find(
    (p) =>
      p.name === "lora_registry.storage_sweep.runs" &&
      p.attributes.outcome === "skipped" &&
      p.attributes.trigger === "rpc",
  );
  expect(skipped?.value).toBeGreaterThanOrEqual(2);
});

test("the sweep's RPCs are for admins only", async () => {
  const asUser = createClient(
    LoraAdminService,
    createGrpcTransport({
      baseUrl: registry.url,
      interceptors: [bearerInterceptor(() => mintToken(SECRET, { subject: randomUUID() }))],
    }),
  );
  expect(await rpcFailure(asUser.checkStorageConsistency({}))).toMatchObject({
    code: "PermissionDenied",
    reason: "ROLE_REQUIRED",
  });
  expect(await rpcFailure(asUser.getStorageConsistencyReport({}))).toMatchObject({ code: "PermissionDenied" });
});
