import { authInterceptor, startRpcServer, type RpcServer } from "@emprops/platform";
import { gatewayAccessPolicy } from "./access-policy.js";
import type { GatewayConfig } from "./config.js";
import { type AppContext, createContext } from "./context.js";
import { startBlobDeletions } from "./jobs/blob-deletions.js";
import { routes } from "./routes/index.js";

export interface RunningGateway {
  ctx: AppContext;
  server: RpcServer;
  url: string;
  /** Resolves once connected to NATS (the LoraDeleted consumer then attaches). */
  ready: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Serves the gateway: makes sure both containers exist, starts the LoraDeleted
 * consumer (it attaches once NATS is reachable) and the RPC server. stop()
 * drains calls, then stops the consumer and the bus.
 */
export async function startBlobGateway(
  cfg: GatewayConfig,
  overrides: Partial<AppContext> = {},
): Promise<RunningGateway> {
  const ctx = createContext(cfg, overrides);
  try {
    await ctx.storage.ensureContainers();
    if (cfg.storageCorsAllowedOrigins.length > 0) await ctx.storage.allowBrowserUploads(cfg.storageCorsAllowedOrigins);
  } catch (err) {
    await ctx.bus.close();
    throw new Error(`blob storage at ${cfg.storage.accountUrl} is not usable: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const deletions = await startBlobDeletions(ctx);
  let server: RpcServer;
  try {
    server = await startRpcServer({
      name: "blob-gateway",
      host: cfg.host,
      port: cfg.port,
      logger: ctx.logger,
      routes: routes(ctx),
      // UploadBlob chunks travel in messages of up to this size.
      readMaxBytes: 16 * 1024 * 1024,
      interceptors: [authInterceptor(ctx.verifyToken, gatewayAccessPolicy)],
    });
  } catch (err) {
    await deletions.stop();
    await ctx.bus.close();
    throw err;
  }
  ctx.logger.info(
    { storage: cfg.storage.accountUrl, signer: ctx.storage.signer.kind, user_container: cfg.userContainer },
    "blob storage ready",
  );
  const stop = async () => {
    await server.close();
    await deletions.stop();
    await ctx.bus.close();
  };
  return { ctx, server, url: server.url, ready: ctx.bus.whenReady(), stop };
}
