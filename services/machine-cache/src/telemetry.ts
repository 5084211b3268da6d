import type { MachineCacheStats } from "@emprops/contracts";
import { meter } from "@emprops/platform";

const MIB = 1024 * 1024;

/** Size classes of LoRAs for download-duration histograms: compare like with like. */
export function sizeBucket(bytes: number): string {
  if (bytes < 64 * MIB) return "<64MiB";
  if (bytes < 256 * MIB) return "64-256MiB";
  if (bytes < 1024 * MIB) return "256MiB-1GiB";
  return ">=1GiB";
}

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
    downloadedBytes: m.createCounter("machine_cache.downloaded_bytes", {
      description: "Bytes received for LoRA downloads, by lora.source and download.source: peer or blob",
      unit: "By",
    }),
    peerFailures: m.createCounter("machine_cache.peer_failures", {
      description:
        "Peers left for the next source, by reason: refused, busy, not_held, slow, vanished, wrong_size, corrupt",
    }),
    peerRequests: m.createCounter("machine_cache.peer_requests", {
      description: "Requests of peers to this node's peer server, by outcome (HTTP status)",
    }),
    peerUploadedBytes: m.createCounter("machine_cache.peer_uploaded_bytes", {
      description: "Bytes this node sent to peers of its pool",
      unit: "By",
    }),
    downloadDuration: m.createHistogram("machine_cache.download_duration", {
      description: "Duration of LoRA downloads, by source and size bucket",
      unit: "ms",
      advice: { explicitBucketBoundaries: [100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000] },
    }),
    evictions: m.createCounter("machine_cache.evictions", {
      description: "Evicted LoRAs by reason: lru, gdsf, age, invalidation, admin, reconcile",
    }),
    evictedBytes: m.createCounter("machine_cache.evicted_bytes", {
      description: "Bytes freed by evictions (a path other paths still link to frees none)",
      unit: "By",
    }),
    sameContent: m.createCounter("machine_cache.same_content", {
      description:
        "References served by a file of the same content already cached under another path, by outcome: linked, copied (another file system)",
    }),
    revalidations: m.createCounter("machine_cache.revalidations", {
      description: "Registry checks of cache hits by outcome: valid, gone, changed, unavailable, late",
    }),
    unownedFiles: m.createCounter("machine_cache.unowned_files", {
      description: "Files found at start-up in the cache's directories with no row in model_cache.db, by removed",
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Gauges read from the cache's own statistics at each collection: the hit
 * ratio over 24 hours, the share of lora_cache_max_gb used, cached bytes and
 * LoRAs by source, and free disk space. stop() removes the callback, so a
 * stopped service's database is not read again.
 */
export function observeCacheStats(read: () => Promise<MachineCacheStats>): { stop(): void } {
  const m = meter();
  const hitRatio = m.createObservableGauge("machine_cache.hit_ratio", {
    description: "Cache hits / (hits + misses) over the last 24 hours",
  });
  const utilization = m.createObservableGauge("machine_cache.utilization", {
    description: "User LoRA bytes / lora_cache_max_gb",
  });
  const cachedBytes = m.createObservableGauge("machine_cache.cached_bytes", { unit: "By" });
  const cachedLoras = m.createObservableGauge("machine_cache.cached_loras");
  const diskFree = m.createObservableGauge("machine_cache.disk_free_bytes", { unit: "By" });
  const observables = [hitRatio, utilization, cachedBytes, cachedLoras, diskFree];
  const observe: Parameters<typeof m.addBatchObservableCallback>[0] = async (r) => {
    const s = await read();
    r.observe(hitRatio, s.cacheHitRate24h);
    r.observe(utilization, s.utilizationPercent / 100);
    r.observe(cachedBytes, Number(s.userLoraBytes), { "lora.source": "user" });
    r.observe(cachedBytes, Number(s.sharedLoraBytes), { "lora.source": "shared" });
    r.observe(cachedLoras, s.userLoraCount, { "lora.source": "user" });
    r.observe(cachedLoras, s.sharedLoraCount, { "lora.source": "shared" });
    r.observe(diskFree, Number(s.diskFreeBytes));
  };
  m.addBatchObservableCallback(observe, observables);
  return { stop: () => m.removeBatchObservableCallback(observe, observables) };
}
