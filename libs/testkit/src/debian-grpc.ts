import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";

/**
 * Debian's gRPC tools for Python clients: `python3-grpcio` (for Debian's own
 * /usr/bin/python3, not a pyenv python3 that may come first on PATH),
 * `protoc` (protobuf-compiler, with the well-known types of libprotobuf-dev in
 * /usr/include) and `grpc_python_plugin` (protobuf-compiler-grpc).
 */
export interface DebianGrpcTools {
  python: string;
  protoc: string;
  grpcPythonPlugin: string;
  /** Holds google/protobuf/*.proto. */
  wellKnownProtos: string;
}

/** apt packages that provide them; `.ci/run` installs the missing ones. */
export const DEBIAN_GRPC_PACKAGES = [
  "python3-grpcio",
  "protobuf-compiler",
  "protobuf-compiler-grpc",
  "libprotobuf-dev",
];

const TOOLS: DebianGrpcTools = {
  python: "/usr/bin/python3",
  protoc: "/usr/bin/protoc",
  grpcPythonPlugin: "/usr/bin/grpc_python_plugin",
  wellKnownProtos: "/usr/include",
};

function missingTools(): string[] {
  const missing: string[] = [];
  let grpcio = false;
  try {
    execFileSync(TOOLS.python, ["-c", "import grpc, google.protobuf"], { stdio: "ignore" });
    grpcio = true;
  } catch {
    // reported below
  }
  if (!grpcio) missing.push(`${TOOLS.python} with grpc (python3-grpcio)`);
  if (!existsSync(TOOLS.protoc)) missing.push(`${TOOLS.protoc} (protobuf-compiler)`);
  if (!existsSync(TOOLS.grpcPythonPlugin)) missing.push(`${TOOLS.grpcPythonPlugin} (protobuf-compiler-grpc)`);
  if (!existsSync(`${TOOLS.wellKnownProtos}/google/protobuf/timestamp.proto`)) {
    missing.push(`${TOOLS.wellKnownProtos}/google/protobuf (libprotobuf-dev)`);
  }
  return missing;
}

/**
 * The tools, or undefined when some are not installed: then a test that needs
 * them is skipped with a line saying what to install. Under CI (CI=true),
 * where `.ci/run` installs them, a missing tool is an error instead.
 */
export function debianGrpcTools(): DebianGrpcTools | undefined {
  const missing = missingTools();
  if (missing.length === 0) return TOOLS;
  const message = `Python gRPC client tests need ${missing.join(", ")}: apt-get install -y ${DEBIAN_GRPC_PACKAGES.join(" ")}`;
  if (process.env.CI === "true") throw new Error(message);
  process.stderr.write(`skipped: ${message}\n`);
  return undefined;
}

/** Runs a Python script with Debian's interpreter; a non-zero exit rejects with its stderr. */
export async function runDebianPython(
  tools: DebianGrpcTools,
  script: string,
  args: string[] = [],
  options: { pythonPath?: string[]; timeoutMs?: number } = {},
): Promise<string> {
  const env = { ...process.env, PYTHONPATH: (options.pythonPath ?? []).join(":"), PYTHONDONTWRITEBYTECODE: "1" };
  try {
    const { stdout } = await promisify(execFile)(tools.python, ["-c", script, ...args], {
      env,
      timeout: options.timeoutMs ?? 60_000,
    });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`python failed: ${e.message}\n${e.stderr ?? ""}`);
  }
}
