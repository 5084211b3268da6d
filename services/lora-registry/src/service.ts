import { authInterceptor, startRpcServer, type RpcServer } from "@emprops/platform";
import type { RegistryConfig } from "./config.js";
import { type AppContext, createContext } from "./context.js";
import { migrateToLatest } from "./db/migrate.js";
import { routes } from "./routes/index.js";

export interface RunningRegistry {
  ctx: AppContext;
  server: RpcServer;
  url: string;
  stop(): Promise<void>;
}

/** Migrates the database, then serves; stop() drains calls and closes everything. */
export async function startLoraRegistry(
  cfg: RegistryConfig,
  overrides: Partial<AppContext> = {},
): Promise<RunningRegistry> {
  const ctx = createContext(cfg, overrides);
  await migrateToLatest(ctx.db);
  const server = await startRpcServer({
    name: "lora-registry",
    host: cfg.host,
    port: cfg.port,
    logger: ctx.logger,
    routes: routes(ctx),
    interceptors: [
      authInterceptor(ctx.verifyToken, {
        "emprops.lora.v1.LoraService": "any",
        "emprops.lora.v1.LoraAdminService": ["admin"],
        "emprops.lora.v1.LoraResolverService": ["machine"],
      }),
    ],
  });
  const stop = async () => {
    await server.close();
    await ctx.bus.close();
    await ctx.db.destroy();
  };
  return { ctx, server, url: server.url, stop };
}
