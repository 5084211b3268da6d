import fs from "node:fs/promises";
import path from "node:path";
import { upsertLoraFile } from "../../src/db/lora-files.js";
import { registerModel, SHARED_LORA, USER_LORA } from "../../src/db/models.js";
import type { Db } from "../../src/db/open-database.js";
import { toPythonIso } from "../../src/db/python-time.js";

export interface SeededLora {
  /** Absolute path (EnsureLoras' absolutePath). */
  path: string;
  /** EnsureLoras' path: relative to models/loras for shared LoRAs, "" for user LoRAs (kept outside it). */
  relativePath: string;
  sizeBytes: number;
}

/** The machine-cache's default user LoRA directory for a ComfyUI whose models/loras is `loraDir`. */
export function defaultUserLoraDir(loraDir: string): string {
  return path.resolve(loraDir, "..", "..", "user_lora_cache");
}

/**
 * Puts a LoRA file and its rows in place the way a finished download (or, for
 * other model types, the node package) leaves them.
 */
export async function seedLora(
  db: Db,
  loraDir: string,
  opts: {
    relativePath: string;
    sizeBytes: number;
    lastUsed: Date;
    modelType?: string;
    protected?: boolean;
    ignore?: boolean;
    /** lora_files row: user LoRA id (and owner from the path), or shared name; none for foreign rows. */
    ours?: boolean;
    sha256?: string;
    validatedAtMs?: number;
  },
): Promise<SeededLora> {
  // "users/{user}/{id}-{name}": a user LoRA, kept in the default user LoRA directory.
  const user = opts.relativePath.startsWith("users/");
  const file = user
    ? path.join(defaultUserLoraDir(loraDir), opts.relativePath.slice("users/".length))
    : path.join(loraDir, opts.relativePath);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, Buffer.alloc(opts.sizeBytes, 7));
  const modelType = opts.modelType ?? (user ? USER_LORA : SHARED_LORA);
  registerModel(db, {
    path: file,
    modelType,
    filename: path.basename(file),
    sizeBytes: opts.sizeBytes,
    now: toPythonIso(opts.lastUsed),
    useCount: 1,
  });
  db.prepare("UPDATE models SET protected = ?, is_ignore = ? WHERE path = ?").run(
    opts.protected ? 1 : 0,
    opts.ignore ? 1 : 0,
    file,
  );
  if (opts.ours ?? true) {
    const [, owner, name] = opts.relativePath.split("/");
    upsertLoraFile(db, {
      path: file,
      source: user ? "user" : "shared",
      identifier: user ? ((name ?? "").split("-")[0] ?? "") : (owner ?? ""),
      user_id: user ? (owner ?? "") : "",
      file_name: path.basename(file),
      sha256: opts.sha256 ?? "",
      size_bytes: opts.sizeBytes,
      validated_at_ms: opts.validatedAtMs ?? opts.lastUsed.getTime(),
    });
  }
  return { path: file, relativePath: user ? "" : opts.relativePath, sizeBytes: opts.sizeBytes };
}

export async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return false;
      throw err;
    },
  );
}
