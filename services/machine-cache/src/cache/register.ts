import fs from "node:fs/promises";
import path from "node:path";
import { recordEvent } from "../db/cache-events.js";
import { contentIdOf, type LoraFileRow, upsertLoraFile } from "../db/lora-files.js";
import { registerModel, SHARED_LORA, USER_LORA } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { toPythonIso } from "../db/python-time.js";
import { isTombstoned } from "../db/tombstones.js";
import { writeTransaction } from "../db/write-transaction.js";
import type { HoldingsRecorder } from "../reporting/holdings-publisher.js";
import { notFound } from "./item-errors.js";
import type { LoraKey } from "./lora-key.js";

/** A verified file renamed into place, not yet registered. */
export interface DownloadedFile {
  key: LoraKey;
  /** Absolute path. */
  path: string;
  /** The registry's display name of the LoRA. */
  fileName: string;
  sizeBytes: number;
  sha256: string;
  bytesDownloaded: number;
  /** The file's mode once registered (user LoRAs: readable by the service's user, or its group, only). */
  mode?: number;
}

/** The owner deleted this LoRA and the deletion reached this machine (see the invalidation consumer). */
export function isDeleted(db: Db, key: LoraKey): boolean {
  return key.source === "user" && isTombstoned(db, key.userId, key.identifier);
}

/**
 * Registers a downloaded file where the node package sees it (its models
 * row) and where this service finds it (lora_files), with the download
 * event, in one transaction. The tombstone is checked inside it: a deletion
 * either came first (the file is discarded and the reference is NOT_FOUND)
 * or comes after and evicts the registered rows. The holdings index hears of
 * it once it is registered.
 */
export async function registerDownloaded(
  db: Db,
  file: DownloadedFile,
  now: Date,
  holdings: HoldingsRecorder,
): Promise<void> {
  const { key } = file;
  if (file.mode !== undefined) await fs.chmod(file.path, file.mode);
  const stat = await fs.stat(file.path);
  const row: LoraFileRow = {
    path: file.path,
    source: key.source,
    identifier: key.identifier,
    user_id: key.userId,
    file_name: file.fileName,
    sha256: file.sha256,
    size_bytes: file.sizeBytes,
    validated_at_ms: now.getTime(),
    content_id: contentIdOf(stat),
  };
  const deleted = await writeTransaction(db, () => {
    if (isDeleted(db, key)) return true;
    registerModel(db, {
      path: file.path,
      modelType: key.source === "user" ? USER_LORA : SHARED_LORA,
      filename: path.basename(file.path),
      sizeBytes: file.sizeBytes,
      now: toPythonIso(now),
      useCount: 0,
    });
    upsertLoraFile(db, row);
    recordEvent(db, { kind: "download", atMs: now.getTime(), bytes: file.bytesDownloaded, path: file.path });
    return false;
  });
  if (deleted) {
    await fs.rm(file.path, { force: true });
    throw notFound(key);
  }
  holdings.held(row);
}
