import { meter } from "@emprops/platform";

/** The service's counters, made once the telemetry SDK is started (instruments made earlier stay no-ops). */
export function createMetrics() {
  const m = meter();
  return {
    refs: m.createCounter("machine_cache.lora_refs", {
      description: "EnsureLoras references by outcome: hit, miss, error",
    }),
    downloads: m.createCounter("machine_cache.downloads", {
      description: "LoRA downloads by outcome: ok, not_found, checksum, failed, no_space, aborted",
    }),
    downloadedBytes: m.createCounter("machine_cache.downloaded_bytes", { unit: "By" }),
    downloadDuration: m.createHistogram("machine_cache.download_duration", { unit: "ms" }),
    evictions: m.createCounter("machine_cache.evictions", {
      description: "Evicted LoRAs by reason: lru, age, invalidation, admin, reconcile",
    }),
    evictedBytes: m.createCounter("machine_cache.evicted_bytes", { unit: "By" }),
    revalidations: m.createCounter("machine_cache.revalidations", {
      description: "Registry checks of cache hits by outcome: valid, gone, changed, unavailable",
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
