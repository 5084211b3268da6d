import { runMain, startTelemetry } from "@emprops/platform";
import { loadConfig } from "./config.js";
import { startMachineCache } from "./service.js";

runMain("machine-cache", async () => {
  const cfg = loadConfig();
  // The machine id names this node on every span and metric (service.instance.id), so hit rates group by machine.
  const stopTelemetry = startTelemetry("machine-cache", process.env, { serviceInstanceId: cfg.machineId });
  const cache = await startMachineCache(cfg);
  return {
    logger: cache.ctx.logger,
    ready: cache.ready,
    stop: async () => {
      await cache.stop();
      await stopTelemetry();
    },
  };
});
