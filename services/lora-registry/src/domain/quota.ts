import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  ErrorReason,
  formatBytes,
  type QuotaSummary,
  QuotaExceededDetailSchema,
  QuotaSummarySchema,
} from "@emprops/contracts";
import { rpcError } from "@emprops/platform";
import { type Kysely, sql } from "kysely";
import type { QuotaConfig } from "../config.js";
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

interface LedgerRow {
  user_id: string;
  max_bytes: string | null;
  max_count: number | null;
  used_bytes: string;
  used_count: number;
  reserved_bytes: string;
  reserved_count: number;
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

/**
 * Creates the user's ledger if missing, starting from what the rows say (a
 * user may have LoRAs from before the ledger existed). A no-op when it
 * exists; true when it was created.
 */
export async function ensureLedger(db: Kysely<Database>, userId: string, now: Date): Promise<boolean> {
  const res = await sql`
    INSERT INTO lora_quota (user_id, used_bytes, used_count, reserved_bytes, reserved_count, updated_at)
    SELECT ${userId}::uuid, used.bytes, used.count, pending.bytes, pending.count, ${now}::timestamptz
    FROM (SELECT coalesce(sum(lora_size_bytes(gen_out_data)), 0) AS bytes, count(*) AS count
          FROM flat_file
          WHERE user_id = ${userId} AND 'lora' = ANY (tags) AND hidden IS NOT TRUE) AS used,
         (SELECT coalesce(sum(declared_size_bytes), 0) AS bytes, count(*) AS count
          FROM lora_upload WHERE user_id = ${userId} AND state = 'pending') AS pending
    WHERE NOT EXISTS (SELECT 1 FROM lora_quota WHERE user_id = ${userId})
    ON CONFLICT (user_id) DO NOTHING`.execute(db);
  return (res.numAffectedRows ?? 0n) > 0n;
}

/**
 * Reserves bytes and one LoRA in ONE statement: the row lock serialises
 * concurrent reservations and each re-checks the limits against the row as
 * the previous one left it, so the quota can never be overshot. Undefined
 * when a limit refuses it.
 */
export async function reserveQuota(
  db: Kysely<Database>,
  cfg: QuotaConfig,
  userId: string,
  bytes: number,
  now: Date,
): Promise<Ledger | undefined> {
  const res = await sql<LedgerRow>`
    UPDATE lora_quota
    SET reserved_bytes = reserved_bytes + ${bytes}, reserved_count = reserved_count + 1, updated_at = ${now}
    WHERE user_id = ${userId}
      AND used_bytes + reserved_bytes + ${bytes} <= coalesce(max_bytes, ${cfg.defaultMaxBytes})
      AND used_count + reserved_count + 1 <= coalesce(max_count, ${cfg.defaultMaxCount})
    RETURNING user_id, max_bytes, max_count, used_bytes, used_count, reserved_bytes, reserved_count`.execute(db);
  const row = res.rows[0];
  return row ? toLedger(row, cfg) : undefined;
}

/** Returns an upload's reservation, optionally turning `usedBytes` of it into usage. */
export async function settleReservation(
  db: Kysely<Database>,
  userId: string,
  reservedBytes: number,
  now: Date,
  usedBytes?: number,
): Promise<void> {
  const used = usedBytes ?? 0;
  const count = usedBytes === undefined ? 0 : 1;
  // GREATEST: a drifted ledger must not block the user; ReconcileQuota repairs drift.
  await sql`
    UPDATE lora_quota
    SET reserved_bytes = greatest(reserved_bytes - ${reservedBytes}, 0),
        reserved_count = greatest(reserved_count - 1, 0),
        used_bytes = used_bytes + ${used},
        used_count = used_count + ${count},
        updated_at = ${now}
    WHERE user_id = ${userId}`.execute(db);
}

/** Returns deleted LoRAs' bytes and count to the quota. */
export async function releaseUsage(
  db: Kysely<Database>,
  userId: string,
  bytes: number,
  count: number,
  now: Date,
): Promise<void> {
  await sql`
    UPDATE lora_quota
    SET used_bytes = greatest(used_bytes - ${bytes}, 0),
        used_count = greatest(used_count - ${count}, 0),
        updated_at = ${now}
    WHERE user_id = ${userId}`.execute(db);
}

/** The ledger, or what it would be from the rows when the user has none yet (reads never write). */
export async function readLedger(db: Kysely<Database>, cfg: QuotaConfig, userId: string): Promise<Ledger> {
  const res = await sql<LedgerRow>`
    SELECT user_id, max_bytes, max_count, used_bytes, used_count, reserved_bytes, reserved_count
    FROM lora_quota WHERE user_id = ${userId}
    UNION ALL
    SELECT ${userId}::uuid, NULL, NULL, used.bytes, used.count::int, pending.bytes, pending.count::int
    FROM (SELECT coalesce(sum(lora_size_bytes(gen_out_data)), 0) AS bytes, count(*) AS count
          FROM flat_file
          WHERE user_id = ${userId} AND 'lora' = ANY (tags) AND hidden IS NOT TRUE) AS used,
         (SELECT coalesce(sum(declared_size_bytes), 0) AS bytes, count(*) AS count
          FROM lora_upload WHERE user_id = ${userId} AND state = 'pending') AS pending
    WHERE NOT EXISTS (SELECT 1 FROM lora_quota WHERE user_id = ${userId})`.execute(db);
  const row = res.rows[0];
  if (!row) throw new Error("ledger query returned no row");
  return toLedger(row, cfg);
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
