import { type Attributes, type Counter, type Span, SpanStatusCode } from "@opentelemetry/api";
import { type Clock, meter, tracer } from "@emprops/platform";
import { type Kysely, sql } from "kysely";
import type { QuotaConfig } from "./config.js";
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

/** Runs fn in a child span named `lora_registry.<name>`; errors mark the span. */
export async function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer().startActiveSpan(`lora_registry.${name}`, { attributes }, async (span) => {
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
 * much of their byte quota is in use (used + reserved).
 */
export function observeRegistry(db: Kysely<Database>, quota: QuotaConfig, clock: Clock): void {
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
  m.addBatchObservableCallback(
    async (r) => {
      const outbox = await db
        .selectFrom("lora_outbox")
        .select((eb) => [eb.fn.countAll<string>().as("n"), eb.fn.min("created_at").as("oldest")])
        .where("sent_at", "is", null)
        .executeTakeFirstOrThrow();
      r.observe(backlog, Number(outbox.n));
      const since = outbox.oldest ? clock.now().getTime() - new Date(outbox.oldest).getTime() : 0;
      r.observe(oldest, Math.max(0, since) / 1000);
      // Bands by exact integer comparisons, as the quota warning itself (no rounded share).
      const { rows } = await sql<{ under_half: string; half_to_warning: string; warning: string; full: string }>`
        SELECT count(*) FILTER (WHERE used * 2 < max) AS under_half,
               count(*) FILTER (WHERE used * 2 >= max AND used * 100 < max * ${quota.warningPercent}) AS half_to_warning,
               count(*) FILTER (WHERE used * 100 >= max * ${quota.warningPercent} AND used < max) AS warning,
               count(*) FILTER (WHERE used >= max) AS full
        FROM (SELECT (used_bytes + reserved_bytes)::numeric AS used,
                     coalesce(max_bytes, ${quota.defaultMaxBytes})::numeric AS max
              FROM lora_quota) q`.execute(db);
      const row = rows[0];
      for (const band of ["under_half", "half_to_warning", "warning", "full"] as const) {
        r.observe(users, Number(row?.[band] ?? 0), { utilization_band: band });
      }
    },
    [backlog, oldest, users],
  );
}
