import fs from "node:fs/promises";
import { Session } from "node:inspector/promises";

/** Profiles this process while `during` runs (the same format as --cpu-prof), written to `file`. */
export async function profileSelf<T>(file: string, during: () => Promise<T>): Promise<T> {
  const session = new Session();
  session.connect();
  try {
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
    try {
      return await during();
    } finally {
      const { profile } = await session.post("Profiler.stop");
      await fs.writeFile(file, JSON.stringify(profile));
    }
  } finally {
    session.disconnect();
  }
}
