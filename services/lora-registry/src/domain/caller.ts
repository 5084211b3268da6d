import { Code, type HandlerContext } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { callerOf, rpcError } from "@emprops/platform";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The signed-in user (JWT sub, a UUID) on whose own rows a LoraService call
 * acts: set by the access policy only for a user's token.
 */
export function userOf(hctx: HandlerContext): string {
  const caller = callerOf(hctx);
  if (caller.user === undefined) {
    throw rpcError(
      Code.PermissionDenied,
      ErrorReason.USER_TOKEN_REQUIRED,
      "this RPC acts for a user: use that user's own token",
    );
  }
  if (!UUID.test(caller.user)) {
    throw rpcError(
      Code.PermissionDenied,
      ErrorReason.USER_TOKEN_REQUIRED,
      "LoraService acts for a user: the token's subject must be the user's UUID",
      { subject: caller.subject },
    );
  }
  return caller.user.toLowerCase();
}

/** The subject of an admin or machine call, for the audit log. */
export function actorOf(hctx: HandlerContext): string {
  return callerOf(hctx).subject;
}
