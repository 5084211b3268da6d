import type { FlatFileTable } from "./flat-file.js";
import type { LoraAuditEventTable } from "./lora-audit-event.js";
import type { LoraOutboxTable } from "./lora-outbox.js";
import type { LoraQuotaTable } from "./lora-quota.js";
import type { LoraUploadTable } from "./lora-upload.js";
import type { LoraUsageBatchTable } from "./lora-usage-batch.js";
import type { LoraUsageTable } from "./lora-usage.js";
import type { LoraWorkflowUsageTable } from "./lora-workflow-usage.js";
import type { MachineCacheStatsTable } from "./machine-cache-stats.js";
import type { StorageSweepReportTable } from "./storage-sweep-report.js";

export type * from "./flat-file.js";
export type * from "./lora-audit-event.js";
export type * from "./lora-outbox.js";
export type * from "./lora-quota.js";
export type * from "./lora-upload.js";
export type * from "./lora-usage-batch.js";
export type * from "./lora-usage.js";
export type * from "./lora-workflow-usage.js";
export type * from "./machine-cache-stats.js";
export type * from "./storage-sweep-report.js";

/** The database as kysely sees it: one interface per table, in this folder. */
export interface Database {
  flat_file: FlatFileTable;
  lora_quota: LoraQuotaTable;
  lora_upload: LoraUploadTable;
  lora_usage: LoraUsageTable;
  lora_workflow_usage: LoraWorkflowUsageTable;
  lora_usage_batch: LoraUsageBatchTable;
  lora_audit_event: LoraAuditEventTable;
  lora_outbox: LoraOutboxTable;
  machine_cache_stats: MachineCacheStatsTable;
  storage_sweep_report: StorageSweepReportTable;
}
