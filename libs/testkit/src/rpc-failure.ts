import { Code, ConnectError } from "@connectrpc/connect";
import { errorMetadata, errorReason } from "@emprops/platform";

/** What a client sees of a failed call. */
export interface RpcFailure {
  /** The Connect code's name: "InvalidArgument", "NotFound", … */
  code: string;
  /** The ErrorInfo reason ("QUOTA_EXCEEDED"), or "" when the error carries none. */
  reason: string;
  /** The message without the "[code]" prefix. */
  message: string;
  /** The ErrorInfo metadata. */
  metadata: Record<string, string>;
}

/** Awaits a call that must fail with a ConnectError, and returns what a client sees of the failure. */
export async function rpcFailure(call: Promise<unknown>): Promise<RpcFailure> {
  try {
    await call;
  } catch (err) {
    if (!(err instanceof ConnectError)) {
      throw new Error(`the call failed without a ConnectError: ${String(err)}`, { cause: err });
    }
    return { code: Code[err.code], reason: errorReason(err), message: err.rawMessage, metadata: errorMetadata(err) };
  }
  throw new Error("the call succeeded but was expected to fail");
}
