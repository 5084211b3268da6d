import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import {
  ErrorReason,
  formatBytes,
  formatPercent,
  type LoraSize,
  LoraSizeSchema,
  type QuotaSummary,
  QuotaExceededDetailSchema,
  QuotaSummarySchema,
} from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import type { Kysely } from "kysely";
import type { QuotaConfig } from "../config.js";
import { type LedgerRow, loraSizes, type LoraSizeRow, readLedgerRow, reserveQuota } from "../db/queries/quota.js";
import type { Database } from "../db/schema/index.js";

const GIB = 1024 ** 3;

/** One user's ledger with the limits in force (override or global default). */
export interface Ledger {
  userId: string;
  maxBytes: number;
  maxCount: number;
  usedBytes: number;
  usedCount: number;
  reservedBytes: number;
  reservedCount: number;
  overridden: boolean;
}

function toLedger(row: LedgerRow, cfg: QuotaConfig): Ledger {
  return {
    userId: row.user_id,
    maxBytes: row.max_bytes === null ? cfg.defaultMaxBytes : Number(row.max_bytes),
    maxCount: row.max_count === null ? cfg.defaultMaxCount : row.max_count,
    usedBytes: Number(row.used_bytes),
    usedCount: row.used_count,
    reservedBytes: Number(row.reserved_bytes),
    reservedCount: row.reserved_count,
    overridden: row.max_bytes !== null || row.max_count !== null,
  };
}

/** The user's ledger with the limits in force; computed from the rows when there is none yet. */
export async function readLedger(db: Kysely<Database>, cfg: QuotaConfig, userId: string): Promise<Ledger> {
  return toLedger(await readLedgerRow(db, userId), cfg);
}

/**
 * Reserves `bytes` and one LoRA against the user's limits (the ledger must
 * exist); the ledger after it, or undefined when a limit refuses it.
 */
export async function reserve(
  db: Kysely<Database>,
  cfg: QuotaConfig,
  userId: string,
  bytes: number,
  now: Date,
): Promise<Ledger | undefined> {
  const row = await reserveQuota(db, cfg, userId, bytes, now);
  return row ? toLedger(row, cfg) : undefined;
}

/** The share in percent, rounded to two decimals: for display only, never for a threshold. */
function percent(part: number, whole: number): number {
  // A zero limit is full.
  if (whole <= 0) return 100;
  return Math.round((part / whole) * 10_000) / 100;
}

/** part / whole ≥ percent / 100, in exact integers (a zero limit is full). */
export function reachesPercent(part: number, whole: number, percent: number): boolean {
  if (whole <= 0) return true;
  return BigInt(part) * 100n >= BigInt(whole) * BigInt(percent);
}

/** The ledger as the UI sees it, with the warning threshold applied to bytes and count. */
export function quotaSummary(l: Ledger, cfg: QuotaConfig): QuotaSummary {
  const current = l.usedBytes + l.reservedBytes;
  const available = Math.max(0, l.maxBytes - current);
  const utilization = percent(current, l.maxBytes);
  return create(QuotaSummarySchema, {
    userId: l.userId,
    maxBytes: BigInt(l.maxBytes),
    usedBytes: BigInt(l.usedBytes),
    reservedBytes: BigInt(l.reservedBytes),
    availableBytes: BigInt(available),
    utilizationPercent: utilization,
    maxCount: l.maxCount,
    usedCount: l.usedCount,
    reservedCount: l.reservedCount,
    warning:
      reachesPercent(current, l.maxBytes, cfg.warningPercent) ||
      reachesPercent(l.usedCount + l.reservedCount, l.maxCount, cfg.warningPercent),
    warningThresholdPercent: cfg.warningPercent,
    maxStorageGb: l.maxBytes / GIB,
    currentStorageGb: current / GIB,
    availableGb: available / GIB,
    overridden: l.overridden,
  });
}

function toLoraSize(r: LoraSizeRow): LoraSize {
  return create(LoraSizeSchema, {
    id: r.id,
    name: r.name,
    sizeBytes: BigInt(r.size_bytes),
    sizeGb: Number(r.size_bytes) / GIB,
    pending: r.pending,
    lastUsedAt: r.last_used_at ? timestampFromDate(r.last_used_at) : undefined,
    createdAt: r.created_at ? timestampFromDate(r.created_at) : undefined,
  });
}

/** True while bytes or count is at or above the warning threshold (as QuotaSummary.warning). */
function overThreshold(bytes: number, count: number, l: Ledger, percent: number): boolean {
  return reachesPercent(bytes, l.maxBytes, percent) || reachesPercent(count, l.maxCount, percent);
}

/**
 * The LoRAs unused longest (never used first, then by last use, then the
 * oldest upload), just enough that deleting them brings bytes and count
 * under the warning threshold; every stored one when even that is not
 * enough. Pending uploads are not candidates.
 */
export function deletionSuggestions(l: Ledger, cfg: QuotaConfig, sizes: LoraSizeRow[]): LoraSizeRow[] {
  let bytes = l.usedBytes + l.reservedBytes;
  let count = l.usedCount + l.reservedCount;
  const time = (d: Date | null) => (d ? d.getTime() : -Infinity);
  const candidates = sizes
    .filter((s) => !s.pending)
    .sort(
      (a, b) =>
        time(a.last_used_at) - time(b.last_used_at) ||
        time(a.created_at) - time(b.created_at) ||
        Number(BigInt(a.id) - BigInt(b.id)),
    );
  const chosen: LoraSizeRow[] = [];
  for (const c of candidates) {
    if (!overThreshold(bytes, count, l, cfg.warningPercent)) break;
    chosen.push(c);
    bytes -= Number(c.size_bytes);
    count -= 1;
  }
  return chosen;
}

/** "2026-10-02" (UTC): when a suggestion was last used, in the warning's sentence. */
function day(d: Date): string {
  return d.toISOString().slice(0, 10);
}

/** The warning as a sentence naming the suggestions and their sizes. */
function warningMessage(l: Ledger, cfg: QuotaConfig, suggestions: LoraSizeRow[]): string {
  const bytes = l.usedBytes + l.reservedBytes;
  const count = l.usedCount + l.reservedCount;
  const used = Math.max(percent(bytes, l.maxBytes), percent(count, l.maxCount));
  const head = `You have used ${formatPercent(used)} of your LoRA quota (warning at ${cfg.warningPercent}%).`;
  if (suggestions.length === 0) return `${head} Uploads in progress hold it; wait for them or cancel one.`;
  const freed = suggestions.reduce((sum, s) => sum + Number(s.size_bytes), 0);
  const named = suggestions
    .map(
      (s) =>
        `${s.name} (${formatBytes(Number(s.size_bytes))}, ${s.last_used_at ? `last used ${day(s.last_used_at)}` : "never used"})`,
    )
    .join(", ");
  const under = !overThreshold(bytes - freed, count - suggestions.length, l, cfg.warningPercent);
  const unused =
    suggestions.length === 1 ? "the LoRA unused longest" : `the ${suggestions.length} LoRAs unused longest`;
  return under
    ? `${head} Deleting ${unused} frees ${formatBytes(freed)} and brings you back under it: ${named}.`
    : `${head} Even deleting every stored LoRA frees only ${formatBytes(freed)}: ${named}.`;
}

/**
 * GetQuota's answer: the summary, every LoRA counted (pending ones marked,
 * largest first) and, with the warning, the deletions that end it.
 */
export async function quotaReport(
  db: Kysely<Database>,
  cfg: QuotaConfig,
  userId: string,
): Promise<{
  quota: QuotaSummary;
  loras: LoraSize[];
  deletionSuggestions: LoraSize[];
  warningMessage: string;
  suggestedFreeBytes: bigint;
}> {
  const [ledger, sizes] = await Promise.all([readLedger(db, cfg, userId), loraSizes(db, userId)]);
  const quota = quotaSummary(ledger, cfg);
  const suggestions = quota.warning ? deletionSuggestions(ledger, cfg, sizes) : [];
  return {
    quota,
    loras: sizes.map(toLoraSize),
    deletionSuggestions: suggestions.map(toLoraSize),
    warningMessage: quota.warning ? warningMessage(ledger, cfg, suggestions) : "",
    suggestedFreeBytes: suggestions.reduce((sum, s) => sum + BigInt(s.size_bytes), 0n),
  };
}

/** RESOURCE_EXHAUSTED / QUOTA_EXCEEDED with the numbers a UI shows. */
export function quotaExceeded(l: Ledger, cfg: QuotaConfig, requestedBytes: number) {
  const current = l.usedBytes + l.reservedBytes;
  const limit = current + requestedBytes > l.maxBytes ? "bytes" : "count";
  const summary = quotaSummary(l, cfg);
  // The specification's current_usage_gb / max_quota_gb / available_gb.
  const gb = (n: number) => (n / GIB).toFixed(2);
  const message =
    limit === "bytes"
      ? `LoRA storage quota exceeded: ${formatBytes(current)} of ${formatBytes(l.maxBytes)} used, ` +
        `${formatBytes(requestedBytes)} requested`
      : `LoRA count quota exceeded: ${l.usedCount + l.reservedCount} / ${l.maxCount} LoRAs`;
  return rpcError(
    Code.ResourceExhausted,
    ErrorReason.QUOTA_EXCEEDED,
    message,
    {
      limit,
      current_bytes: current,
      max_bytes: l.maxBytes,
      available_bytes: Math.max(0, l.maxBytes - current),
      requested_bytes: requestedBytes,
      current_count: l.usedCount + l.reservedCount,
      max_count: l.maxCount,
      current_usage_gb: gb(current),
      max_quota_gb: gb(l.maxBytes),
      available_gb: gb(Math.max(0, l.maxBytes - current)),
    },
    [
      {
        desc: QuotaExceededDetailSchema,
        value: create(QuotaExceededDetailSchema, { quota: summary, requestedBytes: BigInt(requestedBytes), limit }),
      },
    ],
  );
}
