import { prepareDataDir } from "./data-dir.js";
import { DEFAULT_START_TIMEOUT_MS, type ServiceOptions } from "./service-options.js";
import { spawnService } from "./spawn-service.js";

export interface StartedNatsServer {
  /** nats://127.0.0.1:<port> */
  url: string;
  pid: number;
  /** JetStream's store directory. */
  dataDir: string;
  /** Stops the server and waits for it to exit; removes a throw-away store. */
  stop(): Promise<void>;
}

export interface NatsServerOptions extends ServiceOptions {
  /** The nats-server executable. Default: `nats-server` from PATH. */
  binary?: string;
}

const NOT_FOUND_HINT =
  "nats-server must be on PATH to start NATS for tests and the dev stack: install it " +
  "(Debian/Ubuntu: `apt-get install -y nats-server`) or set NATS_URL to a JetStream-enabled server";

/** Starts a JetStream-enabled `nats-server` from PATH on 127.0.0.1. */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<StartedNatsServer> {
  const dir = await prepareDataDir("nats", options);
  try {
    const server = await spawnService({
      name: "nats-server",
      command: options.binary ?? "nats-server",
      // -p -1: the server picks a free port and logs it.
      args: ["-js", "-a", "127.0.0.1", "-p", String(options.port ?? -1), "-sd", dir.path],
      ready: (output) => {
        const listening = /Listening for client connections on [^\s]*:(\d+)/.exec(output);
        return listening && output.includes("Server is ready") ? Number(listening[1]) : undefined;
      },
      timeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      notFoundHint: NOT_FOUND_HINT,
      scratchDir: dir.persistent ? undefined : dir.path,
    });
    return {
      url: `nats://127.0.0.1:${server.ready}`,
      pid: server.pid,
      dataDir: dir.path,
      stop: async () => {
        await server.stop();
        await dir.dispose();
      },
    };
  } catch (error) {
    await dir.dispose();
    throw error;
  }
}
