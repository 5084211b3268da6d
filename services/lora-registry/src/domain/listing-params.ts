import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { ErrorReason, LoraSortField, SortOrder } from "@emprops/contracts";
import { invalidArgument } from "@emprops/platform";
import type { LoraSort } from "../db/queries/loras.js";

/** AIP-158 page size: 0 means the default, above the maximum is clamped, negative is an error. */
export function parsePageSize(value: number, fallback: number, max: number, field = "page_size"): number {
  if (!Number.isInteger(value) || value < 0) {
    throw invalidArgument(ErrorReason.INVALID_PAGE_SIZE, `${field} must not be negative, got ${value}`, { field });
  }
  if (value === 0) return fallback;
  return Math.min(value, max);
}

/** A Timestamp within its valid range (RFC 3339 years 1–9999, nanos below a second). */
export function parseTimestamp(t: Timestamp, field: string): Date {
  if (t.nanos < 0 || t.nanos > 999_999_999 || t.seconds < -62135596800n || t.seconds > 253402300799n) {
    throw invalidArgument(ErrorReason.INVALID_TIME_RANGE, `${field} is not a valid timestamp`, { field });
  }
  return timestampDate(t);
}

/** ListLoras' sort and order: a known field (unspecified: newest first) and direction (default descending). */
export function parseLoraSort(sort: LoraSortField, order: SortOrder): { sort: LoraSort; descending: boolean } {
  const key = LORA_SORTS[sort];
  if (!key) throw invalidArgument(ErrorReason.INVALID_SORT, `unknown sort field ${sort}`, { field: "sort" });
  if (!(order in SortOrder)) {
    throw invalidArgument(ErrorReason.INVALID_SORT, `unknown sort order ${order}`, { field: "order" });
  }
  return { sort: key, descending: order !== SortOrder.ASC };
}

const LORA_SORTS: Record<LoraSortField, LoraSort> = {
  [LoraSortField.UNSPECIFIED]: "created_at",
  [LoraSortField.CREATED_AT]: "created_at",
  [LoraSortField.NAME]: "name",
  [LoraSortField.SIZE]: "size",
  [LoraSortField.LAST_USED]: "last_used",
};

/** Rows to skip after the cursor: zero or more. */
export function parseSkip(value: number): number {
  if (!Number.isInteger(value) || value < 0) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, `skip must not be negative, got ${value}`, { field: "skip" });
  }
  return value;
}

/** An optional [start, end) filter of Timestamps; start must come before end. */
export function parseTimeRange(start: Timestamp | undefined, end: Timestamp | undefined): { start?: Date; end?: Date } {
  const range = {
    start: start ? parseTimestamp(start, "start_time") : undefined,
    end: end ? parseTimestamp(end, "end_time") : undefined,
  };
  if (range.start && range.end && range.start.getTime() >= range.end.getTime()) {
    throw invalidArgument(ErrorReason.INVALID_TIME_RANGE, "start_time must be before end_time", {
      field: "start_time",
    });
  }
  return range;
}

/** An audit action filter such as "lora.delete"; "" for all. */
export function parseAuditAction(value: string): string {
  if (value !== "" && !/^[a-z][a-z0-9_.]{0,63}$/.test(value)) {
    throw invalidArgument(ErrorReason.INVALID_REQUEST, "action must look like 'lora.delete'", { field: "action" });
  }
  return value;
}
