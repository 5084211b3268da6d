import { LoraAdminService, LoraResolverService, LoraService, PlacementService } from "@emprops/contracts";
import { type RpcRule, type ServicePolicy, servicePolicy } from "@emprops/platform";

/** A user acting on their own rows; no machine, service or admin token acts as one. */
const USER: RpcRule = { allow: ["user"] };
const ADMIN: RpcRule = { allow: ["admin"] };
/** A GPU machine resolving LoRAs for the user of the job it runs. */
const MACHINE: RpcRule = { allow: ["machine"] };
/** The job broker choosing machines for jobs. */
const SCHEDULER: RpcRule = { allow: ["scheduler"] };

/** Who may call each RPC of the registry. */
export const registryAccessPolicy: ServicePolicy[] = [
  servicePolicy(LoraService, {
    createLoraUpload: USER,
    getLoraUpload: USER,
    completeLoraUpload: USER,
    abortLoraUpload: USER,
    listLoras: USER,
    getLora: USER,
    updateLora: USER,
    deleteLora: USER,
    getQuota: USER,
    getLoraDownloadUrl: USER,
    setLoraPreview: USER,
    deleteLoraPreview: USER,
    getLoraPreviewUrls: USER,
  }),
  servicePolicy(LoraAdminService, {
    setUserQuota: ADMIN,
    getUserQuota: ADMIN,
    getCacheStats: ADMIN,
    listAuditEvents: ADMIN,
    deleteUserLoras: ADMIN,
    reconcileQuota: ADMIN,
    checkStorageConsistency: ADMIN,
    getStorageConsistencyReport: ADMIN,
  }),
  servicePolicy(LoraResolverService, {
    resolveLoras: MACHINE,
    listPopularLoras: MACHINE,
  }),
  servicePolicy(PlacementService, {
    rankMachines: SCHEDULER,
    findLoraHolders: SCHEDULER,
  }),
];
