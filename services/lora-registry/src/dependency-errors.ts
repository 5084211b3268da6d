import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { isPostgresConnectionError, type Logger, rpcError } from "@emprops/platform";

/**
 * A call that failed because PostgreSQL could not be reached (or dropped the
 * connection under it) answers UNAVAILABLE / DEPENDENCY_UNAVAILABLE, which
 * clients retry, instead of an internal error. Every other failure passes.
 */
export function dependencyErrorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (err) {
      if (err instanceof ConnectError || !isPostgresConnectionError(err)) throw err;
      logger.warn({ err, rpc: req.method.name }, "PostgreSQL not reachable during a call");
      throw rpcError(
        Code.Unavailable,
        ErrorReason.DEPENDENCY_UNAVAILABLE,
        "the LoRA database is not reachable; try again",
        {
          dependency: "postgresql",
        },
      );
    }
  };
}
