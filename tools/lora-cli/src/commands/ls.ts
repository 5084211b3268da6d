import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { formatBytes, ListLorasResponseSchema, type Lora, LoraSortField, SortOrder } from "@emprops/contracts";
import type { CliContext } from "../context.js";
import { formatTime, renderTable } from "../format.js";

export interface LsOptions {
  search?: string;
  tag?: string[];
  baseModel?: string;
  unusedSince?: Date;
  sort: "created_at" | "name" | "size" | "last_used";
  order?: "asc" | "desc";
  limit?: number;
  pageToken?: string;
  all?: boolean;
  json?: boolean;
}

const SORT = {
  created_at: LoraSortField.CREATED_AT,
  name: LoraSortField.NAME,
  size: LoraSortField.SIZE,
  last_used: LoraSortField.LAST_USED,
};
const ORDER = { asc: SortOrder.ASC, desc: SortOrder.DESC };

/** `lora ls`: one page (or --all) of the caller's LoRAs, as a table or JSON. */
export async function lsCommand(ctx: CliContext, opts: LsOptions): Promise<void> {
  const loras: Lora[] = [];
  let pageToken = opts.pageToken ?? "";
  let total = 0;
  let nextPageToken = "";
  do {
    const res = await ctx.clients().lora.listLoras({
      search: opts.search ?? "",
      tags: opts.tag ?? [],
      baseModel: opts.baseModel ?? "",
      unusedSince: opts.unusedSince ? timestampFromDate(opts.unusedSince) : undefined,
      sort: SORT[opts.sort],
      order: opts.order ? ORDER[opts.order] : SortOrder.UNSPECIFIED,
      pageSize: opts.limit ?? 0,
      pageToken,
    });
    loras.push(...res.loras);
    total = res.totalSize;
    nextPageToken = res.nextPageToken;
    pageToken = res.nextPageToken;
  } while (opts.all && pageToken);

  if (opts.json) {
    const page = create(ListLorasResponseSchema, { loras, nextPageToken, totalSize: total });
    ctx.print(JSON.stringify(toJson(ListLorasResponseSchema, page), null, 2));
    return;
  }
  if (loras.length === 0) {
    ctx.print(
      opts.search || opts.tag?.length || opts.baseModel || opts.unusedSince
        ? "No LoRA matches."
        : "No LoRAs yet: upload one with `lora upload FILE`.",
    );
    return;
  }
  ctx.print(
    renderTable(
      [
        { title: "ID", align: "right" },
        { title: "NAME", max: 40 },
        { title: "SIZE", align: "right" },
        { title: "UPLOADED" },
        { title: "BASE MODEL", max: 16 },
        { title: "TRIGGER WORDS", max: 30 },
        { title: "USES", align: "right" },
        { title: "TAGS", max: 30 },
      ],
      loras.map((l) => [
        l.id,
        l.name,
        formatBytes(l.sizeBytes),
        formatTime(l.createdAt),
        l.metadata?.baseModel || "-",
        l.metadata?.triggerWords.join(", ") || "-",
        String(l.usageCount),
        l.tags.filter((t) => t !== "lora").join(", ") || "-",
      ]),
    ),
  );
  const more = nextPageToken ? `; for the next page, repeat the command with --page-token ${nextPageToken}` : "";
  ctx.note(`${loras.length} of ${total} LoRAs${more}`);
}
