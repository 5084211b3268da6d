import { randomBytes } from "node:crypto";
import type { BlockBlobClient } from "@azure/storage-blob";
import { planBlocks } from "@emprops/contracts";
import { createProxiedTestContainers, type FaultProxy, putBlockIndex, type TestContainers } from "@emprops/testkit";
import {
  BlobRequestError,
  fetchPut,
  putBlockListRequest,
  putBlockRequest,
  type UploadProgress,
} from "@emprops/upload-client";
import { sendBlocks, type SendBlocksOptions, withRetries } from "../src/send-blocks.js";
import type { UploadTarget } from "../src/upload-session.js";

const KIB = 1024;
const noRetries = { retries: 0, retryDelayMs: 1 };
const quickRetries = { retries: 3, retryDelayMs: 1 };

describe("Put Block and Put Block List against Azurite, through the fault proxy", () => {
  let containers: TestContainers;
  let proxy: FaultProxy;
  let stop: (() => Promise<void>) | undefined;
  let n = 0;

  /** A fresh blob and a write signed URL for it through the proxy. */
  const blob = async (): Promise<{ client: BlockBlobClient; url: () => Promise<string> }> => {
    const { client, signedUrl } = containers.userBlob(`upload-${++n}.safetensors`);
    return { client, url: async () => proxy.via(await signedUrl("cw")) };
  };
  const target = (uploadUrl: string): UploadTarget => ({
    uploadId: "u",
    loraId: "1",
    uploadUrl,
    blockSize: 0,
    staged: [],
    committed: false,
    resumed: false,
  });
  const signal = () => new AbortController().signal;
  const putsOfBlock = (index: number) => proxy.requests.filter((r) => putBlockIndex(r.path) === index);

  beforeAll(async () => ({ containers, proxy, stop } = await createProxiedTestContainers("upload-client")));
  afterAll(() => stop?.());

  beforeEach(() => proxy.reset());

  test("fetchPut stages blocks and commits them in plan order", async () => {
    const { client, url } = await blob();
    const content = randomBytes(10 * KIB);
    const plan = planBlocks(content.length, 4 * KIB);
    const uploadUrl = await url();
    for (const block of [...plan].reverse()) {
      const body = content.subarray(block.offset, block.offset + block.size);
      await fetchPut({ ...putBlockRequest(uploadUrl, block, new Uint8Array(body)), signal: signal() });
    }
    await fetchPut({ ...putBlockListRequest(uploadUrl, plan), signal: signal() });
    expect((await client.downloadToBuffer()).equals(content)).toBe(true);
    expect((await client.getProperties()).contentType).toBe("application/octet-stream");
  });

  test("a refusal is a BlobRequestError with the status and x-ms-error-code", async () => {
    const { url } = await blob();
    const [block] = planBlocks(KIB, KIB);
    proxy.rules.push({ method: "PUT", fault: { kind: "status", status: 403, errorCode: "AuthenticationFailed" } });
    const err = await fetchPut({ ...putBlockRequest(await url(), block!, "x"), signal: signal() }).catch((e) => e);
    expect(err).toBeInstanceOf(BlobRequestError);
    expect(err).toMatchObject({ status: 403, errorCode: "AuthenticationFailed", urlRefused: true, transient: false });
    expect(err.message).toBe("Put Block 0 failed: HTTP 403 AuthenticationFailed");
  });

  test("a dropped connection is a transient BlobRequestError (status 0) with the network error as its cause", async () => {
    const { url } = await blob();
    const [block] = planBlocks(64 * KIB, 64 * KIB);
    proxy.rules.push({ method: "PUT", fault: { kind: "cut", afterBytes: 0 } });
    const err = await fetchPut({
      ...putBlockRequest(await url(), block!, new Uint8Array(64 * KIB)),
      signal: signal(),
    }).catch((e) => e);
    expect(err).toMatchObject({ status: 0, transient: true, message: "Put Block 0: the network connection failed" });
    expect(err.cause).toMatchObject({ name: "TypeError", message: "fetch failed" });
  });

  test("an aborted PUT rejects with the signal's reason", async () => {
    const { url } = await blob();
    const [block] = planBlocks(KIB, KIB);
    proxy.rules.push({ method: "PUT", delayMs: 5_000 });
    const controller = new AbortController();
    const put = fetchPut({ ...putBlockRequest(await url(), block!, "x"), signal: controller.signal });
    controller.abort();
    await expect(put).rejects.toMatchObject({ name: "AbortError" });
  });

  describe("withRetries", () => {
    const send = async (uploadUrl: () => string) => {
      const [block] = planBlocks(KIB, KIB);
      return () => fetchPut({ ...putBlockRequest(uploadUrl(), block!, "x"), signal: signal() });
    };
    const refuse = () => {
      throw new Error("no refresh expected");
    };

    test("server errors and dropped connections are tried again", async () => {
      const { url } = await blob();
      const uploadUrl = await url();
      proxy.rules.push(
        { method: "PUT", fault: { kind: "status", status: 503 } },
        { method: "PUT", fault: { kind: "cut", afterBytes: 0 } },
        { method: "PUT", fault: { kind: "status", status: 500 } },
      );
      await withRetries(await send(() => uploadUrl), refuse, quickRetries, signal());
      expect(putsOfBlock(0).map((r) => r.status)).toEqual([503, 0, 500, 201]);
    });

    test("the last failure is thrown when the retries run out", async () => {
      const { url } = await blob();
      const uploadUrl = await url();
      proxy.rules.push({
        method: "PUT",
        times: Infinity,
        fault: { kind: "status", status: 503, errorCode: "ServerBusy" },
      });
      await expect(withRetries(await send(() => uploadUrl), refuse, quickRetries, signal())).rejects.toMatchObject({
        status: 503,
        errorCode: "ServerBusy",
      });
      expect(putsOfBlock(0)).toHaveLength(4);
    });

    test("other 4xx answers are final at once", async () => {
      const { url } = await blob();
      const uploadUrl = await url();
      proxy.rules.push({ method: "PUT", times: Infinity, fault: { kind: "status", status: 400 } });
      await expect(withRetries(await send(() => uploadUrl), refuse, quickRetries, signal())).rejects.toMatchObject({
        status: 400,
      });
      expect(putsOfBlock(0)).toHaveLength(1);
    });

    test("a 403 gets one fresh URL, and the request goes again with it", async () => {
      const { url } = await blob();
      let uploadUrl = `${await url()}&refused=1`;
      proxy.rules.push({ method: "PUT", path: /refused=1/, times: Infinity, fault: { kind: "status", status: 403 } });
      let refreshes = 0;
      const refresh = async () => {
        refreshes++;
        uploadUrl = await url();
      };
      await withRetries(await send(() => uploadUrl), refresh, quickRetries, signal());
      expect(refreshes).toBe(1);
      expect(putsOfBlock(0).map((r) => r.status)).toEqual([403, 201]);
    });

    test("a second 403 after the fresh URL is final", async () => {
      const { url } = await blob();
      const uploadUrl = await url();
      proxy.rules.push({ method: "PUT", times: Infinity, fault: { kind: "status", status: 403 } });
      let refreshes = 0;
      const refresh = async () => {
        refreshes++;
      };
      await expect(withRetries(await send(() => uploadUrl), refresh, quickRetries, signal())).rejects.toMatchObject({
        status: 403,
      });
      expect([refreshes, putsOfBlock(0).length]).toEqual([1, 2]);
    });

    test("a failed refresh ends the retries with its own error", async () => {
      const { url } = await blob();
      const uploadUrl = await url();
      proxy.rules.push({ method: "PUT", fault: { kind: "status", status: 403 } });
      const refresh = () => Promise.reject(new Error("the upload session is no longer pending"));
      await expect(withRetries(await send(() => uploadUrl), refresh, quickRetries, signal())).rejects.toThrow(
        "the upload session is no longer pending",
      );
    });
  });

  describe("sendBlocks", () => {
    /** Every block of `content` (or those of `todo`) to a fresh blob, two in flight, without retries. */
    const send = async (content: Buffer, blockSize: number, opts: Partial<SendBlocksOptions> = {}) => {
      const { client, url } = await blob();
      const plan = planBlocks(content.length, blockSize);
      const sending = sendBlocks({
        target: target(await url()),
        source: new Blob([content]),
        plan,
        todo: plan,
        blocksInFlight: 2,
        put: fetchPut,
        policy: noRetries,
        refreshUrl: () => Promise.reject(new Error("no refresh expected")),
        signal: signal(),
        ...opts,
      });
      return { client, plan, sending };
    };

    test("sends only the missing blocks of a Blob, a few at a time, with progress", async () => {
      const progress: UploadProgress[] = [];
      const missing = planBlocks(10 * KIB, 2 * KIB).filter((b) => b.index !== 1);
      const { client, sending } = await send(randomBytes(10 * KIB), 2 * KIB, {
        todo: missing,
        onProgress: (p) => progress.push(p),
      });
      await sending;
      expect(proxy.requests.map((r) => putBlockIndex(r.path)).sort()).toEqual([0, 2, 3, 4]);
      expect(progress[0]).toEqual({ uploadedBytes: 2 * KIB, totalBytes: 10 * KIB, blocksDone: 1, blocksTotal: 5 });
      expect(progress.at(-1)).toEqual({ uploadedBytes: 10 * KIB, totalBytes: 10 * KIB, blocksDone: 5, blocksTotal: 5 });
      expect(progress.map((p) => p.blocksDone)).toEqual([1, 2, 3, 4, 5]);
      const staged = (await client.getBlockList("uncommitted")).uncommittedBlocks!.map((b) => b.name).sort();
      expect(staged).toEqual(missing.map((b) => b.id).sort());
    });

    test("a block that gives up stops new blocks from starting; the blocks in flight finish", async () => {
      proxy.rules.push(
        // Block 0 fails for good; block 1 is slow, and still stored.
        { method: "PUT", path: (p) => putBlockIndex(p) === 0, fault: { kind: "status", status: 400 } },
        { method: "PUT", path: (p) => putBlockIndex(p) === 1, delayMs: 300 },
      );
      const { sending } = await send(randomBytes(8 * KIB), KIB);
      await expect(sending).rejects.toMatchObject({ status: 400 });
      expect(proxy.requests.map((r) => [putBlockIndex(r.path), r.status])).toEqual([
        [0, 400],
        [1, 201],
      ]);
    });

    test("an abort stops sending at once", async () => {
      proxy.rules.push({ method: "PUT", times: Infinity, delayMs: 2_000 });
      const controller = new AbortController();
      const { sending } = await send(randomBytes(4 * KIB), KIB, { policy: quickRetries, signal: controller.signal });
      await new Promise((r) => setTimeout(r, 50));
      controller.abort();
      await expect(sending).rejects.toMatchObject({ name: "AbortError" });
      expect(proxy.requests.length).toBeLessThanOrEqual(2);
    });
  });
});
