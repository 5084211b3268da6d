/**
 * How sizes and shares are written for people, the same in the registry's
 * messages (QUOTA_EXCEEDED), the lora CLI and the Studio page.
 */

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 → "1.5 KiB", 300 → "300 B", 10 GiB → "10.0 GiB". */
export function formatBytes(value: number | bigint): string {
  let n = Number(value);
  let unit = 0;
  while (Math.abs(n) >= 1024 && unit < UNITS.length - 1) {
    n /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${UNITS[unit]}`;
}

/** 4.25 → "4.3%", 81.6 → "82%": one decimal below 10%, whole percents from there. */
export function formatPercent(value: number): string {
  return `${value.toFixed(value < 10 ? 1 : 0)}%`;
}
