import { LoraVerifier, type VerificationResult } from "../src/index.js";
import {
  assembleSafetensors,
  fillerBytes,
  prng,
  safetensorsHeader,
  tensorBytes,
  type TensorSpec,
} from "@emprops/testkit";

// Every mutation below is invalid by construction, so each must be rejected — never accepted, never thrown, never
// hung. The PRNG is seeded: a failure names its case number and reproduces.
const SEED = 20251125;
const CASES_PER_MUTATION = 210;

type Random = () => number;
type Header = Record<string, unknown>;
interface Base {
  tensors: TensorSpec[];
  metadata: Record<string, string>;
  data: Uint8Array;
}
interface Mutant {
  bytes: Uint8Array;
  maxSizeBytes?: number;
}

const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const int = (random: Random, min: number, max: number): number => min + Math.floor(random() * (max - min + 1));

const DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"];

/** Tensors of pairwise different byte sizes, so swapping two tensors' offsets always breaks a span. */
function randomBase(random: Random): Base {
  const tensors: TensorSpec[] = [];
  const sizes = new Set<number>();
  const count = int(random, 2, 6);
  while (tensors.length < count) {
    const shape = Array.from({ length: int(random, 1, 3) }, () => int(random, 1, 9));
    const tensor = {
      name: `lora_unet_${tensors.length}.${pick(random, ["alpha", "lora_up.weight", "lora_down.weight"])}`,
      dtype: pick(random, DTYPES),
      shape,
    };
    const size = tensorBytes(tensor);
    if (sizes.has(size)) continue;
    sizes.add(size);
    tensors.push(tensor);
  }
  const metadata = {
    ss_network_dim: String(int(random, 1, 128)),
    ss_tag_frequency: '{"a":{"b, c":1}}',
    "modelspec.title": "Fuzz: [x] {y}",
  };
  const data = fillerBytes(
    tensors.reduce((sum, t) => sum + tensorBytes(t), 0),
    int(random, 0, 100),
  );
  return { tensors, metadata, data };
}

function headerOf(base: Base): Header {
  return safetensorsHeader(base.tensors, base.metadata);
}

function assemble(base: Base, header: Header | string | Uint8Array, lengthOverride?: bigint): Uint8Array {
  const text = typeof header === "string" || header instanceof Uint8Array ? header : JSON.stringify(header);
  return assembleSafetensors(text, base.data, lengthOverride);
}

function entry(header: Header, name: string): { dtype: unknown; shape: unknown; data_offsets: [number, number] } {
  return header[name] as { dtype: unknown; shape: unknown; data_offsets: [number, number] };
}

const tensorName = (random: Random, base: Base): string => pick(random, base.tensors).name;

/** Positions of JSON structural characters that are outside strings. */
function structuralPositions(json: string): number[] {
  const positions: number[] = [];
  let inString = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') {
      inString = true;
    } else if ("{}[]:,".includes(ch as string)) {
      positions.push(i);
    }
  }
  return positions;
}

// Bytes that are illegal at any place of a UTF-8 JSON text, inside strings or out.
const POISON = [0x00, 0x01, 0x02, 0x07, 0x08, 0x0b, 0x0c, 0x0e, 0x1b, 0x1f, 0xc0, 0xc1, 0xf5, 0xf8, 0xfe, 0xff];

const mutations: Record<string, (random: Random, base: Base) => Mutant> = {
  "length off by a little": (random, base) => {
    const json = JSON.stringify(headerOf(base));
    const bytes = assemble(base, json);
    const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    let delta = 0;
    while (delta === 0) delta = int(random, -Math.min(length, 40), 40);
    return { bytes: assemble(base, json, BigInt(length + delta)) };
  },
  "huge length": (random, base) => ({
    bytes: assemble(
      base,
      headerOf(base),
      pick(random, [
        100_000_001n,
        2n ** 32n,
        2n ** 53n,
        2n ** 63n,
        2n ** 64n - 1n,
        BigInt(int(random, 100_000_001, 2 ** 31)),
      ]),
    ),
  }),
  "tiny length": (random, base) => ({ bytes: assemble(base, headerOf(base), BigInt(int(random, 0, 1))) }),
  "random length byte": (random, base) => {
    const bytes = assemble(base, headerOf(base));
    const at = int(random, 0, 7);
    const original = bytes[at] as number;
    let value = original;
    while (value === original) value = int(random, 0, 255);
    bytes[at] = value;
    return { bytes };
  },
  truncation: (random, base) => {
    const bytes = assemble(base, headerOf(base));
    return { bytes: bytes.subarray(0, int(random, 0, bytes.length - 1)) };
  },
  "appended bytes": (random, base) => {
    const bytes = assemble(base, headerOf(base));
    const extra = fillerBytes(int(random, 1, 64), int(random, 0, 9));
    const out = new Uint8Array(bytes.length + extra.length);
    out.set(bytes);
    out.set(extra, bytes.length);
    return { bytes: out };
  },
  "poisoned header bytes": (random, base) => {
    const bytes = assemble(base, headerOf(base));
    const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    for (let k = int(random, 1, 4); k > 0; k--) bytes[8 + int(random, 0, length - 1)] = pick(random, POISON);
    return { bytes };
  },
  "overlapping offsets": (random, base) => {
    const header = headerOf(base);
    const name = pick(random, base.tensors.slice(1)).name;
    const offsets = entry(header, name).data_offsets;
    offsets[0] -= int(random, 1, offsets[0]);
    return { bytes: assemble(base, header) };
  },
  "gapped offsets": (random, base) => {
    const header = headerOf(base);
    const from = int(random, 1, base.tensors.length - 1);
    const gap = int(random, 1, 16);
    for (const tensor of base.tensors.slice(from)) {
      const offsets = entry(header, tensor.name).data_offsets;
      offsets[0] += gap;
      offsets[1] += gap;
    }
    return { bytes: assemble(base, header) };
  },
  "unsorted offsets": (random, base) => {
    const header = headerOf(base);
    const i = int(random, 0, base.tensors.length - 1);
    let j = i;
    while (j === i) j = int(random, 0, base.tensors.length - 1);
    const a = entry(header, (base.tensors[i] as TensorSpec).name);
    const b = entry(header, (base.tensors[j] as TensorSpec).name);
    [a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets];
    return { bytes: assemble(base, header) };
  },
  "wrong span": (random, base) => {
    const header = headerOf(base);
    const offsets = entry(header, tensorName(random, base)).data_offsets;
    offsets[1] = Math.max(offsets[0], offsets[1] + pick(random, [-3, -2, -1, 1, 2, 7, 1000]));
    return { bytes: assemble(base, header) };
  },
  "data not starting at zero": (random, base) => {
    const header = headerOf(base);
    const shift = int(random, 1, 64);
    for (const tensor of base.tensors) {
      const offsets = entry(header, tensor.name).data_offsets;
      offsets[0] += shift;
      offsets[1] += shift;
    }
    return { bytes: assemble(base, header) };
  },
  "bad dtype": (random, base) => {
    const header = headerOf(base);
    entry(header, tensorName(random, base)).dtype = pick(random, [
      "F33",
      "f32",
      "",
      "float32",
      "Q4_0",
      "INT8",
      5,
      null,
      ["F32"],
      { F32: 1 },
    ]);
    return { bytes: assemble(base, header) };
  },
  "dtype of another size": (random, base) => {
    const header = headerOf(base);
    const tensor = pick(random, base.tensors);
    const size = tensorBytes(tensor);
    const other = pick(
      random,
      DTYPES.filter((d) => tensorBytes({ ...tensor, dtype: d }) !== size),
    );
    entry(header, tensor.name).dtype = other;
    return { bytes: assemble(base, header) };
  },
  "bad shape": (random, base) => {
    const header = headerOf(base);
    const tensor = pick(random, base.tensors);
    entry(header, tensor.name).shape = pick(random, [
      [-1],
      [1.5],
      ["2"],
      [[2]],
      null,
      "2",
      [...tensor.shape, int(random, 2, 5)],
      tensor.shape.map((d, i) => (i === 0 ? d * 2 : d)),
      [2 ** 53],
    ]);
    return { bytes: assemble(base, header) };
  },
  "bad data_offsets": (random, base) => {
    const header = headerOf(base);
    const e = entry(header, tensorName(random, base));
    const [begin, end] = e.data_offsets;
    (e as { data_offsets: unknown }).data_offsets = pick(random, [
      [begin],
      [begin, end, end],
      [-1, end],
      [begin + 0.5, end],
      [String(begin), end],
      { begin, end },
      null,
      [end, begin - 1],
      [],
    ]);
    return { bytes: assemble(base, header) };
  },
  "non-string metadata value": (random, base) => {
    const header = headerOf(base);
    (header.__metadata__ as Record<string, unknown>)[pick(random, ["ss_network_dim", "new_key"])] = pick(random, [
      16,
      null,
      true,
      ["a"],
      { a: "b" },
      1.5,
    ]);
    return { bytes: assemble(base, header) };
  },
  "non-object metadata": (random, base) => {
    const header = headerOf(base);
    header.__metadata__ = pick(random, ["x", 1, null, ["a", "b"], true]);
    return { bytes: assemble(base, header) };
  },
  "non-object entry": (random, base) => {
    const header = headerOf(base);
    header[pick(random, ["extra", tensorName(random, base)])] = pick(random, [5, "tensor", [0, 4], null, false]);
    return { bytes: assemble(base, header) };
  },
  "missing or extra field": (random, base) => {
    const header = headerOf(base);
    const e = entry(header, tensorName(random, base)) as unknown as Record<string, unknown>;
    if (random() < 0.5) delete e[pick(random, ["dtype", "shape", "data_offsets"])];
    else e[pick(random, ["offsets", "name", "DTYPE", ""])] = 1;
    return { bytes: assemble(base, header) };
  },
  "duplicate key": (random, base) => {
    const json = JSON.stringify(headerOf(base));
    const kind = int(random, 0, 2);
    const name = tensorName(random, base);
    let text: string;
    if (kind === 0) {
      const first = json.indexOf(JSON.stringify(name));
      text = `{${json.slice(first, json.indexOf("}", first) + 1)},${json.slice(1)}`;
    } else if (kind === 1) {
      text = json.replace('"__metadata__":{', '"__metadata__":{"ss_network_dim":"1",');
    } else {
      text = json.replace(`${JSON.stringify(name)}:{`, `${JSON.stringify(name)}:{"dtype":"F32",`);
    }
    return { bytes: assemble(base, text) };
  },
  "removed structural character": (random, base) => {
    const json = JSON.stringify(headerOf(base));
    const at = pick(random, structuralPositions(json));
    return { bytes: assemble(base, json.slice(0, at) + json.slice(at + 1)) };
  },
  "garbage around the JSON": (random, base) => {
    const json = JSON.stringify(headerOf(base));
    const choice = int(random, 0, 3);
    const text =
      choice === 0
        ? ` ${json}`
        : choice === 1
          ? `\ufeff${json}`
          : choice === 2
            ? `${json}${pick(random, ["x", "}", "0", "\u0000", "{}"])}`
            : `${json}\u0000\u0000`;
    return { bytes: assemble(base, text) };
  },
  "invalid UTF-8 or escapes in strings": (random, base) => {
    const header = headerOf(base);
    const choice = int(random, 0, 2);
    if (choice === 0) {
      const json = Buffer.from(JSON.stringify(header));
      const at = json.indexOf("Fuzz");
      json[at] = pick(random, [0x80, 0xbf, 0xc0, 0xff]);
      return { bytes: assemble(base, json) };
    }
    const text = JSON.stringify(header).replace("Fuzz", choice === 1 ? "\\ud800" : "\\x41");
    return { bytes: assemble(base, text) };
  },
  "too large for the limit": (random, base) => {
    const bytes = assemble(base, headerOf(base));
    return { bytes, maxSizeBytes: int(random, 1, bytes.length - 1) };
  },
};

function run(mutant: Mutant, random: Random): VerificationResult {
  const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: mutant.maxSizeBytes ?? 1 << 30 });
  let at = 0;
  while (at < mutant.bytes.length) {
    const size = random() < 0.2 ? 1 : int(random, 1, 4096);
    verifier.update(mutant.bytes.subarray(at, at + size));
    at += size;
  }
  return verifier.finish();
}

describe("safetensors header fuzzing", () => {
  it(`rejects ${Object.keys(mutations).length * CASES_PER_MUTATION} mutated files without throwing`, () => {
    const random = prng(SEED);
    let checked = 0;
    const failures: string[] = [];
    for (const [label, mutate] of Object.entries(mutations)) {
      for (let n = 0; n < CASES_PER_MUTATION; n++) {
        const caseId = `${label} #${n}`;
        let result: VerificationResult;
        let mutant: Mutant | undefined;
        try {
          mutant = mutate(random, randomBase(random));
          result = run(mutant, random);
        } catch (error) {
          failures.push(`${caseId}: threw ${String(error)}`);
          continue;
        }
        checked++;
        const expected = mutant.maxSizeBytes === undefined ? "INVALID_FILE_FORMAT" : "FILE_TOO_LARGE";
        if (result.ok || result.reason !== expected || !result.message) {
          failures.push(`${caseId}: ${result.ok ? "accepted" : `${result.reason}: ${result.message}`}`);
        }
      }
    }
    expect(failures.slice(0, 20)).toEqual([]);
    expect(checked).toBeGreaterThanOrEqual(5000);
  });
});
