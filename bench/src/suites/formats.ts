import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { fileSource, TorchToSafetensors, verifyStream } from "@emprops/lora-formats";
import { assembleSafetensors, PickleWriter, stateDictPickle, type StateDictTensor, torchZip } from "@emprops/testkit";
import { table } from "../harness/report.js";
import { mb, median } from "../harness/stats.js";
import { rotatedRounds } from "../harness/rounds.js";
import type { Suite } from "../harness/suite.js";

const run = promisify(execFile);
const CHILD = path.join(__dirname, "../harness/verify-file.js");
const MAX_TENSORS = 100_000;

interface Input {
  label: string;
  file: string;
  extension: "safetensors" | "pt";
}

/** Times one verification as VerifyBlob does it: a sequential read in 4 MiB chunks through verifyStream. */
async function verifySeconds(input: Input): Promise<{ seconds: number; reason: string; size: number }> {
  const { size } = await fs.stat(input.file);
  const started = performance.now();
  const result = await verifyStream(createReadStream(input.file, { highWaterMark: 4 * 1024 * 1024 }), {
    expectedExtension: input.extension,
    maxSizeBytes: 4 * 1024 ** 3,
  });
  return {
    seconds: (performance.now() - started) / 1000,
    reason: result.ok ? "accepted" : (result.reason ?? ""),
    size,
  };
}

/** Peak resident set of a fresh process verifying the file. */
async function verifyMemory(input: Input): Promise<{ hwm: number; rssBefore: number }> {
  const { stdout } = await run(process.execPath, [CHILD, input.file, input.extension], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as { hwm: number; rssBefore: number };
}

async function convertSeconds(file: string): Promise<number> {
  const started = performance.now();
  const source = await fileSource(file);
  try {
    const conversion = await TorchToSafetensors.open(source);
    let bytes = 0;
    for await (const chunk of conversion.chunks()) bytes += chunk.length;
    if (bytes !== conversion.sizeBytes) throw new Error("conversion produced another size than it planned");
  } finally {
    await source.close();
  }
  return (performance.now() - started) / 1000;
}

// ---- inputs --------------------------------------------------------------------------------------------------

/** The most tensors and metadata entries the caps allow, then one metadata string filling the header. */
function maxEntriesHeader(bytes: number): Buffer {
  const count = Math.min(MAX_TENSORS, Math.floor(bytes / 140));
  const tensors = Array.from({ length: count }, (_, i) => `"t${i}":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`);
  // One entry short of the cap: the long value below is the last.
  const metadata = Array.from({ length: count - 1 }, (_, i) => `"k${i}":"v"`);
  const head = `{${tensors.join(",")},"__metadata__":{${metadata.join(",")},"pad":"`;
  return Buffer.from(`${head}${"x".repeat(Math.max(0, bytes - head.length - 3))}"}}`);
}

/** One metadata value made of \u escapes (the parser's slow path). */
function escapesHeader(bytes: number): Buffer {
  const head = '{"__metadata__":{"k":"';
  return Buffer.from(`${head}${"\\u00e9".repeat(Math.floor((bytes - head.length - 3) / 6))}"}}`);
}

/** A tensor with an ignored field: nested arrays 100 deep, again and again (validated, never kept). */
function nestedIgnoredHeader(bytes: number): Buffer {
  const nest = `${"[".repeat(100)}${"]".repeat(100)}`;
  const head = '{"t":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":[';
  const count = Math.max(1, Math.floor((bytes - head.length - 3) / (nest.length + 1)));
  return Buffer.from(`${head}${Array.from({ length: count }, () => nest).join(",")}]}}`);
}

/** A data.pkl at the size cap of the cheapest opcodes: a list appended to with one memoized value. */
function opcodeDensePt(): Buffer {
  const w = new PickleWriter().proto(2).global("collections", "OrderedDict").emptyTuple().reduce();
  w.mark().binUnicode("x").emptyList().none().binPut(1).append();
  const body = 32 * 1024 * 1024 - w.length - 16;
  for (let i = 0; i < Math.floor(body / 3); i++) w.binGet(1).append();
  return torchZip(w.setItems().stop().bytes(), []);
}

/** The most tensors a checkpoint may hold, each with its own storage record. */
function manyTensorsPt(bytes: number): Buffer {
  const count = Math.min(MAX_TENSORS, Math.floor(bytes / 250));
  const tensors: StateDictTensor[] = Array.from({ length: count }, (_, i) => ({
    name: `t${i}`,
    storage: "ByteStorage",
    key: String(i),
    numel: 1,
    shape: [1],
  }));
  // Past 65,535 entries the end record needs its ZIP64 form, as torch's writer does.
  return torchZip(
    stateDictPickle(tensors),
    tensors.map(() => Buffer.from([1])),
    { zip64End: count > 65_000 },
  );
}

/** A LoRA as a trainer saves it with torch.save: pairs of F16 down/up matrices, about `bytes` in all. */
function loraPt(bytes: number): Buffer {
  const rank = 32;
  const width = 1280;
  const tensorBytes = rank * width * 2;
  const count = Math.max(2, Math.floor(bytes / tensorBytes / 2) * 2);
  const tensors: StateDictTensor[] = Array.from({ length: count }, (_, i) => ({
    name: `lora_unet_block_${i >> 1}.lora_${i % 2 === 0 ? "down" : "up"}.weight`,
    storage: "HalfStorage",
    key: String(i),
    numel: rank * width,
    shape: i % 2 === 0 ? [rank, width] : [width, rank],
  }));
  return torchZip(
    stateDictPickle(tensors),
    tensors.map(() => randomBytes(tensorBytes)),
  );
}

/** A benign safetensors file of `bytes`: one tensor, a short header. */
function benignSafetensors(bytes: number): Buffer {
  const data = Math.max(1, bytes - 120);
  return assembleSafetensors(`{"t":{"dtype":"U8","shape":[${data}],"data_offsets":[0,${data}]}}`, randomBytes(data));
}

// ---- the suite -----------------------------------------------------------------------------------------------

/**
 * The verifier on adversarial inputs (s/MB) against a benign file of the same size, conversion of a .pt to
 * safetensors against its verification, and the peak memory of a 100 MB header against a benign file.
 */
export const formatsSuite: Suite = {
  id: "formats",
  title: "File formats: the verifier on adversarial inputs, .pt → safetensors conversion, memory of a huge header",
  needsEnvironment: false,
  async run(ctx) {
    const headerBytes = ctx.mode === "full" ? 100_000_000 : 8_000_000;
    const ptBytes = ctx.mode === "full" ? 200_000_000 : 16_000_000;
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "bench-formats-"));
    try {
      const write = async (name: string, bytes: Buffer): Promise<string> => {
        const file = path.join(dir, name);
        await fs.writeFile(file, bytes);
        return file;
      };
      const headerFile = (header: Buffer) => assembleSafetensors(header, new Uint8Array(0));
      const adversarial: Input[] = [
        {
          label: "safetensors: 100,000 tensors + 100,000 metadata entries + one long value",
          file: await write("entries.safetensors", headerFile(maxEntriesHeader(headerBytes))),
          extension: "safetensors",
        },
        {
          label: "safetensors: a header of \\u escapes",
          file: await write("escapes.safetensors", headerFile(escapesHeader(headerBytes))),
          extension: "safetensors",
        },
        {
          label: "safetensors: an ignored field of nested arrays",
          file: await write("nested.safetensors", headerFile(nestedIgnoredHeader(headerBytes))),
          extension: "safetensors",
        },
        {
          label: ".pt: a 32 MiB data.pkl of memo reads and appends",
          file: await write("dense.pt", opcodeDensePt()),
          extension: "pt",
        },
        {
          label: `.pt: the most tensors allowed, each its own record`,
          file: await write("many.pt", manyTensorsPt(ptBytes)),
          extension: "pt",
        },
      ];
      const benign: Input = {
        label: "benign safetensors of the header's size",
        file: await write("benign.safetensors", benignSafetensors(headerBytes)),
        extension: "safetensors",
      };
      ctx.log(`formats: inputs written to ${dir}`);

      // 1. The verifier, seconds per MB.
      const samples = new Map<string, { seconds: number[]; size: number; reason: string }>();
      const steps = [...adversarial, benign].map((input) => async () => {
        const r = await verifySeconds(input);
        const entry = samples.get(input.label) ?? { seconds: [], size: r.size, reason: r.reason };
        entry.seconds.push(r.seconds);
        samples.set(input.label, entry);
      });
      await rotatedRounds(ctx.sizes.rounds, steps);
      const perMb = (label: string) => {
        const s = samples.get(label)!;
        return median(s.seconds) / mb(s.size);
      };
      const worst = adversarial.reduce((a, b) => (perMb(a.label) >= perMb(b.label) ? a : b));
      ctx.log(`formats: worst adversarial input ${worst.label}`);

      // 2. Conversion against verification of the same .pt.
      const lora = await write("lora.pt", loraPt(ptBytes));
      const loraInput: Input = { label: "LoRA .pt", file: lora, extension: "pt" };
      const verifyTimes: number[] = [];
      const convertTimes: number[] = [];
      await rotatedRounds(ctx.sizes.rounds, [
        async () => void verifyTimes.push((await verifySeconds(loraInput)).seconds),
        async () => void convertTimes.push(await convertSeconds(lora)),
      ]);
      const loraSize = (await fs.stat(lora)).size;

      // 3. Peak memory of a fresh process verifying the header-heavy file, against the benign one.
      const heavy = await verifyMemory(adversarial[0]!);
      const plain = await verifyMemory(benign);

      const rate = (seconds: number) => `${(mb(loraSize) / seconds).toFixed(0)} MB/s`;
      const headerMb = `${mb(headerBytes).toFixed(0)} MB`;
      return {
        figures: [
          {
            benchmark: `Verifier, worst adversarial input (${worst.label}), s/MB vs a benign file of the same size`,
            measured: `${perMb(worst.label).toFixed(4)} s/MB`,
            baseline: `${perMb(benign.label).toFixed(4)} s/MB`,
            ratio: perMb(worst.label) / perMb(benign.label),
            ratioOf: "time per MB",
            target: "≤ 0.05 s/MB",
          },
          {
            benchmark: `.pt → safetensors conversion of ${mb(loraSize).toFixed(0)} MB vs verifying the same bytes (VerifyBlob-style)`,
            measured: rate(median(convertTimes)),
            baseline: rate(median(verifyTimes)),
            ratio: median(verifyTimes) / median(convertTimes),
            ratioOf: "throughput",
            target: "≥ 0.5",
          },
          {
            benchmark: `Peak RSS verifying a ${headerMb} safetensors header vs a benign ${headerMb} file`,
            measured: `${mb(heavy.hwm).toFixed(0)} MB`,
            baseline: `${mb(plain.hwm).toFixed(0)} MB`,
            ratio: heavy.hwm / plain.hwm,
            ratioOf: "peak RSS",
            target: ctx.mode === "full" ? "≤ 512 MB" : undefined,
          },
        ],
        details: [
          `In the harness process: \`verifyStream\` over the file read in 4 MiB chunks, as VerifyBlob reads a blob; ` +
            `${ctx.sizes.rounds} rounds, rotated, median. Inputs are built at the caps the verifier allows ` +
            `(100,000 tensors and metadata entries, a 32 MiB data.pkl, 100,000 tensors in a .pt) and at a ` +
            `${headerMb} header; each is refused or accepted as its verdict shows.`,
          "",
          table(
            ["input", "MB", "verdict", "median s", "s/MB", "all rounds, s"],
            [...adversarial, benign].map((input) => {
              const s = samples.get(input.label)!;
              return [
                input.label,
                mb(s.size).toFixed(1),
                s.reason,
                median(s.seconds).toFixed(3),
                perMb(input.label).toFixed(4),
                s.seconds.map((x) => x.toFixed(2)).join(" "),
              ];
            }),
          ),
          "",
          `Conversion: \`TorchToSafetensors.open(fileSource(file))\` (pass 1: the central directory, local headers, ` +
            `descriptors and data.pkl by range, with the verifier's checks) and its \`chunks()\` drained (pass 2: ` +
            `tensor reads, each storage's CRC-32 and descriptor, sha256 of the output, the strict re-read), ` +
            `against \`verifyStream\` of the same ${mb(loraSize).toFixed(0)} MB .pt (${ctx.sizes.rounds} rounds, rotated).`,
          "",
          table(
            ["", "median s", "MB/s", "all rounds, s"],
            [
              [
                "verify (VerifyBlob-style)",
                median(verifyTimes).toFixed(2),
                (mb(loraSize) / median(verifyTimes)).toFixed(0),
                verifyTimes.map((x) => x.toFixed(2)).join(" "),
              ],
              [
                "convert to safetensors",
                median(convertTimes).toFixed(2),
                (mb(loraSize) / median(convertTimes)).toFixed(0),
                convertTimes.map((x) => x.toFixed(2)).join(" "),
              ],
            ],
          ),
          "",
          `Memory: VmHWM of a fresh \`node\` process (bench/src/harness/verify-file.ts) verifying the file; RSS at its ` +
            `start ${mb(heavy.rssBefore).toFixed(0)} MB. The bound for the header is 4 × ${headerMb} + 64 MiB over that start.`,
        ].join("\n"),
      };
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
};
