import { LoraVerifier, type VerificationResult } from "../src/index.js";
import {
  assembleSafetensors,
  fillerBytes,
  prng,
  safetensorsReferenceAccepts as referenceAccepts,
  safetensorsHeader,
  tensorBytes,
  type TensorSpec,
} from "@emprops/testkit";
import { headAgrees } from "./head-agreement.js";

// A differential test: every mutated file gets the verdict of the verifier and of an independent model of the
// reference crate (safetensors-reference-model.ts), and the two must agree — on the files the reference refuses
// and on the ones it accepts (leading whitespace, "__metadata__": null, duplicate keys keeping the last, a dtype
// written as an object, unknown fields, a tensor written as an array). The PRNG is seeded: a failure names its
// case and reproduces.
const SEED = 20261203;
const CASES_PER_MUTATION = 80;

type Random = () => number;
type Header = Record<string, unknown>;
interface Base {
  tensors: TensorSpec[];
  metadata: Record<string, string>;
  data: Uint8Array;
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

const headerOf = (base: Base): Header => safetensorsHeader(base.tensors, base.metadata);
const json = (base: Base): string => JSON.stringify(headerOf(base));
const assemble = (base: Base, header: Header | string | Uint8Array, lengthOverride?: bigint): Uint8Array =>
  assembleSafetensors(
    typeof header === "string" || header instanceof Uint8Array ? header : JSON.stringify(header),
    base.data,
    lengthOverride,
  );
const entry = (header: Header, name: string) =>
  header[name] as { dtype: unknown; shape: unknown; data_offsets: [number, number] } & Record<string, unknown>;
const tensorName = (random: Random, base: Base): string => pick(random, base.tensors).name;

/** Positions of JSON structural characters that are outside strings. */
function structuralPositions(text: string): number[] {
  const positions: number[] = [];
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
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

const POISON = [0x00, 0x01, 0x07, 0x0b, 0x1f, 0xc0, 0xc1, 0xf5, 0xff, 0x20, 0x0a, 0x22, 0x5c, 0x7b, 0x7d];

const mutations: Record<string, (random: Random, base: Base) => Uint8Array> = {
  // ---- what the reference accepts
  "whitespace around the JSON": (random, base) => {
    const ws = () => Array.from({ length: int(random, 0, 3) }, () => pick(random, [" ", "\t", "\n", "\r"])).join("");
    return assemble(base, `${ws()}${json(base)}${ws()}`);
  },
  "whitespace between tokens": (random, base) => {
    const text = json(base);
    const positions = structuralPositions(text);
    const chosen = new Set(Array.from({ length: int(random, 1, 6) }, () => pick(random, positions)));
    let out = "";
    for (let i = 0; i < text.length; i++) out += (chosen.has(i) ? pick(random, [" ", "\n", "\t"]) : "") + text[i];
    return assemble(base, out);
  },
  "null metadata": (_random, base) => {
    const header = headerOf(base);
    header.__metadata__ = null;
    return assemble(base, header);
  },
  "duplicate tensor key": (random, base) => {
    const text = json(base);
    const name = tensorName(random, base);
    const first = text.indexOf(`${JSON.stringify(name)}:{`);
    const item = text.slice(first, text.indexOf("}", first) + 1);
    // Valid earlier occurrence (last one wins) or a broken one (every occurrence must be a tensor).
    const earlier = random() < 0.5 ? item : item.replace(/"dtype":"[A-Z0-9_]+"/, '"dtype":"F99"');
    return assemble(base, `{${earlier},${text.slice(1)}`);
  },
  "duplicate metadata key": (random, base) =>
    assemble(base, json(base).replace('"__metadata__":{', `"__metadata__":{"ss_network_dim":"${int(random, 0, 9)}",`)),
  "duplicate __metadata__": (random, base) =>
    assemble(base, `{"__metadata__":${pick(random, ["null", "{}", '{"a":"b"}'])},${json(base).slice(1)}`),
  "dtype written as an object": (random, base) => {
    const header = headerOf(base);
    const e = entry(header, tensorName(random, base));
    e.dtype = pick(random, [
      { [e.dtype as string]: null },
      { [e.dtype as string]: {} },
      { [e.dtype as string]: 1 },
      {},
    ]);
    return assemble(base, header);
  },
  "unknown fields": (random, base) => {
    const header = headerOf(base);
    entry(header, tensorName(random, base))[pick(random, ["offsets", "name", "DTYPE", "", "x"])] = pick(random, [
      1,
      "s",
      null,
      [1, [2, { a: [] }]],
      { nested: { deeper: [true, false] } },
    ]);
    return assemble(base, header);
  },
  "tensor written as an array": (random, base) => {
    const header = headerOf(base);
    const name = tensorName(random, base);
    const e = entry(header, name);
    const items: unknown[] = [e.dtype, e.shape, e.data_offsets];
    const choice = int(random, 0, 3);
    header[name] =
      choice === 0 ? items : choice === 1 ? items.slice(0, 2) : choice === 2 ? [...items, 0] : items.reverse();
    return assemble(base, header);
  },
  "escaped key names": (random, base) => {
    const text = json(base);
    const target = pick(random, ['"__metadata__"', '"dtype"', '"shape"', '"data_offsets"']);
    const escaped = target.replace(/[a-z_]/, (ch) => `\\u00${ch.charCodeAt(0).toString(16)}`);
    return assemble(base, text.replaceAll(target, escaped));
  },
  "zero-element tensors with huge or overflowing dimensions": (random, base) => {
    const header = headerOf(base);
    const text = JSON.stringify(header);
    const dims = pick(random, [
      "[18446744073709551615,0]",
      "[4294967296,4294967296,0]",
      "[0,4294967296,4294967296]",
      "[9007199254740993,0]",
      "[18446744073709551616,0]",
      "[0,18446744073709551615,18446744073709551615]",
    ]);
    return assemble(base, text.replace("{", `{"zero":{"dtype":"F32","shape":${dims},"data_offsets":[0,0]},`));
  },
  "empty header": (random, base) =>
    assembleSafetensors(
      pick(random, ["{}", "{ }", ' {"__metadata__":null} ', '{"__metadata__":{}}']),
      random() < 0.7 ? new Uint8Array(0) : base.data,
    ),
  // ---- what it refuses
  "length off by a little": (random, base) => {
    const text = json(base);
    const length = assemble(base, text).length - base.data.length - 8;
    let delta = 0;
    while (delta === 0) delta = int(random, -Math.min(length, 40), 40);
    return assemble(base, text, BigInt(length + delta));
  },
  "huge or tiny length": (random, base) =>
    assemble(base, headerOf(base), pick(random, [0n, 1n, 100_000_001n, 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n])),
  truncation: (random, base) => {
    const bytes = assemble(base, headerOf(base));
    return bytes.subarray(0, int(random, 0, bytes.length - 1));
  },
  "appended bytes": (random, base) => {
    const bytes = assemble(base, headerOf(base));
    return Buffer.concat([bytes, fillerBytes(int(random, 1, 64), int(random, 0, 9))]);
  },
  "poisoned header bytes": (random, base) => {
    const bytes = assemble(base, headerOf(base));
    const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    for (let k = int(random, 1, 3); k > 0; k--) bytes[8 + int(random, 0, length - 1)] = pick(random, POISON);
    return bytes;
  },
  "overlapping, gapped or unsorted offsets": (random, base) => {
    const header = headerOf(base);
    const names = base.tensors.map((t) => t.name);
    const choice = int(random, 0, 2);
    if (choice === 0) entry(header, pick(random, names.slice(1))).data_offsets[0] -= 1;
    else if (choice === 1) {
      for (const n of names.slice(int(random, 1, names.length - 1)))
        entry(header, n).data_offsets = entry(header, n).data_offsets.map((x) => x + 2) as [number, number];
    } else {
      const [a, b] = [entry(header, names[0] as string), entry(header, names[1] as string)];
      [a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets];
    }
    return assemble(base, header);
  },
  "wrong span or dtype": (random, base) => {
    const header = headerOf(base);
    const e = entry(header, tensorName(random, base));
    if (random() < 0.5) e.data_offsets[1] = Math.max(e.data_offsets[0], e.data_offsets[1] + pick(random, [-1, 1, 7]));
    else e.dtype = pick(random, [...DTYPES, "F4", "C64", "F8_E4M3"]);
    return assemble(base, header);
  },
  "bad dtype": (random, base) => {
    const header = headerOf(base);
    entry(header, tensorName(random, base)).dtype = pick(random, ["F33", "f32", "", "float32", 5, null, ["F32"], true]);
    return assemble(base, header);
  },
  "numbers serde_json reads as other types": (random, base) => {
    const text = json(base);
    const name = tensorName(random, base);
    const at = text.indexOf(`${JSON.stringify(name)}:{`);
    const item = text.slice(at, text.indexOf("}", at) + 1);
    const bent = item.replace(
      /\[(\d+)/,
      (_m, d: string) =>
        `[${pick(random, [`${d}.0`, `${d}e0`, `-${d}`, "-0", `0${d}`, `${d}.`, `"${d}"`, "1E1", `${d}0000000000000000000000`])}`,
    );
    return assemble(base, text.replace(item, bent));
  },
  "bad shape or offsets": (random, base) => {
    const header = headerOf(base);
    const e = entry(header, tensorName(random, base));
    if (random() < 0.5) e.shape = pick(random, [null, "2", {}, [[2]], [true]]);
    else (e as { data_offsets: unknown }).data_offsets = pick(random, [[0], [0, 1, 2], null, { a: 1 }, [0, -1], []]);
    return assemble(base, header);
  },
  "bad metadata": (random, base) => {
    const header = headerOf(base);
    if (random() < 0.5)
      (header.__metadata__ as Record<string, unknown>).k = pick(random, [1, null, true, ["a"], { a: "b" }]);
    else header.__metadata__ = pick(random, ["x", 1, ["a"], true]);
    return assemble(base, header);
  },
  "missing or duplicate field": (random, base) => {
    const text = json(base);
    const name = tensorName(random, base);
    if (random() < 0.5) {
      const header = headerOf(base);
      delete entry(header, name)[pick(random, ["dtype", "shape", "data_offsets"])];
      return assemble(base, header);
    }
    const field = pick(random, ['"dtype":"U8"', '"shape":[1]', '"data_offsets":[0,0]']);
    return assemble(base, text.replace(`${JSON.stringify(name)}:{`, `${JSON.stringify(name)}:{${field},`));
  },
  "removed structural character": (random, base) => {
    const text = json(base);
    const at = pick(random, structuralPositions(text));
    return assemble(base, text.slice(0, at) + text.slice(at + 1));
  },
  "garbage around the JSON": (random, base) =>
    assemble(
      base,
      pick(random, [
        `\ufeff${json(base)}`,
        `${json(base)}x`,
        `${json(base)}}`,
        `${json(base)}\u0000`,
        `[${json(base)}]`,
      ]),
    ),
  "bad strings": (random, base) => {
    const choice = int(random, 0, 3);
    if (choice === 0) {
      const bytes = Buffer.from(json(base));
      bytes[bytes.indexOf("Fuzz")] = pick(random, [0x80, 0xbf, 0xc0, 0xff]);
      return assemble(base, bytes);
    }
    const escape = pick(random, ["\\ud800", "\\udc00", "\\x41", "\\u12", "\\ud83d\\ude00", "\\u0000", "\\/", "\\q"]);
    return assemble(base, json(base).replace("Fuzz", choice === 1 ? escape : `${escape}z`));
  },
  "deep nesting in an ignored field": (random, base) => {
    const depth = int(random, 122, 128);
    const nested = `${"[".repeat(depth)}${"]".repeat(depth)}`;
    return assemble(base, json(base).replace('"shape":', `"x":${nested},"shape":`));
  },
};

function run(bytes: Uint8Array, random: Random): VerificationResult {
  const verifier = new LoraVerifier({ expectedExtension: "safetensors", maxSizeBytes: 1 << 30 });
  let at = 0;
  while (at < bytes.length) {
    const size = random() < 0.2 ? 1 : int(random, 1, 4096);
    verifier.update(bytes.subarray(at, at + size));
    at += size;
  }
  return verifier.finish();
}

describe("safetensors against a model of the reference", () => {
  const total = Object.keys(mutations).length * CASES_PER_MUTATION;

  it(`agrees with the reference on ${total} mutated files`, () => {
    const random = prng(SEED);
    const cuts = prng(SEED + 1);
    let headRefused = 0;
    const disagreements: string[] = [];
    let accepted = 0;
    let refused = 0;
    for (const [label, mutate] of Object.entries(mutations)) {
      for (let n = 0; n < CASES_PER_MUTATION; n++) {
        const bytes = mutate(random, randomBase(random));
        const expected = referenceAccepts(bytes);
        const result = run(bytes, random);
        if (expected) accepted++;
        else refused++;
        // The head check, on the whole file and on a head cut anywhere, may refuse only what the verifier refuses.
        for (const cut of [bytes.length, Math.floor(cuts() * bytes.length)]) {
          try {
            if (headAgrees(bytes, "safetensors", result, cut).outcome === "refused" && cut < bytes.length)
              headRefused++;
          } catch (error) {
            disagreements.push(`${label} #${n}: ${(error as Error).message}`);
          }
        }
        if (result.ok !== expected || (!result.ok && (result.reason !== "INVALID_FILE_FORMAT" || !result.message))) {
          disagreements.push(
            `${label} #${n}: reference ${expected ? "accepts" : "refuses"}, verifier ${result.ok ? "accepts" : `${result.reason}: ${result.message}`}` +
              ` — header ${JSON.stringify(Buffer.from(bytes.subarray(8, Math.min(bytes.length, 8 + 300))).toString("latin1"))}`,
          );
        }
      }
    }
    expect(disagreements.slice(0, 10)).toEqual([]);
    expect(accepted + refused).toBeGreaterThanOrEqual(2000);
    // Both verdicts must be well represented, or the test would prove little.
    expect(accepted).toBeGreaterThan(400);
    expect(refused).toBeGreaterThan(1000);
    // Heads cut short still refuse many of the bad files (every byte of the header seen, or its length wrong).
    expect(headRefused).toBeGreaterThan(100);
  });
});
