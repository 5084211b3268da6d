/** Usage batches already applied, so a redelivered batch counts once. */
export interface LoraUsageBatchTable {
  batch_id: string;
  machine_id: string;
  applied_at: Date;
}
