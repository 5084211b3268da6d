import type { ConnectRouter } from "@connectrpc/connect";
import { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { commitUpload } from "./commit-upload.js";
import { createDownloadUrls } from "./create-download-urls.js";
import { createUploadUrl } from "./create-upload-url.js";
import { deleteBlob } from "./delete-blob.js";
import { deleteListedBlob } from "./delete-listed-blob.js";
import { deletePreview } from "./delete-preview.js";
import { getUploadState } from "./get-upload-state.js";
import { listBlobs } from "./list-blobs.js";
import { sealUpload } from "./seal-upload.js";
import { storePreview } from "./store-preview.js";
import { uploadBlob } from "./upload-blob.js";
import { verifyBlob } from "./verify-blob.js";

/** Every RPC of the gateway; an RPC not listed answers UNIMPLEMENTED. */
export function routes(ctx: AppContext) {
  return (router: ConnectRouter) => {
    router.service(BlobGatewayService, {
      ...createUploadUrl(ctx),
      ...getUploadState(ctx),
      ...commitUpload(ctx),
      ...sealUpload(ctx),
      ...verifyBlob(ctx),
      ...createDownloadUrls(ctx),
      ...deleteBlob(ctx),
      ...uploadBlob(ctx),
      ...storePreview(ctx),
      ...deletePreview(ctx),
      ...listBlobs(ctx),
      ...deleteListedBlob(ctx),
    });
  };
}
