import type { MessageInitShape } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import {
  type CreateLoraUploadRequestSchema,
  ErrorInfoSchema,
  type LoraService,
  type StagedBlock,
  UploadState,
} from "@emprops/contracts";

/** CreateLoraUpload's fields for a new session; the size comes from the file. */
export type NewUpload = Omit<MessageInitShape<typeof CreateLoraUploadRequestSchema>, "sizeBytes" | "$typeName">;

/** The session blocks go to. */
export interface UploadTarget {
  uploadId: string;
  loraId: string;
  /** The signed upload URL; replaced when storage refuses it (expired). */
  uploadUrl: string;
  blockSize: number;
  /** Blocks an earlier attempt staged. */
  staged: StagedBlock[];
  /** Put Block List already done: only CompleteLoraUpload is left. */
  committed: boolean;
  /** Picked up from an earlier attempt rather than created now. */
  resumed: boolean;
}

/** The session was completed, aborted or expired while blocks were still being sent. */
export class UploadSessionEndedError extends Error {
  constructor(readonly uploadId: string) {
    super("the upload session is no longer pending");
    this.name = "UploadSessionEndedError";
  }
}

export type EarlierSession = { kind: "pending"; target: UploadTarget } | { kind: "completed"; loraId: string };

/**
 * An earlier session of the same file: pending (resume it), completed, or
 * gone (undefined: start a new one). A pending session of another size is
 * aborted, so its reservation goes back to the quota at once.
 */
export async function pickUpSession(
  client: Client<typeof LoraService>,
  uploadId: string,
  size: number,
): Promise<EarlierSession | undefined> {
  let res;
  try {
    res = await client.getLoraUpload({ uploadId });
  } catch (err) {
    // Reaped long ago, another registry's or another user's: a new session it is.
    if (err instanceof ConnectError && (err.code === Code.NotFound || reasonOf(err) === "INVALID_ID")) return undefined;
    throw err;
  }
  const session = res.upload;
  if (!session) return undefined;
  if (session.state === UploadState.COMPLETED) return { kind: "completed", loraId: session.loraId };
  if (session.state !== UploadState.PENDING || Number(session.declaredSizeBytes) !== size || !res.uploadUrl) {
    if (session.state === UploadState.PENDING) await client.abortLoraUpload({ uploadId }).catch(() => undefined);
    return undefined;
  }
  return {
    kind: "pending",
    target: {
      uploadId,
      loraId: session.loraId,
      uploadUrl: res.uploadUrl,
      blockSize: Number(res.blockSizeBytes),
      staged: res.stagedBlocks,
      committed: res.committed,
      resumed: true,
    },
  };
}

/** CreateLoraUpload: reserves the quota and returns the signed URL and block size. */
export async function createSession(
  client: Client<typeof LoraService>,
  size: number,
  fields: NewUpload,
): Promise<UploadTarget> {
  const created = await client.createLoraUpload({ ...fields, sizeBytes: BigInt(size) });
  if (!created.upload) throw new Error("CreateLoraUpload answered without a session");
  return {
    uploadId: created.upload.uploadId,
    loraId: created.upload.loraId,
    uploadUrl: created.uploadUrl,
    blockSize: Number(created.blockSizeBytes),
    staged: [],
    committed: false,
    resumed: false,
  };
}

/** A fresh signed URL for the session (GetLoraUpload signs a new one). */
export async function refreshUploadUrl(client: Client<typeof LoraService>, target: UploadTarget): Promise<void> {
  const res = await client.getLoraUpload({ uploadId: target.uploadId });
  if (!res.uploadUrl) throw new UploadSessionEndedError(target.uploadId);
  target.uploadUrl = res.uploadUrl;
}

function reasonOf(err: ConnectError): string {
  return err.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
}
