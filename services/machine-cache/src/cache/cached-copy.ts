import fs from "node:fs/promises";
import { findLoraFile, type LoraFileRow } from "../db/lora-files.js";
import { getModel } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import type { LoraKey } from "./lora-key.js";

/** The row, its models row and a file of the recorded size are all there. */
export async function isIntact(db: Db, row: LoraFileRow): Promise<boolean> {
  if (!getModel(db, row.path)) return false;
  try {
    const stat = await fs.stat(row.path);
    return stat.isFile() && stat.size === row.size_bytes;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** The cached copy of a reference when its file is intact; no network call. */
export async function cachedCopy(db: Db, key: LoraKey): Promise<LoraFileRow | undefined> {
  const row = findLoraFile(db, key);
  return row && (await isIntact(db, row)) ? row : undefined;
}
