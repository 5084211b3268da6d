import { realpathSync, statSync } from "node:fs";
import path from "node:path";
import { toJson } from "@bufbuild/protobuf";
import { checkLoraFileName, formatBytes, formatPercent, LoraSchema, reasonName } from "@emprops/contracts";
import { SingleBar } from "cli-progress";
import { updateConfig } from "../config-store.js";
import type { CliContext } from "../context.js";
import { CliError, describeError, EXIT, localRefusal } from "../errors.js";
import { type UploadProgress, uploadLora } from "../upload-lora.js";
import { describeLora } from "./show.js";

export interface UploadOptions {
  name?: string;
  tags?: string[];
  baseModel?: string;
  triggerWords?: string[];
  description?: string;
  restart?: boolean;
  json?: boolean;
}

/** The key an upload is remembered by: the same file, unchanged, resumes. */
function fileKey(file: string): string {
  const real = realpathSync(file);
  const info = statSync(real);
  return `${real}:${info.size}:${Math.trunc(info.mtimeMs)}`;
}

/** A bar on a terminal; one line per block elsewhere (logs, CI, tests). */
function progressReporter(ctx: CliContext): { update(p: UploadProgress): void; stop(): void } {
  if (ctx.stderr.isTTY) {
    const bar = new SingleBar({
      stream: ctx.stderr,
      format: "uploading [{bar}] {percentage}% | {done} of {size} | block {blocks}",
      barCompleteChar: "█",
      barIncompleteChar: "░",
      hideCursor: true,
    });
    let started = false;
    return {
      update(p) {
        const payload = {
          done: formatBytes(p.uploadedBytes),
          size: formatBytes(p.totalBytes),
          blocks: `${p.blocksDone}/${p.blocksTotal}`,
        };
        if (!started) {
          bar.start(p.totalBytes, p.uploadedBytes, payload);
          started = true;
        } else bar.update(p.uploadedBytes, payload);
      },
      stop: () => bar.stop(),
    };
  }
  let last = -1;
  return {
    update(p) {
      if (p.blocksDone === last) return;
      last = p.blocksDone;
      const pct = p.totalBytes === 0 ? 100 : (p.uploadedBytes / p.totalBytes) * 100;
      ctx.note(
        `progress: ${Math.floor(pct)}% (${formatBytes(p.uploadedBytes)} of ${formatBytes(p.totalBytes)}, block ${p.blocksDone}/${p.blocksTotal})`,
      );
    },
    stop: () => undefined,
  };
}

/** `lora upload FILE`: uploads with a progress bar; a re-run after an interruption resumes. */
export async function uploadCommand(ctx: CliContext, file: string, opts: UploadOptions): Promise<void> {
  let key: string;
  try {
    key = fileKey(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      `cannot read ${file}: ${code === "ENOENT" ? "no such file" : (err as Error).message}`,
      EXIT.USAGE,
    );
  }
  // The registry's own file-name rule, checked before anything is sent.
  const named = checkLoraFileName(opts.name ?? path.basename(file));
  if (!named.ok) {
    throw localRefusal(
      reasonName(named.reason),
      named.message,
      opts.name === undefined && named.problem !== "extension"
        ? "rename the file, or upload it under another name with --name <name>"
        : undefined,
    );
  }
  const earlier = ctx.config.uploads?.[key];
  const resumeUploadId = !opts.restart && earlier?.registryUrl === ctx.registryUrl ? earlier.uploadId : undefined;
  const forget = () =>
    updateConfig(ctx.configFile, (config) => {
      delete config.uploads?.[key];
    });
  const progress = progressReporter(ctx);
  try {
    const result = await uploadLora({
      client: ctx.clients().lora,
      file,
      name: named.name,
      tags: opts.tags,
      metadata: { baseModel: opts.baseModel, triggerWords: opts.triggerWords, description: opts.description },
      uploadSource: "cli",
      resumeUploadId,
      retries: ctx.env.LORA_UPLOAD_RETRIES ? Number(ctx.env.LORA_UPLOAD_RETRIES) : undefined,
      onSession: (s) =>
        updateConfig(ctx.configFile, (config) => {
          config.uploads = {
            ...config.uploads,
            [key]: { ...s, registryUrl: ctx.registryUrl, startedAt: new Date().toISOString() },
          };
        }),
      onResume: (r) =>
        ctx.note(
          `Resuming upload ${r.uploadId}: ${r.stagedBlocks} of ${r.blocksTotal} blocks (${formatBytes(r.stagedBytes)}) already uploaded`,
        ),
      onProgress: (p) => progress.update(p),
    });
    progress.stop();
    forget();
    if (opts.json) {
      ctx.print(JSON.stringify(toJson(LoraSchema, result.lora), null, 2));
      return;
    }
    ctx.print(
      result.alreadyCompleted
        ? `Already uploaded: ${result.lora.name} is LoRA ${result.lora.id}`
        : `Uploaded ${result.lora.name} as LoRA ${result.lora.id}`,
    );
    ctx.print(describeLora(result.lora, { brief: true }));
    const q = result.quota;
    if (q) {
      ctx.print(
        `Quota: ${formatBytes(q.usedBytes + q.reservedBytes)} of ${formatBytes(q.maxBytes)} used (${formatPercent(q.utilizationPercent)}), ${q.usedCount + q.reservedCount} of ${q.maxCount} LoRAs`,
      );
      if (q.warning) ctx.note(`Warning: you have used more than ${q.warningThresholdPercent}% of your LoRA quota`);
    }
  } catch (err) {
    progress.stop();
    // Interrupted: keep the session for the re-run. Anything else ended it.
    if (describeError(err, ctx.registryUrl).exitCode !== EXIT.UNAVAILABLE) forget();
    throw err;
  }
}
