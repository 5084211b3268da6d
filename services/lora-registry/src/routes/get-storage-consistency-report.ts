import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { type LoraAdminService, StorageConsistencyReportSchema } from "@emprops/contracts";
import { latestSweepReport } from "../db/queries/storage-sweep.js";
import type { AppContext } from "../context.js";

/** The latest finished sweep's report, from whichever replica ran it. */
export function getStorageConsistencyReport(ctx: AppContext): Partial<ServiceImpl<typeof LoraAdminService>> {
  return {
    async getStorageConsistencyReport() {
      const latest = await latestSweepReport(ctx.db);
      return latest ? { report: fromJson(StorageConsistencyReportSchema, latest.report as JsonValue) } : {};
    },
  };
}
