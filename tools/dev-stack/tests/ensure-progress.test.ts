import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  type EnsuredLora,
  EnsureLorasRequestSchema,
  type EnsureLorasWithProgressResponse,
  ErrorReason,
  LoraPhase,
  type LoraProgress,
  LoraSource,
  MachineCacheService,
} from "@emprops/contracts";
import { bearerInterceptor, type InMemoryTelemetry, startInMemoryTelemetry } from "@emprops/platform";
import {
  blobEndpointOf,
  createGrpcJsClient,
  type FaultProxy,
  grpcServerStream,
  randomLoraSafetensors,
  rpcFailure,
  startFaultProxy,
} from "@emprops/testkit";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { machineClient, onSignedReadsOf, putSharedLora, signedReads } from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * EnsureLorasWithProgress against the real stack, with every blob byte led
 * through the test kit's fault proxy shaped like a slow link (8 MiB/s for all
 * connections together), so a 12 MiB LoRA takes long enough to show progress.
 */

const SECRET = "ensure-progress-secret-0123456789";
const MIB = 1024 * 1024;
const BIG = 12 * MIB;

let t: TestStack;
let proxy: FaultProxy;
let telemetry: InMemoryTelemetry;

const sharedRef = (name: string) => ({ source: LoraSource.SHARED, identifier: name });
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");
/** Where the platform keeps shared LoRAs, as the proxy sees a signed read of one. */
const sharedBlobPath = (name: string) => `/models/loras/${name}`;

async function putShared(name: string, size: number): Promise<Buffer> {
  const bytes = randomLoraSafetensors(size);
  // Straight to storage, not through the shaped link: only the machine's reads are slow.
  await putSharedLora(t.containers.connectionString, t.containers.sharedContainer, name, bytes);
  return bytes;
}

const request = (refs: { source: LoraSource; identifier: string }[]) =>
  create(EnsureLorasRequestSchema, { jobId: `job-${randomUUID()}`, userId: t.userId, refs });

/** Reads a stream to its end; `onMessage` sees each message as it comes. */
async function collect(
  stream: AsyncIterable<EnsureLorasWithProgressResponse>,
  onMessage?: (m: EnsureLorasWithProgressResponse) => void,
): Promise<EnsureLorasWithProgressResponse[]> {
  const messages: EnsureLorasWithProgressResponse[] = [];
  for await (const m of stream) {
    messages.push(m);
    onMessage?.(m);
  }
  return messages;
}

/** The progress messages of a stream, and its results, which must come last and once. */
function split(messages: EnsureLorasWithProgressResponse[]): { progress: LoraProgress[]; results: EnsuredLora[] } {
  const last = messages[messages.length - 1];
  expect(last?.event.case).toBe("result");
  expect(messages.filter((m) => m.event.case === "result")).toHaveLength(1);
  const progress = messages.flatMap((m) => (m.event.case === "progress" ? [m.event.value] : []));
  return { progress, results: last?.event.case === "result" ? last.event.value.results : [] };
}

const of = (progress: LoraProgress[], identifier: string) => progress.filter((p) => p.ref?.identifier === identifier);
/** The phases in the order they came, each once. */
const phases = (events: LoraProgress[]) =>
  events.map((p) => p.phase).filter((phase, i, all) => i === 0 || all[i - 1] !== phase);

/**
 * Bytes never go back (within an attempt), each downloading update follows
 * the one before by at least 1 % of the file, and the last says every byte is there.
 */
function expectSteadyBytes(events: LoraProgress[], size: number) {
  const total = BigInt(size);
  for (const [i, e] of events.entries()) {
    const before = events[i - 1];
    if (e.phase === LoraPhase.DOWNLOADING || e.phase === LoraPhase.VERIFYING) expect(e.totalBytes).toBe(total);
    if (!before || e.attempt !== before.attempt) continue;
    expect(e.bytesDone).toBeGreaterThanOrEqual(before.bytesDone);
    if (e.phase === LoraPhase.DOWNLOADING && before.phase === LoraPhase.DOWNLOADING) {
      expect((e.bytesDone - before.bytesDone) * 100n).toBeGreaterThanOrEqual(total);
    }
  }
  expect(events[events.length - 1]).toMatchObject({ phase: LoraPhase.READY, bytesDone: total, totalBytes: total });
  // The link is slow: bytes were seen arriving, not only the start and the end.
  expect(events.some((e) => e.phase === LoraPhase.DOWNLOADING && e.bytesDone > 0n && e.bytesDone < total)).toBe(true);
}

const withoutTiming = (results: EnsuredLora[]) => results.map((r) => ({ ...r, elapsedMs: 0 }));

beforeAll(async () => {
  // Before the stack: the services' instruments bind to the providers registered now.
  telemetry = startInMemoryTelemetry();
  t = await startTestStack("ensure-progress", {
    jwtSecret: SECRET,
    azureConnectionString: async (c) => {
      proxy = await startFaultProxy(blobEndpointOf(c.connectionString), { shape: { totalBytesPerSecond: 8 * MIB } });
      return proxy.viaConnectionString(c.connectionString);
    },
    // A shared LoRA's first resolution waits for the gateway to verify it, over the same slow link.
    env: {
      gateway: { SHARED_LORA_VERIFY_WAIT_MS: "60000" },
      registry: { BLOB_GATEWAY_TIMEOUT_MS: "60000" },
      machineCache: {
        REGISTRY_TIMEOUT_MS: "60000",
        MIN_FREE_SPACE_GB: "0",
        LORA_DOWNLOAD_MAX_ATTEMPTS: "3",
        LORA_DOWNLOAD_RETRY_MIN_MS: "20",
        LORA_DOWNLOAD_RETRY_MAX_MS: "100",
      },
    },
  });
});

afterAll(async () => {
  await t?.stop();
  await proxy?.close();
  await telemetry?.stop();
});

beforeEach(() => {
  proxy.rules.length = 0;
});

describe("EnsureLorasWithProgress", () => {
  test("a miss streams resolving, downloading up to its size, verifying and ready; a bad reference its error; then the results EnsureLoras answers", async () => {
    const machine = machineClient(t.stack.machineCache.url, SECRET);
    const name = "progress_big.safetensors";
    const bytes = await putShared(name, BIG);
    const missing = "987654321";
    const req = request([sharedRef(name), { source: LoraSource.USER, identifier: missing }, sharedRef(name)]);

    const { progress, results } = split(await collect(machine.ensureLorasWithProgress(req)));

    const big = of(progress, name);
    expect(results[0]?.error).toBeUndefined();
    expect(phases(big)).toEqual([LoraPhase.RESOLVING, LoraPhase.DOWNLOADING, LoraPhase.VERIFYING, LoraPhase.READY]);
    expectSteadyBytes(big, bytes.length);
    // Named twice, fetched once and told once, for both positions.
    expect(big.every((e) => e.indices.join() === "0,2" && !e.joined)).toBe(true);
    expect(big.filter((e) => e.phase === LoraPhase.DOWNLOADING).every((e) => e.attempt === 1)).toBe(true);
    expect(big.filter((e) => e.phase === LoraPhase.DOWNLOADING).length).toBeLessThanOrEqual(101);

    const bad = of(progress, missing);
    expect(phases(bad)).toEqual([LoraPhase.RESOLVING, LoraPhase.ERROR]);
    expect(bad[bad.length - 1]?.error).toMatchObject({ code: "not_found", reason: ErrorReason.LORA_NOT_FOUND });
    expect(bad[bad.length - 1]?.error).toEqual(results[1]?.error);

    expect(results.map((r) => [r.cacheHit, r.bytesDownloaded, r.error?.reason])).toEqual([
      [false, BigInt(bytes.length), undefined],
      [false, 0n, ErrorReason.LORA_NOT_FOUND],
      [false, 0n, undefined],
    ]);
    expect(sha256(await fs.readFile(results[0]!.absolutePath))).toBe(sha256(bytes));

    // Evicted, the same request through the unary call downloads again and answers the same.
    const admin = machineClient(t.stack.machineCache.url, SECRET, ["admin"]);
    expect((await admin.evictLoras({ refs: [sharedRef(name)] })).evicted).toHaveLength(1);
    const unary = await machine.ensureLoras(req);
    expect(withoutTiming(unary.results)).toEqual(withoutTiming(results));
    expect(signedReads(proxy, sharedBlobPath(name))).toHaveLength(2);
  });

  test("a cached LoRA is ready at once, the same over Connect, gRPC and grpc-js", async () => {
    const machine = machineClient(t.stack.machineCache.url, SECRET);
    const name = "progress_small.safetensors";
    const bytes = await putShared(name, 300 * 1024);
    const req = request([sharedRef(name)]);
    await machine.ensureLoras(req);

    const connect = split(await collect(machine.ensureLorasWithProgress(req)));
    const size = BigInt(bytes.length);
    const ready = { phase: LoraPhase.READY, bytesDone: size, totalBytes: size, attempt: 0, indices: [0] };
    expect(connect.progress).toEqual([expect.objectContaining(ready)]);
    expect(connect.results[0]).toMatchObject({ cacheHit: true, sizeBytes: size, sha256: sha256(bytes) });

    const grpc = createClient(
      MachineCacheService,
      createGrpcTransport({ baseUrl: t.stack.machineCache.url, interceptors: [bearerInterceptor(t.machineToken)] }),
    );
    const overGrpc = split(await collect(grpc.ensureLorasWithProgress(req)));
    expect(overGrpc.progress).toEqual([expect.objectContaining(ready)]);
    expect(withoutTiming(overGrpc.results)).toEqual(withoutTiming(connect.results));

    const client = createGrpcJsClient(t.stack.machineCache.url.replace("http://", ""), MachineCacheService.typeName);
    try {
      const messages = await grpcServerStream<{ event: string; progress?: object; result?: { results: object[] } }>(
        client,
        "EnsureLorasWithProgress",
        { jobId: "grpc-js-job", userId: t.userId, refs: [{ source: "LORA_SOURCE_SHARED", identifier: name }] },
        { metadata: { authorization: `Bearer ${t.machineToken}` } },
      );
      expect(messages.map((m) => m.event)).toEqual(["progress", "result"]);
      expect(messages[0]?.progress).toMatchObject({
        phase: "LORA_PHASE_READY",
        bytesDone: String(bytes.length),
        totalBytes: String(bytes.length),
      });
      expect(messages[1]?.result?.results[0]).toMatchObject({
        cacheHit: true,
        sizeBytes: String(bytes.length),
        sha256: sha256(bytes),
        absolutePath: connect.results[0]?.absolutePath,
      });
    } finally {
      client.close();
    }
  });

  test("every caller of one download sees its progress; one cancelling its stream leaves the download to the others", async () => {
    const machine = machineClient(t.stack.machineCache.url, SECRET);
    const name = "progress_shared_flight.safetensors";
    // Twice as long, so the download is still going when the first caller leaves.
    const bytes = await putShared(name, 2 * BIG);
    const req = () => request([sharedRef(name)]);

    // The first caller starts the download; once bytes arrive, a second joins over gRPC and a unary caller waits too.
    const cancel = new AbortController();
    const first: LoraProgress[] = [];
    let downloading!: () => void;
    const started = new Promise<void>((resolve) => (downloading = resolve));
    const firstDone = collect(machine.ensureLorasWithProgress(req(), { signal: cancel.signal }), (m) => {
      if (m.event.case !== "progress") return;
      first.push(m.event.value);
      if (m.event.value.phase === LoraPhase.DOWNLOADING && m.event.value.bytesDone > 0n) downloading();
    }).catch((err: unknown) => err);
    await started;
    const grpc = createClient(
      MachineCacheService,
      createGrpcTransport({ baseUrl: t.stack.machineCache.url, interceptors: [bearerInterceptor(t.machineToken)] }),
    );
    let joinedDownload!: () => void;
    const secondJoined = new Promise<void>((resolve) => (joinedDownload = resolve));
    const second = collect(grpc.ensureLorasWithProgress(req()), (m) => {
      if (m.event.case === "progress" && m.event.value.phase === LoraPhase.DOWNLOADING) joinedDownload();
    });
    const unary = machine.ensureLoras(req());
    // Then the first goes away.
    await secondJoined;
    cancel.abort();

    // The first stream ends with its abort (connect-node's HTTP/1.1 client calls it internal, with the AbortError).
    expect(await firstDone).toBeInstanceOf(ConnectError);
    expect(first.some((e) => e.phase === LoraPhase.READY)).toBe(false);
    const joined = split(await second);
    expectSteadyBytes(joined.progress, bytes.length);
    // The second caller saw the download move on after the first had gone.
    const cancelledAt = first[first.length - 1]!.bytesDone;
    expect(joined.progress.some((e) => e.phase === LoraPhase.DOWNLOADING && e.bytesDone > cancelledAt)).toBe(true);
    expect(first.find((e) => e.phase === LoraPhase.DOWNLOADING)?.joined).toBe(false);
    expect(joined.progress.filter((e) => e.phase === LoraPhase.DOWNLOADING).every((e) => e.joined)).toBe(true);

    const [streamed, answered] = [joined.results[0]!, (await unary).results[0]!];
    for (const result of [streamed, answered]) {
      expect(result.error).toBeUndefined();
      expect(result).toMatchObject({ cacheHit: false, bytesDownloaded: 0n, sizeBytes: BigInt(bytes.length) });
    }
    // One download for all three, complete.
    expect(signedReads(proxy, sharedBlobPath(name))).toHaveLength(1);
    expect(sha256(await fs.readFile(streamed.absolutePath))).toBe(sha256(bytes));
  });

  test("bytes that fail verification start a second attempt from 0, told as such", async () => {
    const machine = machineClient(t.stack.machineCache.url, SECRET);
    const name = "progress_corrupted.safetensors";
    const bytes = await putShared(name, 4 * MIB);
    proxy.rules.push(onSignedReadsOf(sharedBlobPath(name), { kind: "corrupt", atByte: 3 * MIB }));

    const { progress, results } = split(await collect(machine.ensureLorasWithProgress(request([sharedRef(name)]))));

    expect(results[0]).toMatchObject({ attempts: 2, sha256: sha256(bytes) });
    expect(phases(progress)).toEqual([
      LoraPhase.RESOLVING,
      LoraPhase.DOWNLOADING,
      LoraPhase.VERIFYING,
      LoraPhase.DOWNLOADING,
      LoraPhase.VERIFYING,
      LoraPhase.READY,
    ]);
    const second = progress.filter((e) => e.attempt === 2);
    expect(second[0]).toMatchObject({ phase: LoraPhase.DOWNLOADING, bytesDone: 0n });
    expectSteadyBytes(progress, bytes.length);
  });

  test("the call's server span holds the batch and its download, and ends with the stream", async () => {
    const machine = machineClient(t.stack.machineCache.url, SECRET);
    const name = "progress_traced.safetensors";
    await putShared(name, 2 * MIB);
    const { results } = split(await collect(machine.ensureLorasWithProgress(request([sharedRef(name)]))));
    expect(results[0]?.error).toBeUndefined();

    const spans = telemetry.spans();
    const ms = (s: ReadableSpan) => s.endTime[0] * 1e3 + s.endTime[1] / 1e6;
    const download = spans.find((s) => s.name === "machine-cache.download" && s.attributes["lora.identifier"] === name);
    const inTrace = spans.filter((s) => s.spanContext().traceId === download?.spanContext().traceId);
    const call = inTrace.find((s) => s.name === "emprops.cache.v1.MachineCacheService/EnsureLorasWithProgress");
    const batch = inTrace.find((s) => s.name === "machine-cache.ensure");
    expect(batch?.parentSpanContext?.spanId).toBe(call?.spanContext().spanId);
    expect(ms(call!)).toBeGreaterThanOrEqual(ms(download!));
    expect(call?.attributes["rpc.connect_rpc.status_code"]).toBe("ok");
  });

  test("a bad request fails the stream before any message, with its reason", async () => {
    const machine = machineClient(t.stack.machineCache.url, SECRET);
    const badUser = create(EnsureLorasRequestSchema, { userId: "not-a-uuid", refs: [sharedRef("x.safetensors")] });
    expect(await rpcFailure(collect(machine.ensureLorasWithProgress(badUser)))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ID",
    });
    const badRef = request([{ source: LoraSource.USER, identifier: "abc" }]);
    expect(await rpcFailure(collect(machine.ensureLorasWithProgress(badRef)))).toMatchObject({
      code: "InvalidArgument",
      reason: "INVALID_ID",
      metadata: { field: "refs[0]" },
    });
    const user = createClient(
      MachineCacheService,
      createGrpcTransport({ baseUrl: t.stack.machineCache.url, interceptors: [bearerInterceptor(t.userToken)] }),
    );
    expect(
      await rpcFailure(collect(user.ensureLorasWithProgress(request([sharedRef("x.safetensors")])))),
    ).toMatchObject({ code: "PermissionDenied", reason: "ROLE_REQUIRED" });
  });
});
