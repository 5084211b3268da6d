import { type FileHandle, open, stat } from "node:fs/promises";
import path from "node:path";
import type { UserLoraMetadata } from "@emprops/contracts";
import {
  BlobRequestError,
  type UploadLoraOptions as ClientOptions,
  type UploadLoraResult,
  type UploadSource,
  UploadSessionEndedError,
  uploadLora as upload,
} from "@emprops/upload-client";
import { CliError, EXIT } from "./errors.js";

export type { UploadLoraResult, UploadProgress } from "@emprops/upload-client";

export interface UploadSessionInfo {
  uploadId: string;
  loraId: string;
}

export interface UploadLoraOptions extends Pick<
  ClientOptions,
  "client" | "resumeUploadId" | "onResume" | "onProgress" | "blocksInFlight" | "retries" | "retryDelayMs"
> {
  file: string;
  /** Defaults to the file's base name. */
  name?: string;
  tags?: string[];
  metadata?: Partial<Pick<UserLoraMetadata, "baseModel" | "triggerWords" | "description">>;
  uploadSource?: string;
  /** Called once a new session exists, so the caller can remember it for a re-run. */
  onSession?: (session: UploadSessionInfo) => void;
}

/**
 * Uploads one LoRA file from disk with the shared block-upload client. A
 * storage failure that outlasts the retries interrupts the upload; running
 * the same command again resumes it.
 */
export async function uploadLora(opts: UploadLoraOptions): Promise<UploadLoraResult> {
  const { file } = opts;
  const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read ${file}: ${err.code === "ENOENT" ? "no such file" : err.message}`, EXIT.USAGE);
  });
  if (!info.isFile()) throw new CliError(`${file} is not a file`, EXIT.USAGE);
  const handle = await open(file, "r");
  try {
    return await upload({
      client: opts.client,
      source: fileSource(handle, file, info.size),
      create: {
        name: opts.name ?? path.basename(file),
        tags: opts.tags ?? [],
        metadata: {
          baseModel: opts.metadata?.baseModel ?? "",
          triggerWords: opts.metadata?.triggerWords ?? [],
          description: opts.metadata?.description ?? "",
        },
        uploadSource: opts.uploadSource ?? "cli",
      },
      resumeUploadId: opts.resumeUploadId,
      blocksInFlight: opts.blocksInFlight,
      retries: opts.retries,
      retryDelayMs: opts.retryDelayMs,
      onSession: (s) => {
        if (!s.resumed) opts.onSession?.({ uploadId: s.uploadId, loraId: s.loraId });
      },
      onResume: opts.onResume,
      onProgress: opts.onProgress,
    });
  } catch (err) {
    if (err instanceof UploadSessionEndedError) throw new CliError(err.message, EXIT.UPLOAD_STATE);
    if (err instanceof BlobRequestError) {
      throw new CliError(
        `upload interrupted: ${causes(err)}. Run the same command again to resume where it stopped.`,
        EXIT.UNAVAILABLE,
      );
    }
    throw err;
  } finally {
    await handle.close();
  }
}

/** The file's blocks, read from disk one at a time. */
function fileSource(handle: FileHandle, file: string, size: number): UploadSource {
  return {
    size,
    async slice(start, end) {
      const data = Buffer.allocUnsafe(end - start);
      const { bytesRead } = await handle.read(data, 0, data.length, start);
      if (bytesRead !== data.length) throw new CliError(`${file} changed while it was being uploaded`, EXIT.USAGE);
      return data;
    },
  };
}

/** "Put Block 2: the network connection failed: fetch failed: other side closed". */
function causes(err: Error): string {
  const messages: string[] = [];
  for (let e: unknown = err; e instanceof Error; e = e.cause) messages.push(e.message);
  return messages.join(": ");
}
