import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { LoraUsageBatchSchema, type LoraUsageBatch } from "@emprops/contracts";
import type { BusMessage, Consumer } from "@emprops/platform";
import { loraOwners } from "../db/queries/loras.js";
import { addLoraUsage, addWorkflowUsage, recordUsageBatch } from "../db/queries/usage.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

const LORA_ID = /^[1-9][0-9]{0,18}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Tally {
  count: number;
  last: Date;
  name: string;
}

/**
 * Folds one LoraUsageBatch into usage_count, last_used_at and the workflow
 * references. The batch id is recorded in the same transaction, so a
 * redelivered or republished batch is applied once. Uses of LoRAs that do
 * not exist or belong to someone else than the reported user are ignored.
 */
export async function applyUsageBatch(ctx: AppContext, batch: LoraUsageBatch): Promise<"applied" | "duplicate"> {
  const now = ctx.clock.now();
  return withSpan("apply_usage_batch", { "lora.batch_id": batch.batchId, "lora.usages": batch.usages.length }, () =>
    ctx.db.transaction().execute(async (trx) => {
      if (!(await recordUsageBatch(trx, batch, now))) return "duplicate";

      const usages = batch.usages.filter((u) => LORA_ID.test(u.loraId) && UUID.test(u.userId));
      const ids = [...new Set(usages.map((u) => u.loraId))];
      if (ids.length === 0) return "applied";
      const owners = await loraOwners(trx, ids);
      const perLora = new Map<string, Tally & { userId: string }>();
      const perWorkflow = new Map<string, Tally & { loraId: string; workflowId: string }>();
      for (const u of usages) {
        const userId = u.userId.toLowerCase();
        if (owners.get(u.loraId) !== userId) continue;
        const at = u.usedAt ? timestampDate(u.usedAt) : now;
        const l = perLora.get(u.loraId) ?? { count: 0, last: at, name: "", userId };
        l.count++;
        if (at > l.last) l.last = at;
        perLora.set(u.loraId, l);
        if (u.workflowId) {
          const key = JSON.stringify([u.loraId, u.workflowId]);
          const w = perWorkflow.get(key) ?? {
            count: 0,
            last: at,
            name: "",
            loraId: u.loraId,
            workflowId: u.workflowId,
          };
          w.count++;
          if (at >= w.last) w.last = at;
          if (u.workflowName) w.name = u.workflowName;
          perWorkflow.set(key, w);
        }
      }
      await addLoraUsage(
        trx,
        [...perLora].map(([loraId, l]) => ({
          lora_id: loraId,
          user_id: l.userId,
          usage_count: l.count,
          last_used_at: l.last,
        })),
      );
      await addWorkflowUsage(
        trx,
        [...perWorkflow.values()].map((w) => ({
          lora_id: w.loraId,
          workflow_id: w.workflowId.slice(0, 256),
          workflow_name: w.name.slice(0, 256),
          use_count: w.count,
          last_used_at: w.last,
        })),
      );
      return "applied";
    }),
  );
}

/** The durable consumer of every machine's usage batches. */
export function startUsageConsumer(ctx: AppContext): Promise<Consumer> {
  return ctx.bus.consume({
    durable: ctx.names.durables.registryUsage,
    filterSubjects: [ctx.names.loraUsageAll],
    handler: async (msg: BusMessage) => {
      let batch: LoraUsageBatch;
      try {
        batch = fromBinary(LoraUsageBatchSchema, msg.data);
      } catch (err) {
        // Redelivering cannot fix a malformed message: drop it loudly.
        ctx.logger.error({ err, subject: msg.subject }, "malformed LoraUsageBatch dropped");
        ctx.metrics.usageBatches.add(1, { outcome: "malformed" });
        return;
      }
      if (!batch.batchId || batch.batchId.length > 128) {
        ctx.logger.error({ subject: msg.subject }, "LoraUsageBatch without a valid batch_id dropped");
        ctx.metrics.usageBatches.add(1, { outcome: "malformed" });
        return;
      }
      const outcome = await applyUsageBatch(ctx, batch);
      ctx.metrics.usageBatches.add(1, { outcome });
      ctx.logger.debug({ batch_id: batch.batchId, machine_id: batch.machineId, outcome }, "usage batch");
    },
  });
}
