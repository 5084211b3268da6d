import { authInterceptor, startRpcServer, type RpcServer } from "@emprops/platform";
import type { GatewayConfig } from "./config.js";
import { type AppContext, createContext } from "./context.js";
import { routes } from "./routes/index.js";

export interface RunningGateway {
  ctx: AppContext;
  server: RpcServer;
  url: string;
  stop(): Promise<void>;
}

/** Serves the gateway; stop() drains calls and closes everything. */
export async function startBlobGateway(
  cfg: GatewayConfig,
  overrides: Partial<AppContext> = {},
): Promise<RunningGateway> {
  const ctx = createContext(cfg, overrides);
  const server = await startRpcServer({
    name: "blob-gateway",
    host: cfg.host,
    port: cfg.port,
    logger: ctx.logger,
    routes: routes(ctx),
    readMaxBytes: 16 * 1024 * 1024,
    interceptors: [authInterceptor(ctx.verifyToken, { "emprops.blob.v1.BlobGatewayService": ["service", "admin"] })],
  });
  const stop = async () => {
    await server.close();
    await ctx.bus.close();
  };
  return { ctx, server, url: server.url, stop };
}
