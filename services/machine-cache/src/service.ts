import { authInterceptor, startRpcServer, type RpcServer } from "@emprops/platform";
import type { MachineCacheConfig } from "./config.js";
import { type AppContext, createContext } from "./context.js";
import { routes } from "./routes/index.js";

export interface RunningMachineCache {
  ctx: AppContext;
  server: RpcServer;
  url: string;
  stop(): Promise<void>;
}

/** Serves this node's cache; stop() drains calls and closes everything. */
export async function startMachineCache(
  cfg: MachineCacheConfig,
  overrides: Partial<AppContext> = {},
): Promise<RunningMachineCache> {
  const ctx = createContext(cfg, overrides);
  const server = await startRpcServer({
    name: "machine-cache",
    host: cfg.host,
    port: cfg.port,
    logger: ctx.logger,
    routes: routes(ctx),
    interceptors: [authInterceptor(ctx.verifyToken, { "emprops.cache.v1.MachineCacheService": ["machine", "admin"] })],
  });
  const stop = async () => {
    await server.close();
    await ctx.bus.close();
  };
  return { ctx, server, url: server.url, stop };
}
