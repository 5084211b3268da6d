import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";

/** "2026-11-25 14:03" in local time; "-" when unset. */
export function formatTime(ts: Timestamp | undefined): string {
  if (!ts) return "-";
  const d = timestampDate(ts);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

/** A plain text table: a header row, aligned columns, long cells clipped to their column's limit. */
export function renderTable(columns: { title: string; max?: number; align?: "right" }[], rows: string[][]): string {
  const cells = rows.map((r) => r.map((c, i) => clip(c, columns[i]?.max ?? 200)));
  const widths = columns.map((col, i) => Math.max(col.title.length, ...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (columns[i]?.align === "right" ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.title)), ...cells.map(line)].join("\n");
}
