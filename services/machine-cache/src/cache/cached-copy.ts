import fs from "node:fs";
import { findLoraFile, type LoraFileRow } from "../db/lora-files.js";
import { getModel } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import type { LoraKey } from "./lora-key.js";

/**
 * The row, its models row and a file of the recorded size are all there.
 * The stat is synchronous: for a file in the local models directory the
 * kernel answers it from its inode cache in microseconds, while a round trip
 * through the thread pool cost a cached hit more than all its SQLite work.
 */
export function isIntact(db: Db, row: LoraFileRow): boolean {
  if (!getModel(db, row.path)) return false;
  const stat = fs.statSync(row.path, { throwIfNoEntry: false });
  return !!stat && stat.isFile() && stat.size === row.size_bytes;
}

/** The cached copy of a reference when its file is intact; no network call. */
export function cachedCopy(db: Db, key: LoraKey): LoraFileRow | undefined {
  const row = findLoraFile(db, key);
  return row && isIntact(db, row) ? row : undefined;
}
