import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ErrorReason, type UploadBlobRequestSchema, ValidationStatus } from "@emprops/contracts";
import {
  assembleSafetensors,
  DTYPE_BYTES,
  padHeader,
  prng as mulberry32,
  safetensorsHeader,
  safetensorsReferenceAccepts,
  tensorBytes,
  type TensorEntry,
} from "@emprops/testkit";
import { newBlob, pathOf } from "./support/ids.js";
import { type GatewayUnderTest, startGatewayForTest } from "./support/start-gateway.js";

/** Fixed so a failure can be replayed; change it to explore other cases. */
const SEED = 0x5afe7e45;
const STRUCTURED_CASES = 2000;
const BYTE_FLIP_CASES = 500;
const CONCURRENCY = 8;

let t: GatewayUnderTest;

beforeAll(async () => {
  t = await startGatewayForTest("safetensors-fuzz");
});

afterAll(async () => {
  await t?.stop();
});

/** The seeded PRNG with the helpers the mutations use. */
function prng(seed: number) {
  const next = mulberry32(seed);
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!,
  };
}

type Header = Record<string, unknown>;
type Case = { name: string; bytes: Buffer };

const BASE_TENSORS = [
  { name: "a.lora_down.weight", dtype: "F16", shape: [4, 8] },
  { name: "a.lora_up.weight", dtype: "F32", shape: [8, 4] },
  { name: "a.alpha", dtype: "BF16", shape: [] },
  { name: "b.lora_down.weight", dtype: "I8", shape: [3, 5] },
];

function baseHeader(): { header: Header; dataBytes: number } {
  return {
    header: safetensorsHeader(BASE_TENSORS, { ss_network_dim: "4", ss_network_alpha: "1" }),
    dataBytes: BASE_TENSORS.reduce((sum, t) => sum + tensorBytes(t), 0),
  };
}

function file(headerText: string | Buffer, dataBytes: number, declaredLength?: number): Buffer {
  const length = declaredLength === undefined ? undefined : BigInt(declaredLength);
  return assembleSafetensors(padHeader(headerText), Buffer.alloc(dataBytes, 0x3c), length);
}

const tensorNames = BASE_TENSORS.map((x) => x.name);
const entry = (h: Header, name: string) => h[name] as TensorEntry;

/** Each mutation is certainly invalid: the file must be rejected as INVALID_FILE_FORMAT. */
const MUTATIONS: ((r: ReturnType<typeof prng>) => Case)[] = [
  (r) => {
    const { header, dataBytes } = baseHeader();
    const n = r.pick([0, 1, 2, 7]);
    return { name: `header length ${n}`, bytes: file(JSON.stringify(header), dataBytes, n) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const text = JSON.stringify(header);
    const declared = text.length + 8 + dataBytes + r.int(1, 1 << 20);
    return { name: `header length ${declared} past the end of the file`, bytes: file(text, dataBytes, declared) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const declared = r.pick([2 ** 53 - 1, 2 ** 62, 100_000_001, 2 ** 32, 2 ** 40 + r.int(0, 999)]);
    return { name: `huge header length ${declared}`, bytes: file(JSON.stringify(header), dataBytes, declared) };
  },
  () => {
    const { header, dataBytes } = baseHeader();
    const b = file(JSON.stringify(header), dataBytes);
    b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn, 0);
    return { name: "header length 2^64-1", bytes: b };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const text = JSON.stringify(header);
    const cut = r.int(1, text.length - 1);
    return { name: `header cut at ${cut}`, bytes: file(text.slice(0, cut), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    // Overlap: a tensor starts inside the one before it (same length, so the sizes still agree).
    const i = r.int(1, tensorNames.length - 1);
    const e = entry(header, tensorNames[i]!);
    const before = entry(header, tensorNames[i - 1]!);
    const len = e.data_offsets[1] - e.data_offsets[0];
    const start = r.int(before.data_offsets[0], before.data_offsets[1] - 1);
    e.data_offsets = [start, start + len];
    return { name: `${tensorNames[i]} overlaps the tensor before it`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    // A gap: shift every tensor after the chosen one by some bytes and grow the data section to match.
    const shift = r.int(1, 64);
    const from = r.int(1, tensorNames.length - 1);
    for (const name of tensorNames.slice(from)) {
      const e = entry(header, name);
      e.data_offsets = [e.data_offsets[0] + shift, e.data_offsets[1] + shift];
    }
    return { name: `gap of ${shift} before tensor ${from}`, bytes: file(JSON.stringify(header), dataBytes + shift) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const extra = r.int(1, 4096);
    return { name: `${extra} trailing data bytes`, bytes: file(JSON.stringify(header), dataBytes + extra) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const missing = r.int(1, dataBytes);
    return { name: `data truncated by ${missing}`, bytes: file(JSON.stringify(header), dataBytes - missing) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const e = entry(header, r.pick(tensorNames));
    const bad = r.pick<unknown>([
      [e.data_offsets[1], e.data_offsets[0] - 1],
      [-1, e.data_offsets[1]],
      [e.data_offsets[0], e.data_offsets[1], 0],
      [e.data_offsets[0]],
      [String(e.data_offsets[0]), e.data_offsets[1]],
      [e.data_offsets[0] + 0.5, e.data_offsets[1]],
      [e.data_offsets[0], 2 ** 60],
      null,
      "0-64",
      { begin: 0, end: 1 },
    ]);
    (e as unknown as Record<string, unknown>).data_offsets = bad;
    return { name: `data_offsets ${JSON.stringify(bad)}`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const name = r.pick(tensorNames.filter((n) => entry(header, n).shape.length > 0));
    const e = entry(header, name);
    const bad = r.pick<unknown>([
      [...e.shape, 2],
      e.shape.map((d) => d + 1),
      [-(e.shape[0] ?? 1), ...e.shape.slice(1).map((d) => -d)],
      [1.5, 2],
      ["4", "8"],
      "4x8",
      [2 ** 40, 2 ** 40],
      [0, ...e.shape],
      null,
    ]);
    (e as unknown as Record<string, unknown>).shape = bad;
    return { name: `shape ${JSON.stringify(bad)} for ${name}`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const e = entry(header, r.pick(tensorNames));
    const bad = r.pick<unknown>(["f16", "FLOAT16", "F128", "", "Q4_0", 16, null, ["F16"]]);
    (e as unknown as Record<string, unknown>).dtype = bad;
    return { name: `dtype ${JSON.stringify(bad)}`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    // A dtype of another width keeps the span but breaks shape × size = span.
    const name = r.pick(tensorNames.filter((n) => entry(header, n).shape.length > 0));
    const e = entry(header, name);
    const other = r.pick(Object.keys(DTYPE_BYTES).filter((d) => DTYPE_BYTES[d] !== DTYPE_BYTES[e.dtype]));
    e.dtype = other;
    return { name: `dtype ${other} for ${name} with its old span`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const bad = r.pick<unknown>([42, true, null, ["a", "b"], { nested: "x" }, 1.5]);
    (header.__metadata__ as Record<string, unknown>)[`ss_${r.int(0, 99)}`] = bad;
    return { name: `metadata value ${JSON.stringify(bad)}`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const bad = r.pick<unknown>(["ss_network_dim=4", ["ss_network_dim", "4"], 7, null]);
    header.__metadata__ = bad;
    return { name: `__metadata__ ${JSON.stringify(bad)}`, bytes: file(JSON.stringify(header), dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const text = JSON.stringify(header);
    const broken = r.pick([
      text.replace('"dtype"', "'dtype'"),
      text.replace(/,"a.alpha"/, ',,"a.alpha"'),
      `${text.slice(0, -1)},}`,
      `${text}}`,
      `${text}x`,
      text.replace("{", "[").replace(/}$/, "]"),
      text.replace(/"shape":\[4,8\]/, '"shape":[4,8,]'),
      text.replace(/"F16"/, '"F16\u0001"'),
      text.replace(/\[4,8\]/, "[NaN,8]"),
      text.replace(/\[4,8\]/, "[4,/* c */8]"),
      `"${text.replace(/"/g, '\\"')}"`,
      "[]",
      "null",
      "12345678",
    ]);
    return { name: `bad JSON: ${broken.slice(0, 40)}`, bytes: file(broken, dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const text = Buffer.from(JSON.stringify(header));
    // Invalid UTF-8 inside a string.
    const at = text.indexOf("lora_down");
    text[at + r.int(0, 4)] = r.pick([0xc0, 0xff, 0xfe, 0x80]);
    return { name: "invalid UTF-8 in a tensor name", bytes: file(text, dataBytes) };
  },
  (r) => {
    const { header, dataBytes } = baseHeader();
    const text = JSON.stringify(header);
    // A duplicate tensor name: JSON that parses, but two tensors claim one name.
    const dup = text.replace(/^\{/, `{"${r.pick(tensorNames)}":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},`);
    return { name: "duplicate tensor name", bytes: file(dup, dataBytes) };
  },
];

function structuredCases(count: number): Case[] {
  const r = prng(SEED);
  return Array.from({ length: count }, (_, i) => {
    const c = MUTATIONS[i % MUTATIONS.length]!(r);
    return { name: `#${i} ${c.name}`, bytes: c.bytes };
  });
}

function byteFlipCases(count: number): Case[] {
  const r = prng(SEED ^ 0xffff);
  const { header, dataBytes } = baseHeader();
  const valid = file(JSON.stringify(header), dataBytes);
  const headerEnd = 8 + Number(valid.readBigUInt64LE(0));
  return Array.from({ length: count }, (_, i) => {
    const b = Buffer.from(valid);
    const flips = r.int(1, 4);
    for (let k = 0; k < flips; k++) b[r.int(0, headerEnd - 1)] = r.int(0, 255);
    return { name: `flip #${i}`, bytes: b };
  });
}

type UploadMessage = MessageInitShape<typeof UploadBlobRequestSchema>;

/** The header, then the file in two chunks split at a varying place (parsers must not care where). */
async function* uploadMessages(
  blob: ReturnType<typeof newBlob>,
  bytes: Buffer,
  split: number,
): AsyncGenerator<UploadMessage> {
  yield { payload: { case: "header", value: { blob, sizeBytes: BigInt(bytes.length) } } };
  const at = split % (bytes.length + 1);
  if (at > 0) yield { payload: { case: "chunk", value: bytes.subarray(0, at) } };
  if (at < bytes.length) yield { payload: { case: "chunk", value: bytes.subarray(at) } };
}

/** Every 10th case through VerifyBlob on a stored blob, the others streamed through UploadBlob. */
async function verify(c: Case, index: number) {
  const blob = newBlob("safetensors");
  if (index % 10 === 0) {
    await t.userContainer.getBlockBlobClient(pathOf(blob)).uploadData(c.bytes);
    return (await t.client.verifyBlob({ blob }, { timeoutMs: 15_000 })).verification!;
  }
  return (await t.client.uploadBlob(uploadMessages(blob, c.bytes, index * 7), { timeoutMs: 15_000 })).verification!;
}

async function runAll<T>(
  cases: Case[],
  check: (c: Case, result: Awaited<ReturnType<typeof verify>>) => T,
): Promise<T[]> {
  const results: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < cases.length) {
        const i = next++;
        results[i] = check(cases[i]!, await verify(cases[i]!, i));
      }
    }),
  );
  return results;
}

describe("safetensors header fuzzing", () => {
  it("the unmutated file is safe (so the mutations are what gets rejected)", async () => {
    const { header, dataBytes } = baseHeader();
    const v = await verify({ name: "base", bytes: file(JSON.stringify(header), dataBytes) }, 0);
    expect(v.status).toBe(ValidationStatus.SAFE);
    expect(v.tensorCount).toBe(BASE_TENSORS.length);
  });

  // The verdict the reference crate gives (modelled in the test kit): most mutations break the file, some
  // (duplicate keys, "__metadata__": null, unknown fields) are files the reference reads.
  const asTheReference = (bytes: Buffer, v: { status: ValidationStatus; reason: ErrorReason; message: string }) =>
    safetensorsReferenceAccepts(bytes)
      ? v.status === ValidationStatus.SAFE
      : v.status === ValidationStatus.REJECTED && v.reason === ErrorReason.INVALID_FILE_FORMAT && v.message !== "";

  it(`gives the reference's verdict on ${STRUCTURED_CASES} mutated headers`, async () => {
    const cases = structuredCases(STRUCTURED_CASES);
    const outcomes = await runAll(cases, (c, v) => ({
      name: c.name,
      ok: asTheReference(c.bytes, v),
      sha: v.sha256 === createHash("sha256").update(c.bytes).digest("hex"),
      got: `${ValidationStatus[v.status]} ${ErrorReason[v.reason]}: ${v.message}`,
    }));
    expect(outcomes.filter((o) => !o.ok).map((o) => `${o.name} → ${o.got}`)).toEqual([]);
    expect(outcomes.filter((o) => !o.sha).map((o) => o.name)).toEqual([]);
  }, 240_000);

  it(`gives the reference's verdict on ${BYTE_FLIP_CASES} random byte flips in the header`, async () => {
    const outcomes = await runAll(byteFlipCases(BYTE_FLIP_CASES), (c, v) => ({
      name: c.name,
      status: v.status,
      ok: asTheReference(c.bytes, v),
    }));
    expect(outcomes.filter((o) => !o.ok).map((o) => o.name)).toEqual([]);
    // Most flips break the header.
    expect(outcomes.filter((o) => o.status === ValidationStatus.REJECTED).length).toBeGreaterThan(BYTE_FLIP_CASES / 2);
  }, 120_000);

  it("still answers afterwards", async () => {
    const { header, dataBytes } = baseHeader();
    const v = await verify({ name: "base again", bytes: file(JSON.stringify(header), dataBytes) }, 10);
    expect(v.status).toBe(ValidationStatus.SAFE);
  });
});
