import { fromBinary } from "@bufbuild/protobuf";
import { HOLDINGS_RETENTION_MS, MachineHoldingsReportedSchema } from "@emprops/contracts";
import type { AppContext } from "../context.js";

const SWEEP_MS = 60_000;

/**
 * Folds LORA_HOLDINGS into this replica's holdings index: the whole stream
 * at start (the latest snapshot and heartbeat of every machine, the deltas
 * of the last hour), then each report as it is stored. Every replica reads
 * the same stream with the same fold, so they agree. Machines the stream
 * has forgotten (silent for its retention) are dropped from memory too.
 */
export function startHoldingsFollower(ctx: AppContext): { stop(): Promise<void> } {
  const { holdings: index, logger } = ctx;
  const follower = ctx.bus.follow({
    stream: ctx.names.holdings.stream.name,
    filterSubject: ctx.names.holdings.all,
    handler: (msg) => {
      let report;
      try {
        report = fromBinary(MachineHoldingsReportedSchema, msg.data);
      } catch (err) {
        logger.error({ err, subject: msg.subject }, "malformed MachineHoldingsReported dropped");
        return;
      }
      if (!report.machineId || report.machineId.length > 128 || report.report.case === undefined) {
        logger.error({ subject: msg.subject }, "MachineHoldingsReported without machine_id or report dropped");
        return;
      }
      index.apply(report, msg.storedAt.getTime());
    },
  });
  void follower.caughtUp.then(() => {
    index.caughtUp = true;
    logger.info({ machines: index.machines.size, holdings: index.size }, "holdings index read from the stream");
  });
  const sweep = setInterval(() => {
    const dropped = index.forgetSilent(ctx.clock.now().getTime() - HOLDINGS_RETENTION_MS);
    if (dropped > 0) logger.info({ machines: dropped }, "silent machines dropped from the holdings index");
  }, SWEEP_MS);
  sweep.unref();
  return {
    stop: async () => {
      clearInterval(sweep);
      await follower.stop();
    },
  };
}
