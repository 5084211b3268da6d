import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AuditEventSchema, type LoraAdminService, ListAuditEventsResponseSchema } from "@emprops/contracts";
import { listAuditEvents as queryAuditEvents } from "../db/queries/audit.js";
import { decodePageToken, encodePageToken, queryFingerprint } from "../domain/page-token.js";
import { parseAuditAction, parsePageSize, parseTimeRange } from "../domain/listing-params.js";
import { parseOptionalUuid } from "../domain/validate.js";
import type { AppContext } from "../context.js";

const TIMESTAMPTZ_TEXT = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d(:\d\d){0,2}$/;

export function listAuditEvents(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async listAuditEvents(req) {
      const pageSize = parsePageSize(req.pageSize, 50, 500);
      const userId = parseOptionalUuid(req.userId, "user_id");
      const action = parseAuditAction(req.action);
      const { start, end } = parseTimeRange(req.startTime, req.endTime);
      const fingerprint = queryFingerprint([
        userId ?? "",
        action,
        start?.toISOString() ?? "",
        end?.toISOString() ?? "",
      ]);
      const after = req.pageToken ? decodePageToken(req.pageToken, fingerprint, TIMESTAMPTZ_TEXT) : undefined;
      const rows = await queryAuditEvents(ctx.db, { userId, action, start, end, after, limit: pageSize + 1 });
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
