import { createHash } from "node:crypto";
import { BlobGatewayService, ErrorReason, ValidationStatus } from "@emprops/contracts";
import { createServiceClient, mintToken } from "@emprops/platform";
import {
  blobEndpointOf,
  callPickle,
  eventually,
  type FaultProxy,
  randomLoraSafetensors,
  startFaultProxy,
  torchZip,
} from "@emprops/testkit";
import { loadConfig, startBlobGateway } from "../src/index.js";
import { type GatewayUnderTest, JWT_SECRET, startGatewayForTest } from "./support/start-gateway.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Long enough for a small file's verification on a busy machine; the pending test holds its reads longer. */
const VERIFY_WAIT_MS = 3000;

let t: GatewayUnderTest;
let proxy: FaultProxy;

beforeAll(async () => {
  // Storage through a fault proxy: reads of a shared blob are counted, and can be held back.
  t = await startGatewayForTest(
    "shared-verification",
    { SHARED_LORA_VERIFY_WAIT_MS: String(VERIFY_WAIT_MS) },
    async (c) => {
      proxy = await startFaultProxy(blobEndpointOf(c.connectionString));
      return proxy.viaConnectionString(c.connectionString);
    },
  );
});

afterAll(async () => {
  await t?.stop();
  await proxy?.close();
});

beforeEach(() => proxy.reset());

let n = 0;
const freshName = (ext = "safetensors") => `shared-${++n}-${Date.now()}.${ext}`;
const blobOf = (name: string) => t.sharedContainer.getBlockBlobClient(`models/loras/${name}`);
const resolve = (...names: string[]) =>
  t.client.createDownloadUrls({ targets: names.map((name) => ({ target: { case: "sharedLora", value: { name } } })) });
/** Reads of the blob's bytes as the gateway made them (HEADs are not GETs). */
const contentReads = (name: string) =>
  proxy.requests.filter((r) => r.method === "GET" && decodeURIComponent(r.path).includes(`/models/loras/${name}`))
    .length;

describe("shared LoRAs are verified before they are signed", () => {
  it("verifies the first resolution, records sha256 and size in the blob's metadata, then answers from memory", async () => {
    const name = freshName();
    const bytes = randomLoraSafetensors(30_000);
    await blobOf(name).uploadData(bytes);

    const [first] = (await resolve(name)).urls;
    expect(first?.verification).toMatchObject({ status: ValidationStatus.SAFE, sha256: sha256(bytes) });
    expect(first?.sizeBytes).toBe(BigInt(bytes.length));
    expect(first?.url).toContain("sig=");
    const props = await blobOf(name).getProperties();
    expect(props.metadata).toMatchObject({ sha256: sha256(bytes), size_bytes: String(bytes.length) });
    expect(contentReads(name)).toBe(1);

    const [again] = (await resolve(name)).urls;
    expect(again?.verification?.sha256).toBe(sha256(bytes));
    expect(contentReads(name)).toBe(1);
    // The metadata write is this process's own: the blob's ETag did not change again.
    expect((await blobOf(name).getProperties()).etag).toBe(props.etag);
  });

  it("verifies again whenever the blob's ETag changes", async () => {
    const name = freshName();
    await blobOf(name).uploadData(randomLoraSafetensors(5000));
    await resolve(name);
    const replacement = randomLoraSafetensors(7000);
    await blobOf(name).uploadData(replacement);
    const [after] = (await resolve(name)).urls;
    expect(after?.verification).toMatchObject({ status: ValidationStatus.SAFE, sha256: sha256(replacement) });
    expect(after?.sizeBytes).toBe(BigInt(replacement.length));
    expect((await blobOf(name).getProperties()).metadata?.sha256).toBe(sha256(replacement));
  });

  it("refuses a shared blob that fails verification, with its reason, and signs no URL", async () => {
    const evil = freshName("pt");
    await blobOf(evil).uploadData(torchZip(callPickle("os", "system", "id")));
    const broken = freshName();
    await blobOf(broken).uploadData(Buffer.from("not a safetensors file at all"));
    const [a, b] = (await resolve(evil, broken)).urls;
    expect(a).toMatchObject({
      url: "",
      verification: { status: ValidationStatus.REJECTED, reason: ErrorReason.UNSAFE_PICKLE },
    });
    expect(a?.verification?.unsafeGlobals).toEqual(["os.system"]);
    expect(b).toMatchObject({
      url: "",
      verification: { status: ValidationStatus.REJECTED, reason: ErrorReason.INVALID_FILE_FORMAT },
    });
    expect((await blobOf(evil).getProperties()).metadata?.sha256).toBeUndefined();
    // A refusal is remembered for the version too: no second read.
    await resolve(evil);
    expect(contentReads(evil)).toBe(1);
  });

  it("shares one verification among concurrent first resolutions", async () => {
    const name = freshName();
    await blobOf(name).uploadData(randomLoraSafetensors(40_000));
    const answers = await Promise.all(Array.from({ length: 8 }, () => resolve(name, name)));
    // Each answer is verified, or pending when the one verification outlasts the wait (a very busy machine).
    for (const a of answers) {
      for (const u of a.urls) {
        if (u.verificationPending) expect(u).toMatchObject({ url: "", verification: undefined });
        else expect(u.verification?.status).toBe(ValidationStatus.SAFE);
      }
    }
    await eventually(async () =>
      expect((await resolve(name)).urls[0]?.verification?.status).toBe(ValidationStatus.SAFE),
    );
    expect(contentReads(name)).toBe(1);
  });

  it("answers pending while a slow first verification runs on, then verified", async () => {
    const name = freshName();
    await blobOf(name).uploadData(randomLoraSafetensors(10_000));
    proxy.rules.push({
      method: "GET",
      path: (p) => decodeURIComponent(p).includes(name),
      delayMs: VERIFY_WAIT_MS + 1500,
    });
    const [pending] = (await resolve(name)).urls;
    expect(pending).toMatchObject({ url: "", verificationPending: true });
    expect(pending?.verification).toBeUndefined();
    await eventually(async () =>
      expect((await resolve(name)).urls[0]?.verification?.status).toBe(ValidationStatus.SAFE),
    );
    expect(contentReads(name)).toBe(1);
  });

  it("another gateway process verifies a stamped blob once and writes nothing", async () => {
    const name = freshName();
    await blobOf(name).uploadData(randomLoraSafetensors(8000));
    await resolve(name);
    const stamped = await blobOf(name).getProperties();
    const other = await startBlobGateway(
      loadConfig({
        GATEWAY_PORT: "0",
        JWT_SECRET,
        LOG_LEVEL: "silent",
        NATS_URL: "memory",
        AZURE_STORAGE_CONNECTION_STRING: t.containers.connectionString,
        USER_LORA_CONTAINER: t.containers.userContainer,
        CLOUD_STORAGE_CONTAINER: t.containers.sharedContainer,
      }),
    );
    try {
      const client = createServiceClient(
        BlobGatewayService,
        other.url,
        await mintToken(JWT_SECRET, { subject: "r", roles: ["service"] }),
      );
      const [u] = (await client.createDownloadUrls({ targets: [{ target: { case: "sharedLora", value: { name } } }] }))
        .urls;
      expect(u?.verification?.status).toBe(ValidationStatus.SAFE);
      expect((await blobOf(name).getProperties()).etag).toBe(stamped.etag);
    } finally {
      await other.stop();
    }
  });
});
