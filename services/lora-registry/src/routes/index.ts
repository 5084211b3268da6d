import type { ConnectRouter } from "@connectrpc/connect";
import { LoraAdminService, LoraResolverService, LoraService, PlacementService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { abortLoraUpload } from "./abort-lora-upload.js";
import { checkStorageConsistency } from "./check-storage-consistency.js";
import { completeLoraUpload } from "./complete-lora-upload.js";
import { createLoraUpload } from "./create-lora-upload.js";
import { deleteLora } from "./delete-lora.js";
import { deleteLoraPreview } from "./delete-lora-preview.js";
import { deleteUserLoras } from "./delete-user-loras.js";
import { findLoraHolders } from "./find-lora-holders.js";
import { getCacheStats } from "./get-cache-stats.js";
import { getLora } from "./get-lora.js";
import { getLoraDownloadUrl } from "./get-lora-download-url.js";
import { getLoraPreviewUrls } from "./get-lora-preview-urls.js";
import { getLoraUpload } from "./get-lora-upload.js";
import { getQuota } from "./get-quota.js";
import { getStorageConsistencyReport } from "./get-storage-consistency-report.js";
import { getUserQuota } from "./get-user-quota.js";
import { listAuditEvents } from "./list-audit-events.js";
import { listLoras } from "./list-loras.js";
import { listPopularLoras } from "./list-popular-loras.js";
import { rankMachines } from "./rank-machines.js";
import { reconcileQuota } from "./reconcile-quota.js";
import { resolveLoras } from "./resolve-loras.js";
import { setLoraPreview } from "./set-lora-preview.js";
import { setUserQuota } from "./set-user-quota.js";
import { updateLora } from "./update-lora.js";

/** Every RPC of the registry. */
export function routes(ctx: AppContext) {
  return (router: ConnectRouter) => {
    router.service(LoraService, {
      ...createLoraUpload(ctx),
      ...getLoraUpload(ctx),
      ...completeLoraUpload(ctx),
      ...abortLoraUpload(ctx),
      ...listLoras(ctx),
      ...getLora(ctx),
      ...updateLora(ctx),
      ...deleteLora(ctx),
      ...getQuota(ctx),
      ...getLoraDownloadUrl(ctx),
      ...setLoraPreview(ctx),
      ...deleteLoraPreview(ctx),
      ...getLoraPreviewUrls(ctx),
    });
    router.service(LoraAdminService, {
      ...setUserQuota(ctx),
      ...getUserQuota(ctx),
      ...getCacheStats(ctx),
      ...listAuditEvents(ctx),
      ...deleteUserLoras(ctx),
      ...reconcileQuota(ctx),
      ...checkStorageConsistency(ctx),
      ...getStorageConsistencyReport(ctx),
    });
    router.service(LoraResolverService, {
      ...resolveLoras(ctx),
      ...listPopularLoras(ctx),
    });
    router.service(PlacementService, {
      ...rankMachines(ctx),
      ...findLoraHolders(ctx),
    });
  };
}
