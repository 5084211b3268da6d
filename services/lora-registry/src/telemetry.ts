import { type Attributes, type Counter, type Span, SpanStatusCode } from "@opentelemetry/api";
import { meter, tracer } from "@emprops/platform";

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
