import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { type EnsuredLora, LoraSource, PlacementService } from "@emprops/contracts";
import { loadConfig as machineConfig, type RunningMachineCache, startMachineCache } from "@emprops/machine-cache";
import { bearerInterceptor, createPeerTokenSigner, ManualClock, mintToken } from "@emprops/platform";
import {
  blobEndpointOf,
  eventually,
  type FaultProxy,
  freePort,
  randomLoraSafetensors,
  startFaultProxy,
  testEnv,
} from "@emprops/testkit";
import {
  machineClient,
  resolverClient,
  sha256,
  type UploadedLora,
  uploadUserLora,
  userBlobPath,
} from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * Three machine-caches of one pool on loopback, with the real registry,
 * gateway, Azurite (behind a counting fault proxy) and NATS: a LoRA one node
 * holds is fetched by the next from it, without a byte from the blob; a peer
 * that corrupts a byte, refuses, goes silent or dies mid-transfer leaves the fetching
 * node with the right file from the blob, resuming; a node's peer server
 * refuses what its token does not open. Node 1's peer server is reached
 * through a second fault proxy, so the test can make it misbehave.
 */

const POOL = "peer-pool";
const NODE1 = "peer-node-1";
const NODE2 = "peer-node-2";
const NODE3 = "peer-node-3";
const MIB = 1024 * 1024;
const keys = generateKeyPairSync("ed25519", {
  publicKeyEncoding: { type: "spki", format: "pem" },
  privateKeyEncoding: { type: "pkcs8", format: "pem" },
});

let t: TestStack;
let blob: FaultProxy;
/** In front of node 1's peer server: what node 1's peers reach. */
let node1Peer: FaultProxy;
let node2: RunningMachineCache;
let node3: RunningMachineCache;
const dirs: string[] = [];

const peerEnv = (listenPort: number, advertised = listenPort) => ({
  MACHINE_POOL: POOL,
  MACHINE_PEER_ADDRESS: `127.0.0.1:${advertised}`,
  PEER_LISTEN_ADDRESS: `127.0.0.1:${listenPort}`,
  PEER_TOKEN_PUBLIC_KEY: keys.publicKey,
  HOLDINGS_HEARTBEAT_SECONDS: "1",
  LORA_CACHE_MAX_GB: "1",
  MIN_FREE_SPACE_GB: "0",
  LORA_DOWNLOAD_RETRY_MIN_MS: "20",
  LORA_DOWNLOAD_RETRY_MAX_MS: "100",
  PEER_STALL_TIMEOUT_MS: "1000",
});

async function startNode(machineId: string, env: NodeJS.ProcessEnv): Promise<RunningMachineCache> {
  const machineDir = mkdtempSync(path.join(os.tmpdir(), `${machineId}-`));
  dirs.push(machineDir);
  const node = await startMachineCache(
    machineConfig({
      JWT_SECRET: t.jwtSecret,
      NATS_URL: testEnv().natsUrl,
      NATS_NAMESPACE: t.natsNamespace,
      LOG_LEVEL: "silent",
      MACHINE_CACHE_HOST: "127.0.0.1",
      MACHINE_CACHE_PORT: "0",
      MACHINE_ID: machineId,
      COMFYUI_LORA_DIR: path.join(machineDir, "models", "loras"),
      MODEL_CACHE_DB: path.join(machineDir, "model_cache.db"),
      REGISTRY_URL: t.stack.registry.url,
      ...env,
    }),
  );
  await node.ready;
  return node;
}

beforeAll(async () => {
  const node1Port = await freePort();
  node1Peer = await startFaultProxy(`http://127.0.0.1:${node1Port}`);
  t = await startTestStack("peer-fetch", {
    machineId: NODE1,
    azureConnectionString: async (c) => {
      blob = await startFaultProxy(blobEndpointOf(c.connectionString));
      return blob.viaConnectionString(c.connectionString);
    },
    env: {
      registry: { PEER_TOKEN_PRIVATE_KEY: keys.privateKey, PEER_FETCH_MAX_PEERS: "3" },
      machineCache: peerEnv(node1Port, Number(new URL(node1Peer.origin).port)),
    },
  });
  node2 = await startNode(NODE2, peerEnv(await freePort()));
  // Node 3 serves one peer at a time, slowly: the test holds its one upload open.
  node3 = await startNode(NODE3, {
    ...peerEnv(await freePort()),
    PEER_MAX_UPLOADS: "1",
    PEER_UPLOAD_MAX_MB_PER_SECOND: "0.25",
  });
  // Every node is in the index (its pool with it) before a resolution asks for peers.
  await eventually(async () => {
    const ranked = await scheduler().rankMachines({ userId: t.userId, refs: [], machineIds: [NODE1, NODE2, NODE3] });
    expect(ranked.machines.every((m) => m.reporting && m.pool === POOL)).toBe(true);
  });
});

afterAll(async () => {
  await Promise.all([node2?.stop(), node3?.stop()]);
  await t?.stop();
  await Promise.all([blob?.close(), node1Peer?.close()]);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  blob.reset();
  node1Peer.reset();
});

const scheduler = () =>
  createClient(
    PlacementService,
    createGrpcTransport({
      baseUrl: t.stack.registry.url,
      interceptors: [bearerInterceptor(() => mintToken(t.jwtSecret, { subject: "job-broker", roles: ["scheduler"] }))],
    }),
  );

const ref = (l: UploadedLora) => ({ source: LoraSource.USER, identifier: l.id });
const upload = (name: string, bytes = 4 * MIB) =>
  uploadUserLora(t.stack.registry.url, t.jwtSecret, t.userId, name, randomLoraSafetensors(bytes));

async function ensureOn(url: string, l: UploadedLora): Promise<EnsuredLora> {
  const res = await machineClient(url, t.jwtSecret).ensureLoras({ jobId: "job", userId: t.userId, refs: [ref(l)] });
  const result = res.results[0]!;
  if (result.error) throw new Error(`ensure failed: ${result.error.message}`);
  return result;
}

const holders = async (l: UploadedLora) =>
  (await scheduler().findLoraHolders({ userId: t.userId, refs: [ref(l)] })).loras[0]!.holders.map((h) => h.machineId);

/** Node 1 fetches the LoRA (from the blob) and the index lists it as a holder. */
async function heldByNode1(l: UploadedLora) {
  const first = await ensureOn(t.stack.machineCache.url, l);
  expect(first.cacheHit).toBe(false);
  await eventually(async () => expect(await holders(l)).toContain(NODE1));
}

const blobGets = (l: UploadedLora) =>
  blob.requests.filter((r) => r.method === "GET" && r.path.split("?")[0]!.endsWith(userBlobPath(l)));

test("a LoRA node 1 holds reaches node 2 from node 1, without a blob GET; placement ranks node 1 first", async () => {
  const l = await upload("peer-shared.safetensors");
  await heldByNode1(l);
  const ranked = await scheduler().rankMachines({
    userId: t.userId,
    refs: [ref(l)],
    machineIds: [NODE3, NODE2, NODE1],
  });
  expect(ranked.machines[0]).toEqual(
    expect.objectContaining({ machineId: NODE1, cachedBytes: BigInt(l.bytes.length) }),
  );

  // The resolution node 2 gets names node 1 (and only node 1) as its peer, with a token.
  const resolved = await resolverClient(t.stack.registry.url, t.jwtSecret).resolveLoras({
    userId: t.userId,
    jobId: "job",
    machineId: NODE2,
    refs: [ref(l)],
  });
  const offered = resolved.results[0]!.outcome.value as { peers: { machineId: string; token: string }[] };
  expect(offered.peers.map((p) => p.machineId)).toEqual([NODE1]);

  blob.reset();
  const ensured = await ensureOn(node2.url, l);
  expect(ensured.cacheHit).toBe(false);
  expect(sha256(readFileSync(ensured.absolutePath))).toBe(l.sha256);
  expect(blobGets(l)).toEqual([]);
  expect(node1Peer.requests.map((r) => r.status)).toEqual(expect.arrayContaining([206]));
  expect(node1Peer.requests.every((r) => r.status === 206)).toBe(true);

  // Now both hold it.
  await eventually(async () => expect((await holders(l)).sort()).toEqual([NODE1, NODE2]));
});

test("a peer that corrupts a byte: node 2 discards its bytes and ends with the right file from the blob", async () => {
  const l = await upload("peer-corrupt.safetensors");
  await heldByNode1(l);
  blob.reset();
  node1Peer.rules.push({ method: "GET", fault: { kind: "corrupt", atByte: 100_000 }, times: Infinity });
  const ensured = await ensureOn(node2.url, l);
  expect(sha256(readFileSync(ensured.absolutePath))).toBe(l.sha256);
  expect(node1Peer.requests.some((r) => r.fault === "corrupt")).toBe(true);
  // Every byte came again from the blob: the first blob read starts at 0.
  const reads = blobGets(l).filter((r) => r.status === 206 || r.status === 200);
  expect(reads.length).toBeGreaterThan(0);
  expect(reads[0]!.range).toMatch(/^bytes=0-/);
});

test("a peer that refuses: node 2 fetches from the blob", async () => {
  const l = await upload("peer-refuses.safetensors");
  await heldByNode1(l);
  blob.reset();
  node1Peer.rules.push({ method: "GET", fault: { kind: "status", status: 429 }, times: Infinity });
  const ensured = await ensureOn(node2.url, l);
  expect(sha256(readFileSync(ensured.absolutePath))).toBe(l.sha256);
  expect(node1Peer.requests.map((r) => r.status)).toContain(429);
  expect(blobGets(l).length).toBeGreaterThan(0);
});

test("a peer that dies mid-transfer: node 2 resumes from the blob where the peer stopped", async () => {
  const l = await upload("peer-dies.safetensors");
  await heldByNode1(l);
  blob.reset();
  const cutAt = Math.floor(2.5 * MIB);
  node1Peer.rules.push({ method: "GET", fault: { kind: "cut", afterBytes: cutAt }, times: Infinity });
  const ensured = await ensureOn(node2.url, l);
  expect(sha256(readFileSync(ensured.absolutePath))).toBe(l.sha256);
  expect(node1Peer.requests.some((r) => r.fault === "cut")).toBe(true);
  // The blob was asked only for what the peer had not sent.
  const reads = blobGets(l);
  expect(reads.length).toBeGreaterThan(0);
  const from = Math.min(...reads.map((r) => Number(/^bytes=(\d+)-/.exec(r.range ?? "")?.[1] ?? 0)));
  expect(from).toBeGreaterThan(0);
  expect(from).toBeLessThanOrEqual(cutAt);
});

test("a peer that goes silent: node 2 leaves it after PEER_STALL_TIMEOUT_MS and resumes from the blob", async () => {
  const l = await upload("peer-stalls.safetensors");
  await heldByNode1(l);
  blob.reset();
  const stallAt = 1 * MIB;
  node1Peer.rules.push({ method: "GET", fault: { kind: "stall", afterBytes: stallAt }, times: Infinity });
  const ensured = await ensureOn(node2.url, l);
  expect(sha256(readFileSync(ensured.absolutePath))).toBe(l.sha256);
  expect(node1Peer.requests.some((r) => r.fault === "stall")).toBe(true);
  const from = Math.min(...blobGets(l).map((r) => Number(/^bytes=(\d+)-/.exec(r.range ?? "")?.[1] ?? 0)));
  expect(from).toBeGreaterThan(0);
  expect(from).toBeLessThanOrEqual(stallAt);
});

test("an evicted copy leaves the index: node 1 is no longer offered as a peer", async () => {
  const l = await upload("peer-evicted.safetensors");
  await heldByNode1(l);
  const admin = machineClient(t.stack.machineCache.url, t.jwtSecret, ["admin"]);
  const evicted = await admin.evictLoras({ userId: t.userId, refs: [ref(l)] });
  expect(evicted.evicted.length).toBe(1);
  await eventually(async () => expect(await holders(l)).not.toContain(NODE1));
  const resolved = await resolverClient(t.stack.registry.url, t.jwtSecret).resolveLoras({
    userId: t.userId,
    jobId: "job",
    machineId: NODE2,
    refs: [ref(l)],
  });
  const offered = resolved.results[0]!.outcome.value as { peers: unknown[] };
  expect(offered.peers).toEqual([]);
});

describe("a node's peer server", () => {
  let l: UploadedLora;
  let other: UploadedLora;
  const sign = createPeerTokenSigner({ privateKeyPem: keys.privateKey }, { ttlSeconds: 120 });
  const urlOf = (node: RunningMachineCache, sha: string) => `${node.peer!.url}/peer/v1/sha256/${sha}`;
  const get = async (url: string, token?: string, headers: Record<string, string> = {}) => {
    const res = await fetch(url, { headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) } });
    const bytes = Buffer.from(await res.arrayBuffer());
    return { status: res.status, bytes, body: bytes.toString("utf8"), headers: res.headers };
  };

  beforeAll(async () => {
    l = await upload("peer-server.safetensors", 1 * MIB);
    other = await upload("peer-server-other.safetensors", 64 * 1024);
    await ensureOn(node3.url, l);
  });

  test("serves a range of a verified file with a token for it", async () => {
    const token = (await sign({ sha256: l.sha256, requester: NODE2, server: NODE3 })).token;
    const res = await get(urlOf(node3, l.sha256), token, { range: "bytes=10-19" });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes 10-19/${l.bytes.length}`);
    expect(res.bytes).toEqual(l.bytes.subarray(10, 20));
  });

  test("refuses without a token, with a bad or expired one, and with one for another file or machine", async () => {
    const url = urlOf(node3, l.sha256);
    const reasonOf = (body: string) => (JSON.parse(body) as { reason: string }).reason;
    const none = await get(url);
    expect([none.status, reasonOf(none.body)]).toEqual([401, "TOKEN_MISSING"]);
    const forged = await mintToken(t.jwtSecret, { subject: NODE2, roles: ["machine"] });
    const bad = await get(url, forged);
    expect([bad.status, reasonOf(bad.body)]).toEqual([401, "TOKEN_INVALID"]);
    const past = new ManualClock(new Date(Date.now() - 600_000));
    const old = await createPeerTokenSigner(
      { privateKeyPem: keys.privateKey },
      { ttlSeconds: 60, clock: past },
    )({
      sha256: l.sha256,
      requester: NODE2,
      server: NODE3,
    });
    const expired = await get(url, old.token);
    expect([expired.status, reasonOf(expired.body)]).toEqual([401, "TOKEN_EXPIRED"]);
    const otherFile = await sign({ sha256: other.sha256, requester: NODE2, server: NODE3 });
    const wrongFile = await get(url, otherFile.token);
    expect([wrongFile.status, reasonOf(wrongFile.body)]).toEqual([403, "PEER_TOKEN_MISMATCH"]);
    const otherMachine = await sign({ sha256: l.sha256, requester: NODE2, server: NODE1 });
    const wrongMachine = await get(url, otherMachine.token);
    expect([wrongMachine.status, reasonOf(wrongMachine.body)]).toEqual([403, "PEER_TOKEN_MISMATCH"]);
    // A token for a file this node does not hold opens nothing either.
    const notHeld = await get(urlOf(node3, other.sha256), otherFile.token);
    expect([notHeld.status, reasonOf(notHeld.body)]).toEqual([404, "LORA_NOT_FOUND"]);
  });

  test("answers 429 beyond PEER_MAX_UPLOADS", async () => {
    const token = (await sign({ sha256: l.sha256, requester: NODE2, server: NODE3 })).token;
    const slow = new AbortController();
    // At 0.25 MiB/s the whole file takes seconds: this upload holds node 3's one slot.
    const first = await fetch(urlOf(node3, l.sha256), {
      headers: { authorization: `Bearer ${token}` },
      signal: slow.signal,
    });
    expect(first.status).toBe(200);
    const second = await get(urlOf(node3, l.sha256), token);
    expect(second.status).toBe(429);
    expect(second.headers.get("retry-after")).toBe("1");
    expect((JSON.parse(second.body) as { reason: string }).reason).toBe("PEER_BUSY");
    slow.abort();
    await first.body?.cancel().catch(() => {});
  });
});
