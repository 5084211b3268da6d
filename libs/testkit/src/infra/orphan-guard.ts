import { spawn } from "node:child_process";
import { type Socket } from "node:net";

// Blocks on its stdin, a pipe only this process writes to. A line means "the
// owner stopped the child itself": exit quietly. End of file means the owner
// died (exit, signal or SIGKILL alike): stop the child, escalate to SIGKILL
// after 10 s, then remove its scratch directory.
const WATCHDOG = `
if read -r _; then exit 0; fi
kill -s "$2" "$1" 2>/dev/null
n=0
while kill -0 "$1" 2>/dev/null && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
kill -s KILL "$1" 2>/dev/null
[ -z "$3" ] || rm -rf -- "$3"
`;

export interface OrphanGuard {
  /** The owner has stopped the child: dismiss the watchdog and wait for it to go. */
  release(): Promise<void>;
}

/**
 * Makes sure `pid` does not outlive this process, however this process ends.
 * Exit hooks cannot do that: they do not run on SIGKILL (or when jest
 * force-kills a worker), and in a jest sandbox `process.on` never fires. A
 * detached watchdog shell notices the owner's death as end of file on a pipe.
 */
export function guardAgainstOrphan(pid: number, signal: NodeJS.Signals, removeDir = ""): OrphanGuard {
  const name = signal.replace(/^SIG/, "");
  const watchdog = spawn("/bin/sh", ["-c", WATCHDOG, "orphan-guard", String(pid), name, removeDir], {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
  });
  const exited = new Promise<void>((resolve) => {
    watchdog.once("exit", () => resolve());
    // Best effort: without /bin/sh only the owner's own stop() remains.
    watchdog.once("error", () => resolve());
  });
  const stdin = watchdog.stdin as Socket;
  stdin.on("error", () => {});
  stdin.unref();
  watchdog.unref();

  let released: Promise<void> | undefined;
  return {
    release() {
      released ??= (async () => {
        stdin.end("release\n");
        const timeout = new Promise<void>((resolve) => setTimeout(resolve, 2_000).unref());
        await Promise.race([exited, timeout]);
      })();
      return released;
    },
  };
}
