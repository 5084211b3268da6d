import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ERROR_DOMAIN, ErrorInfoSchema } from "@emprops/contracts";
import { checkHead, headLength } from "@emprops/lora-formats/head";
import type { PutBody } from "./blob-put.js";
import type { UploadSource } from "./send-blocks.js";

/**
 * The file was refused by the verifier's rules on its first bytes, on this side, before anything was sent. It is
 * the refusal the registry would answer (INVALID_ARGUMENT with the reason in ErrorInfo), so callers show both alike.
 */
export class HeadRefusedError extends ConnectError {
  constructor(
    readonly reason: string,
    message: string,
    /** As the gateway's refusal has it: field, detected_format and unsafe_globals. */
    metadata: Record<string, string>,
  ) {
    super(message, Code.InvalidArgument, undefined, [
      {
        desc: ErrorInfoSchema,
        value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }),
      },
    ]);
  }

  // ConnectError's own instanceof test knows ConnectError's prototype and name only: this keeps the name
  // "ConnectError" (so `instanceof ConnectError` holds) and tells its own instances by their prototype chain.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

/**
 * Reads the file's first bytes (at most 1 MiB) and judges them with the verifier's rules for the extension of
 * `name`; throws HeadRefusedError for a file the verification would refuse. Returns the bytes, for
 * CreateLoraUpload's head, or undefined for a name that is no LoRA file (the registry refuses it by name).
 */
export async function checkFileHead(source: UploadSource, name: string): Promise<Uint8Array | undefined> {
  const extension = name.slice(name.lastIndexOf(".") + 1).toLowerCase();
  if (extension !== "safetensors" && extension !== "pt") return undefined;
  const head = await bytesOf(await source.slice(0, headLength(source.size)));
  const verdict = checkHead(head, { extension, sizeBytes: source.size });
  if (verdict.outcome === "refused") {
    throw new HeadRefusedError(verdict.reason, verdict.message, {
      field: "head",
      detected_format: verdict.detectedType,
      ...(verdict.unsafeGlobals.length > 0 ? { unsafe_globals: verdict.unsafeGlobals.join(",") } : {}),
    });
  }
  return head;
}

async function bytesOf(body: PutBody): Promise<Uint8Array<ArrayBuffer>> {
  if (typeof body === "string") return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  return new Uint8Array(await body.arrayBuffer());
}
