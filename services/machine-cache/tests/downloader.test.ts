import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createLogger } from "@emprops/platform";
import {
  blobEndpointOf,
  createTestContainers,
  type TestContainers,
  type FaultProxy,
  startFaultProxy,
} from "@emprops/testkit";
import { Agent } from "undici";
import { PARTIAL_SUFFIX, SIDECAR_SUFFIX } from "../src/cache/cache-layout.js";
import { DownloadError, downloadFile, type DownloadSettings } from "../src/download/download-file.js";
import { HashPool } from "../src/download/hash-pool.js";
import { loadPartialState } from "../src/download/partial-state.js";
import { signedUrl, type TestBlob, uploadRandomBlob } from "./support/blobs.js";

const KIB = 1024;
const settings: DownloadSettings = {
  parallelThresholdBytes: 512 * KIB,
  partSizeBytes: 256 * KIB,
  partsPerFile: 3,
  maxAttempts: 3,
  retryMinMs: 10,
  retryMaxMs: 50,
  stallTimeoutMs: 1_000,
};
const logger = createLogger("downloader-test", "silent");

let containers: TestContainers;
let proxy: FaultProxy;
let dispatcher: Agent;
let hashes: HashPool;
let dir: string;
let small: TestBlob;
let large: TestBlob;
/** Longer than many write buffers (1 MiB each) per request. */
let long: TestBlob;

beforeAll(async () => {
  containers = await createTestContainers("downloader");
  proxy = await startFaultProxy(blobEndpointOf(containers.connectionString));
  dispatcher = new Agent();
  hashes = new HashPool();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "mc-downloader-"));
  [small, large, long] = await Promise.all([
    uploadRandomBlob(containers.connectionString, containers.userContainer, "small.safetensors", 300 * KIB),
    uploadRandomBlob(containers.connectionString, containers.userContainer, "large.safetensors", 2 * 1024 * KIB + 123),
    uploadRandomBlob(containers.connectionString, containers.userContainer, "long.safetensors", 24 * 1024 * KIB + 7),
  ]);
});

afterAll(async () => {
  await dispatcher?.close();
  await hashes?.close();
  await proxy?.close();
  await containers?.cleanup();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

beforeEach(() => proxy.reset());

let n = 0;
const target = () => path.join(dir, `lora-${++n}.safetensors`);

async function download(blob: TestBlob, finalPath: string, overrides: Partial<DownloadSettings> = {}) {
  const url = proxy.via(await blob.sasUrl());
  return downloadFile(
    { finalPath, sizeBytes: blob.bytes.length, sha256: blob.sha256, url: async () => url },
    { ...settings, ...overrides },
    { dispatcher, logger, hashes },
  );
}

async function expectOnlyFinalFile(finalPath: string, blob: TestBlob) {
  expect((await fs.readFile(finalPath)).equals(blob.bytes)).toBe(true);
  await expect(fs.stat(finalPath + PARTIAL_SUFFIX)).rejects.toMatchObject({ code: "ENOENT" });
  await expect(fs.stat(finalPath + SIDECAR_SUFFIX)).rejects.toMatchObject({ code: "ENOENT" });
}

test("a small file arrives in one ranged stream with its sha256 checked", async () => {
  const file = target();
  const result = await download(small, file);
  expect(result).toEqual({
    sha256: small.sha256,
    bytesDownloaded: small.bytes.length,
    bytesFromPeers: 0,
    attempts: 1,
    resumed: false,
    connections: 1,
    partBytes: settings.partSizeBytes,
  });
  expect(proxy.requests.map((r) => r.range)).toEqual([`bytes=0-${small.bytes.length - 1}`]);
  await expectOnlyFinalFile(file, small);
});

test("a large file arrives in parallel ranged requests covering each byte once, longest first, on kept-alive connections", async () => {
  const file = target();
  const connectionsBefore = proxy.connections();
  const result = await download(large, file);
  expect(result).toMatchObject({ sha256: large.sha256, bytesDownloaded: large.bytes.length, connections: 3 });
  const ranges = proxy.requests
    .map(
      (r) =>
        /bytes=(\d+)-(\d+)/
          .exec(r.range ?? "")!
          .slice(1)
          .map(Number) as [number, number],
    )
    .sort((a, b) => a[0] - b[0]);
  // The ranges tile the file: no byte asked for twice, none left out, each run ending on a part boundary.
  let at = 0;
  for (const [from, to] of ranges) {
    expect(from).toBe(at);
    expect((to + 1) % settings.partSizeBytes === 0 || to + 1 === large.bytes.length).toBe(true);
    at = to + 1;
  }
  expect(at).toBe(large.bytes.length);
  // 9 parts for 3 connections: runs of 2, 2, then single parts.
  const sizes = ranges.map(([from, to]) => Math.ceil((to + 1 - from) / settings.partSizeBytes));
  expect(sizes).toEqual([2, 2, 1, 1, 1, 1, 1]);
  // Each connection's next run rides on it: 7 requests, at most 3 new connections.
  expect(proxy.connections() - connectionsBefore).toBeLessThanOrEqual(3);
  await expectOnlyFinalFile(file, large);
});

test("responses many write buffers long arrive intact, in one stream and in parallel runs", async () => {
  const one = target();
  const single = await download(long, one, { parallelThresholdBytes: 1024 * 1024 * KIB });
  expect(single).toMatchObject({ sha256: long.sha256, connections: 1, bytesDownloaded: long.bytes.length });
  await expectOnlyFinalFile(one, long);
  const many = target();
  const parallel = await download(long, many, { partSizeBytes: 3 * 1024 * KIB, partsPerFile: 2 });
  expect(parallel).toMatchObject({ sha256: long.sha256, connections: 2, bytesDownloaded: long.bytes.length });
  await expectOnlyFinalFile(many, long);
});

test("a response cut mid-stream resumes from the bytes already written", async () => {
  const file = target();
  proxy.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: 100 * KIB } });
  const result = await download(small, file);
  expect(result.attempts).toBe(2);
  expect(result.resumed).toBe(true);
  // Nothing fetched twice: the second request starts where the cut left off.
  expect(result.bytesDownloaded).toBe(small.bytes.length);
  const resumedFrom = Number(/bytes=(\d+)-/.exec(proxy.requests[1]?.range ?? "")?.[1]);
  expect(resumedFrom).toBeGreaterThan(0);
  expect(resumedFrom).toBeLessThanOrEqual(100 * KIB);
  await expectOnlyFinalFile(file, small);
});

test("a corrupted download is rejected and fetched again", async () => {
  const file = target();
  proxy.rules.push({ method: "GET", fault: { kind: "corrupt", atByte: 4321 } });
  const result = await download(small, file);
  expect(result).toMatchObject({ sha256: small.sha256, attempts: 2 });
  expect(result.bytesDownloaded).toBe(2 * small.bytes.length);
  await expectOnlyFinalFile(file, small);
});

test("a download corrupted on every attempt fails with a checksum error and leaves nothing behind", async () => {
  const file = target();
  proxy.rules.push({ method: "GET", times: settings.maxAttempts, fault: { kind: "corrupt", atByte: 10 } });
  const failure = await download(small, file).catch((err: unknown) => err);
  expect(failure).toBeInstanceOf(DownloadError);
  expect(failure).toMatchObject({ kind: "checksum", attempts: settings.maxAttempts });
  expect(await fs.readdir(dir)).not.toEqual(expect.arrayContaining([path.basename(file) + PARTIAL_SUFFIX]));
  await expect(fs.stat(file)).rejects.toMatchObject({ code: "ENOENT" });
});

test("an expired read URL is replaced by a fresh one", async () => {
  const file = target();
  const expired = proxy.via(await small.sasUrl(-60_000));
  const fresh = proxy.via(await small.sasUrl());
  const asked: boolean[] = [];
  const result = await downloadFile(
    {
      finalPath: file,
      sizeBytes: small.bytes.length,
      sha256: small.sha256,
      url: async (refresh) => {
        asked.push(refresh);
        return refresh ? fresh : expired;
      },
    },
    settings,
    { dispatcher, logger, hashes },
  );
  expect(asked).toEqual([false, true]);
  expect(result.attempts).toBe(2);
  await expectOnlyFinalFile(file, small);
});

test("a missing blob fails at once as not found", async () => {
  const file = target();
  const url = proxy.via(await signedUrl(containers.connectionString, containers.userContainer, "absent.safetensors"));
  const failure = await downloadFile({ finalPath: file, sizeBytes: 10, sha256: "", url: async () => url }, settings, {
    dispatcher,
    logger,
    hashes,
  }).catch((err: unknown) => err);
  expect(failure).toMatchObject({ kind: "not_found", attempts: 1 });
  expect(proxy.requests).toHaveLength(1);
});

test("a server error is retried with backoff", async () => {
  const file = target();
  proxy.rules.push(
    { method: "GET", fault: { kind: "status", status: 503 } },
    { method: "GET", fault: { kind: "status", status: 500 } },
  );
  const result = await download(small, file);
  expect(result.attempts).toBe(3);
  await expectOnlyFinalFile(file, small);
});

test("a stalled response is cut after the stall timeout and resumed", async () => {
  const file = target();
  proxy.rules.push({ method: "GET", fault: { kind: "stall", afterBytes: 50 * KIB } });
  const result = await download(small, file, { stallTimeoutMs: 300 });
  expect(result).toMatchObject({ attempts: 2, resumed: true, sha256: small.sha256 });
  await expectOnlyFinalFile(file, small);
});

test("another process resumes a partial download from its sidecar", async () => {
  const file = target();
  proxy.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: 100 * KIB } });
  const failure = await download(large, file, { maxAttempts: 1 }).catch((err: unknown) => err);
  expect(failure).toMatchObject({ kind: "failed", attempts: 1 });
  const parts = await loadPartialState(file + SIDECAR_SUFFIX, { sizeBytes: large.bytes.length, sha256: large.sha256 });
  const kept = (parts ?? []).reduce((s, p) => s + p.done, 0);
  expect(kept).toBeGreaterThan(0);

  const result = await download(large, file);
  expect(result).toMatchObject({ resumed: true, attempts: 1, sha256: large.sha256 });
  expect(result.bytesDownloaded).toBe(large.bytes.length - kept);
  await expectOnlyFinalFile(file, large);
});

test("a sidecar describing other content is ignored", async () => {
  const file = target();
  proxy.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: 100 * KIB } });
  await download(large, file, { maxAttempts: 1 }).catch(() => undefined);
  const url = proxy.via(await small.sasUrl());
  const result = await downloadFile(
    { finalPath: file, sizeBytes: small.bytes.length, sha256: small.sha256, url: async () => url },
    settings,
    { dispatcher, logger, hashes },
  );
  expect(result).toMatchObject({ resumed: false, bytesDownloaded: small.bytes.length });
  await expectOnlyFinalFile(file, small);
});

describe("peers as sources of the same download", () => {
  /** A second server of the same bytes, as a peer of the pool would be. */
  let peer: FaultProxy;

  beforeAll(async () => {
    peer = await startFaultProxy(blobEndpointOf(containers.connectionString));
  });
  afterAll(async () => {
    await peer?.close();
  });
  beforeEach(() => peer.reset());

  async function viaPeers(blob: TestBlob, finalPath: string, peers: { machineId: string; proxy: FaultProxy }[]) {
    const url = await blob.sasUrl();
    const failures: [string, string][] = [];
    const result = await downloadFile(
      {
        finalPath,
        sizeBytes: blob.bytes.length,
        sha256: blob.sha256,
        url: async () => proxy.via(url),
        peers: peers.map((p) => ({ machineId: p.machineId, url: p.proxy.via(url), headers: {} })),
        onPeerFailure: (p, reason) => failures.push([p.machineId, reason]),
      },
      { ...settings, peerConnections: 1 },
      { dispatcher, logger, hashes },
    );
    return { result, failures };
  }

  const starts = (p: FaultProxy) => p.requests.map((r) => Number(/bytes=(\d+)-/.exec(r.range ?? "")?.[1]));

  test("a peer that serves the file: nothing from the blob", async () => {
    const file = target();
    const { result, failures } = await viaPeers(large, file, [{ machineId: "peer-a", proxy: peer }]);
    expect(result).toMatchObject({ sha256: large.sha256, bytesFromPeers: large.bytes.length, attempts: 1 });
    expect(failures).toEqual([]);
    expect(proxy.requests).toEqual([]);
    await expectOnlyFinalFile(file, large);
  });

  test("a peer that drops mid-file: the blob sends only the rest, every byte asked for once", async () => {
    const file = target();
    peer.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: 300 * KIB }, times: Infinity });
    const { result, failures } = await viaPeers(large, file, [{ machineId: "peer-a", proxy: peer }]);
    expect(failures).toEqual([["peer-a", "vanished"]]);
    expect(result).toMatchObject({ sha256: large.sha256, attempts: 1, resumed: true, bytesFromPeers: 300 * KIB });
    expect(result.bytesDownloaded).toBe(large.bytes.length);
    expect(Math.min(...starts(proxy))).toBe(300 * KIB);
    await expectOnlyFinalFile(file, large);
  });

  test("a peer that refuses is left for the next peer", async () => {
    const file = target();
    const refusing = await startFaultProxy(blobEndpointOf(containers.connectionString));
    try {
      refusing.rules.push({ method: "GET", fault: { kind: "status", status: 403 }, times: Infinity });
      const { result, failures } = await viaPeers(small, file, [
        { machineId: "peer-refusing", proxy: refusing },
        { machineId: "peer-a", proxy: peer },
      ]);
      expect(failures).toEqual([["peer-refusing", "refused"]]);
      expect(result).toMatchObject({ sha256: small.sha256, bytesFromPeers: small.bytes.length, attempts: 1 });
      expect(proxy.requests).toEqual([]);
      await expectOnlyFinalFile(file, small);
    } finally {
      await refusing.close();
    }
  });

  test("a peer that corrupts a byte: everything is discarded and fetched again from the blob alone", async () => {
    const file = target();
    peer.rules.push({ method: "GET", fault: { kind: "corrupt", atByte: 1000 }, times: Infinity });
    const { result, failures } = await viaPeers(large, file, [
      { machineId: "peer-a", proxy: peer },
      { machineId: "peer-b", proxy: peer },
    ]);
    expect(failures).toEqual([["peer-a", "corrupt"]]);
    expect(result).toMatchObject({ sha256: large.sha256, attempts: 2 });
    // The second attempt asked the blob for every byte, and no peer again.
    expect(Math.min(...starts(proxy))).toBe(0);
    expect(peer.requests.length).toBeGreaterThan(0);
    expect(result.bytesDownloaded - result.bytesFromPeers).toBe(large.bytes.length);
    await expectOnlyFinalFile(file, large);
  });
});
