import { Code, ConnectError } from "@connectrpc/connect";
import { errorMetadata, errorReason } from "@emprops/platform";

/** Awaits a call that must fail, and returns what a client sees of the failure. */
export async function rpcFailure(
  call: Promise<unknown>,
): Promise<{ code: string; reason: string; message: string; metadata: Record<string, string> }> {
  try {
    await call;
  } catch (err) {
    const ce = ConnectError.from(err);
    return { code: Code[ce.code], reason: errorReason(err), message: ce.rawMessage, metadata: errorMetadata(err) };
  }
  throw new Error("the call succeeded but was expected to fail");
}
