import { chmod, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { type ServiceOptions } from "./service-options.js";

export interface DataDir {
  path: string;
  persistent: boolean;
  /** Deletes a throw-away directory; keeps a persistent one. */
  dispose(): Promise<void>;
}

/** Resolves `dataDir` / `persistent` into the directory a service stores its data in. */
export async function prepareDataDir(service: string, options: ServiceOptions): Promise<DataDir> {
  if (options.persistent) {
    if (!options.dataDir) throw new Error(`${service}: persistent: true needs a dataDir`);
    const dir = path.resolve(options.dataDir);
    await mkdir(dir, { recursive: true, mode: 0o755 });
    return { path: dir, persistent: true, dispose: async () => {} };
  }
  const parent = path.resolve(options.dataDir ?? tmpdir());
  await mkdir(parent, { recursive: true });
  const dir = await mkdtemp(path.join(parent, `emprops-${service}-`));
  // mkdtemp makes it 0700; postgres runs as another user when we are root.
  await chmod(dir, 0o755);
  return { path: dir, persistent: false, dispose: () => rm(dir, { recursive: true, force: true }) };
}
