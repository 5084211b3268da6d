import type { ConnectRouter } from "@connectrpc/connect";
import { MachineCacheService } from "@emprops/contracts";
import type { AppContext } from "../context.js";

/** Every RPC of the machine cache; an RPC not listed answers UNIMPLEMENTED. */
export function routes(_ctx: AppContext) {
  return (router: ConnectRouter) => {
    router.service(MachineCacheService, {});
  };
}
