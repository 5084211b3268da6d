import { runMain, startTelemetry } from "@emprops/platform";
import { loadConfig } from "./config.js";
import { startMachineCache } from "./service.js";

runMain("machine-cache", async () => {
  const stopTelemetry = startTelemetry("machine-cache");
  const cache = await startMachineCache(loadConfig());
  return {
    logger: cache.ctx.logger,
    ready: cache.ready,
    stop: async () => {
      await cache.stop();
      await stopTelemetry();
    },
  };
});
