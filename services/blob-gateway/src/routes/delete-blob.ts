import type { ServiceImpl } from "@connectrpc/connect";
import type { BlobGatewayService } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { userBlob } from "../storage/blob-paths.js";
import { deleteUserBlob } from "../storage/delete-user-blob.js";

/** Deletes a user LoRA blob; a blob already gone is success with deleted = false. */
export function deleteBlob(ctx: AppContext): Partial<ServiceImpl<typeof BlobGatewayService>> {
  return {
    async deleteBlob(req) {
      const ref = userBlob(req.blob);
      const deleted = await deleteUserBlob(ctx, ref, "rpc");
      return { deleted };
    },
  };
}
