import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Runs a Python 3 script (argv after it) and returns its stdout: how the node package's code sees the database. */
export async function python(script: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("python3", ["-c", script, ...args], { timeout: 30_000 });
  return stdout;
}

/** Another process holding model_cache.db's write lock, as the node package's code would while it writes. */
export interface LockHolder {
  /** Commits and waits for the process to exit. */
  release(): Promise<void>;
}

/**
 * Python's sqlite3 (the node package's driver) opens `file`, runs BEGIN
 * IMMEDIATE (and `statement`, if given) and holds the write lock until
 * release(): resolves once the lock is held.
 */
export function pythonLockHolder(file: string, statement = ""): Promise<LockHolder> {
  const script = `
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute('BEGIN IMMEDIATE')
if sys.argv[2]:
    conn.execute(sys.argv[2])
print('locked', flush=True)
sys.stdin.readline()
conn.execute('COMMIT')
`;
  return new Promise((resolve, reject) => {
    const child = spawn("python3", ["-c", script, file, statement], { stdio: ["pipe", "pipe", "pipe"] });
    let err = "";
    const exited = new Promise<void>((ok, fail) =>
      child.on("exit", (code) => (code === 0 ? ok() : fail(new Error(`python exited ${code}: ${err}`)))),
    );
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("locked"))
        resolve({
          release: () => {
            child.stdin.end("\n");
            return exited;
          },
        });
    });
    child.on("error", reject);
    exited.catch(reject);
  });
}
