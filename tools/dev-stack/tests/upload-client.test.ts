import { createHash } from "node:crypto";
import { type Client, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraService, UploadState } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";
import {
  blobEndpointOf,
  eventually,
  type FaultProxy,
  assembleSafetensors,
  fillerBytes,
  putBlockIndex,
  randomLoraSafetensors,
  rpcFailure,
  startFaultProxy,
} from "@emprops/testkit";
import {
  BlobRequestError,
  HeadRefusedError,
  type ResumeInfo,
  type UploadLoraOptions,
  type UploadProgress,
  type UploadSession,
  uploadLora,
} from "@emprops/upload-client";
import { startTestStack, type TestStack } from "./support/test-stack.js";

const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * The shared block-upload client (the CLI's and the Studio page's) against
 * the real stack, with Blob Storage behind the fault proxy: every URL the
 * gateway signs leads through it.
 */
describe("the block-upload client against the real stack", () => {
  let t: TestStack;
  let proxy: FaultProxy;
  let lora: Client<typeof LoraService>;
  let n = 0;

  /** A LoRA file of `blocks` whole blocks (the stack's block size is 1 MiB), as a Blob as a browser has it. */
  const file = (blocks: number) => {
    // The header and its padding take a few hundred bytes of the last block.
    const bytes = randomLoraSafetensors(blocks * MiB - 4096);
    return { bytes, blob: new Blob([bytes]), name: `client-${++n}.safetensors` };
  };
  const upload = (f: ReturnType<typeof file>, extra: Partial<UploadLoraOptions> = {}) =>
    uploadLora({
      client: lora,
      source: f.blob,
      create: { name: f.name, tags: ["client"], uploadSource: "test" },
      retryDelayMs: 10,
      ...extra,
    });
  /** Block indexes of the Put Block requests that storage accepted. */
  const storedBlocks = () =>
    proxy.requests
      .filter((r) => r.status === 201 && putBlockIndex(r.path) >= 0)
      .map((r) => putBlockIndex(r.path))
      .sort();
  const putBlocks = (index: number) => proxy.requests.filter((r) => putBlockIndex(r.path) === index);

  beforeAll(async () => {
    t = await startTestStack("upload-client", {
      azureConnectionString: async (c) => {
        proxy = await startFaultProxy(blobEndpointOf(c.connectionString));
        return proxy.viaConnectionString(c.connectionString);
      },
      env: { gateway: { UPLOAD_BLOCK_SIZE_BYTES: String(MiB) } },
    });
    lora = createClient(
      LoraService,
      createGrpcTransport({ baseUrl: t.stack.registry.url, interceptors: [bearerInterceptor(t.userToken)] }),
    );
  });

  afterAll(async () => {
    await t?.stop();
    await proxy?.close();
  });

  beforeEach(() => proxy.reset());

  test("uploads a file block by block and returns the verified LoRA, with progress from 0 to the whole file", async () => {
    const f = file(3);
    const progress: UploadProgress[] = [];
    const sessions: UploadSession[] = [];
    let verifying = false;
    const result = await upload(f, {
      onSession: (s) => sessions.push(s),
      onProgress: (p) => progress.push(p),
      onVerify: () => (verifying = true),
    });
    expect(result).toMatchObject({ resumed: false, alreadyCompleted: false });
    expect(result.lora).toMatchObject({ name: f.name, sha256: sha256(f.bytes), sizeBytes: BigInt(f.bytes.length) });
    expect(result.quota?.usedCount).toBeGreaterThanOrEqual(1);
    expect(sessions).toEqual([
      { uploadId: result.uploadId, loraId: result.lora.id, resumed: false, traceId: result.traceId },
    ]);
    expect(verifying).toBe(true);
    expect(progress[0]).toEqual({ uploadedBytes: 0, totalBytes: f.bytes.length, blocksDone: 0, blocksTotal: 3 });
    expect(progress.at(-1)).toEqual({
      uploadedBytes: f.bytes.length,
      totalBytes: f.bytes.length,
      blocksDone: 3,
      blocksTotal: 3,
    });
    expect(progress.map((p) => p.uploadedBytes)).toEqual(progress.map((p) => p.uploadedBytes).sort((a, b) => a - b));
    expect(storedBlocks()).toEqual([0, 1, 2]);
  });

  describe("a wrong file is refused before any block is sent", () => {
    /** A PNG image of 3 MiB, named as a LoRA. */
    const image = () => {
      const bytes = Buffer.concat([
        Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        fillerBytes(3 * MiB),
      ]);
      return { bytes, blob: new Blob([bytes]), name: `image-${++n}.safetensors` };
    };
    const imageMessage = "The file is named .safetensors but its content is a PNG image.";
    const reserved = async () => (await lora.getQuota({})).quota?.reservedBytes;
    /** Requests storage saw for staging blobs (Put Block, Put Block List). */
    const stagingRequests = () => proxy.requests.filter((r) => r.path.includes("/staging/"));

    test("the client refuses it on this side: not a call to the registry, not a request to storage", async () => {
      const calls: string[] = [];
      const counted = createClient(
        LoraService,
        createGrpcTransport({
          baseUrl: t.stack.registry.url,
          interceptors: [(next) => (req) => (calls.push(req.method.name), next(req)), bearerInterceptor(t.userToken)],
        }),
      );
      const f = image();
      const err = await upload(f, { client: counted }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HeadRefusedError);
      expect(err).toBeInstanceOf(ConnectError);
      expect(new ConnectError("a server's refusal")).not.toBeInstanceOf(HeadRefusedError);
      expect(await rpcFailure(Promise.reject(err))).toMatchObject({
        code: "InvalidArgument",
        reason: "INVALID_FILE_FORMAT",
        message: imageMessage,
      });
      expect(calls).toEqual([]);
      expect(proxy.requests).toEqual([]);
    });

    test("CreateLoraUpload refuses the head with the verifier's reason: no URL, no staging blob, nothing reserved", async () => {
      const before = await reserved();
      const f = image();
      const failure = await rpcFailure(
        lora.createLoraUpload({ name: f.name, sizeBytes: BigInt(f.bytes.length), head: f.bytes.subarray(0, MiB) }),
      );
      expect(failure).toMatchObject({ code: "InvalidArgument", reason: "INVALID_FILE_FORMAT", message: imageMessage });
      expect(failure.metadata.field).toBe("head");
      // A safetensors header that claims more bytes than the file has.
      const overflowing = assembleSafetensors('{"t":', fillerBytes(64), 50_000_000n);
      const truncated = await rpcFailure(
        lora.createLoraUpload({ name: "overflow.safetensors", sizeBytes: BigInt(2 * MiB), head: overflowing }),
      );
      expect(truncated).toMatchObject({
        reason: "INVALID_FILE_FORMAT",
        message: expect.stringMatching(/header is truncated/),
      });
      expect(await reserved()).toBe(before);
      expect(stagingRequests()).toEqual([]);
      // The head is at most 1 MiB and never longer than the file.
      for (const [head, sizeBytes] of [
        [Buffer.alloc(MiB + 1), BigInt(2 * MiB)],
        [Buffer.alloc(100), 99n],
      ] as const) {
        const refused = await rpcFailure(lora.createLoraUpload({ name: "h.safetensors", sizeBytes, head }));
        expect([refused.code, refused.reason, refused.metadata.field]).toEqual([
          "InvalidArgument",
          "INVALID_REQUEST",
          "head",
        ]);
      }
    });

    test("a header that goes on beyond the first MiB is undecided, not refused: the upload completes", async () => {
      const header = {
        __metadata__: { notes: "n".repeat(MiB + 200_000) },
        t: { dtype: "U8", shape: [1024], data_offsets: [0, 1024] },
      };
      const bytes = assembleSafetensors(JSON.stringify(header), fillerBytes(1024));
      const result = await upload({ bytes, blob: new Blob([bytes]), name: `long-header-${++n}.safetensors` });
      expect(result.lora.sha256).toBe(sha256(bytes));
    });
  });

  test("an interrupted upload resumes from the blocks the session reports, sending only the rest", async () => {
    const f = file(4);
    proxy.rules.push({
      method: "PUT",
      path: (p) => putBlockIndex(p) >= 2,
      times: Infinity,
      fault: { kind: "cut", afterBytes: 64 * 1024 },
    });
    let session: UploadSession | undefined;
    const failure = await upload(f, { retries: 1, onSession: (s) => (session = s) }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(BlobRequestError);
    expect(failure).toMatchObject({ status: 0, transient: true });
    expect(storedBlocks()).toEqual([0, 1]);
    const pending = await lora.getLoraUpload({ uploadId: session!.uploadId });
    expect(pending.upload?.state).toBe(UploadState.PENDING);
    expect(pending.stagedBlocks).toHaveLength(2);

    proxy.reset();
    const resumes: ResumeInfo[] = [];
    const progress: UploadProgress[] = [];
    const result = await upload(f, {
      resumeUploadId: session!.uploadId,
      onResume: (r) => resumes.push(r),
      onProgress: (p) => progress.push(p),
    });
    expect(resumes).toEqual([{ uploadId: session!.uploadId, stagedBlocks: 2, stagedBytes: 2 * MiB, blocksTotal: 4 }]);
    expect(progress[0]).toMatchObject({ uploadedBytes: 2 * MiB, blocksDone: 2 });
    expect(storedBlocks()).toEqual([2, 3]);
    expect(result).toMatchObject({ uploadId: session!.uploadId, resumed: true, alreadyCompleted: false });
    expect(result.lora.sha256).toBe(sha256(f.bytes));
  });

  test("a Put Block refused with 403 gets a fresh signed URL from the session and goes again", async () => {
    const f = file(2);
    proxy.rules.push({
      method: "PUT",
      path: (p) => putBlockIndex(p) === 1,
      fault: { kind: "status", status: 403, errorCode: "AuthenticationFailed" },
    });
    const result = await upload(f, { retries: 1 });
    expect(putBlocks(1).map((r) => r.status)).toEqual([403, 201]);
    expect(result.lora.sha256).toBe(sha256(f.bytes));
  });

  test("a refused block (4xx) fails the upload at once, without retries", async () => {
    const f = file(2);
    proxy.rules.push({ method: "PUT", path: (p) => putBlockIndex(p) === 0, fault: { kind: "status", status: 400 } });
    await expect(upload(f, { retries: 3 })).rejects.toMatchObject({ status: 400, transient: false });
    expect(putBlocks(0)).toHaveLength(1);
  });

  test("abort stops the upload; the session stays pending and resumes later", async () => {
    const f = file(2);
    proxy.rules.push({ method: "PUT", times: Infinity, delayMs: 60_000 });
    const controller = new AbortController();
    let session: UploadSession | undefined;
    const aborted = upload(f, { signal: controller.signal, onSession: (s) => (session = s) });
    aborted.catch(() => undefined);
    // Both blocks are on their way (held by the proxy) when the user cancels.
    await eventually(() => expect(proxy.requests.filter((r) => r.method === "PUT")).toHaveLength(2));
    controller.abort();
    await expect(aborted).rejects.toMatchObject({ name: "AbortError" });
    expect(storedBlocks()).toEqual([]);
    expect((await lora.getLoraUpload({ uploadId: session!.uploadId })).upload?.state).toBe(UploadState.PENDING);

    proxy.rules.length = 0;
    const result = await upload(f, { resumeUploadId: session!.uploadId });
    expect(result).toMatchObject({ uploadId: session!.uploadId, resumed: true });
  });

  test("resuming a session an earlier run completed sends nothing and returns its LoRA", async () => {
    const f = file(1);
    const first = await upload(f);
    proxy.requests.length = 0;
    const again = await upload(f, { resumeUploadId: first.uploadId });
    expect(again).toMatchObject({ uploadId: first.uploadId, resumed: true, alreadyCompleted: true });
    expect(again.lora.id).toBe(first.lora.id);
    expect(proxy.requests).toEqual([]);
  });

  test("a pending session of another size is aborted and a new one started", async () => {
    const small = file(1);
    let stale: UploadSession | undefined;
    proxy.rules.push({ method: "PUT", times: Infinity, fault: { kind: "status", status: 400 } });
    await upload(small, { onSession: (s) => (stale = s) }).catch(() => undefined);
    proxy.rules.length = 0;

    const bigger = { ...file(2), name: small.name };
    const result = await upload(bigger, { resumeUploadId: stale!.uploadId });
    expect(result.uploadId).not.toBe(stale!.uploadId);
    expect(result).toMatchObject({ resumed: false, alreadyCompleted: false });
    expect((await lora.getLoraUpload({ uploadId: stale!.uploadId })).upload?.state).toBe(UploadState.ABORTED);
  });
});
