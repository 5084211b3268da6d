import { fromBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { eventNames, LoraSource, MachineHoldingsReportedSchema, PlacementService } from "@emprops/contracts";
import { bearerInterceptor, mintToken } from "@emprops/platform";
import { eventually, randomLoraSafetensors, readStream, testEnv } from "@emprops/testkit";
import { machineClient, type UploadedLora, uploadUserLora } from "./machine-support.js";
import { startTestStack, type TestStack } from "./support/test-stack.js";

/*
 * What a machine holds reaches the registry's holdings index: the real
 * machine-cache downloads and evicts, its reports go through the real NATS
 * stream, and the scheduler sees them through the placement RPCs.
 */

const MACHINE = "holdings-node-1";
let t: TestStack;
let lora: UploadedLora;

beforeAll(async () => {
  t = await startTestStack("holdings", {
    machineId: MACHINE,
    env: {
      machineCache: {
        MACHINE_POOL: "gpu-pool-a",
        MACHINE_PEER_ADDRESS: "10.0.0.7:50054",
        HOLDINGS_HEARTBEAT_SECONDS: "1",
        LORA_CACHE_MAX_GB: "1",
      },
    },
  });
  lora = await uploadUserLora(
    t.stack.registry.url,
    t.jwtSecret,
    t.userId,
    "holdings.safetensors",
    randomLoraSafetensors(300 * 1024),
  );
});

afterAll(async () => {
  await t?.stop();
});

const scheduler = () =>
  createClient(
    PlacementService,
    createGrpcTransport({
      baseUrl: t.stack.registry.url,
      interceptors: [bearerInterceptor(() => mintToken(t.jwtSecret, { subject: "job-broker", roles: ["scheduler"] }))],
    }),
  );

const holders = async () => {
  const res = await scheduler().findLoraHolders({
    userId: t.userId,
    refs: [{ source: LoraSource.USER, identifier: lora.id }],
  });
  return res.loras[0]!.holders;
};

test("a download is reported with its sha256 and size, ranked first, and its eviction removes it", async () => {
  const machine = machineClient(t.stack.machineCache.url, t.jwtSecret);
  const ref = { source: LoraSource.USER, identifier: lora.id };
  const ensured = await machine.ensureLoras({ jobId: "job-1", userId: t.userId, refs: [ref] });
  expect(ensured.results[0]?.cacheHit).toBe(false);

  await eventually(async () =>
    expect(await holders()).toEqual([
      expect.objectContaining({ machineId: MACHINE, pool: "gpu-pool-a", peerAddress: "10.0.0.7:50054" }),
    ]),
  );
  const names = eventNames(t.natsNamespace);
  const deltas = (await readStream(testEnv().natsUrl, names.holdings.stream.name))
    .map((m) => fromBinary(MachineHoldingsReportedSchema, m.data))
    .filter((r) => r.report.case === "delta");
  expect(deltas.map((r) => r.report.value)).toEqual([
    expect.objectContaining({
      added: [
        expect.objectContaining({
          source: LoraSource.USER,
          identifier: lora.id,
          userId: t.userId,
          sha256: lora.sha256,
          sizeBytes: BigInt(lora.bytes.length),
        }),
      ],
    }),
  ]);

  const ranked = await scheduler().rankMachines({ userId: t.userId, refs: [ref], machineIds: ["elsewhere", MACHINE] });
  expect(ranked.machines.map((m) => [m.machineId, m.cachedBytes, m.downloadRefIndexes])).toEqual([
    [MACHINE, BigInt(lora.bytes.length), []],
    ["elsewhere", 0n, [0]],
  ]);

  const admin = machineClient(t.stack.machineCache.url, t.jwtSecret, ["admin"]);
  const evicted = await admin.evictLoras({ userId: t.userId });
  expect(evicted.evicted.length).toBe(1);
  await eventually(async () => expect(await holders()).toEqual([]));
  // The stream also keeps the machine's latest snapshot and heartbeat (what a registry replica starts from).
  await eventually(async () => {
    const subjects = (await readStream(testEnv().natsUrl, names.holdings.stream.name)).map((m) => m.subject);
    expect(subjects).toEqual(
      expect.arrayContaining([names.holdings.snapshot(MACHINE), names.holdings.heartbeat(MACHINE)]),
    );
  });
});
