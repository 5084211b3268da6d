import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { decodeJwt } from "jose";
import { createTokenVerifier } from "../src/index.js";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const SECRET = "mint-token-test-secret-0123456789";

/** The README's command, exactly: `npm run -s mint-token -- …` from the repository. */
async function mint(args: string[], env: Record<string, string | undefined>) {
  const { JWT_SECRET: _unset, EMPROPS_DATA_DIR: _unsetToo, ...rest } = process.env;
  try {
    const { stdout, stderr } = await promisify(execFile)("npm", ["run", "-s", "mint-token", "--", ...args], {
      cwd: ROOT,
      env: { ...rest, ...env },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("npm run -s mint-token", () => {
  let dataDir: string;
  beforeAll(() => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "mint-token-"));
    writeFileSync(path.join(dataDir, "jwt-secret"), `${SECRET}\n`);
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  test("reads the dev stack's secret and prints only the token, which the services accept", async () => {
    const out = await mint(["--sub", "00000000-0000-4000-8000-000000000001", "--role", "admin"], {
      EMPROPS_DATA_DIR: dataDir,
    });
    expect(out).toMatchObject({ code: 0, stderr: "" });
    expect(out.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    const caller = await createTokenVerifier({ secret: SECRET })(out.stdout.trim());
    expect(caller.subject).toBe("00000000-0000-4000-8000-000000000001");
    expect([...caller.roles]).toEqual(["admin"]);
    const { iat, exp } = decodeJwt(out.stdout.trim());
    expect(exp! - iat!).toBe(3600);
  });

  test("JWT_SECRET wins over the file; --ttl sets the expiry", async () => {
    const other = "another-secret-0123456789abcdef";
    const out = await mint(["--sub", "gpu-node-1", "--role", "machine", "--ttl", "12h"], {
      EMPROPS_DATA_DIR: dataDir,
      JWT_SECRET: other,
    });
    expect(out.code).toBe(0);
    const caller = await createTokenVerifier({ secret: other })(out.stdout.trim());
    expect([...caller.roles]).toEqual(["machine"]);
    const { iat, exp } = decodeJwt(out.stdout.trim());
    expect(exp! - iat!).toBe(12 * 3600);
  });

  test("without a secret it says where it looked, on stderr, and prints no token", async () => {
    const empty = mkdtempSync(path.join(os.tmpdir(), "mint-token-empty-"));
    try {
      const out = await mint(["--sub", "x"], { EMPROPS_DATA_DIR: empty });
      expect(out.code).toBe(64);
      expect(out.stdout).toBe("");
      expect(out.stderr).toContain(
        `mint-token: no secret: JWT_SECRET is not set and ${path.join(empty, "jwt-secret")} does not exist (npm start creates it)`,
      );
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  test("a lifetime of zero is refused: every token expires, and not at once", async () => {
    const out = await mint(["--sub", "x", "--ttl", "0"], { EMPROPS_DATA_DIR: dataDir });
    expect(out.code).toBe(64);
    expect(out.stderr).toContain("--ttl must be positive");
  });

  test("a lifetime longer than the services accept for the roles is refused; machine tokens may live longer", async () => {
    const user = await mint(["--sub", "x", "--ttl", "2d"], { EMPROPS_DATA_DIR: dataDir });
    expect(user.code).toBe(64);
    expect(user.stdout).toBe("");
    expect(user.stderr).toContain("--ttl must be at most 86400 s for a user token (the services refuse longer)");
    const admin = await mint(["--sub", "x", "--role", "admin", "--ttl", "25h"], { EMPROPS_DATA_DIR: dataDir });
    expect(admin.stderr).toContain("at most 86400 s for a token with the admin role");
    const machine = await mint(["--sub", "gpu-1", "--role", "machine", "--ttl", "7d"], { EMPROPS_DATA_DIR: dataDir });
    expect(machine.code).toBe(0);
    await expect(createTokenVerifier({ secret: SECRET })(machine.stdout.trim())).resolves.toMatchObject({
      subject: "gpu-1",
    });
    // The same limits the services read.
    const lowered = await mint(["--sub", "x", "--ttl", "2h"], {
      EMPROPS_DATA_DIR: dataDir,
      JWT_MAX_LIFETIME_USER_SECONDS: "3600",
    });
    expect(lowered.stderr).toContain("at most 3600 s for a user token");
  });
});
