import { BlobGatewayService } from "@emprops/contracts";
import { type RpcRule, type ServicePolicy, servicePolicy } from "@emprops/platform";

/** The registry (and other internal services) with the service role; admins for operations. */
const INTERNAL: RpcRule = { allow: ["service", "admin"] };
/** The registry's consistency sweep only: listing and deleting what no row names is its job, not an operator's by hand. */
const SERVICE: RpcRule = { allow: ["service"] };

/** Who may call each RPC of the gateway: never a user or a machine (they get signed URLs from the registry). */
export const gatewayAccessPolicy: ServicePolicy[] = [
  servicePolicy(BlobGatewayService, {
    createUploadUrl: INTERNAL,
    getUploadState: INTERNAL,
    commitUpload: INTERNAL,
    sealUpload: INTERNAL,
    verifyBlob: INTERNAL,
    createDownloadUrls: INTERNAL,
    deleteBlob: INTERNAL,
    uploadBlob: INTERNAL,
    storePreview: INTERNAL,
    deletePreview: INTERNAL,
    listBlobs: SERVICE,
    deleteListedBlob: SERVICE,
  }),
];
