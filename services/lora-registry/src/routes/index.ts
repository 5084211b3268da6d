import type { ConnectRouter } from "@connectrpc/connect";
import { LoraAdminService, LoraResolverService, LoraService } from "@emprops/contracts";
import type { AppContext } from "../context.js";

/** Every RPC of the registry; an RPC not listed answers UNIMPLEMENTED. */
export function routes(_ctx: AppContext) {
  return (router: ConnectRouter) => {
    router.service(LoraService, {});
    router.service(LoraAdminService, {});
    router.service(LoraResolverService, {});
  };
}
