import { toJson } from "@bufbuild/protobuf";
import { FileFormat, formatBytes, type Lora, LoraSchema } from "@emprops/contracts";
import type { CliContext } from "../context.js";
import { formatTime, renderTable } from "../format.js";
import { parseLoraId } from "./arguments.js";

const FORMATS: Record<FileFormat, string> = {
  [FileFormat.UNSPECIFIED]: "-",
  [FileFormat.SAFETENSORS]: "safetensors",
  [FileFormat.TORCH_ZIP]: "PyTorch (zip)",
  [FileFormat.PICKLE]: "PyTorch (pickle)",
};

/** "key: value" lines of a LoRA; brief leaves out ids, hashes and workflows. */
export function describeLora(lora: Lora, opts: { brief?: boolean } = {}): string {
  const m = lora.metadata;
  const lines: [string, string][] = [];
  if (!opts.brief) {
    lines.push(["id", lora.id], ["name", lora.name]);
  }
  lines.push(["size", formatBytes(lora.sizeBytes)]);
  if (!opts.brief) lines.push(["uploaded", formatTime(lora.createdAt)]);
  lines.push(["base model", m?.baseModel || "-"]);
  if (m?.rank) lines.push(["rank", String(m.rank) + (m.alpha ? ` (alpha ${m.alpha})` : "")]);
  lines.push(["trigger words", m?.triggerWords.join(", ") || "-"]);
  if (!opts.brief) {
    if (m?.trainingEpochs) lines.push(["epochs", String(m.trainingEpochs)]);
    if (m?.trainingImages) lines.push(["training images", String(m.trainingImages)]);
    if (m?.resolution) lines.push(["resolution", m.resolution]);
    if (m?.networkModule) lines.push(["network", m.networkModule]);
    if (m?.title) lines.push(["title", m.title]);
    if (m?.description) lines.push(["description", m.description]);
    lines.push(
      ["tags", lora.tags.join(", ")],
      ["format", FORMATS[lora.format] ?? "-"],
      ["sha256", lora.sha256 || "-"],
      ["uses", String(lora.usageCount)],
      ["last used", formatTime(lora.lastUsedAt)],
    );
  }
  const width = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `  ${`${k}:`.padEnd(width + 2)}${v}`).join("\n");
}

/** `lora show ID`: metadata and the workflows that used it. */
export async function showCommand(ctx: CliContext, id: string, opts: { json?: boolean }): Promise<void> {
  const { lora } = await ctx.clients().lora.getLora({ loraId: parseLoraId(id) });
  if (!lora) throw new Error("GetLora answered without a LoRA");
  if (opts.json) {
    ctx.print(JSON.stringify(toJson(LoraSchema, lora), null, 2));
    return;
  }
  ctx.print(lora.name);
  ctx.print(describeLora(lora));
  if (lora.workflowsUsing.length === 0) {
    ctx.print("\nNo workflow has used it yet.");
    return;
  }
  ctx.print("\nWorkflows using it:");
  ctx.print(
    renderTable(
      [
        { title: "WORKFLOW", max: 40 },
        { title: "ID", max: 40 },
        { title: "USES", align: "right" },
        { title: "LAST USED" },
      ],
      lora.workflowsUsing.map((w) => [w.name || "-", w.id, String(w.useCount), formatTime(w.lastUsedAt)]),
    ),
  );
}
