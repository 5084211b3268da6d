import { runMain, startTelemetry } from "@emprops/platform";
import { loadConfig } from "./config.js";
import { startLoraRegistry } from "./service.js";

runMain("lora-registry", async () => {
  const stopTelemetry = startTelemetry("lora-registry");
  const registry = await startLoraRegistry(loadConfig());
  return {
    logger: registry.ctx.logger,
    ready: registry.ready,
    stop: async () => {
      await registry.stop();
      await stopTelemetry();
    },
  };
});
