import fs from "node:fs/promises";

/** Makes a rename or link in `dir` durable: the directory entry itself is fsynced. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
