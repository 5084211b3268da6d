import { formatBytes, type Lora, LoraSortField, SortOrder } from "@emprops/contracts";
import type { LoraClient } from "../api.js";
import { el, mount } from "../dom.js";
import { type ShownError, showError } from "../errors.js";
import { formatDate, plural } from "../format.js";
import { loraName } from "./lora-name.js";
import { loadPreviews, previewFrame } from "./preview.js";
import { errorBox } from "./toasts.js";

const SORTS: { label: string; sort: LoraSortField; order: SortOrder }[] = [
  { label: "Newest first", sort: LoraSortField.CREATED_AT, order: SortOrder.DESC },
  { label: "Oldest first", sort: LoraSortField.CREATED_AT, order: SortOrder.ASC },
  { label: "Name A–Z", sort: LoraSortField.NAME, order: SortOrder.ASC },
  { label: "Name Z–A", sort: LoraSortField.NAME, order: SortOrder.DESC },
  { label: "Largest first", sort: LoraSortField.SIZE, order: SortOrder.DESC },
  { label: "Smallest first", sort: LoraSortField.SIZE, order: SortOrder.ASC },
];

export interface LibraryOptions {
  client: LoraClient;
  pageSize: number;
  onOpen: (lora: Lora) => void;
  onError: (e: ShownError) => void;
}

export interface Library {
  element: HTMLElement;
  /** Reloads the current page (after an upload or a delete). */
  refresh(): Promise<void>;
  /** Redraws one LoRA's card as given (an edit shown before the server answers, or rolled back). */
  show(lora: Lora): void;
}

/** Search, tag filter, sort, the grid of cards and cursor pagination. */
export function library(opts: LibraryOptions): Library {
  const state = { search: "", tags: [] as string[], sort: 0, tokens: [""], page: 0 };
  const grid = el("div", { class: "grid", "data-testid": "lora-grid", "aria-live": "polite" });
  const pager = el("nav", { class: "pager", "aria-label": "Pages" });
  const tagChips = el("span", { class: "tag-filters" });
  const status = el("div", { class: "grid-status" });

  let searchTimer: ReturnType<typeof setTimeout> | undefined;
  const searchInput = el("input", {
    type: "search",
    placeholder: "Search names, tags, trigger words, descriptions",
    "aria-label": "Search LoRAs",
    oninput: () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        state.search = searchInput.value.trim();
        void firstPage();
      }, 250);
    },
  });
  const tagInput = el("input", {
    type: "text",
    placeholder: "Filter by tag",
    "aria-label": "Filter by tag",
    onkeydown: (e: Event) => {
      if ((e as KeyboardEvent).key !== "Enter") return;
      addTag(tagInput.value);
      tagInput.value = "";
    },
  });
  const sortSelect = el(
    "select",
    {
      "aria-label": "Sort",
      onchange: () => {
        state.sort = Number(sortSelect.value);
        void firstPage();
      },
    },
    SORTS.map((s, i) => el("option", { value: i }, s.label)),
  );

  const addTag = (tag: string) => {
    const t = tag.trim().toLowerCase();
    if (!t || state.tags.includes(t)) return;
    state.tags.push(t);
    void firstPage();
  };
  const renderTagChips = () =>
    mount(
      tagChips,
      state.tags.map((t) =>
        el(
          "button",
          {
            class: "chip chip-filter",
            "aria-label": `Remove tag filter ${t}`,
            onclick: () => {
              state.tags = state.tags.filter((x) => x !== t);
              void firstPage();
            },
          },
          `#${t} ×`,
        ),
      ),
    );

  const card = (l: Lora) => {
    const m = l.metadata;
    const words = m?.triggerWords ?? [];
    return el(
      "article",
      {
        class: "card",
        tabindex: 0,
        "data-lora-id": l.id,
        "aria-label": l.name,
        onclick: () => opts.onOpen(l),
        onkeydown: (e: Event) => {
          if ((e as KeyboardEvent).key === "Enter") opts.onOpen(l);
        },
      },
      previewFrame(l, "card"),
      loraName("h3", l.name, "card-name"),
      el(
        "div",
        { class: "card-facts" },
        el("span", { class: "card-size" }, formatBytes(l.sizeBytes)),
        el("span", { class: "card-date" }, formatDate(l.createdAt)),
        m?.baseModel ? el("span", { class: "badge card-base-model" }, m.baseModel) : null,
      ),
      el(
        "div",
        { class: "card-triggers", "aria-label": "Trigger words" },
        words.length === 0
          ? el("span", { class: "muted" }, "No trigger words")
          : [
              ...words.slice(0, 3).map((w) => el("span", { class: "chip chip-trigger" }, w)),
              words.length > 3 ? el("span", { class: "muted" }, `+${words.length - 3}`) : null,
            ],
      ),
      el(
        "div",
        { class: "card-foot" },
        el("span", { class: "card-usage" }, l.usageCount > 0n ? `Used ${plural(l.usageCount, "time")}` : "Never used"),
        el(
          "span",
          { class: "card-tags" },
          l.tags
            .filter((t) => t !== "lora")
            .map((t) =>
              el(
                "button",
                {
                  class: "chip chip-tag",
                  title: `Show LoRAs tagged ${t}`,
                  onclick: (e: Event) => {
                    e.stopPropagation();
                    addTag(t);
                  },
                },
                `#${t}`,
              ),
            ),
        ),
      ),
    );
  };

  let latest = 0;
  const load = async () => {
    renderTagChips();
    status.textContent = "Loading…";
    const s = SORTS[state.sort] ?? SORTS[0]!;
    // Only the newest request may draw: typing fast must not let an older answer win.
    const request = ++latest;
    try {
      const res = await opts.client.listLoras({
        search: state.search,
        tags: state.tags,
        sort: s.sort,
        order: s.order,
        pageSize: opts.pageSize,
        pageToken: state.tokens[state.page] ?? "",
      });
      if (request !== latest) return;
      state.tokens = [...state.tokens.slice(0, state.page + 1), ...(res.nextPageToken ? [res.nextPageToken] : [])];
      const first = state.page * opts.pageSize + 1;
      status.textContent =
        res.totalSize === 0
          ? state.search || state.tags.length > 0
            ? "No LoRA matches your search."
            : "No LoRAs yet. Drop a .safetensors file above to upload your first."
          : `Showing ${first}–${first + res.loras.length - 1} of ${res.totalSize}`;
      mount(grid, res.loras.map(card));
      void loadPreviews(opts.client, grid, res.loras).catch(() => undefined);
      // One page needs no pager.
      pager.hidden = state.page === 0 && !res.nextPageToken;
      mount(
        pager,
        el(
          "button",
          {
            class: "secondary",
            disabled: state.page === 0,
            onclick: () => {
              state.page--;
              void load();
            },
          },
          "← Previous",
        ),
        el("span", { class: "page-number" }, `Page ${state.page + 1}`),
        el(
          "button",
          {
            class: "secondary",
            disabled: !res.nextPageToken,
            onclick: () => {
              state.page++;
              void load();
            },
          },
          "Next →",
        ),
      );
    } catch (err) {
      if (request !== latest) return;
      const shown = showError(err);
      status.textContent = "";
      mount(grid, errorBox(shown));
      opts.onError(shown);
    }
  };
  const firstPage = () => {
    state.tokens = [""];
    state.page = 0;
    return load();
  };

  const element = el(
    "section",
    { class: "library", "aria-label": "Your LoRAs" },
    el("div", { class: "toolbar" }, searchInput, tagInput, tagChips, sortSelect),
    status,
    grid,
    pager,
  );
  const show = (lora: Lora) => {
    const old = grid.querySelector(`article.card[data-lora-id="${lora.id}"]`);
    if (!old) return;
    const fresh = card(lora);
    old.replaceWith(fresh);
    void loadPreviews(opts.client, fresh, [lora]).catch(() => undefined);
  };
  return { element, refresh: load, show };
}
