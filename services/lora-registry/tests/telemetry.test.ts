import { type InMemoryTelemetry, startInMemoryTelemetry } from "@emprops/platform";
import { diag, DiagLogLevel } from "@opentelemetry/api";
import { type RegistryUnderTest, startRegistryForTest } from "./support/registry.js";

let telemetry: InMemoryTelemetry;
let t: RegistryUnderTest | undefined;
/** What the metrics SDK reports through diag: a failing gauge callback lands here. */
const collectionErrors: unknown[] = [];

beforeAll(async () => {
  // Before the registry: its instruments bind to the providers registered now.
  telemetry = startInMemoryTelemetry();
  const ignore = () => {};
  diag.setLogger(
    { error: (...args) => collectionErrors.push(args), warn: ignore, info: ignore, debug: ignore, verbose: ignore },
    DiagLogLevel.ERROR,
  );
  t = await startRegistryForTest("gauges");
});

afterAll(async () => {
  // Only when the test failed before it stopped the registry.
  await t?.stop();
  diag.disable();
  await telemetry?.stop();
});

describe("the registry's database gauges", () => {
  it("are read while it runs and no longer once it has stopped", async () => {
    const running = await telemetry.collect();
    expect(running.filter((p) => p.name === "lora_registry.outbox.backlog").map((p) => p.value)).toEqual([0]);
    expect(collectionErrors).toEqual([]);
    const registry = t;
    t = undefined;
    await registry?.stop();
    // A gauge left behind would now query a closed database at every collection.
    await telemetry.collect();
    expect(collectionErrors).toEqual([]);
  });
});
