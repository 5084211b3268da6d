import { type Kysely, type Selectable, sql } from "kysely";
import type { QuotaConfig } from "../../config.js";
import type { Database, LoraQuotaTable } from "../schema/index.js";
import { isVisibleLora } from "./loras.js";

/** A user's ledger row (lora_quota), without its update time. */
export type LedgerRow = Omit<Selectable<LoraQuotaTable>, "updated_at">;

const LEDGER_COLUMNS = sql.raw("user_id, max_bytes, max_count, used_bytes, used_count, reserved_bytes, reserved_count");

/** What the user's rows say: bytes and count of the visible LoRAs and of the pending uploads. */
function actualUse(userId: string) {
  return sql`
    (SELECT coalesce(sum(lora_size_bytes(f.gen_out_data)), 0) AS bytes, count(*) AS count
     FROM flat_file f WHERE f.user_id = ${userId} AND ${isVisibleLora}) AS used,
    (SELECT coalesce(sum(s.declared_size_bytes), 0) AS bytes, count(*) AS count
     FROM lora_upload s WHERE s.user_id = ${userId} AND s.state = 'pending') AS pending`;
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
    FROM ${actualUse(userId)}
    WHERE NOT EXISTS (SELECT 1 FROM lora_quota WHERE user_id = ${userId})
    ON CONFLICT (user_id) DO NOTHING`.execute(db);
  return (res.numAffectedRows ?? 0n) > 0n;
}

/** The ledger, or what it would be from the rows when the user has none yet (reads never write). */
export async function readLedgerRow(db: Kysely<Database>, userId: string): Promise<LedgerRow> {
  const res = await sql<LedgerRow>`
    SELECT ${LEDGER_COLUMNS} FROM lora_quota WHERE user_id = ${userId}
    UNION ALL
    SELECT ${userId}::uuid, NULL, NULL, used.bytes, used.count::int, pending.bytes, pending.count::int
    FROM ${actualUse(userId)}
    WHERE NOT EXISTS (SELECT 1 FROM lora_quota WHERE user_id = ${userId})`.execute(db);
  const row = res.rows[0];
  if (!row) throw new Error("ledger query returned no row");
  return row;
}

/**
 * Reserves bytes and one LoRA in ONE statement: the row lock serialises
 * concurrent reservations and each re-checks the limits against the row as
 * the previous one left it, so the quota can never be overshot. Undefined
 * when a limit refuses it.
 */
export async function reserveQuota(
  db: Kysely<Database>,
  limits: Pick<QuotaConfig, "defaultMaxBytes" | "defaultMaxCount">,
  userId: string,
  bytes: number,
  now: Date,
): Promise<LedgerRow | undefined> {
  const res = await sql<LedgerRow>`
    UPDATE lora_quota
    SET reserved_bytes = reserved_bytes + ${bytes}, reserved_count = reserved_count + 1, updated_at = ${now}
    WHERE user_id = ${userId}
      AND used_bytes + reserved_bytes + ${bytes} <= coalesce(max_bytes, ${limits.defaultMaxBytes})
      AND used_count + reserved_count + 1 <= coalesce(max_count, ${limits.defaultMaxCount})
    RETURNING ${LEDGER_COLUMNS}`.execute(db);
  return res.rows[0];
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

/** Returns deleted LoRAs' bytes and count, and cancelled uploads' reservations, to the ledger. */
export async function releaseQuota(
  db: Kysely<Database>,
  userId: string,
  release: { usedBytes: number; usedCount: number; reservedBytes?: number; reservedCount?: number },
  now: Date,
): Promise<void> {
  await sql`
    UPDATE lora_quota
    SET used_bytes = greatest(used_bytes - ${release.usedBytes}, 0),
        used_count = greatest(used_count - ${release.usedCount}, 0),
        reserved_bytes = greatest(reserved_bytes - ${release.reservedBytes ?? 0}, 0),
        reserved_count = greatest(reserved_count - ${release.reservedCount ?? 0}, 0),
        updated_at = ${now}
    WHERE user_id = ${userId}`.execute(db);
}

/** Takes the ledger's row lock: the user's reservations wait until the transaction ends. */
export async function lockLedger(db: Kysely<Database>, userId: string): Promise<void> {
  await db.selectFrom("lora_quota").select("user_id").where("user_id", "=", userId).forUpdate().execute();
}

/** Sets or clears the admin overrides (undefined leaves a limit as it is, null returns it to the default). */
export async function setLimits(
  db: Kysely<Database>,
  userId: string,
  limits: { maxBytes?: number | null; maxCount?: number | null },
  now: Date,
): Promise<void> {
  await db
    .updateTable("lora_quota")
    .set({
      ...(limits.maxBytes !== undefined ? { max_bytes: limits.maxBytes } : {}),
      ...(limits.maxCount !== undefined ? { max_count: limits.maxCount } : {}),
      updated_at: now,
    })
    .where("user_id", "=", userId)
    .execute();
}

/** A ledger beside what the rows and pending sessions say. */
export interface LedgerComparison {
  user_id: string;
  ledger_used_bytes: string;
  ledger_used_count: number;
  ledger_reserved_bytes: string;
  ledger_reserved_count: number;
  actual_used_bytes: string;
  actual_used_count: string;
  actual_reserved_bytes: string;
  actual_reserved_count: string;
}

/** Every ledger (or one user's) beside its rows; `lock` takes the ledgers' row locks. */
export async function compareLedgers(
  db: Kysely<Database>,
  userId: string | undefined,
  lock: boolean,
): Promise<LedgerComparison[]> {
  const res = await sql<LedgerComparison>`
    SELECT q.user_id,
           q.used_bytes AS ledger_used_bytes, q.used_count AS ledger_used_count,
           q.reserved_bytes AS ledger_reserved_bytes, q.reserved_count AS ledger_reserved_count,
           used.bytes AS actual_used_bytes, used.count AS actual_used_count,
           pending.bytes AS actual_reserved_bytes, pending.count AS actual_reserved_count
    FROM lora_quota q
    CROSS JOIN LATERAL (
      SELECT coalesce(sum(lora_size_bytes(f.gen_out_data)), 0) AS bytes, count(*) AS count
      FROM flat_file f
      WHERE f.user_id = q.user_id AND ${isVisibleLora}) used
    CROSS JOIN LATERAL (
      SELECT coalesce(sum(s.declared_size_bytes), 0) AS bytes, count(*) AS count
      FROM lora_upload s WHERE s.user_id = q.user_id AND s.state = 'pending') pending
    ${userId ? sql`WHERE q.user_id = ${userId}` : sql``}
    ORDER BY q.user_id
    ${lock ? sql`FOR UPDATE OF q` : sql``}`.execute(db);
  return res.rows;
}

/** Rewrites a ledger's use to what its rows say. */
export async function repairLedger(db: Kysely<Database>, c: LedgerComparison, now: Date): Promise<void> {
  await db
    .updateTable("lora_quota")
    .set({
      used_bytes: Number(c.actual_used_bytes),
      used_count: Number(c.actual_used_count),
      reserved_bytes: Number(c.actual_reserved_bytes),
      reserved_count: Number(c.actual_reserved_count),
      updated_at: now,
    })
    .where("user_id", "=", c.user_id)
    .execute();
}

export interface LoraSizeRow {
  id: string;
  name: string;
  size_bytes: string;
  pending: boolean;
  last_used_at: Date | null;
  created_at: Date | null;
}

/** Every LoRA counted against a user's quota (visible and pending), largest first. */
export async function loraSizes(db: Kysely<Database>, userId: string): Promise<LoraSizeRow[]> {
  const res = await sql<LoraSizeRow>`
    SELECT f.id, f.name, lora_size_bytes(f.gen_out_data) AS size_bytes, false AS pending, u.last_used_at,
           f.created_at
    FROM flat_file f LEFT JOIN lora_usage u ON u.lora_id = f.id
    WHERE f.user_id = ${userId} AND ${isVisibleLora}
    UNION ALL
    SELECT f.id, f.name, s.declared_size_bytes, true, NULL, f.created_at
    FROM lora_upload s JOIN flat_file f ON f.id = s.lora_id
    WHERE s.user_id = ${userId} AND s.state = 'pending'
    ORDER BY size_bytes DESC, id`.execute(db);
  return res.rows;
}

/**
 * Users by the share of their byte quota in use (used + reserved), in four
 * bands, by exact integer comparisons as the quota warning itself (no
 * rounded share); a zero limit is full.
 */
export async function quotaUseBands(
  db: Kysely<Database>,
  defaultMaxBytes: number,
  warningPercent: number,
): Promise<Record<"under_half" | "half_to_warning" | "warning" | "full", number>> {
  const { rows } = await sql<{ under_half: string; half_to_warning: string; warning: string; full: string }>`
    SELECT count(*) FILTER (WHERE used * 2 < max) AS under_half,
           count(*) FILTER (WHERE used * 2 >= max AND used * 100 < max * ${warningPercent}) AS half_to_warning,
           count(*) FILTER (WHERE used * 100 >= max * ${warningPercent} AND used < max) AS warning,
           count(*) FILTER (WHERE used >= max) AS full
    FROM (SELECT (used_bytes + reserved_bytes)::numeric AS used,
                 coalesce(max_bytes, ${defaultMaxBytes})::numeric AS max
          FROM lora_quota) q`.execute(db);
  const row = rows[0];
  return {
    under_half: Number(row?.under_half ?? 0),
    half_to_warning: Number(row?.half_to_warning ?? 0),
    warning: Number(row?.warning ?? 0),
    full: Number(row?.full ?? 0),
  };
}
