import { runMain, startTelemetry } from "@emprops/platform";
import { loadConfig } from "./config.js";
import { startBlobGateway } from "./service.js";

runMain("blob-gateway", async () => {
  const stopTelemetry = startTelemetry("blob-gateway");
  const gateway = await startBlobGateway(loadConfig());
  return {
    logger: gateway.ctx.logger,
    ready: gateway.ready,
    stop: async () => {
      await gateway.stop();
      await stopTelemetry();
    },
  };
});
