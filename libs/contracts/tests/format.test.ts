import { formatBytes, formatPercent } from "../src/format.js";

describe("formatBytes", () => {
  it("writes bytes below 1 KiB as they are, larger sizes in binary units with one decimal", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1024)).toBe("1.0 KiB");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3.5 * 1024 ** 2)).toBe("3.5 MiB");
    expect(formatBytes(10n * 1024n ** 3n)).toBe("10.0 GiB");
    expect(formatBytes(2 * 1024 ** 4)).toBe("2.0 TiB");
    expect(formatBytes(5000 * 1024 ** 4)).toBe("5000.0 TiB");
  });
});

describe("formatPercent", () => {
  it("keeps one decimal below 10% and rounds from there", () => {
    expect(formatPercent(0)).toBe("0.0%");
    expect(formatPercent(4.25)).toBe("4.3%");
    expect(formatPercent(9.94)).toBe("9.9%");
    expect(formatPercent(10.4)).toBe("10%");
    expect(formatPercent(81.6)).toBe("82%");
    expect(formatPercent(100)).toBe("100%");
  });
});
