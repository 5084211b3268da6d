import type { Logger } from "pino";
import { ConfigError } from "./config.js";

/**
 * Runs a service's main: start, then stop once on SIGTERM/SIGINT. A bad
 * configuration exits with code 78 (EX_CONFIG) and a message naming the
 * variables; any other start-up failure exits 1. `ready` (connected to NATS,
 * first reports sent) is logged as "<name> ready" when it resolves.
 */
export function runMain(
  name: string,
  start: () => Promise<{ stop(): Promise<void>; logger: Logger; ready?: Promise<void> }>,
): void {
  start().then(
    ({ stop, logger, ready }) => {
      ready?.then(
        () => logger.info(`${name} ready`),
        () => {}, // closed before it was ready: the shutdown is logged
      );
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, `${name} shutting down`);
        stop().then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, `${name} failed to stop cleanly`);
            process.exit(1);
          },
        );
      };
      process.once("SIGTERM", () => shutdown("SIGTERM"));
      process.once("SIGINT", () => shutdown("SIGINT"));
    },
    (err: unknown) => {
      if (err instanceof ConfigError) {
        process.stderr.write(`${name}: ${err.message}\n`);
        process.exit(78);
      }
      process.stderr.write(
        `${name}: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
