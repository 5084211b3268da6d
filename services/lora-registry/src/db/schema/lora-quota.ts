import type { ColumnType } from "kysely";

/**
 * One user's quota ledger. max_* are admin overrides (null: the global
 * defaults from the environment). used_* count verified visible LoRAs,
 * reserved_* the uploads in progress; both count against the limits.
 */
export interface LoraQuotaTable {
  user_id: string;
  max_bytes: ColumnType<string | null, number | null | undefined, number | null>;
  max_count: number | null;
  used_bytes: ColumnType<string, number | undefined, number>;
  used_count: ColumnType<number, number | undefined, number>;
  reserved_bytes: ColumnType<string, number | undefined, number>;
  reserved_count: ColumnType<number, number | undefined, number>;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}
