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
  /** The holdings stream: what each machine-cache holds (MachineHoldingsReported). */
  holdings: {
    stream: StreamSpec;
    /** The machine's latest full list (the stream keeps the latest per machine). */
    snapshot(machineId: string): string;
    /** The machine's latest heartbeat (the stream keeps the latest per machine). */
    heartbeat(machineId: string): string;
    /** One change; the subject is unique, so the stream keeps every delta for its retention. */
    delta(machineId: string, generation: bigint, sequence: bigint): string;
    all: string;
  };
  /** Durable consumer names. */
  durables: {
    blobGatewayDeletions: string;
    registryUsage: string;
    registryCacheStats: string;
    machineInvalidations(machineId: string): string;
  };
}

/** A JetStream stream with its own limits. */
export interface StreamSpec {
  name: string;
  subjects: string[];
  /** Messages older than this are dropped. */
  maxAgeMs: number;
  /** Only the latest N messages of each subject are kept (0: no limit). */
  maxMsgsPerSubject: number;
  /** Window in which a repeated Nats-Msg-Id is dropped (at most maxAgeMs). */
  duplicateWindowMs: number;
}

/**
 * How long LORA_HOLDINGS keeps a message: a live machine's snapshot and
 * heartbeat are always newer (the latest per machine is kept), and every
 * delta since its latest snapshot is inside it, so a registry replica
 * replaying the stream at start folds the same index as one that saw every
 * message. A machine's snapshot interval must stay below it.
 */
export const HOLDINGS_RETENTION_MS = 3600_000;

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
    holdings: {
      stream: {
        name: durable("LORA_HOLDINGS"),
        subjects: [subject("cache.holdings.>")],
        maxAgeMs: HOLDINGS_RETENTION_MS,
        maxMsgsPerSubject: 1,
        duplicateWindowMs: 120_000,
      },
      snapshot: (machineId) => subject(`cache.holdings.${safe(machineId)}.snapshot`),
      heartbeat: (machineId) => subject(`cache.holdings.${safe(machineId)}.heartbeat`),
      delta: (machineId, generation, sequence) =>
        subject(`cache.holdings.${safe(machineId)}.delta.${generation}.${sequence}`),
      all: subject("cache.holdings.>"),
    },
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
