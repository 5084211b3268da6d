import { FileFormat, formatBytes, type Lora } from "@emprops/contracts";
import type { LoraClient } from "../api.js";
import { el, mount } from "../dom.js";
import { showError } from "../errors.js";
import { formatDateTime, plural } from "../format.js";
import { confirmDialog } from "./confirm-dialog.js";
import { errorBox, toast } from "./toasts.js";

const FORMATS: Record<FileFormat, string> = {
  [FileFormat.UNSPECIFIED]: "—",
  [FileFormat.SAFETENSORS]: "safetensors",
  [FileFormat.TORCH_ZIP]: "PyTorch (zip)",
  [FileFormat.PICKLE]: "PyTorch (pickle)",
};

function facts(lora: Lora): [string, string][] {
  const m = lora.metadata;
  const rows: [string, string | undefined][] = [
    ["Size", formatBytes(lora.sizeBytes)],
    ["Uploaded", formatDateTime(lora.createdAt)],
    ["Base model", m?.baseModel],
    ["Trigger words", m?.triggerWords.join(", ")],
    ["Rank", m?.rank ? `${m.rank}${m.alpha ? ` (alpha ${m.alpha})` : ""}` : undefined],
    ["Training epochs", m?.trainingEpochs ? String(m.trainingEpochs) : undefined],
    ["Training images", m?.trainingImages ? String(m.trainingImages) : undefined],
    ["Resolution", m?.resolution],
    ["Network", m?.networkModule],
    ["Title", m?.title],
    ["Description", m?.description],
    ["Tags", lora.tags.filter((t) => t !== "lora").join(", ")],
    ["Format", FORMATS[lora.format]],
    ["SHA-256", lora.sha256],
    ["Used", plural(lora.usageCount, "time")],
    ["Last used", lora.lastUsedAt ? formatDateTime(lora.lastUsedAt) : "never"],
    ["Uploaded from", lora.uploadSource],
  ];
  return rows.filter((r): r is [string, string] => !!r[1]);
}

/** A LoRA's metadata and the workflows using it, with Delete (after a confirmation). */
export async function openDetails(client: LoraClient, loraId: string, onDeleted: () => void): Promise<void> {
  const body = el("div", { class: "details-body" }, el("p", {}, "Loading…"));
  const dialog = el(
    "dialog",
    { class: "details", "aria-label": "LoRA details" },
    el("button", { class: "close", "aria-label": "Close", onclick: () => dialog.close() }, "×"),
    body,
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();

  let lora: Lora | undefined;
  try {
    lora = (await client.getLora({ loraId })).lora;
  } catch (err) {
    body.replaceChildren(errorBox(showError(err)));
    return;
  }
  if (!lora) return;
  const found = lora;
  const raw = Object.entries(found.metadata?.raw ?? {});
  const remove = async () => {
    const ok = await confirmDialog({
      title: `Delete ${found.name}?`,
      text: `This frees ${formatBytes(found.sizeBytes)} of your quota. Machines drop their cached copy, and workflows that use it will no longer find it.`,
      confirm: "Delete",
    });
    if (!ok) return;
    try {
      await client.deleteLora({ loraId: found.id });
    } catch (err) {
      body.append(errorBox(showError(err)));
      return;
    }
    dialog.close();
    toast(`Deleted ${found.name}`);
    onDeleted();
  };
  mount(
    body,
    el("h2", {}, found.name),
    el(
      "dl",
      { class: "facts" },
      facts(found).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
    ),
    el("h3", {}, "Workflows using it"),
    found.workflowsUsing.length === 0
      ? el("p", { class: "muted" }, "No workflow has used this LoRA yet.")
      : el(
          "table",
          { class: "workflows" },
          el("thead", {}, el("tr", {}, el("th", {}, "Workflow"), el("th", {}, "Uses"), el("th", {}, "Last used"))),
          el(
            "tbody",
            {},
            found.workflowsUsing.map((w) =>
              el(
                "tr",
                {},
                el("td", { title: w.id }, w.name || w.id),
                el("td", {}, String(w.useCount)),
                el("td", {}, formatDateTime(w.lastUsedAt)),
              ),
            ),
          ),
        ),
    raw.length > 0
      ? el(
          "details",
          { class: "raw" },
          el("summary", {}, `File metadata (${raw.length} keys)`),
          el(
            "dl",
            {},
            raw.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v.length > 300 ? `${v.slice(0, 300)}…` : v)]),
          ),
        )
      : null,
    el("div", { class: "actions" }, el("button", { class: "danger", onclick: () => void remove() }, "Delete LoRA")),
  );
}
