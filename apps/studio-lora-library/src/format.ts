import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatDate(ts: Timestamp | undefined): string {
  return ts ? dateFormat.format(timestampDate(ts)) : "—";
}

export function formatDateTime(ts: Timestamp | undefined): string {
  return ts ? dateTimeFormat.format(timestampDate(ts)) : "—";
}

export function plural(n: number | bigint, one: string, many = `${one}s`): string {
  return `${n} ${Number(n) === 1 ? one : many}`;
}
