import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type EventNames, LoraUsageBatchSchema } from "@emprops/contracts";
import type { EventBus, Logger } from "@emprops/platform";
import type { Db } from "../db/open-database.js";
import { assignBatch, batchRows, deleteBatch, pendingBatchIds, unbatchedCount } from "../db/usage-outbox.js";
import { writeTransaction } from "../db/write-transaction.js";

export interface UsageReporterDeps {
  db: Db;
  bus: EventBus;
  names: EventNames;
  machineId: string;
  newId: () => string;
  logger: Logger;
  batchSize: number;
  intervalMs: number;
}

/**
 * Sends the usage rows EnsureLoras leaves in model_cache.db to the registry
 * as LoraUsageBatch messages. A batch id is fixed before the first publish
 * and is the message id, so a retry after a failure (NATS down, crash) is
 * dropped as a duplicate; rows are deleted only once published.
 */
export class UsageReporter {
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<number> | undefined;

  constructor(private readonly deps: UsageReporterDeps) {}

  start(): void {
    this.timer = setInterval(
      () =>
        void this.flush().catch((err: unknown) =>
          this.deps.logger.warn({ err }, "usage rows not batched (model_cache.db busy); will retry"),
        ),
      this.deps.intervalMs,
    );
    this.timer.unref();
  }

  /** Publishes what is waiting; resolves to the number of batches sent. One flush at a time. */
  flush(): Promise<number> {
    this.flushing ??= this.flushOnce().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }

  private async flushOnce(): Promise<number> {
    const { db, bus, names, machineId, newId, logger, batchSize } = this.deps;
    if (!bus.connected) return 0;
    while (unbatchedCount(db) > 0) await writeTransaction(db, () => assignBatch(db, newId(), batchSize));
    let sent = 0;
    for (const batchId of pendingBatchIds(db)) {
      const rows = batchRows(db, batchId);
      const batch = create(LoraUsageBatchSchema, {
        batchId,
        machineId,
        usages: rows.map((r) => ({
          loraId: r.lora_id,
          userId: r.user_id,
          jobId: r.job_id,
          workflowId: r.workflow_id,
          workflowName: r.workflow_name,
          usedAt: timestampFromMs(r.used_at_ms),
        })),
      });
      try {
        await bus.publish(names.loraUsage(machineId), toBinary(LoraUsageBatchSchema, batch), { msgId: batchId });
      } catch (err) {
        logger.warn({ err, batch_id: batchId, usages: rows.length }, "usage batch not published; will retry");
        return sent;
      }
      await writeTransaction(db, () => deleteBatch(db, batchId));
      sent++;
    }
    return sent;
  }
}
