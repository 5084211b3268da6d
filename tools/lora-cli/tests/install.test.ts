import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const README = readFileSync(path.join(ROOT, "tools", "lora-cli", "README.md"), "utf8");
const VERSION = (JSON.parse(readFileSync(path.join(__dirname, "..", "package.json"), "utf8")) as { version: string })
  .version;

/** The README's install block, as printed. */
function installBlock(): string {
  const block = /<!-- lora-install[^>]*-->\s*\n```sh\n([\s\S]*?)\n```/.exec(README)?.[1];
  if (!block) throw new Error("tools/lora-cli/README.md has no lora-install block");
  return block;
}

describe("lora outside the repository", () => {
  let prefix: string;
  let home: string;
  beforeAll(() => {
    // npm's global prefix and the home directory are this test's own: nothing global is touched.
    prefix = mkdtempSync(path.join(os.tmpdir(), "lora-link-"));
    home = mkdtempSync(path.join(os.tmpdir(), "lora-home-"));
  });
  afterAll(() => {
    rmSync(prefix, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  test("the README's npm link puts lora on PATH, and it answers --version from another directory", async () => {
    const { stdout } = await promisify(execFile)("bash", ["-e", "-c", installBlock()], {
      cwd: ROOT,
      env: {
        PATH: `${path.join(prefix, "bin")}:${process.env.PATH}`,
        HOME: home,
        npm_config_prefix: prefix,
        npm_config_audit: "false",
        npm_config_fund: "false",
      },
    });
    expect(stdout.trim().split("\n").at(-1)).toBe(VERSION);
  });
});
