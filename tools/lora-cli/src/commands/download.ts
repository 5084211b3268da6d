import { createHash } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { formatBytes } from "@emprops/contracts";
import { SingleBar } from "cli-progress";
import type { CliContext } from "../context.js";
import { CliError, EXIT } from "../errors.js";
import { parseLoraId } from "./arguments.js";

export interface DownloadOptions {
  output?: string;
  force?: boolean;
}

/** A bar on a terminal; a line per tenth elsewhere (logs, CI, tests). */
function progressReporter(ctx: CliContext, total: number): { update(done: number): void; stop(): void } {
  if (ctx.stderr.isTTY) {
    const bar = new SingleBar({
      stream: ctx.stderr,
      format: "downloading [{bar}] {percentage}% | {done} of {size}",
      barCompleteChar: "█",
      barIncompleteChar: "░",
      hideCursor: true,
    });
    bar.start(total, 0, { done: formatBytes(0), size: formatBytes(total) });
    return {
      update: (done) => bar.update(done, { done: formatBytes(done), size: formatBytes(total) }),
      stop: () => bar.stop(),
    };
  }
  let shown = -1;
  return {
    update(done) {
      const tenth = total === 0 ? 10 : Math.floor((done / total) * 10);
      if (tenth === shown) return;
      shown = tenth;
      ctx.note(`progress: ${tenth * 10}% (${formatBytes(done)} of ${formatBytes(total)})`);
    },
    stop: () => undefined,
  };
}

/**
 * `lora download ID [-o FILE]`: the owner's own file as uploaded, streamed
 * to FILE.part with a progress bar and hashed on the way; only a file whose
 * size and sha256 match what the registry recorded is renamed into place.
 */
export async function downloadCommand(ctx: CliContext, id: string, opts: DownloadOptions): Promise<void> {
  const dl = await ctx.clients().lora.getLoraDownloadUrl({ loraId: parseLoraId(id) });
  const target = path.resolve(opts.output ?? dl.fileName);
  if (existsSync(target) && !opts.force) {
    throw new CliError(`${target} exists: choose another file with -o, or overwrite it with --force`, EXIT.USAGE);
  }
  const res = await fetch(dl.url).catch((err: unknown) => {
    throw new CliError(`download failed: ${(err as Error).message}. Run the command again.`, EXIT.UNAVAILABLE);
  });
  if (!res.ok || !res.body) {
    throw new CliError(
      `download failed: storage answered HTTP ${res.status}. Run the command again.`,
      EXIT.UNAVAILABLE,
    );
  }
  const total = Number(dl.sizeBytes);
  const partial = `${target}.part`;
  const hash = createHash("sha256");
  let done = 0;
  const progress = progressReporter(ctx, total);
  const counter = new Transform({
    transform(chunk: Buffer, _enc, next) {
      hash.update(chunk);
      done += chunk.length;
      progress.update(done);
      next(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as WebReadableStream), counter, createWriteStream(partial));
  } catch (err) {
    progress.stop();
    await rm(partial, { force: true });
    throw new CliError(`download interrupted: ${(err as Error).message}. Run the command again.`, EXIT.UNAVAILABLE);
  }
  progress.stop();
  const sha256 = hash.digest("hex");
  if (done !== total || (dl.sha256 && sha256 !== dl.sha256)) {
    await rm(partial, { force: true });
    throw new CliError(
      `the download does not match the LoRA (${done} bytes, sha256 ${sha256}; expected ${total} bytes, sha256 ${dl.sha256}); nothing was kept [CHECKSUM_MISMATCH]`,
      EXIT.REJECTED_FILE,
      "CHECKSUM_MISMATCH",
    );
  }
  await rename(partial, target);
  ctx.print(`Downloaded ${dl.fileName} (${formatBytes(total)}) to ${target}`);
  ctx.print(`  sha256: ${sha256} (checked)`);
}
