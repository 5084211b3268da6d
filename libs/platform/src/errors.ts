import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ERROR_DOMAIN,
  ErrorInfoSchema,
  ErrorReason,
  type ItemError,
  ItemErrorSchema,
  parseReason,
  reasonName,
} from "@emprops/contracts";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";

type Metadata = Record<string, string | number | bigint | boolean>;

/** Extra typed detail sent beside ErrorInfo (e.g. QuotaExceededDetail). */
export interface ExtraDetail<D extends DescMessage = DescMessage> {
  desc: D;
  value: MessageShape<D>;
}

function stringify(metadata: Metadata): Record<string, string> {
  return Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, String(v)]));
}

/**
 * The one way services fail an RPC: a Connect code, a shared reason sent as
 * google.rpc.ErrorInfo, and the numbers a UI needs in its metadata.
 */
export function rpcError(
  code: Code,
  reason: ErrorReason,
  message: string,
  metadata: Metadata = {},
  extra: ExtraDetail[] = [],
): ConnectError {
  const info = create(ErrorInfoSchema, {
    reason: reasonName(reason),
    domain: ERROR_DOMAIN,
    metadata: stringify(metadata),
  });
  return new ConnectError(message, code, undefined, [
    { desc: ErrorInfoSchema, value: info },
    ...extra.map((d) => ({ desc: d.desc, value: d.value })),
  ]);
}

export const invalidArgument = (reason: ErrorReason, message: string, metadata: Metadata = {}) =>
  rpcError(Code.InvalidArgument, reason, message, metadata);

export const notFound = (reason: ErrorReason, message: string, metadata: Metadata = {}) =>
  rpcError(Code.NotFound, reason, message, metadata);

export const failedPrecondition = (reason: ErrorReason, message: string, metadata: Metadata = {}) =>
  rpcError(Code.FailedPrecondition, reason, message, metadata);

/** The reason of an error received by a client ("" when it has none). */
export function errorReason(err: unknown): string {
  const ce = ConnectError.from(err);
  const info = ce.findDetails(ErrorInfoSchema)[0];
  return info?.reason ?? "";
}

/** The ErrorInfo metadata of an error received by a client. */
export function errorMetadata(err: unknown): Record<string, string> {
  return ConnectError.from(err).findDetails(ErrorInfoSchema)[0]?.metadata ?? {};
}

/** Snake-case code name as Connect writes it in JSON ("not_found"). */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

/** A per-item failure of a batch RPC, built from any error. */
export function toItemError(err: unknown): ItemError {
  const ce = ConnectError.from(err);
  const info = ce.findDetails(ErrorInfoSchema)[0];
  return create(ItemErrorSchema, {
    code: codeName(ce.code),
    reason: info ? parseReason(info.reason) : ErrorReason.UNSPECIFIED,
    message: ce.rawMessage,
    metadata: info?.metadata ?? {},
  });
}

/** Turns a per-item failure back into an error, e.g. to rethrow it. */
export function fromItemError(item: ItemError): ConnectError {
  const code = (Object.values(Code).find((c) => typeof c === "number" && codeName(c) === item.code) ??
    Code.Unknown) as Code;
  return rpcError(code, item.reason, item.message, item.metadata);
}
