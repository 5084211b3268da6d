import type { ColumnType } from "kysely";

/** Machine usage of one LoRA, folded from LoraUsageBatch events. */
export interface LoraUsageTable {
  lora_id: string;
  user_id: string;
  usage_count: ColumnType<string, number, number>;
  last_used_at: Date;
}
