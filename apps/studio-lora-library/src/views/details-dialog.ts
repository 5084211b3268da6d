import { clone, create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { FileFormat, formatBytes, type Lora, LoraMetadataSchema, LoraSchema } from "@emprops/contracts";
import type { LoraClient } from "../api.js";
import { el, mount } from "../dom.js";
import { localError, showError } from "../errors.js";
import { formatDateTime, plural } from "../format.js";
import { confirmDialog } from "./confirm-dialog.js";
import { loadPreviews, previewFrame } from "./preview.js";
import { errorBox, toast } from "./toasts.js";

const FORMATS: Record<FileFormat, string> = {
  [FileFormat.UNSPECIFIED]: "—",
  [FileFormat.SAFETENSORS]: "safetensors",
  [FileFormat.TORCH_ZIP]: "PyTorch (zip)",
  [FileFormat.PICKLE]: "PyTorch (pickle)",
};

/** The largest preview image the registry takes. */
const MAX_PREVIEW_BYTES = 2 * 1024 * 1024;

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

const list = (text: string) =>
  text
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "");

export interface DetailsOptions {
  /** The LoRA was deleted. */
  onDeleted: () => void;
  /** The LoRA changed (also before the server answers an edit, and back when it refuses). */
  onChanged: (lora: Lora) => void;
}

/**
 * A LoRA's preview, metadata and the workflows using it, with Download,
 * Edit (shown at once, rolled back when the server refuses), a preview
 * image to set or remove, and Delete (after a confirmation).
 */
export async function openDetails(client: LoraClient, loraId: string, opts: DetailsOptions): Promise<void> {
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

  let lora: Lora;
  try {
    const found = (await client.getLora({ loraId })).lora;
    if (!found) return;
    lora = found;
  } catch (err) {
    body.replaceChildren(errorBox(showError(err)));
    return;
  }
  const problems = el("div", { class: "details-problems" });
  const fail = (err: unknown) => mount(problems, errorBox(showError(err)));

  const remove = async () => {
    const ok = await confirmDialog({
      title: `Delete ${lora.name}?`,
      text: `This frees ${formatBytes(lora.sizeBytes)} of your quota. Machines drop their cached copy, and workflows that use it will no longer find it.`,
      confirm: "Delete",
    });
    if (!ok) return;
    try {
      await client.deleteLora({ loraId: lora.id });
    } catch (err) {
      fail(err);
      return;
    }
    dialog.close();
    toast(`Deleted ${lora.name}`);
    opts.onDeleted();
  };

  const download = async () => {
    try {
      const dl = await client.getLoraDownloadUrl({ loraId: lora.id });
      // The URL answers with Content-Disposition: attachment, so the browser saves it under the LoRA's name.
      const a = el("a", { href: dl.url, download: dl.fileName, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      toast(`Downloading ${dl.fileName} (${formatBytes(dl.sizeBytes)})`);
    } catch (err) {
      fail(err);
    }
  };

  const imageInput = el("input", {
    type: "file",
    accept: "image/png,image/jpeg,image/webp",
    hidden: true,
    "data-testid": "preview-input",
  });
  imageInput.addEventListener("change", () => {
    const file = imageInput.files?.[0];
    imageInput.value = "";
    if (file) void setImage(file);
  });
  const setImage = async (file: File) => {
    mount(problems);
    if (file.size > MAX_PREVIEW_BYTES) {
      mount(
        problems,
        errorBox(
          localError("FILE_TOO_LARGE", `The image has ${formatBytes(file.size)}; a preview may have at most 2.0 MiB.`),
        ),
      );
      return;
    }
    try {
      const res = await client.setLoraPreview({ loraId: lora.id, image: new Uint8Array(await file.arrayBuffer()) });
      if (res.lora) changed(res.lora);
      toast("Preview image set");
    } catch (err) {
      fail(err);
    }
  };
  const removeImage = async () => {
    try {
      const res = await client.deleteLoraPreview({ loraId: lora.id });
      if (res.lora) changed(res.lora);
    } catch (err) {
      fail(err);
    }
  };

  /** Shows the LoRA as given: in the dialog and in the grid. */
  const changed = (next: Lora) => {
    lora = next;
    opts.onChanged(next);
    render();
  };

  const editForm = () => {
    const m = lora.metadata;
    const name = el("input", { name: "name", value: lora.name, required: true });
    const tags = el("input", { name: "tags", value: lora.tags.filter((t) => t !== "lora").join(", ") });
    const triggers = el("input", { name: "trigger_words", value: m?.triggerWords.join(", ") ?? "" });
    const description = el("textarea", { name: "description", rows: 3 }, m?.description ?? "");
    const field = (label: string, input: HTMLElement, hint?: string) =>
      el(
        "label",
        { class: "field" },
        el("span", {}, label),
        input,
        hint ? el("small", { class: "muted" }, hint) : null,
      );
    const form = el(
      "form",
      {
        class: "edit",
        "aria-label": "Edit LoRA",
        onsubmit: (e: Event) => {
          e.preventDefault();
          void save({
            name: name.value.trim(),
            tags: list(tags.value),
            triggerWords: list(triggers.value),
            description: description.value.trim(),
          });
        },
      },
      field("Name", name, "The extension stays as it is."),
      field("Tags", tags, "Comma-separated."),
      field("Trigger words", triggers, "Comma-separated; empty uses the file's own."),
      field("Description", description),
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "secondary", onclick: () => render() }, "Cancel"),
        el("button", { type: "submit", class: "primary" }, "Save"),
      ),
    );
    return form;
  };

  /** Optimistic: shows the edit at once, then the server's answer, or the LoRA as it was with the server's reason. */
  const save = async (edit: { name: string; tags: string[]; triggerWords: string[]; description: string }) => {
    mount(problems);
    const before = lora;
    const metadata = clone(LoraMetadataSchema, before.metadata ?? create(LoraMetadataSchema));
    // An empty list or description falls back to what the file says: the server's answer will show it.
    if (edit.triggerWords.length > 0) metadata.triggerWords = edit.triggerWords;
    if (edit.description) metadata.description = edit.description;
    const optimistic = clone(LoraSchema, before);
    optimistic.name = edit.name;
    optimistic.tags = ["lora", ...edit.tags];
    optimistic.metadata = metadata;
    changed(optimistic);
    try {
      const res = await client.updateLora({
        loraId: before.id,
        name: edit.name,
        tags: edit.tags,
        triggerWords: edit.triggerWords,
        description: edit.description,
        updateMask: create(FieldMaskSchema, { paths: ["name", "tags", "trigger_words", "description"] }),
      });
      if (res.lora) changed(res.lora);
      toast(`Saved ${res.lora?.name ?? edit.name}`);
    } catch (err) {
      changed(before);
      fail(err);
    }
  };

  const render = (editing = false) => {
    const raw = Object.entries(lora.metadata?.raw ?? {});
    const frame = previewFrame(lora, "large");
    mount(
      body,
      frame,
      el(
        "div",
        { class: "preview-actions" },
        el(
          "button",
          { class: "secondary small", onclick: () => imageInput.click() },
          lora.preview ? "Replace image" : "Set preview image",
        ),
        lora.preview
          ? el("button", { class: "secondary small", onclick: () => void removeImage() }, "Remove image")
          : null,
        imageInput,
      ),
      el("h2", {}, lora.name),
      problems,
      editing
        ? editForm()
        : el(
            "dl",
            { class: "facts" },
            facts(lora).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]),
          ),
      el("h3", {}, "Workflows using it"),
      lora.workflowsUsing.length === 0
        ? el("p", { class: "muted" }, "No workflow has used this LoRA yet.")
        : el(
            "table",
            { class: "workflows" },
            el("thead", {}, el("tr", {}, el("th", {}, "Workflow"), el("th", {}, "Uses"), el("th", {}, "Last used"))),
            el(
              "tbody",
              {},
              lora.workflowsUsing.map((w) =>
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
      editing
        ? null
        : el(
            "div",
            { class: "actions" },
            el("button", { class: "secondary", onclick: () => void download() }, "Download"),
            el("button", { class: "secondary", onclick: () => render(true) }, "Edit"),
            el("button", { class: "danger", onclick: () => void remove() }, "Delete LoRA"),
          ),
    );
    void loadPreviews(client, frame.parentElement ?? body, [lora]).catch(() => undefined);
  };
  render();
}
