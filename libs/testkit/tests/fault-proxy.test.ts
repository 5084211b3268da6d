import { randomBytes } from "node:crypto";
import http from "node:http";
import { BlobServiceClient, type BlockBlobClient } from "@azure/storage-blob";
import { blockId } from "@emprops/contracts";
import {
  blobEndpointOf,
  createProxiedTestContainers,
  type FaultProxy,
  putBlockIndex,
  startFaultProxy,
  type TestContainers,
} from "@emprops/testkit";

const KIB = 1024;

describe("the fault proxy in front of Azurite", () => {
  let containers: TestContainers;
  let proxy: FaultProxy;
  let stop: (() => Promise<void>) | undefined;
  let n = 0;

  /** A fresh blob (with `content`, if given) and a read-write signed URL of it through the proxy. */
  const blob = async (content?: Buffer): Promise<{ client: BlockBlobClient; url: string }> => {
    const { client, signedUrl } = containers.userBlob(`blob-${++n}.bin`);
    if (content) await client.uploadData(content);
    return { client, url: proxy.via(await signedUrl("rcw")) };
  };
  const putBlock = (url: string, index: number, body: Buffer) =>
    fetch(`${url}&comp=block&blockid=${encodeURIComponent(blockId(index))}`, { method: "PUT", body });
  /** [id, size] of the blocks staged on a blob; none while the blob does not exist. */
  const stagedBlocks = (client: BlockBlobClient) =>
    client.getBlockList("uncommitted").then(
      (list) => list.uncommittedBlocks?.map((b) => [b.name, b.size]) ?? [],
      (err: { statusCode?: number }) => {
        if (err.statusCode === 404) return [];
        throw err;
      },
    );

  beforeAll(async () => ({ containers, proxy, stop } = await createProxiedTestContainers("fault-proxy")));
  afterAll(() => stop?.());

  beforeEach(() => proxy.reset());

  test("without rules it forwards every request and records method, path, range and status", async () => {
    const content = randomBytes(10 * KIB);
    const { url } = await blob(content);
    const res = await fetch(url, { headers: { range: "bytes=100-199" } });
    expect(res.status).toBe(206);
    expect(Buffer.from(await res.arrayBuffer()).equals(content.subarray(100, 200))).toBe(true);
    expect((await putBlock(url, 3, Buffer.from("abc"))).status).toBe(201);
    expect(proxy.requests).toEqual([
      { method: "GET", path: new URL(url).pathname + new URL(url).search, range: "bytes=100-199", status: 206 },
      { method: "PUT", path: expect.stringContaining("comp=block"), range: undefined, status: 201 },
    ]);
    expect(putBlockIndex(proxy.requests[1]!.path)).toBe(3);
    expect(putBlockIndex(proxy.requests[0]!.path)).toBe(-1);
  });

  test("the storage SDK works through viaConnectionString", async () => {
    const through = BlobServiceClient.fromConnectionString(proxy.viaConnectionString(containers.connectionString));
    const client = through.getContainerClient(containers.userContainer).getBlockBlobClient("sdk.bin");
    await client.uploadData(Buffer.from("through the proxy"));
    expect((await client.downloadToBuffer()).toString()).toBe("through the proxy");
    expect(proxy.requests.map((r) => r.method)).toEqual(["PUT", "HEAD", "GET"]);
    expect(proxy.requests.every((r) => r.path.startsWith(`/devstoreaccount1/${containers.userContainer}/`))).toBe(true);
  });

  describe("downloads (GET)", () => {
    test("status: answers instead of the origin, with x-ms-error-code", async () => {
      const { url } = await blob(randomBytes(KIB));
      proxy.rules.push({ method: "GET", fault: { kind: "status", status: 503, errorCode: "ServerBusy" } });
      const refused = await fetch(url);
      expect(refused.status).toBe(503);
      expect(refused.headers.get("x-ms-error-code")).toBe("ServerBusy");
      expect(await refused.text()).toContain("<Code>ServerBusy</Code>");
      // The rule applied once; the next GET reaches the origin.
      expect((await fetch(url)).status).toBe(200);
      expect(proxy.requests.map((r) => [r.status, r.fault])).toEqual([
        [503, "status"],
        [200, undefined],
      ]);
    });

    test("cut: the response breaks off after N body bytes", async () => {
      const { url } = await blob(randomBytes(300 * KIB));
      proxy.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: 100 * KIB } });
      const res = await fetch(url);
      expect(res.status).toBe(200);
      let received = 0;
      const reading = (async () => {
        for await (const chunk of res.body!) received += (chunk as Uint8Array).length;
      })();
      await expect(reading).rejects.toThrow();
      expect(received).toBe(100 * KIB);
    });

    test("corrupt: the byte at the offset arrives flipped, every other byte intact", async () => {
      const content = randomBytes(64 * KIB);
      const { url } = await blob(content);
      proxy.rules.push({ method: "GET", fault: { kind: "corrupt", atByte: 40_000 } });
      const got = Buffer.from(await (await fetch(url)).arrayBuffer());
      expect(got.length).toBe(content.length);
      expect(got[40_000]).toBe(content[40_000]! ^ 0xff);
      got[40_000] = content[40_000]!;
      expect(got.equals(content)).toBe(true);
    });

    test("stall: N body bytes, then nothing while the connection stays open", async () => {
      const { url } = await blob(randomBytes(200 * KIB));
      proxy.rules.push({ method: "GET", fault: { kind: "stall", afterBytes: 10 * KIB } });
      const controller = new AbortController();
      const res = await fetch(url, { signal: controller.signal });
      const reader = res.body!.getReader();
      let received = 0;
      while (received < 10 * KIB) received += (await reader.read()).value!.length;
      expect(received).toBe(10 * KIB);
      // Nothing more comes; the connection is still open, so the read only ends when the client gives up.
      const next = reader.read();
      const outcome = await Promise.race([next.then(() => "data"), new Promise((r) => setTimeout(r, 300, "silent"))]);
      expect(outcome).toBe("silent");
      controller.abort();
      await expect(next).rejects.toThrow();
    });

    test("delay: the request waits, then reaches the origin", async () => {
      const { url } = await blob(Buffer.from("late"));
      proxy.rules.push({ method: "GET", delayMs: 200 });
      const started = performance.now();
      const res = await fetch(url);
      expect(await res.text()).toBe("late");
      // A lower bound only: the timer waits at least this long.
      expect(performance.now() - started).toBeGreaterThanOrEqual(195);
      expect(proxy.requests[0]).toMatchObject({ status: 200, fault: "delay" });
    });
  });

  describe("uploads (PUT)", () => {
    test("cut after 0 bytes: the client sees a failed connection and the block never reaches storage", async () => {
      const { client, url } = await blob();
      proxy.rules.push({ method: "PUT", path: (p) => putBlockIndex(p) === 0, fault: { kind: "cut", afterBytes: 0 } });
      await expect(putBlock(url, 0, randomBytes(64 * KIB))).rejects.toThrow();
      expect((await putBlock(url, 1, randomBytes(KIB))).status).toBe(201);
      expect(await stagedBlocks(client)).toEqual([[blockId(1), KIB]]);
      expect(proxy.requests.map((r) => [putBlockIndex(r.path), r.status, r.fault])).toEqual([
        [0, 0, "cut"],
        [1, 201, undefined],
      ]);
    });

    test("cut after N bytes: part of the body is sent, and storage keeps nothing of it", async () => {
      const { client, url } = await blob();
      proxy.rules.push({ method: "PUT", fault: { kind: "cut", afterBytes: 100 * KIB } });
      await expect(putBlock(url, 0, randomBytes(300 * KIB))).rejects.toThrow();
      expect(await stagedBlocks(client)).toEqual([]);
    });

    test("corrupt: storage stores the block with the byte flipped", async () => {
      const { client, url } = await blob();
      const content = randomBytes(32 * KIB);
      proxy.rules.push({ method: "PUT", fault: { kind: "corrupt", atByte: 5 } });
      expect((await putBlock(url, 0, content)).status).toBe(201);
      await client.commitBlockList([blockId(0)]);
      const stored = await client.downloadToBuffer();
      expect(stored[5]).toBe(content[5]! ^ 0xff);
      stored[5] = content[5]!;
      expect(stored.equals(content)).toBe(true);
    });

    test("status 403 refuses a Put Block as an expired signed URL would", async () => {
      const { client, url } = await blob();
      proxy.rules.push({ method: "PUT", fault: { kind: "status", status: 403, errorCode: "AuthenticationFailed" } });
      const refused = await putBlock(url, 0, randomBytes(KIB));
      expect([refused.status, refused.headers.get("x-ms-error-code")]).toEqual([403, "AuthenticationFailed"]);
      expect(await stagedBlocks(client)).toEqual([]);
    });
  });

  describe("rules", () => {
    test("a rule takes only requests matching its method, path and range; `times` counts its uses", async () => {
      const { url } = await blob(randomBytes(4 * KIB));
      proxy.rules.push({
        method: "GET",
        path: /\.bin\?/,
        range: /^bytes=0-/,
        times: 2,
        fault: { kind: "status", status: 500 },
      });
      const get = (range?: string) => fetch(url, range ? { headers: { range } } : {}).then((r) => r.status);
      expect(await get("bytes=100-200")).toBe(206);
      expect(await get()).toBe(200);
      expect((await putBlock(url, 0, Buffer.from("x"))).status).toBe(201);
      expect(await get("bytes=0-99")).toBe(500);
      expect(await get("bytes=0-99")).toBe(500);
      expect(await get("bytes=0-99")).toBe(206);
      expect(proxy.rules).toEqual([]);
    });

    test("rules apply in order, each to the next request it matches", async () => {
      const { url } = await blob(randomBytes(KIB));
      proxy.rules.push(
        { method: "GET", fault: { kind: "status", status: 503 } },
        { method: "GET", fault: { kind: "status", status: 500 } },
      );
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await fetch(url)).status);
      expect(statuses).toEqual([503, 500, 200]);
    });

    test("putBlockIndex reads the index of a Put Block URL and -1 for any other", () => {
      expect(putBlockIndex(`http://h/c/b?sv=1&comp=block&blockid=${encodeURIComponent(blockId(42))}`)).toBe(42);
      expect(putBlockIndex(new URL(`http://h/c/b?comp=block&blockid=${encodeURIComponent(btoa("other"))}`))).toBe(-1);
      expect(putBlockIndex("/c/b?comp=blocklist")).toBe(-1);
    });
  });

  // Shaping guarantees a floor, never a ceiling: these assert only that nothing crossed the link faster than
  // its shape allows (a machine under load may be slower still), and that every byte arrived intact.
  describe("a shaped link", () => {
    const MIB = 1024 * 1024;
    let shaped: FaultProxy | undefined;
    afterEach(async () => {
      await shaped?.close();
      shaped = undefined;
    });
    const timed = async <T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> => {
      const started = performance.now();
      const value = await fn();
      return { value, ms: performance.now() - started };
    };
    const download = async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer());

    test("one connection carries at most connectionBytesPerSecond, every byte intact", async () => {
      const content = randomBytes(2 * MIB);
      const { url } = await blob(content);
      shaped = await startFaultProxy(blobEndpointOf(containers.connectionString), {
        shape: { connectionBytesPerSecond: 4 * MIB },
      });
      const { value, ms } = await timed(() => download(shaped!.via(url)));
      expect(value.equals(content)).toBe(true);
      // 2 MiB at 4 MiB/s, less the burst credit.
      expect(ms).toBeGreaterThanOrEqual(450);
    });

    test("all connections together carry at most totalBytesPerSecond", async () => {
      const contents = [randomBytes(MIB), randomBytes(MIB)];
      const urls = await Promise.all(contents.map(async (c) => (await blob(c)).url));
      shaped = await startFaultProxy(blobEndpointOf(containers.connectionString), {
        shape: { totalBytesPerSecond: 4 * MIB },
      });
      const { value, ms } = await timed(() => Promise.all(urls.map((u) => download(shaped!.via(u)))));
      expect(value.map((v, i) => v.equals(contents[i]!))).toEqual([true, true]);
      expect(shaped.connections()).toBe(2);
      expect(ms).toBeGreaterThanOrEqual(450);
    });

    test("uploads are paced too", async () => {
      const { client, url } = await blob();
      shaped = await startFaultProxy(blobEndpointOf(containers.connectionString), {
        shape: { connectionBytesPerSecond: 2 * MIB },
      });
      const content = randomBytes(MIB);
      const { value, ms } = await timed(() => putBlock(shaped!.via(url), 0, content));
      expect(value.status).toBe(201);
      expect(ms).toBeGreaterThanOrEqual(450);
      await client.commitBlockList([blockId(0)]);
      expect((await client.downloadToBuffer()).equals(content)).toBe(true);
    });

    test("rttMs delays each answer by a round trip, a new connection's first by two", async () => {
      const content = randomBytes(KIB);
      const { url } = await blob(content);
      shaped = await startFaultProxy(blobEndpointOf(containers.connectionString), { shape: { rttMs: 150 } });
      // One keep-alive connection, so the second request rides on the first one's connection.
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const get = (u: string) =>
        new Promise<Buffer>((resolve, reject) => {
          http
            .get(u, { agent }, (res) => {
              const chunks: Buffer[] = [];
              res.on("data", (c: Buffer) => chunks.push(c));
              res.on("end", () => resolve(Buffer.concat(chunks)));
            })
            .on("error", reject);
        });
      try {
        const first = await timed(() => get(shaped!.via(url)));
        const second = await timed(() => get(shaped!.via(url)));
        expect([first.value.equals(content), second.value.equals(content)]).toEqual([true, true]);
        expect(shaped.connections()).toBe(1);
        expect(first.ms).toBeGreaterThanOrEqual(300);
        expect(second.ms).toBeGreaterThanOrEqual(150);
      } finally {
        agent.destroy();
      }
    });
  });
});
