/**
 * Verifies one file in a process of its own and prints what it cost, so the peak resident set (VmHWM) is the
 * verifier's alone: node bench/dist/bench/src/harness/verify-file.js FILE safetensors|pt
 */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { verifyStream } from "@emprops/lora-formats";
import { memoryOf } from "./memory.js";

async function main(): Promise<void> {
  const [file, extension] = process.argv.slice(2);
  if (!file || (extension !== "safetensors" && extension !== "pt")) throw new Error("usage: verify-file FILE EXT");
  const { size } = await stat(file);
  const before = memoryOf(process.pid);
  const started = performance.now();
  const result = await verifyStream(createReadStream(file, { highWaterMark: 4 * 1024 * 1024 }), {
    expectedExtension: extension,
    maxSizeBytes: 4 * 1024 ** 3,
  });
  const seconds = (performance.now() - started) / 1000;
  const after = memoryOf(process.pid);
  process.stdout.write(
    `${JSON.stringify({ size, seconds, ok: result.ok, reason: result.reason ?? "", rssBefore: before.rss, hwm: after.hwm })}\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
