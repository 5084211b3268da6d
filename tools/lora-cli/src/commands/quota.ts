import { toJson } from "@bufbuild/protobuf";
import {
  formatBytes,
  formatPercent,
  GetQuotaResponseSchema,
  type LoraSize,
  type QuotaSummary,
} from "@emprops/contracts";
import type { CliContext } from "../context.js";
import { formatTime, renderTable } from "../format.js";

const BAR = 30;

/** A quota as a few lines with a text bar. */
export function describeQuota(q: QuotaSummary): string {
  const used = q.usedBytes + q.reservedBytes;
  const filled = Math.min(BAR, Math.round((q.utilizationPercent / 100) * BAR));
  const lines = [
    `Storage  [${"#".repeat(filled)}${".".repeat(BAR - filled)}] ${formatPercent(q.utilizationPercent)}`,
    `  used ${formatBytes(used)} of ${formatBytes(q.maxBytes)}, ${formatBytes(q.availableBytes)} available` +
      (q.reservedBytes > 0n ? ` (${formatBytes(q.reservedBytes)} in uploads in progress)` : ""),
    `LoRAs    ${q.usedCount + q.reservedCount} of ${q.maxCount}`,
  ];
  if (q.overridden) lines.push("  (limits set by an admin)");
  if (q.warning) lines.push(`Warning: more than ${q.warningThresholdPercent}% of the quota is used`);
  return lines.join("\n");
}

export function describeSizes(loras: LoraSize[]): string {
  return renderTable(
    [
      { title: "ID", align: "right" },
      { title: "NAME", max: 40 },
      { title: "SIZE", align: "right" },
      { title: "STATE" },
    ],
    loras.map((l) => [l.id, l.name, formatBytes(l.sizeBytes), l.pending ? "uploading" : "stored"]),
  );
}

/** The LoRAs whose deletion ends the warning, unused longest first. */
export function describeSuggestions(loras: LoraSize[]): string {
  return renderTable(
    [
      { title: "ID", align: "right" },
      { title: "NAME", max: 40 },
      { title: "SIZE", align: "right" },
      { title: "LAST USED" },
    ],
    loras.map((l) => [l.id, l.name, formatBytes(l.sizeBytes), l.lastUsedAt ? formatTime(l.lastUsedAt) : "never"]),
  );
}

/** `lora quota`: limits, use, the 80% warning, what takes the space and what to delete. */
export async function quotaCommand(ctx: CliContext, opts: { json?: boolean }): Promise<void> {
  const res = await ctx.clients().lora.getQuota({});
  if (opts.json) {
    ctx.print(JSON.stringify(toJson(GetQuotaResponseSchema, res), null, 2));
    return;
  }
  if (!res.quota) throw new Error("GetQuota answered without a quota");
  ctx.print(describeQuota(res.quota));
  if (res.loras.length > 0) ctx.print(`\n${describeSizes(res.loras)}`);
  if (res.deletionSuggestions.length > 0) {
    ctx.print(`\nUnused longest: deleting these frees ${formatBytes(res.suggestedFreeBytes)} (lora rm ID)`);
    ctx.print(describeSuggestions(res.deletionSuggestions));
  }
  if (res.warningMessage) ctx.note(res.warningMessage);
}
