import { formatBytes, formatPercent } from "../src/format.js";

describe("formatBytes: bytes below 1 KiB as they are, larger sizes in binary units with one decimal", () => {
  it.each<[number | bigint, string]>([
    [0, "0 B"],
    [1023, "1023 B"],
    [1024, "1.0 KiB"],
    [1536, "1.5 KiB"],
    [3.5 * 1024 ** 2, "3.5 MiB"],
    [10n * 1024n ** 3n, "10.0 GiB"],
    [2 * 1024 ** 4, "2.0 TiB"],
    [5000 * 1024 ** 4, "5000.0 TiB"],
  ])("%p → %s", (bytes, text) => expect(formatBytes(bytes)).toBe(text));
});

describe("formatPercent: one decimal below 10%, whole percents from there", () => {
  it.each<[number, string]>([
    [0, "0.0%"],
    [4.25, "4.3%"],
    [9.94, "9.9%"],
    [10.4, "10%"],
    [81.6, "82%"],
    [100, "100%"],
  ])("%p → %s", (value, text) => expect(formatPercent(value)).toBe(text));
});
