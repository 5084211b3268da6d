import type { ColumnType } from "kysely";

/** Which workflows used a LoRA, how often and when last. */
export interface LoraWorkflowUsageTable {
  lora_id: string;
  workflow_id: string;
  workflow_name: string;
  use_count: ColumnType<string, number, number>;
  last_used_at: Date;
}
