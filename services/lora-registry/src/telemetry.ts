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
}

export function createMetrics(): RegistryMetrics {
  const m = meter();
  return {
    uploads: m.createCounter("lora_registry.uploads", { description: "upload sessions by outcome" }),
    deletions: m.createCounter("lora_registry.deletions", { description: "LoRAs deleted by reason" }),
    outbox: m.createCounter("lora_registry.outbox.events", { description: "outbox events by outcome" }),
    usageBatches: m.createCounter("lora_registry.usage.batches", { description: "usage batches by outcome" }),
    resolutions: m.createCounter("lora_registry.resolutions", { description: "resolved references by outcome" }),
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

/**
 * Gauges read from the database at each collection: the outbox backlog
 * (events not yet on NATS) and the age of its oldest event, and users by how
 * much of their byte quota is in use (used + reserved). Returns the function
 * that removes them (at stop: the database is gone then).
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
  const observables = [backlog, oldest, users];
  const observe: BatchObservableCallback = async (r) => {
    const outbox = await outboxBacklog(db);
    r.observe(backlog, outbox.count);
    const since = outbox.oldest ? clock.now().getTime() - outbox.oldest.getTime() : 0;
    r.observe(oldest, Math.max(0, since) / 1000);
    const bands = await quotaUseBands(db, quota.defaultMaxBytes, quota.warningPercent);
    for (const [band, count] of Object.entries(bands)) r.observe(users, count, { utilization_band: band });
  };
  m.addBatchObservableCallback(observe, observables);
  return () => m.removeBatchObservableCallback(observe, observables);
}
