import {
  type Attributes,
  type BatchObservableCallback,
  type Counter,
  type Link,
  type Span,
  SpanStatusCode,
} from "@opentelemetry/api";
import { type Clock, meter, tracer } from "@emprops/platform";
import type { Kysely } from "kysely";
import type { QuotaConfig } from "./config.js";
import { outboxBacklog } from "./db/queries/outbox.js";
import { quotaUseBands } from "./db/queries/quota.js";
import { latestSweepReport } from "./db/queries/storage-sweep.js";
import type { Database } from "./db/schema/index.js";

/** The registry's counters; created after telemetry starts, so they bind to the real meter. */
export interface RegistryMetrics {
  /** Upload sessions by outcome: created, completed, rejected, aborted, expired, quota_exceeded. */
  uploads: Counter;
  /** LoRAs deleted, by reason: user, admin, account_deletion. */
  deletions: Counter;
  /** Outbox events published / failed attempts. */
  outbox: Counter;
  /** Usage batches by outcome: applied, duplicate, malformed. */
  usageBatches: Counter;
  /** Resolved references by outcome: ok, not_found, invalid, unavailable. */
  resolutions: Counter;
  /** Storage consistency sweeps by outcome (completed, skipped: another replica held the lock, failed) and trigger. */
  storageSweepRuns: Counter;
  /** Blobs the sweep deleted or sealed, by action and area (users, staging). */
  storageSweepActions: Counter;
}

export function createMetrics(): RegistryMetrics {
  const m = meter();
  return {
    uploads: m.createCounter("lora_registry.uploads", { description: "upload sessions by outcome" }),
    deletions: m.createCounter("lora_registry.deletions", { description: "LoRAs deleted by reason" }),
    outbox: m.createCounter("lora_registry.outbox.events", { description: "outbox events by outcome" }),
    usageBatches: m.createCounter("lora_registry.usage.batches", { description: "usage batches by outcome" }),
    resolutions: m.createCounter("lora_registry.resolutions", { description: "resolved references by outcome" }),
    storageSweepRuns: m.createCounter("lora_registry.storage_sweep.runs", {
      description: "storage consistency sweeps by outcome and trigger",
    }),
    storageSweepActions: m.createCounter("lora_registry.storage_sweep.actions", {
      description: "blobs the storage consistency sweep deleted or sealed, by action and area",
    }),
  };
}

/** Runs fn in a child span named `lora_registry.<name>` (with links to other spans, if given); errors mark the span. */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
  links: Link[] = [],
): Promise<T> {
  return tracer().startActiveSpan(`lora_registry.${name}`, { attributes, links }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err instanceof Error ? err : new Error(String(err)));
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Counts of the latest sweep report exported as lora_registry.storage_sweep.findings{reason}. */
const SWEEP_FINDINGS = {
  blob_missing: "missingBlobs",
  size_mismatch: "sizeMismatches",
  etag_mismatch: "etagMismatches",
  orphan_blob: "orphanBlobs",
  staging_orphan: "stagingOrphans",
  unrecognised_blob: "unrecognisedBlobs",
} as const;

/**
 * Gauges read from the database at each collection: the outbox backlog
 * (events not yet on NATS) and the age of its oldest event, users by how
 * much of their byte quota is in use (used + reserved), and the findings of
 * the latest storage consistency sweep (whichever replica ran it) with its
 * age. Returns the function that removes them (at stop: the database is
 * gone then).
 */
export function observeRegistry(db: Kysely<Database>, quota: QuotaConfig, clock: Clock): () => void {
  const m = meter();
  const backlog = m.createObservableGauge("lora_registry.outbox.backlog", {
    description: "Outbox events not yet published to NATS",
  });
  const oldest = m.createObservableGauge("lora_registry.outbox.oldest_age", {
    description: "Age of the oldest unpublished outbox event (0 when none)",
    unit: "s",
  });
  const users = m.createObservableGauge("lora_registry.quota.users", {
    description: "Users by share of their byte quota in use: under_half, half_to_warning, warning, full",
  });
  const findings = m.createObservableGauge("lora_registry.storage_sweep.findings", {
    description:
      "Findings of the latest storage consistency sweep by reason: blob_missing, size_mismatch, etag_mismatch, orphan_blob, staging_orphan, unrecognised_blob",
  });
  const sweepAge = m.createObservableGauge("lora_registry.storage_sweep.last_finished_age", {
    description: "Time since the latest storage consistency sweep finished (absent before the first)",
    unit: "s",
  });
  const observables = [backlog, oldest, users, findings, sweepAge];
  const observe: BatchObservableCallback = async (r) => {
    const outbox = await outboxBacklog(db);
    r.observe(backlog, outbox.count);
    const since = outbox.oldest ? clock.now().getTime() - outbox.oldest.getTime() : 0;
    r.observe(oldest, Math.max(0, since) / 1000);
    const bands = await quotaUseBands(db, quota.defaultMaxBytes, quota.warningPercent);
    for (const [band, count] of Object.entries(bands)) r.observe(users, count, { utilization_band: band });
    const sweep = await latestSweepReport(db);
    if (sweep) {
      for (const [reason, field] of Object.entries(SWEEP_FINDINGS)) {
        // protobuf JSON: int64 as a string, zero left out.
        r.observe(findings, Number(sweep.report[field] ?? 0), { reason });
      }
      r.observe(sweepAge, Math.max(0, clock.now().getTime() - sweep.finished_at.getTime()) / 1000);
    }
  };
  m.addBatchObservableCallback(observe, observables);
  return () => m.removeBatchObservableCallback(observe, observables);
}
