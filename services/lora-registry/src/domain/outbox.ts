import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type EventNames, LoraDeletedSchema } from "@emprops/contracts";
import { captureTraceContext } from "@emprops/platform";
import type { Kysely } from "kysely";
import { insertOutboxEvents } from "../db/queries/outbox.js";
import type { Database } from "../db/schema/index.js";

export interface DeletedLora {
  loraId: string;
  userId: string;
  blobPath: string;
  extension: string;
}

/**
 * Writes one LoraDeleted event per LoRA into the outbox, in the caller's
 * transaction; the relay publishes them with the event id as Nats-Msg-Id.
 */
export async function enqueueLoraDeleted(
  db: Kysely<Database>,
  names: EventNames,
  newId: () => string,
  at: Date,
  reason: "user" | "admin" | "account_deletion" | "upload_aborted" | "upload_expired" | "upload_rejected",
  loras: DeletedLora[],
): Promise<string[]> {
  if (loras.length === 0) return [];
  const traceContext = captureTraceContext() ?? null;
  const rows = loras.map((l) => {
    const eventId = newId();
    const event = create(LoraDeletedSchema, {
      eventId,
      loraId: l.loraId,
      userId: l.userId,
      blobPath: l.blobPath,
      extension: l.extension,
      deleteTime: timestampFromDate(at),
      reason,
    });
    return {
      event_id: eventId,
      subject: names.loraDeleted(l.userId),
      payload: toBinary(LoraDeletedSchema, event),
      created_at: at,
      trace_context: traceContext,
    };
  });
  await insertOutboxEvents(db, rows);
  return rows.map((r) => r.event_id);
}
