import { BlobServiceClient } from "@azure/storage-blob";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ErrorReason, LoraService, LoraSource, MachineCacheService } from "@emprops/contracts";
import {
  bearerInterceptor,
  createServiceClient,
  type InMemoryTelemetry,
  type MetricPoint,
  ManualClock,
  mintToken,
  startInMemoryTelemetry,
  tracer,
} from "@emprops/platform";
import { loadConfig as registryConfig, startLoraRegistry } from "@emprops/lora-registry";
import { createTestDatabase, eventually, type TestContainers, randomLoraSafetensors } from "@emprops/testkit";
import { uploadLora } from "@emprops/upload-client";
import { context, ROOT_CONTEXT, SpanKind } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { type RunningStack } from "../src/index.js";
import { sha256 } from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const SECRET = "telemetry-test-secret-0123456789";
const USER = "6f1c1a52-3a55-4c51-9d0e-1b2f3c4d5e6f";
const MACHINE = "gpu-node-telemetry";

let telemetry: InMemoryTelemetry;
let t: TestStack;
let containers: TestContainers;
let stack: RunningStack;

beforeAll(async () => {
  // Before the stack: the services' instruments bind to the providers registered now.
  telemetry = startInMemoryTelemetry();
  t = await startTestStack("telemetry", {
    jwtSecret: SECRET,
    machineId: MACHINE,
    env: {
      registry: { OUTBOX_POLL_MS: "200" },
      machineCache: {
        LORA_DOWNLOAD_MAX_ATTEMPTS: "2",
        LORA_DOWNLOAD_RETRY_MIN_MS: "0",
        LORA_DOWNLOAD_RETRY_MAX_MS: "0",
      },
    },
  });
  ({ stack, containers } = t);
});

afterAll(async () => {
  await t?.stop();
  await telemetry?.stop();
});

// The callers trace too (as the Studio BFF and ComfyUI's node would), so each flow has one root.
const studio = () => createServiceClient(LoraService, stack.registry.url, () => mintToken(SECRET, { subject: USER }));
const comfyui = () =>
  createServiceClient(MachineCacheService, stack.machineCache.url, () =>
    mintToken(SECRET, { subject: "comfyui", roles: ["machine"] }),
  );

async function inRootSpan<T>(name: string, fn: () => Promise<T>): Promise<{ result: T; traceId: string }> {
  return tracer().startActiveSpan(name, async (span) => {
    try {
      return { result: await fn(), traceId: span.spanContext().traceId };
    } finally {
      span.end();
    }
  });
}

const traceOf = (traceId: string) => telemetry.spans().filter((s) => s.spanContext().traceId === traceId);
const named = (spans: ReadableSpan[], name: string, kind?: SpanKind) =>
  spans.filter((s) => s.name === name && (kind === undefined || s.kind === kind));
function one(spans: ReadableSpan[], name: string, kind?: SpanKind): ReadableSpan {
  const found = named(spans, name, kind);
  if (found.length !== 1) {
    throw new Error(`expected one ${name} span, found ${found.length} among ${spans.map((s) => s.name).join(", ")}`);
  }
  return found[0]!;
}
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
/** True when `child` descends from `ancestor` within `spans`. */
function descends(spans: ReadableSpan[], child: ReadableSpan, ancestor: ReadableSpan): boolean {
  const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  for (let at: ReadableSpan | undefined = child; at; at = byId.get(parentOf(at) ?? "")) {
    if (at === ancestor) return true;
  }
  return false;
}

const points = (all: MetricPoint[], name: string, attrs: Record<string, unknown> = {}) =>
  all.filter((p) => p.name === name && Object.entries(attrs).every(([k, v]) => p.attributes[k] === v));
const sum = (all: MetricPoint[], name: string, attrs: Record<string, unknown> = {}) =>
  points(all, name, attrs).reduce((n, p) => n + (typeof p.value === "number" ? p.value : 0), 0);

let lora: { id: string; bytes: Buffer };

/** The deletion of the LoRA's own blob (its preview's deletion is a span of its own). */
const loraDeletion = (spans: ReadableSpan[]) => {
  const found = named(spans, "blob.delete").filter((s) => !String(s.attributes["blob.path"]).endsWith(".preview.webp"));
  if (found.length !== 1) throw new Error(`expected one deletion of the LoRA's blob, found ${found.length}`);
  return found[0]!;
};

async function upload(name: string, bytes: Buffer): Promise<string> {
  const client = studio();
  const created = await client.createLoraUpload({ name, sizeBytes: BigInt(bytes.length) });
  const { BlockBlobClient } = await import("@azure/storage-blob");
  const blob = new BlockBlobClient(created.uploadUrl);
  await blob.stageBlock(Buffer.from("000000").toString("base64"), bytes, bytes.length);
  await blob.commitBlockList([Buffer.from("000000").toString("base64")]);
  const done = await client.completeLoraUpload({ uploadId: created.upload?.uploadId ?? "" });
  expect(done.lora?.sha256).toBe(sha256(bytes));
  return done.lora?.id ?? "";
}

test("an upload is one trace: registry and gateway spans, verification, and the upload metrics", async () => {
  const bytes = randomLoraSafetensors(4096);
  const { result: id, traceId } = await inRootSpan("studio.upload", () => upload("style.safetensors", bytes));
  lora = { id, bytes };
  const spans = traceOf(traceId);
  const root = one(spans, "studio.upload");

  // Every RPC has a client and a server span, the server's parent being the client's.
  for (const rpc of [
    "emprops.lora.v1.LoraService/CreateLoraUpload",
    "emprops.lora.v1.LoraService/CompleteLoraUpload",
    "emprops.blob.v1.BlobGatewayService/CreateUploadUrl",
    "emprops.blob.v1.BlobGatewayService/CommitUpload",
    "emprops.blob.v1.BlobGatewayService/SealUpload",
  ]) {
    const client = one(spans, rpc, SpanKind.CLIENT);
    const server = one(spans, rpc, SpanKind.SERVER);
    expect(parentOf(server)).toBe(client.spanContext().spanId);
    expect(server.attributes).toMatchObject({ "rpc.system": "connect_rpc", "rpc.connect_rpc.status_code": "ok" });
    expect(descends(spans, server, root)).toBe(true);
  }
  // The registry's own work and the gateway's verification, inside the RPCs that did them.
  const complete = one(spans, "emprops.lora.v1.LoraService/CompleteLoraUpload", SpanKind.SERVER);
  const verify = one(spans, "blob.verify");
  expect(descends(spans, one(spans, "lora_registry.verify_blob"), complete)).toBe(true);
  const commit = one(spans, "emprops.blob.v1.BlobGatewayService/CommitUpload", SpanKind.SERVER);
  expect(descends(spans, verify, commit)).toBe(true);
  expect(descends(spans, one(spans, "blob.copy"), commit)).toBe(true);
  expect(one(spans, "lora_registry.reserve_quota").attributes["lora.size_bytes"]).toBe(bytes.length);

  const m = await telemetry.collect();
  expect(sum(m, "lora_registry.uploads", { outcome: "created" })).toBe(1);
  expect(sum(m, "lora_registry.uploads", { outcome: "completed" })).toBe(1);
  expect(sum(m, "blob_gateway.verifications", { source: "commit" })).toBe(1);
  expect(sum(m, "blob_gateway.commits", { outcome: "stored" })).toBe(1);
  expect(sum(m, "blob_gateway.verified_bytes")).toBe(bytes.length);
  expect(
    points(m, "rpc.server.duration", { "rpc.method": "CompleteLoraUpload", "rpc.connect_rpc.status_code": "ok" }),
  ).toHaveLength(1);
  expect(points(m, "rpc.client.duration", { "rpc.method": "CommitUpload" })).toHaveLength(1);
  expect(points(m, "lora_registry.quota.users", { utilization_band: "under_half" })[0]?.value).toBe(1);
});

test("a rejected upload counts its reason", async () => {
  const bad = Buffer.alloc(64, 7); // no safetensors header
  const client = studio();
  const created = await client.createLoraUpload({ name: "broken.safetensors", sizeBytes: BigInt(bad.length) });
  const { BlockBlobClient } = await import("@azure/storage-blob");
  await new BlockBlobClient(created.uploadUrl).upload(bad, bad.length);
  await expect(client.completeLoraUpload({ uploadId: created.upload?.uploadId ?? "" })).rejects.toThrow();
  const m = await telemetry.collect();
  expect(sum(m, "lora_registry.uploads", { outcome: "rejected", reason: "INVALID_FILE_FORMAT" })).toBe(1);
  expect(
    points(m, "rpc.server.duration", {
      "rpc.method": "CompleteLoraUpload",
      "rpc.connect_rpc.status_code": "InvalidArgument",
      "emprops.error.reason": "INVALID_FILE_FORMAT",
    }),
  ).toHaveLength(1);
});

test("a job's fetch is one trace across machine-cache, registry and gateway; misses, hits and the download are measured", async () => {
  const ref = { source: LoraSource.USER, identifier: lora.id };
  const { result: first, traceId } = await inRootSpan("comfyui.job", () =>
    comfyui().ensureLoras({ jobId: "job-1", userId: USER, refs: [ref] }),
  );
  expect(first.results[0]?.error).toBeUndefined();
  expect(first.results[0]?.cacheHit).toBe(false);
  const spans = traceOf(traceId);
  const ensure = one(spans, "emprops.cache.v1.MachineCacheService/EnsureLoras", SpanKind.SERVER);
  const resolve = one(spans, "emprops.lora.v1.LoraResolverService/ResolveLoras", SpanKind.SERVER);
  const urls = one(spans, "emprops.blob.v1.BlobGatewayService/CreateDownloadUrls", SpanKind.SERVER);
  const download = one(spans, "machine-cache.download");
  for (const s of [resolve, urls, download]) expect(descends(spans, s, ensure)).toBe(true);
  expect(descends(spans, urls, resolve)).toBe(true);
  expect(download.attributes).toMatchObject({
    "lora.source": "user",
    "lora.identifier": lora.id,
    "lora.size_bytes": lora.bytes.length,
    "lora.bytes_downloaded": lora.bytes.length,
    "lora.attempts": 1,
    "lora.resumed": false,
    "lora.outcome": "ok",
  });
  expect(download.attributes["lora.duration_ms"]).toEqual(expect.any(Number));

  const second = await comfyui().ensureLoras({ jobId: "job-2", userId: USER, refs: [ref] });
  expect(second.results[0]?.cacheHit).toBe(true);

  const m = await telemetry.collect();
  expect(sum(m, "machine_cache.lora_refs", { outcome: "miss" })).toBe(1);
  expect(sum(m, "machine_cache.lora_refs", { outcome: "hit" })).toBe(1);
  expect(
    sum(m, "machine_cache.downloads", { outcome: "ok", "lora.source": "user", "lora.size_bucket": "<64MiB" }),
  ).toBe(1);
  expect(sum(m, "machine_cache.downloaded_bytes", { "lora.source": "user" })).toBe(lora.bytes.length);
  const duration = points(m, "machine_cache.download_duration", {
    "lora.size_bucket": "<64MiB",
    "lora.source": "user",
  });
  expect(duration).toHaveLength(1);
  expect((duration[0]?.value as { count: number }).count).toBe(1);
  expect(points(m, "machine_cache.hit_ratio")[0]?.value).toBe(0.5);
  expect(points(m, "machine_cache.cached_loras", { "lora.source": "user" })[0]?.value).toBe(1);
  expect(points(m, "machine_cache.utilization")[0]?.value).toBeGreaterThan(0);
});

test("a deletion is one trace across a NATS hop: outbox relay, publish, and both consumers' work", async () => {
  const { traceId } = await inRootSpan("studio.delete", () => studio().deleteLora({ loraId: lora.id }));
  await eventually(() => {
    const spans = traceOf(traceId);
    // The LoRA's blob and its preview image (none here) are each deleted in the event's trace.
    expect(named(spans, "blob.delete")).toHaveLength(2);
    expect(named(spans, "machine-cache.evict")).toHaveLength(1);
  });
  const spans = traceOf(traceId);
  const deleteRpc = one(spans, "emprops.lora.v1.LoraService/DeleteLora", SpanKind.SERVER);
  const relay = one(spans, "lora_registry.outbox.relay");
  const publish = one(spans, `publish ${t.natsNamespace}.lora.deleted`, SpanKind.PRODUCER);
  expect(descends(spans, relay, deleteRpc)).toBe(true);
  expect(parentOf(publish)).toBe(relay.spanContext().spanId);
  const consumers = named(spans, `process ${t.natsNamespace}.lora.deleted`, SpanKind.CONSUMER);
  expect(consumers.map((c) => c.attributes["messaging.consumer.group.name"]).sort()).toEqual(
    [`${t.natsNamespace}_blob-gateway-deletions`, `${t.natsNamespace}_machine-cache-${MACHINE}`].sort(),
  );
  for (const c of consumers) expect(parentOf(c)).toBe(publish.spanContext().spanId);
  const evict = one(spans, "machine-cache.evict");
  expect(evict.attributes["eviction.reason"]).toBe("invalidation");
  expect(
    descends(
      spans,
      evict,
      consumers.find((c) => String(c.attributes["messaging.consumer.group.name"]).includes("machine"))!,
    ),
  ).toBe(true);
  expect(
    descends(
      spans,
      loraDeletion(spans),
      consumers.find((c) => String(c.attributes["messaging.consumer.group.name"]).includes("blob"))!,
    ),
  ).toBe(true);

  const m = await telemetry.collect();
  expect(sum(m, "lora_registry.deletions", { reason: "user" })).toBe(1);
  expect(sum(m, "machine_cache.evictions", { reason: "invalidation" })).toBe(1);
  expect(loraDeletion(spans).attributes).toMatchObject({
    "blob.delete_source": "event",
    "blob.delete_result": "deleted",
    "blob.path": `users/${USER}/loras/${lora.id}.safetensors`,
  });
  // The rejected upload's event may add its own deletion: at least this one is counted.
  expect(sum(m, "blob_gateway.deletions", { source: "event", result: "deleted" })).toBeGreaterThanOrEqual(1);
  expect(
    sum(m, "messaging.client.sent.messages", {
      "messaging.destination.name": `${t.natsNamespace}.lora.deleted`,
      outcome: "ok",
    }),
  ).toBeGreaterThanOrEqual(1);
  expect(
    sum(m, "messaging.client.consumed.messages", {
      "messaging.consumer.group.name": `${t.natsNamespace}_machine-cache-${MACHINE}`,
      outcome: "ack",
    }),
  ).toBeGreaterThanOrEqual(1);
  expect(
    points(m, "messaging.consumer.lag", {
      "messaging.consumer.group.name": `${t.natsNamespace}_blob-gateway-deletions`,
    }),
  ).toHaveLength(1);
  expect(points(m, "lora_registry.outbox.backlog")[0]?.value).toBe(0);
});

test("repeated download failures of one LoRA raise the failure metrics an alert watches", async () => {
  const bytes = randomLoraSafetensors(2048);
  const id = await upload("tampered.safetensors", bytes);
  // The stored blob changes after verification: every download fails its sha256 check.
  await BlobServiceClient.fromConnectionString(containers.connectionString)
    .getContainerClient(containers.userContainer)
    .getBlockBlobClient(`users/${USER}/loras/${id}.safetensors`)
    .uploadData(randomLoraSafetensors(2048));
  for (let i = 0; i < 3; i++) {
    const res = await comfyui().ensureLoras({
      jobId: `job-f${i}`,
      userId: USER,
      refs: [{ source: LoraSource.USER, identifier: id }],
    });
    expect(res.results[0]?.error?.reason).toBe(ErrorReason.CHECKSUM_MISMATCH);
  }
  const m = await telemetry.collect();
  expect(sum(m, "machine_cache.download.failures", { reason: "checksum", "lora.source": "user" })).toBe(3);
  expect(sum(m, "machine_cache.download.repeated_failures", { reason: "checksum" })).toBe(1);
  expect(points(m, "machine_cache.download.failing")[0]?.value).toBe(1);
  const failed = telemetry
    .spans()
    .filter((s) => s.name === "machine-cache.download" && s.attributes["lora.identifier"] === id);
  expect(failed.map((s) => s.attributes["lora.outcome"])).toEqual(["checksum", "checksum", "checksum"]);
  expect(failed.every((s) => s.attributes["lora.attempts"] === 2)).toBe(true);
});

test("the upload client (the CLI's and the page's) makes one upload one trace, with no tracer of its own", async () => {
  const bytes = randomLoraSafetensors(4096);
  // A plain Connect client, as the CLI and the Studio page have: no OpenTelemetry on the caller's side.
  const client = createClient(
    LoraService,
    createConnectTransport({
      baseUrl: stack.registry.url,
      httpVersion: "1.1",
      interceptors: [bearerInterceptor(await mintToken(SECRET, { subject: USER }))],
    }),
  );
  const done = await uploadLora({
    client,
    source: { size: bytes.length, slice: (start, end) => new Uint8Array(bytes.subarray(start, end)) },
    create: { name: "traced.safetensors" },
  });
  expect(done.traceId).toMatch(/^[0-9a-f]{32}$/);
  await eventually(() => {
    const spans = traceOf(done.traceId);
    for (const rpc of ["CreateLoraUpload", "CompleteLoraUpload"]) {
      expect(named(spans, `emprops.lora.v1.LoraService/${rpc}`, SpanKind.SERVER)).toHaveLength(1);
    }
    expect(named(spans, "emprops.blob.v1.BlobGatewayService/CommitUpload", SpanKind.SERVER)).toHaveLength(1);
    expect(named(spans, "blob.verify")).toHaveLength(1);
  });
});

test("a completion without a traceparent still joins its upload's trace, linked to the request's own", async () => {
  const bytes = randomLoraSafetensors(2048);
  // CreateLoraUpload in a trace; CompleteLoraUpload from a client that sends none.
  const { result: created, traceId } = await inRootSpan("studio.create", () =>
    studio().createLoraUpload({ name: "untraced.safetensors", sizeBytes: BigInt(bytes.length) }),
  );
  const { BlockBlobClient } = await import("@azure/storage-blob");
  await new BlockBlobClient(created.uploadUrl).upload(bytes, bytes.length);
  const plain = createClient(
    LoraService,
    createConnectTransport({
      baseUrl: stack.registry.url,
      httpVersion: "1.1",
      interceptors: [bearerInterceptor(await mintToken(SECRET, { subject: USER }))],
    }),
  );
  await context.with(ROOT_CONTEXT, () => plain.completeLoraUpload({ uploadId: created.upload?.uploadId ?? "" }));
  const spans = traceOf(traceId);
  const joined = one(spans, "lora_registry.complete_upload");
  expect(descends(spans, one(spans, "blob.verify"), joined)).toBe(true);
  expect(descends(spans, one(spans, "emprops.blob.v1.BlobGatewayService/SealUpload", SpanKind.SERVER), joined)).toBe(
    true,
  );
  // The request's own span is in another trace, and linked.
  const rpc = telemetry
    .spans()
    .find(
      (s) =>
        s.name === "emprops.lora.v1.LoraService/CompleteLoraUpload" &&
        s.kind === SpanKind.SERVER &&
        s.spanContext().traceId !== traceId &&
        joined.links.some((l) => l.context.spanId === s.spanContext().spanId),
    );
  expect(rpc).toBeDefined();
});

test("reaping an expired upload joins the upload's trace", async () => {
  const clock = new ManualClock(new Date());
  const db = await createTestDatabase("telemetry-reaper");
  const registry = await startLoraRegistry(
    registryConfig({
      REGISTRY_PORT: "0",
      DATABASE_URL: db.url,
      JWT_SECRET: SECRET,
      LOG_LEVEL: "silent",
      NATS_URL: "memory",
      BLOB_GATEWAY_URL: stack.gateway.url,
      UPLOAD_SESSION_TTL_SECONDS: "3600",
      UPLOAD_REAPER_CRON: "* * * * * *",
    }),
    { clock },
  );
  try {
    const client = createServiceClient(LoraService, registry.url, () => mintToken(SECRET, { subject: USER }));
    const { traceId } = await inRootSpan("studio.create", () =>
      client.createLoraUpload({ name: "forgotten.safetensors", sizeBytes: 100n }),
    );
    clock.advance(3600_000 + 1000);
    await eventually(() => expect(named(traceOf(traceId), "lora_registry.expire_upload")).toHaveLength(1));
    const spans = traceOf(traceId);
    const expire = one(spans, "lora_registry.expire_upload");
    await eventually(() =>
      expect(descends(traceOf(traceId), one(traceOf(traceId), "blob.seal_upload"), expire)).toBe(true),
    );
  } finally {
    await registry.stop();
    await db.cleanup();
  }
});
