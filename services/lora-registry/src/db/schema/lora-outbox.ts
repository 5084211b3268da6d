import type { ColumnType, Generated } from "kysely";

/** Events written in the same transaction as the change; a relay publishes them. */
export interface LoraOutboxTable {
  id: Generated<string>;
  /** Nats-Msg-Id. */
  event_id: string;
  subject: string;
  payload: Uint8Array;
  created_at: Date;
  sent_at: Date | null;
  attempts: ColumnType<number, number | undefined, number>;
  last_error: string | null;
  /** W3C trace context of the writing request (traceparent, tracestate). */
  trace_context: ColumnType<Record<string, string> | null, Record<string, string> | null | undefined, never>;
}
