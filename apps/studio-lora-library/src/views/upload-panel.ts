import { checkLoraFileName, formatBytes, reasonName } from "@emprops/contracts";
import type { LoraClient } from "../api.js";
import { el, mount } from "../dom.js";
import { localError } from "../errors.js";
import { LoraUpload, type UploadSnapshot } from "../upload/uploader.js";
import { errorBox } from "./toasts.js";

const PHASE_TEXT: Record<UploadSnapshot["phase"], string> = {
  preparing: "Preparing…",
  uploading: "Uploading",
  verifying: "Verifying the file…",
  done: "Uploaded",
  paused: "Paused",
  failed: "Failed",
  cancelled: "Cancelled",
};

export interface UploadPanelOptions {
  client: LoraClient;
  userId: string;
  /** An upload finished (the library and quota changed). */
  onUploaded: () => void;
}

/** Drag-and-drop (or choose) a file; one row per upload with its progress bar, errors and actions. */
export function uploadPanel(opts: UploadPanelOptions): HTMLElement {
  const list = el("ul", { class: "uploads", "aria-label": "Uploads" });
  const tagsInput = el("input", {
    type: "text",
    name: "tags",
    id: "upload-tags",
    placeholder: "e.g. style, anime",
  });
  // A visible label: a placeholder alone disappears as soon as one types.
  const tagsField = el(
    "label",
    { class: "tags-field", for: "upload-tags" },
    el("span", {}, "Tags for new uploads"),
    tagsInput,
  );
  const clearFinished = el(
    "button",
    {
      class: "secondary small clear-finished",
      hidden: true,
      onclick: () => {
        for (const row of list.querySelectorAll<HTMLElement>("li.upload")) if (finished(row)) row.remove();
        syncClear();
      },
    },
    "Clear finished",
  );
  const syncClear = () => {
    clearFinished.hidden = ![...list.querySelectorAll<HTMLElement>("li.upload")].some(finished);
  };
  const fileInput = el("input", {
    type: "file",
    accept: ".safetensors,.pt",
    multiple: true,
    hidden: true,
    "data-testid": "file-input",
  });

  const start = (files: Iterable<File>) => {
    const tags = tagsInput.value
      .split(",")
      .map((t) => t.trim())
      .filter((t) => t !== "");
    // The tags belong to these files: the next upload starts without them.
    tagsInput.value = "";
    for (const file of files) {
      // The registry's file-name rule, before any byte is sent.
      const named = checkLoraFileName(file.name);
      if (!named.ok) {
        list.prepend(refusedRow(file, localError(reasonName(named.reason), named.message)));
        syncClear();
        continue;
      }
      const upload = new LoraUpload(opts.client, file, { userId: opts.userId, tags });
      const row = el("li", { class: "upload", "data-file": file.name });
      list.prepend(row);
      const render = (s: UploadSnapshot) => {
        renderRow(row, upload, s);
        syncClear();
      };
      upload.onChange((s) => {
        render(s);
        if (s.phase === "done") opts.onUploaded();
      });
      render(upload.snapshot);
      void upload.start();
    }
  };

  list.addEventListener("upload-dismissed", syncClear);
  fileInput.addEventListener("change", () => {
    if (fileInput.files) start([...fileInput.files]);
    fileInput.value = "";
  });
  const zone = el(
    "div",
    {
      class: "dropzone",
      tabindex: 0,
      role: "button",
      "aria-label": "Upload LoRA files",
      "data-testid": "dropzone",
      onclick: () => fileInput.click(),
      onkeydown: (e: Event) => {
        if ((e as KeyboardEvent).key === "Enter" || (e as KeyboardEvent).key === " ") fileInput.click();
      },
      ondragover: (e: Event) => {
        e.preventDefault();
        zone.classList.add("over");
      },
      ondragleave: () => zone.classList.remove("over"),
      ondrop: (e: Event) => {
        e.preventDefault();
        zone.classList.remove("over");
        const files = (e as DragEvent).dataTransfer?.files;
        if (files) start([...files]);
      },
    },
    el("strong", {}, "Drop .safetensors or .pt files here"),
    el("span", {}, "or click to choose · up to 2 GiB each"),
  );
  return el(
    "section",
    { class: "upload-panel", "aria-label": "Upload" },
    zone,
    fileInput,
    el("div", { class: "upload-options" }, tagsField, clearFinished),
    list,
  );
}

const FINISHED = new Set(["done", "failed", "cancelled"]);
const finished = (row: HTMLElement) => FINISHED.has(row.dataset.phase ?? "");

/** × on a finished row: it goes away. */
function dismissButton(row: HTMLElement): HTMLElement {
  return el(
    "button",
    {
      class: "dismiss",
      "aria-label": "Dismiss",
      title: "Dismiss",
      onclick: () => {
        const list = row.parentElement;
        row.remove();
        list?.dispatchEvent(new Event("upload-dismissed"));
      },
    },
    "×",
  );
}

/** A file refused before upload: the same row a failed upload shows. */
function refusedRow(file: File, error: ReturnType<typeof localError>): HTMLElement {
  const row = el("li", { class: "upload", "data-file": file.name, "data-phase": "failed" });
  row.append(
    el(
      "div",
      { class: "upload-head" },
      el("span", { class: "upload-name" }, file.name),
      el("span", { class: "upload-phase" }, PHASE_TEXT.failed),
      dismissButton(row),
    ),
    el("div", { class: "upload-meta" }, el("span", { class: "upload-bytes" }, formatBytes(file.size))),
    errorBox(error),
  );
  return row;
}

function renderRow(row: HTMLElement, upload: LoraUpload, s: UploadSnapshot): void {
  const pct = s.size === 0 ? 100 : Math.floor((s.uploadedBytes / s.size) * 100);
  row.dataset.phase = s.phase;
  const bar = el(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-label": `Upload of ${s.fileName}`,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": pct,
    },
    el("div", { class: "progress-fill", style: `width:${pct}%` }),
  );
  const actions: HTMLElement[] = [];
  if (s.phase === "paused") {
    actions.push(el("button", { class: "primary", onclick: () => void upload.resume() }, "Resume"));
  }
  if (s.phase === "uploading" || s.phase === "paused" || s.phase === "preparing") {
    actions.push(el("button", { class: "secondary", onclick: () => void upload.cancel() }, "Cancel"));
  }
  mount(
    row,
    el(
      "div",
      { class: "upload-head" },
      el("span", { class: "upload-name" }, s.fileName),
      el("span", { class: "upload-phase" }, PHASE_TEXT[s.phase]),
      FINISHED.has(s.phase) ? dismissButton(row) : null,
    ),
    s.phase === "failed" || s.phase === "cancelled" ? null : bar,
    el(
      "div",
      { class: "upload-meta" },
      s.phase === "failed" && s.uploadedBytes === 0
        ? el("span", { class: "upload-bytes" }, formatBytes(s.size))
        : el("span", { class: "upload-bytes" }, `${formatBytes(s.uploadedBytes)} of ${formatBytes(s.size)} · ${pct}%`),
      s.resumedBytes > 0
        ? el("span", { class: "upload-resumed" }, `resumed: ${formatBytes(s.resumedBytes)} were already uploaded`)
        : null,
      s.phase === "done" && s.lora ? el("span", {}, `LoRA ${s.lora.id}`) : null,
      actions.length > 0 ? el("span", { class: "upload-actions" }, actions) : null,
    ),
    s.error ? errorBox(s.error) : null,
  );
}
