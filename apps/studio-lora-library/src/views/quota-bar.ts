import type { GetQuotaResponse, LoraSize } from "@emprops/contracts";
import { formatBytes, formatPercent } from "@emprops/contracts";
import { el, mount } from "../dom.js";
import { formatDate } from "../format.js";
import { loraName } from "./lora-name.js";

export interface QuotaActions {
  /** Deletes a suggested LoRA after a confirmation; resolves when done (or declined). */
  remove(lora: LoraSize): Promise<void>;
}

/**
 * Storage and count use against the limits; amber with a notice from the
 * warning threshold (80%) on, listing the LoRAs unused longest whose
 * deletion brings use back under it, each with a Delete button.
 */
export function renderQuota(container: HTMLElement, res: GetQuotaResponse, actions: QuotaActions): void {
  const q = res.quota;
  if (!q) return;
  const used = q.usedBytes + q.reservedBytes;
  const pct = Math.min(100, q.utilizationPercent);
  const countPct = q.maxCount > 0 ? ((q.usedCount + q.reservedCount) / q.maxCount) * 100 : 0;
  container.classList.toggle("warning", q.warning);
  const suggestions = res.deletionSuggestions;
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
          "div",
          { class: "quota-warning", role: "alert" },
          el(
            "p",
            {},
            `You have used ${formatPercent(Math.max(q.utilizationPercent, countPct))} of your LoRA quota ` +
              `(warning at ${q.warningThresholdPercent}%).`,
            suggestions.length > 0
              ? ` Deleting ${suggestions.length === 1 ? "the LoRA" : `these ${suggestions.length} LoRAs`} unused ` +
                  `longest frees ${formatBytes(res.suggestedFreeBytes)}:`
              : " Uploads in progress hold the rest.",
          ),
          suggestions.length > 0
            ? el(
                "ul",
                { class: "suggestions", "aria-label": "Unused LoRAs to delete" },
                suggestions.map((s) =>
                  el(
                    "li",
                    { "data-lora-id": s.id },
                    loraName("span", s.name, "suggestion-name"),
                    el("span", { class: "suggestion-size" }, formatBytes(s.sizeBytes)),
                    el(
                      "span",
                      { class: "suggestion-use" },
                      s.lastUsedAt ? `last used ${formatDate(s.lastUsedAt)}` : "never used",
                    ),
                    el(
                      "button",
                      {
                        class: "danger small",
                        "aria-label": `Delete ${s.name}`,
                        onclick: () => void actions.remove(s),
                      },
                      "Delete",
                    ),
                  ),
                ),
              )
            : null,
        )
      : null,
  );
}
