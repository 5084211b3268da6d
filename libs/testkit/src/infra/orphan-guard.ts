import { spawn } from "node:child_process";
import { type Socket } from "node:net";

// Reads commands from its stdin, a pipe only the owner writes to: `watch PID`
// names the process to stop, `release` means the owner cleaned up itself.
// End of file means the owner died (exit, signal or SIGKILL alike): signal
// the process, wait for it (a zombie counts as gone: it has exited), escalate
// to SIGKILL after 10 s, then remove the scratch directory.
const WATCHDOG = `
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0
  read -r s < "/proc/$1/stat" || return 1
  s=\${s##*) }
  [ "\${s%% *}" != Z ]
}
pid=
while read -r command argument; do
  case "$command" in
    watch) pid=$argument ;;
    release) exit 0 ;;
  esac
done
if [ -n "$pid" ]; then
  kill -s "$1" "$pid" 2>/dev/null
  n=0
  while alive "$pid" && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  kill -s KILL "$pid" 2>/dev/null
fi
[ -z "$2" ] || rm -rf -- "$2"
`;

export interface OrphanGuard {
  /** The process to stop if the owner dies. */
  watch(pid: number): void;
  /** The owner has cleaned up itself: dismiss the watchdog and wait for it to go. */
  release(): Promise<void>;
}

/**
 * Makes sure a child process and its scratch directory do not outlive this
 * process, however it ends. Exit hooks cannot do that: they do not run on
 * SIGKILL (or when jest force-kills a worker), and in a jest sandbox
 * `process.on` never fires. A detached watchdog shell notices the owner's
 * death as end of file on a pipe. Create it before the scratch directory is
 * filled, and watch() the process as soon as its pid is known.
 */
export function guardAgainstOrphan(signal: NodeJS.Signals, removeDir = ""): OrphanGuard {
  const watchdog = spawn("/bin/sh", ["-c", WATCHDOG, "orphan-guard", signal.replace(/^SIG/, ""), removeDir], {
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
    watch(pid) {
      if (!released) stdin.write(`watch ${pid}\n`);
    },
    release() {
      released ??= (async () => {
        // Whoever awaits this must not see the process exit underneath it
        // (an empty event loop would skip the rest of their clean-up).
        watchdog.ref();
        stdin.ref();
        stdin.end("release\n");
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, 2_000)));
        await Promise.race([exited, timeout]);
        clearTimeout(timer);
        watchdog.unref();
      })();
      return released;
    },
  };
}
