import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { LoraResolverService, LoraSource } from "@emprops/contracts";
import { bearerInterceptor } from "@emprops/platform";
import { type FaultProxy, type LinkShape, startFaultProxy } from "@emprops/testkit";
import type { BenchEnvironment, RegistryAndGateway } from "./environment.js";

/**
 * A cloud VM's link to Blob Storage within a region, the default of the
 * shaped-link suites (`--link 40,20,400`): 40 MB/s per connection, 20 ms
 * round trip, 400 MB/s for all connections together.
 */
export const CLOUD_LINK: Required<LinkShape> = {
  connectionBytesPerSecond: 40e6,
  rttMs: 20,
  totalBytesPerSecond: 400e6,
};

/** Parses `--link MBps,rttMs,totalMBps` (decimal megabytes per second; 0 = unlimited). */
export function parseLink(spec: string): Required<LinkShape> {
  const [perConnection, rtt, total] = spec.split(",").map((s) => Number(s.trim()));
  if (![perConnection, rtt, total].every((x) => x !== undefined && Number.isFinite(x) && x >= 0)) {
    throw new Error(`--link takes "MB/s per connection,RTT ms,total MB/s", e.g. 40,20,400 (got "${spec}")`);
  }
  return {
    connectionBytesPerSecond: perConnection! * 1e6,
    rttMs: rtt!,
    totalBytesPerSecond: total! * 1e6,
  };
}

export function describeLink(link: Required<LinkShape>): string {
  const rate = (bytesPerSecond: number) => (bytesPerSecond ? `${bytesPerSecond / 1e6} MB/s` : "unlimited");
  return (
    `${rate(link.connectionBytesPerSecond)} per connection, ${link.rttMs} ms added round trip (two for a new ` +
    `connection), ${rate(link.totalBytesPerSecond)} for all connections together`
  );
}

/** Everything that reaches storage through one shaped proxy. */
export interface ShapedLink {
  proxy: FaultProxy;
  /** A registry and gateway whose signed URLs (and the gateway's own reads) lead through the proxy. */
  pair: RegistryAndGateway;
  /** A fresh signed read URL of a user LoRA's blob, through the proxy. */
  readUrl(loraId: string): Promise<string>;
  resolver: Client<typeof LoraResolverService>;
  stop(): Promise<void>;
}

/**
 * The shaping proxy (libs/testkit's fault proxy with a link shape) in front
 * of the run's Azurite, and a registry + gateway configured with its
 * endpoint: every URL they sign, so every byte a machine cache, the gateway
 * or a baseline tool reads, crosses the same shaped link.
 */
export async function startShapedLink(env: BenchEnvironment, shape: LinkShape): Promise<ShapedLink> {
  const proxy = await startFaultProxy(new URL(env.azurite.blobEndpoint).origin, { shape });
  let pair: RegistryAndGateway | undefined;
  try {
    pair = await env.startRegistryAndGateway({
      azureConnectionString: proxy.viaConnectionString(env.azurite.connectionString),
    });
  } catch (err) {
    await proxy.close();
    throw err;
  }
  const resolver = createClient(
    LoraResolverService,
    createGrpcTransport({ baseUrl: pair.registry.url, interceptors: [bearerInterceptor(env.tokens.machine)] }),
  );
  const started = pair;
  return {
    proxy,
    pair,
    resolver,
    readUrl: (loraId) => signedReadUrl(resolver, env.userId, loraId),
    stop: async () => {
      await started.registry.stop();
      await started.gateway.stop();
      await proxy.close();
    },
  };
}

/** A signed read URL of a user LoRA as a machine gets it from the registry. */
export async function signedReadUrl(
  resolver: Client<typeof LoraResolverService>,
  userId: string,
  loraId: string,
): Promise<string> {
  const { results } = await resolver.resolveLoras({
    userId,
    jobId: "bench",
    machineId: "bench",
    refs: [{ source: LoraSource.USER, identifier: loraId }],
  });
  const outcome = results[0]?.outcome;
  if (outcome?.case !== "lora" || !outcome.value.downloadUrl) throw new Error(`could not resolve ${loraId}`);
  return outcome.value.downloadUrl;
}
