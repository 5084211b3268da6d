import { create } from "@bufbuild/protobuf";
import { health, LoraAdminService, LoraResolverService, LoraService } from "@emprops/contracts";
import { type HealthState, ServingStatus } from "@emprops/platform";
import { sql } from "kysely";
import type { AppContext } from "../context.js";

/** The gateway's own readiness name. */
const GATEWAY_SERVICE = "emprops.blob.v1.BlobGatewayService";

/** What each application service needs: admin calls only the database, the others also the gateway. */
const NEEDS = [
  { service: LoraService.typeName, gateway: true },
  { service: LoraResolverService.typeName, gateway: true },
  { service: LoraAdminService.typeName, gateway: false },
];

/**
 * Keeps the per-service grpc.health.v1 statuses true to the dependencies:
 * PostgreSQL (`SELECT 1`) and the blob-gateway (its own health check) are
 * checked every interval, each within the check timeout, and a service is
 * NOT_SERVING while one it needs is down — the readiness answer. The
 * server's own status ("") stays SERVING while the process serves — the
 * liveness answer. Changes are logged; `firstChecked` resolves once the
 * statuses reflect a first check.
 */
export function startDependencyHealth(
  ctx: AppContext,
  state: HealthState,
): { firstChecked: Promise<void>; stop(): Promise<void> } {
  const { cfg, logger } = ctx;
  const up = { postgresql: true, "blob-gateway": true };
  const within = <T>(p: Promise<T>) =>
    Promise.race([
      p,
      new Promise<never>((_, reject) => {
        const t = setTimeout(() => reject(new Error("no answer in time")), cfg.dependencyCheckTimeoutMs);
        void p.finally(() => clearTimeout(t)).catch(() => {});
      }),
    ]);
  const probe = async (name: keyof typeof up, check: () => Promise<boolean>) => {
    let ok: boolean;
    let error: unknown;
    try {
      ok = await within(check());
    } catch (err) {
      [ok, error] = [false, err];
    }
    if (ok !== up[name]) {
      if (ok) logger.info({ dependency: name }, `${name} reachable again; dependent services SERVING`);
      else logger.warn({ dependency: name, err: error }, `${name} not reachable; dependent services NOT_SERVING`);
    }
    up[name] = ok;
  };
  const checkOnce = async () => {
    await Promise.all([
      probe("postgresql", async () => {
        await sql`SELECT 1`.execute(ctx.db);
        return true;
      }),
      probe("blob-gateway", async () => {
        const answer = await ctx.blobGatewayHealth.check(
          create(health.HealthCheckRequestSchema, { service: GATEWAY_SERVICE }),
          {
            timeoutMs: cfg.dependencyCheckTimeoutMs,
          },
        );
        return answer.status === ServingStatus.SERVING;
      }),
    ]);
    if (stopped) return;
    for (const { service, gateway } of NEEDS) {
      const serving = up.postgresql && (!gateway || up["blob-gateway"]);
      state.set(serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING, service);
    }
  };
  let stopped = false;
  let running: Promise<void> = checkOnce();
  const timer = setInterval(() => {
    running = running.then(checkOnce);
  }, cfg.dependencyCheckIntervalMs);
  timer.unref();
  return {
    firstChecked: running,
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
