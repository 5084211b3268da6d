import { startInMemoryTelemetry } from "@emprops/platform";
import { diag, DiagLogLevel } from "@opentelemetry/api";
import { startRegistryForTest } from "./support/registry.js";

describe("the registry's database gauges", () => {
  it("are read while it runs and no longer once it has stopped", async () => {
    const telemetry = startInMemoryTelemetry();
    const collectionErrors: unknown[] = [];
    const ignore = () => {};
    diag.setLogger(
      { error: (...args) => collectionErrors.push(args), warn: ignore, info: ignore, debug: ignore, verbose: ignore },
      DiagLogLevel.ERROR,
    );
    try {
      const t = await startRegistryForTest("gauges");
      const running = await telemetry.collect();
      expect(running.filter((p) => p.name === "lora_registry.outbox.backlog").map((p) => p.value)).toEqual([0]);
      expect(collectionErrors).toEqual([]);
      await t.stop();
      // A gauge left behind would now query a closed database at every collection.
      await telemetry.collect();
      expect(collectionErrors).toEqual([]);
    } finally {
      diag.disable();
      await telemetry.stop();
    }
  });
});
