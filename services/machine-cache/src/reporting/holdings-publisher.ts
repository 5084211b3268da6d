import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type EventNames,
  type Holding,
  HoldingSchema,
  LoraSource,
  MachineHoldingsReportedSchema,
} from "@emprops/contracts";
import type { Clock, EventBus, Logger } from "@emprops/platform";
import { diskFreeBytes } from "../cache/space-manager.js";
import { evictedBytesSince } from "../db/cache-events.js";
import { allLoraFiles, type LoraFileRow } from "../db/lora-files.js";
import { userLoraBytes } from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { EVICTION_POLICIES, readSettings } from "../db/settings.js";

/** What the cache tells the holdings index as it changes. */
export interface HoldingsRecorder {
  /** A verified download was registered. */
  held(file: LoraFileRow): void;
  /** A cached file (absolute path) was evicted. */
  released(path: string): void;
}

type Report = MessageInitShape<typeof MachineHoldingsReportedSchema>["report"];

const HOUR_MS = 3600_000;

/**
 * Publishes what this machine holds on LORA_HOLDINGS: a delta for every
 * download and eviction, a heartbeat every heartbeat interval, a full
 * snapshot at start, every snapshot interval and after any report that
 * could not be sent (so a lost delta is repaired by the next snapshot
 * rather than by an outbox). Every report takes the next sequence number of
 * this process's generation at the moment its content is read, which is
 * what lets the index apply reports in any order.
 */
export class HoldingsPublisher implements HoldingsRecorder {
  /** This process's start: a restart's reports supersede the previous run's. */
  readonly generation: bigint;
  private sequence = 0n;
  /** What the index has been told, by path (an eviction names only the path). */
  private readonly holdings = new Map<string, Holding>();
  private sending: Promise<void> = Promise.resolve();
  private snapshotDue = true;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(
    private readonly deps: {
      db: Db;
      bus: EventBus;
      names: EventNames;
      machineId: string;
      pool: string;
      peerAddress: string;
      loraDir: string;
      clock: Clock;
      logger: Logger;
      heartbeatIntervalMs: number;
      snapshotIntervalMs: number;
    },
  ) {
    this.generation = BigInt(deps.clock.now().getTime());
  }

  start(): void {
    this.deps.bus.whenReady().then(
      () => {
        if (!this.stopped) void this.snapshot();
      },
      () => {}, // closed before NATS was reached
    );
    const every = (ms: number, fn: () => void) => {
      const timer = setInterval(fn, ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(this.deps.heartbeatIntervalMs, () => void (this.snapshotDue ? this.snapshot() : this.heartbeat()));
    every(this.deps.snapshotIntervalMs, () => void this.snapshot());
  }

  /** Stops the timers; reports already taken are still sent. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    await this.sending;
  }

  held(file: LoraFileRow): void {
    const holding = holdingOf(file);
    this.holdings.set(file.path, holding);
    void this.send({ case: "delta", value: { added: [holding] } });
  }

  released(path: string): void {
    const holding = this.holdings.get(path);
    if (!holding) return;
    this.holdings.delete(path);
    void this.send({ case: "delta", value: { removed: [holding] } });
  }

  /** Every copy model_cache.db lists now; resolves true once sent. */
  snapshot(): Promise<boolean> {
    this.holdings.clear();
    for (const row of allLoraFiles(this.deps.db)) this.holdings.set(row.path, holdingOf(row));
    this.snapshotDue = false;
    return this.send({ case: "snapshot", value: { holdings: [...this.holdings.values()] } });
  }

  heartbeat(): Promise<boolean> {
    return this.send({ case: "heartbeat", value: { holdingCount: this.holdings.size } });
  }

  /** Numbers the report now, sends it after the ones before it; false (and a snapshot soon) when it could not go. */
  private send(report: Report): Promise<boolean> {
    const sequence = ++this.sequence;
    const result = this.sending.then(() => this.publish(sequence, report));
    this.sending = result.then(() => {});
    return result;
  }

  private async publish(sequence: bigint, report: Report): Promise<boolean> {
    const { bus, names, machineId, clock, logger } = this.deps;
    if (!bus.connected) {
      this.snapshotDue = true;
      return false;
    }
    try {
      const message = create(MachineHoldingsReportedSchema, {
        machineId,
        generation: this.generation,
        sequence,
        reportTime: timestampFromDate(clock.now()),
        pool: this.deps.pool,
        peerAddress: this.deps.peerAddress,
        ...(await this.cacheFacts()),
        report,
      });
      const subject =
        report?.case === "snapshot"
          ? names.holdings.snapshot(machineId)
          : report?.case === "heartbeat"
            ? names.holdings.heartbeat(machineId)
            : names.holdings.delta(machineId, this.generation, sequence);
      await bus.publish(subject, toBinary(MachineHoldingsReportedSchema, message), {
        msgId: `${machineId}:${this.generation}:${sequence}`,
      });
      return true;
    } catch (err) {
      this.snapshotDue = true;
      logger.warn({ err, report: report?.case }, "holdings report not published; a snapshot follows");
      return false;
    }
  }

  /** Free room (budget or disk, whichever is less) and the bytes evicted for room in the last hour. */
  private async cacheFacts() {
    const { db, loraDir, clock } = this.deps;
    const settings = readSettings(db);
    const budgetLeft = settings.loraCacheMaxBytes - userLoraBytes(db);
    const diskLeft = (await diskFreeBytes(loraDir)) - settings.minFreeBytes;
    const since = clock.now().getTime() - HOUR_MS;
    const evicted = EVICTION_POLICIES.reduce((sum, policy) => sum + evictedBytesSince(db, policy, since), 0);
    return {
      freeCacheBytes: BigInt(Math.max(0, Math.min(budgetLeft, diskLeft))),
      cacheMaxBytes: BigInt(settings.loraCacheMaxBytes),
      evictedBytes1h: BigInt(evicted),
    };
  }
}

function holdingOf(row: LoraFileRow): Holding {
  return create(HoldingSchema, {
    source: row.source === "user" ? LoraSource.USER : LoraSource.SHARED,
    identifier: row.identifier,
    userId: row.user_id,
    sha256: row.sha256,
    sizeBytes: BigInt(row.size_bytes),
  });
}
