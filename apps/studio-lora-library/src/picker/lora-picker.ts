import { normalizeBaseModel } from "@emprops/lora-formats/lora-metadata";
import type { Lora } from "@emprops/contracts";
import { createLoraClient, type LoraClient } from "../api.js";
import { el, mount } from "../dom.js";
import { showError } from "../errors.js";
import { splitName } from "../format-name.js";
import { PICKER_CSS } from "./picker-styles.js";

/** What "add" hands the workflow editor. */
export interface LoraAddDetail {
  /** The workflow's LoRA reference, exactly as the EmProps loader node takes it. */
  reference: { lora_source: "user"; lora_identifier: string };
  /** Words the prompt may want, most useful first. */
  triggerWords: string[];
  name: string;
  baseModel: string;
  /** True when the LoRA's base model is known to differ from the editor's. */
  incompatible: boolean;
}

/** The event "add" dispatches (bubbles and crosses the shadow boundary). */
export const LORA_ADD_EVENT = "lora-add";

/** The model family a name stands for ("sd_xl_base_1.0.safetensors" and "SDXL" are both SDXL). */
function family(baseModel: string): string {
  return (normalizeBaseModel(baseModel) ?? baseModel).toLowerCase();
}

/**
 * <emprops-lora-picker registry-url="…" base-model="SDXL">: the user's LoRAs
 * for a workflow editor. Search (name, tags, trigger words, description),
 * filters by base model and tag, a preview (thumbnail, base model, trigger
 * words), a warning when the LoRA's base model is not the workflow's, and
 * Add, which dispatches `lora-add` with the workflow reference. The token is
 * the `token` property (or a `getToken` function): never an attribute, so it
 * is not in the page's markup.
 */
export class LoraPickerElement extends HTMLElement {
  static observedAttributes = ["registry-url", "base-model"];

  /** The signed-in user's bearer token. */
  token: string | undefined;
  /** Called for every request when set; wins over `token`. */
  getToken: (() => string | undefined) | undefined;

  private client: LoraClient | undefined;
  private readonly root: ShadowRoot;
  private readonly search = el("input", { type: "search", placeholder: "Search LoRAs", "aria-label": "Search LoRAs" });
  private readonly baseModelSelect = el("select", { "aria-label": "Base model" });
  private readonly tagInput = el("input", { type: "text", placeholder: "Tag", "aria-label": "Tag" });
  private readonly results = el("ul", { class: "results", role: "listbox", "aria-label": "LoRAs" });
  private readonly detail = el("section", { class: "detail", "aria-label": "Selected LoRA" });
  private readonly status = el("div", { class: "status", role: "status" });
  private loras: Lora[] = [];
  private previews = new Map<string, string>();
  private selected: Lora | undefined;
  private request = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private seenBaseModels = new Set<string>();

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    const reload = () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.load(), 200);
    };
    this.search.addEventListener("input", reload);
    this.tagInput.addEventListener("input", reload);
    this.baseModelSelect.addEventListener("change", () => void this.load());
    this.root.append(
      el("style", {}, PICKER_CSS),
      el("div", { class: "bar" }, this.search, this.baseModelSelect, this.tagInput),
      el("div", { class: "body" }, el("div", {}, this.status, this.results), this.detail),
    );
  }

  connectedCallback(): void {
    this.renderBaseModels();
    this.renderDetail();
    void this.load();
  }

  attributeChangedCallback(name: string): void {
    if (name === "registry-url") this.client = undefined;
    if (!this.isConnected) return;
    this.renderBaseModels();
    this.renderDetail();
    if (name === "registry-url") void this.load();
  }

  /** Loads the first page again (after the token or the registry changed). */
  refresh(): Promise<void> {
    return this.load();
  }

  private get editorBaseModel(): string {
    return this.getAttribute("base-model")?.trim() ?? "";
  }

  private api(): LoraClient | undefined {
    const url = this.getAttribute("registry-url");
    if (!url) return undefined;
    this.client ??= createLoraClient(url.replace(/\/+$/, ""), () => this.getToken?.() ?? this.token);
    return this.client;
  }

  private renderBaseModels(): void {
    const current = this.baseModelSelect.value;
    const editor = this.editorBaseModel;
    const options = new Set([...(editor ? [normalizeBaseModel(editor) ?? editor] : []), ...this.seenBaseModels]);
    mount(
      this.baseModelSelect,
      el("option", { value: "" }, "Any base model"),
      [...options].map((m) =>
        el("option", { value: m }, m === editor || family(m) === family(editor) ? `${m} (this workflow)` : m),
      ),
    );
    this.baseModelSelect.value = [...options].includes(current) ? current : "";
  }

  private async load(): Promise<void> {
    const client = this.api();
    if (!client) {
      this.status.textContent = "No registry-url set.";
      return;
    }
    const request = ++this.request;
    this.status.textContent = "Loading…";
    this.status.classList.remove("error");
    try {
      const tag = this.tagInput.value.trim().toLowerCase();
      const res = await client.listLoras({
        search: this.search.value.trim(),
        baseModel: this.baseModelSelect.value,
        tags: tag ? [tag] : [],
        pageSize: 50,
      });
      if (request !== this.request) return;
      this.loras = res.loras;
      for (const l of res.loras) if (l.metadata?.baseModel) this.seenBaseModels.add(l.metadata.baseModel);
      this.renderBaseModels();
      this.status.textContent =
        res.totalSize === 0 ? "No LoRA matches." : `${res.totalSize} LoRA${res.totalSize === 1 ? "" : "s"}`;
      const withPreview = res.loras.filter((l) => l.preview).map((l) => l.id);
      if (withPreview.length > 0) {
        const { previews } = await client.getLoraPreviewUrls({ loraIds: withPreview });
        if (request !== this.request) return;
        this.previews = new Map(previews.map((p) => [p.loraId, p.url]));
      }
      if (this.selected && !res.loras.some((l) => l.id === this.selected?.id)) this.selected = undefined;
      this.renderResults();
      this.renderDetail();
    } catch (err) {
      if (request !== this.request) return;
      const shown = showError(err);
      this.status.textContent = `${shown.title}: ${shown.message}`;
      this.status.classList.add("error");
    }
  }

  private thumb(lora: Lora, large = false): HTMLElement {
    const url = this.previews.get(lora.id);
    return el(
      "div",
      { class: "thumb" },
      url && lora.preview
        ? el("img", { src: url, alt: large ? `Preview of ${lora.name}` : "", loading: "lazy" })
        : el("span", {}, "No preview"),
    );
  }

  private renderResults(): void {
    mount(
      this.results,
      this.loras.map((l) => {
        const { stem, extension } = splitName(l.name);
        const item = el(
          "li",
          {
            role: "option",
            tabindex: 0,
            "data-lora-id": l.id,
            "aria-selected": String(l.id === this.selected?.id),
            "aria-label": l.name,
          },
          this.thumb(l),
          el(
            "div",
            {},
            el(
              "div",
              { class: "name", title: l.name },
              el("span", { class: "stem" }, stem),
              el("span", { class: "ext" }, extension),
            ),
            el("div", { class: "meta" }, l.metadata?.baseModel || "base model unknown"),
          ),
        );
        const choose = () => {
          this.selected = l;
          this.renderResults();
          this.renderDetail();
        };
        item.addEventListener("click", choose);
        item.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") choose();
        });
        return item;
      }),
    );
  }

  private compatibility(lora: Lora): { incompatible: boolean; text?: string } {
    const editor = this.editorBaseModel;
    const mine = lora.metadata?.baseModel ?? "";
    if (!editor) return { incompatible: false };
    if (!mine) return { incompatible: false, text: `This LoRA does not say which base model it was trained for.` };
    if (family(mine) === family(editor)) return { incompatible: false };
    return {
      incompatible: true,
      text: `This LoRA was trained for ${mine}; this workflow uses ${editor}. It may not work, or change the image in unexpected ways.`,
    };
  }

  private renderDetail(): void {
    const l = this.selected;
    if (!l) {
      mount(this.detail, el("p", { class: "meta" }, "Choose a LoRA to see its preview and add it to the workflow."));
      return;
    }
    const words = l.metadata?.triggerWords ?? [];
    const check = this.compatibility(l);
    mount(
      this.detail,
      this.thumb(l, true),
      el("strong", { class: "detail-name" }, l.name),
      el("div", {}, el("span", { class: "badge" }, l.metadata?.baseModel || "base model unknown")),
      el(
        "div",
        { class: "words", "aria-label": "Trigger words" },
        words.length === 0
          ? el("span", { class: "meta" }, "No trigger words")
          : words.map((w) => el("span", { class: "word" }, w)),
      ),
      check.text ? el("p", { class: "warning", role: "alert" }, check.text) : null,
      el(
        "button",
        {
          class: "add",
          onclick: () => {
            const detail: LoraAddDetail = {
              reference: { lora_source: "user", lora_identifier: l.id },
              triggerWords: [...words],
              name: l.name,
              baseModel: l.metadata?.baseModel ?? "",
              incompatible: check.incompatible,
            };
            this.dispatchEvent(new CustomEvent(LORA_ADD_EVENT, { detail, bubbles: true, composed: true }));
          },
        },
        "Add to workflow",
      ),
    );
  }
}
