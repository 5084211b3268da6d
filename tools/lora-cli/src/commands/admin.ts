import { toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  formatBytes,
  formatPercent,
  GetCacheStatsResponseSchema,
  GetUserQuotaResponseSchema,
  ListAuditEventsResponseSchema,
  SetUserQuotaResponseSchema,
} from "@emprops/contracts";
import type { CliContext } from "../context.js";
import { CliError, EXIT } from "../errors.js";
import { formatTime, renderTable } from "../format.js";
import { describeQuota, describeSizes } from "./quota.js";

const GIB = 1024 ** 3;

/** `lora admin quota set USER --gb N --count N | --reset`. */
export async function adminQuotaSetCommand(
  ctx: CliContext,
  userId: string,
  opts: { gb?: number; count?: number; reset?: boolean; json?: boolean },
): Promise<void> {
  if (opts.gb === undefined && opts.count === undefined && !opts.reset) {
    throw new CliError("nothing to set: give --gb, --count or --reset", EXIT.USAGE);
  }
  if (opts.reset && (opts.gb !== undefined || opts.count !== undefined)) {
    throw new CliError("--reset cannot be combined with --gb or --count", EXIT.USAGE);
  }
  if (opts.count !== undefined && !Number.isInteger(opts.count)) {
    throw new CliError(`--count must be a whole number, got ${opts.count}`, EXIT.USAGE);
  }
  const res = await ctx.clients().admin.setUserQuota({
    userId,
    maxBytes: opts.gb === undefined ? undefined : BigInt(Math.round(opts.gb * GIB)),
    maxCount: opts.count,
    resetToDefaults: opts.reset ?? false,
  });
  if (opts.json) {
    ctx.print(JSON.stringify(toJson(SetUserQuotaResponseSchema, res), null, 2));
    return;
  }
  if (!res.quota) throw new Error("SetUserQuota answered without a quota");
  ctx.print(`Quota of ${userId} ${opts.reset ? "reset to the defaults" : "updated"}:`);
  ctx.print(describeQuota(res.quota));
}

/** `lora admin quota show USER`. */
export async function adminQuotaShowCommand(ctx: CliContext, userId: string, opts: { json?: boolean }): Promise<void> {
  const res = await ctx.clients().admin.getUserQuota({ userId });
  if (opts.json) {
    ctx.print(JSON.stringify(toJson(GetUserQuotaResponseSchema, res), null, 2));
    return;
  }
  if (!res.quota) throw new Error("GetUserQuota answered without a quota");
  ctx.print(`Quota of ${userId}:`);
  ctx.print(describeQuota(res.quota));
  if (res.loras.length > 0) ctx.print(`\n${describeSizes(res.loras)}`);
}

/** `lora admin cache-stats [--machine ID]`: the latest report of every machine. */
export async function adminCacheStatsCommand(
  ctx: CliContext,
  opts: { machine?: string; json?: boolean },
): Promise<void> {
  const res = await ctx.clients().admin.getCacheStats({ machineId: opts.machine ?? "" });
  if (opts.json) {
    ctx.print(JSON.stringify(toJson(GetCacheStatsResponseSchema, res), null, 2));
    return;
  }
  if (res.machines.length === 0) {
    ctx.print(
      opts.machine ? `Machine ${opts.machine} has not reported.` : "No machine has reported cache statistics yet.",
    );
    return;
  }
  ctx.print(
    renderTable(
      [
        { title: "MACHINE", max: 30 },
        { title: "CACHE", align: "right" },
        { title: "MAX", align: "right" },
        { title: "USED", align: "right" },
        { title: "USER", align: "right" },
        { title: "SHARED", align: "right" },
        { title: "HIT RATE 24H", align: "right" },
        { title: "EVICTIONS 24H", align: "right" },
        { title: "OLDEST (DAYS)", align: "right" },
        { title: "REPORTED" },
      ],
      res.machines.map((m) => [
        m.machineId,
        formatBytes(Number(m.userLoraBytes + m.sharedLoraBytes)),
        `${m.maxLoraCacheGb} GiB`,
        formatPercent(m.utilizationPercent),
        String(m.userLoraCount),
        String(m.sharedLoraCount),
        formatPercent(m.cacheHitRate24h * 100),
        String(m.evictionsLast24h),
        m.oldestLoraAgeDays.toFixed(1),
        formatTime(m.reportTime),
      ]),
    ),
  );
}

/** `lora admin audit`: the audit log, newest first. */
export async function adminAuditCommand(
  ctx: CliContext,
  opts: { user?: string; action?: string; since?: Date; limit?: number; pageToken?: string; json?: boolean },
): Promise<void> {
  const res = await ctx.clients().admin.listAuditEvents({
    userId: opts.user ?? "",
    action: opts.action ?? "",
    startTime: opts.since ? timestampFromDate(opts.since) : undefined,
    pageSize: opts.limit ?? 0,
    pageToken: opts.pageToken ?? "",
  });
  if (opts.json) {
    ctx.print(JSON.stringify(toJson(ListAuditEventsResponseSchema, res), null, 2));
    return;
  }
  if (res.events.length === 0) {
    ctx.print("No audit events match.");
    return;
  }
  ctx.print(
    renderTable(
      [
        { title: "TIME" },
        { title: "ACTION", max: 24 },
        { title: "ACTOR", max: 36 },
        { title: "ROLE" },
        { title: "USER", max: 36 },
        { title: "LORA", align: "right" },
        { title: "DETAILS", max: 60 },
      ],
      res.events.map((e) => [
        formatTime(e.eventTime),
        e.action,
        e.actorId,
        e.actorRole,
        e.userId || "-",
        e.loraId || "-",
        e.detailsJson || "-",
      ]),
    ),
  );
  if (res.nextPageToken) ctx.note(`more: repeat the command with --page-token ${res.nextPageToken}`);
}
