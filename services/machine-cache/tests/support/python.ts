import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Runs a Python 3 script (argv after it) and returns its stdout: how the node package's code sees the database. */
export async function python(script: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("python3", ["-c", script, ...args], { timeout: 30_000 });
  return stdout;
}

/** Starts a Python script and resolves once it printed `marker`; `done` settles when it exits. */
export function pythonUntil(script: string, marker: string, ...args: string[]): Promise<{ done: Promise<string> }> {
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const done = new Promise<string>((ok, fail) =>
      child.on("exit", (code) => (code === 0 ? ok(out) : fail(new Error(`python exited ${code}: ${err}`)))),
    );
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes(marker)) resolve({ done });
    });
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    done.catch(reject);
  });
}
