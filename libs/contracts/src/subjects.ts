/**
 * NATS JetStream names, in one place. Every publisher and consumer takes them
 * from here; nothing else spells a subject. A namespace (NATS_NAMESPACE,
 * empty in production) prefixes stream, subjects and durables so several
 * deployments or test files can share one NATS server without seeing each
 * other's events.
 */
export interface EventNames {
  /** The stream capturing every subject below. */
  stream: string;
  /** Every subject the stream captures. */
  streamSubjects: string[];
  /** LoraDeleted, one per deleted LoRA. */
  loraDeleted(userId: string): string;
  loraDeletedAll: string;
  /** LoraUsageBatch from a machine. */
  loraUsage(machineId: string): string;
  loraUsageAll: string;
  /** MachineCacheStatsReported from a machine. */
  cacheStats(machineId: string): string;
  cacheStatsAll: string;
  /** Durable consumer names. */
  durables: {
    blobGatewayDeletions: string;
    registryUsage: string;
    registryCacheStats: string;
    machineInvalidations(machineId: string): string;
  };
}

const TOKEN = /^[A-Za-z0-9_-]*$/;

export function eventNames(namespace = ""): EventNames {
  if (!TOKEN.test(namespace)) throw new Error(`NATS namespace must match ${TOKEN}: ${JSON.stringify(namespace)}`);
  const subject = (s: string) => (namespace ? `${namespace}.${s}` : s);
  const durable = (s: string) => (namespace ? `${namespace}_${s}` : s);
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_-]/g, "_");
  const names: EventNames = {
    stream: durable("LORA_EVENTS"),
    streamSubjects: [],
    loraDeleted: (userId) => subject(`lora.deleted.${safe(userId)}`),
    loraDeletedAll: subject("lora.deleted.>"),
    loraUsage: (machineId) => subject(`lora.usage.${safe(machineId)}`),
    loraUsageAll: subject("lora.usage.>"),
    cacheStats: (machineId) => subject(`cache.stats.${safe(machineId)}`),
    cacheStatsAll: subject("cache.stats.>"),
    durables: {
      blobGatewayDeletions: durable("blob-gateway-deletions"),
      registryUsage: durable("lora-registry-usage"),
      registryCacheStats: durable("lora-registry-cache-stats"),
      machineInvalidations: (machineId) => durable(`machine-cache-${safe(machineId)}`),
    },
  };
  names.streamSubjects = [names.loraDeletedAll, names.loraUsageAll, names.cacheStatsAll];
  return names;
}
