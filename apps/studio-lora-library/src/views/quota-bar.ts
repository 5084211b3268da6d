import type { QuotaSummary } from "@emprops/contracts";
import { formatBytes, formatPercent } from "@emprops/contracts";
import { el, mount } from "../dom.js";

/** Storage and count use against the limits; amber with a notice from the warning threshold (80%) on. */
export function renderQuota(container: HTMLElement, q: QuotaSummary): void {
  const used = q.usedBytes + q.reservedBytes;
  const pct = Math.min(100, q.utilizationPercent);
  const countPct = q.maxCount > 0 ? ((q.usedCount + q.reservedCount) / q.maxCount) * 100 : 0;
  container.classList.toggle("warning", q.warning);
  mount(
    container,
    el(
      "div",
      { class: "quota-text" },
      el("span", { class: "quota-label" }, "Storage"),
      el(
        "span",
        { "data-testid": "quota-usage" },
        `${formatBytes(used)} of ${formatBytes(q.maxBytes)} (${formatPercent(q.utilizationPercent)})`,
      ),
      el("span", { class: "quota-count" }, `${q.usedCount + q.reservedCount} of ${q.maxCount} LoRAs`),
    ),
    el(
      "div",
      {
        class: "meter",
        role: "meter",
        "aria-label": "LoRA storage used",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": Math.round(pct),
      },
      el("div", { class: "meter-fill", style: `width:${pct}%` }),
    ),
    q.warning
      ? el(
          "p",
          { class: "quota-warning", role: "alert" },
          `You have used ${formatPercent(Math.max(q.utilizationPercent, countPct))} of your LoRA quota ` +
            `(warning at ${q.warningThresholdPercent}%). Delete LoRAs you no longer use to make room.`,
        )
      : null,
  );
}
