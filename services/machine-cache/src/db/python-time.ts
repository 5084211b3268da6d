/**
 * Timestamps in model_cache.db are text as Python's `datetime.now().isoformat()`
 * writes it: local wall-clock time, no zone, microseconds
 * ("2025-11-13T12:00:00.123456"; Python leaves out ".ffffff" when it is zero).
 * Rows from the node package and from this service sort and compare the same.
 */
export function toPythonIso(date: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return (
    `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}` +
    `T${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}.${p(date.getMilliseconds(), 3)}000`
  );
}

const ISO = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$/;

/** Parses what Python (or this service) wrote; undefined when the text is not such a timestamp. */
export function parsePythonIso(text: string | null | undefined): Date | undefined {
  if (!text) return undefined;
  const m = ISO.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const ms = frac ? Math.floor(Number(frac.padEnd(3, "0").slice(0, 3))) : 0;
  if (zone) {
    const offset = zone === "Z" ? "Z" : zone.includes(":") ? zone : `${zone.slice(0, 3)}:${zone.slice(3)}`;
    const date = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}.${String(ms).padStart(3, "0")}${offset}`);
    return Number.isNaN(date.getTime()) ? undefined : date;
  }
  const date = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  return Number.isNaN(date.getTime()) ? undefined : date;
}
