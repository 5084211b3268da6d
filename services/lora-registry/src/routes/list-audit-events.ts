import { create } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AuditEventSchema,
  ErrorReason,
  type LoraAdminService,
  ListAuditEventsResponseSchema,
} from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import { sql } from "kysely";
import { decodePageToken, encodePageToken, queryFingerprint } from "../domain/page-token.js";
import { parseOptionalUuid, parsePageSize } from "../domain/validate.js";
import type { AppContext } from "../context.js";

const TIMESTAMPTZ_TEXT = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d){0,2}$/;

function parseTime(t: Timestamp | undefined, field: string): Date | undefined {
  if (!t) return undefined;
  // Timestamp's valid range (RFC 3339 years 1–9999) and nanos.
  if (t.nanos < 0 || t.nanos > 999_999_999 || t.seconds < -62135596800n || t.seconds > 253402300799n) {
    throw invalidArgument(ErrorReason.INVALID_TIME_RANGE, `${field} is not a valid timestamp`, { field });
  }
  return timestampDate(t);
}

export function listAuditEvents(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async listAuditEvents(req) {
      const pageSize = parsePageSize(req.pageSize, 50, 500);
      const userId = parseOptionalUuid(req.userId, "user_id");
      if (req.action !== "" && !/^[a-z][a-z0-9_.]{0,63}$/.test(req.action)) {
        throw invalidArgument(ErrorReason.INVALID_REQUEST, "action must look like 'lora.delete'", { field: "action" });
      }
      const start = parseTime(req.startTime, "start_time");
      const end = parseTime(req.endTime, "end_time");
      if (start && end && start.getTime() >= end.getTime()) {
        throw invalidArgument(ErrorReason.INVALID_TIME_RANGE, "start_time must be before end_time", {
          field: "start_time",
        });
      }
      const fingerprint = queryFingerprint([
        userId ?? "",
        req.action,
        start?.toISOString() ?? "",
        end?.toISOString() ?? "",
      ]);
      const cursor = req.pageToken ? decodePageToken(req.pageToken, fingerprint, TIMESTAMPTZ_TEXT) : undefined;

      let q = ctx.db
        .selectFrom("lora_audit_event")
        .selectAll()
        .select(sql<string>`event_time::text`.as("time_key"))
        .orderBy("event_time", "desc")
        .orderBy("id", "desc")
        .limit(pageSize + 1);
      if (userId) q = q.where("user_id", "=", userId);
      if (req.action) q = q.where("action", "=", req.action);
      if (start) q = q.where("event_time", ">=", start);
      if (end) q = q.where("event_time", "<", end);
      if (cursor) {
        q = q.where(sql<boolean>`(event_time, id) < (${cursor.key}::timestamptz, ${cursor.id}::bigint)`);
      }
      const rows = await q.execute();
      const page = rows.slice(0, pageSize);
      const last = page[page.length - 1];
      return create(ListAuditEventsResponseSchema, {
        events: page.map((r) =>
          create(AuditEventSchema, {
            id: r.id,
            eventTime: timestampFromDate(r.event_time),
            actorId: r.actor_id,
            actorRole: r.actor_role,
            action: r.action,
            userId: r.user_id ?? "",
            loraId: r.lora_id ?? "",
            detailsJson: JSON.stringify(r.details),
          }),
        ),
        nextPageToken:
          rows.length > pageSize && last ? encodePageToken(fingerprint, { key: last.time_key, id: last.id }) : "",
      });
    },
  };
}
