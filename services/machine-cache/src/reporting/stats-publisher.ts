import { create, toBinary } from "@bufbuild/protobuf";
import { type EventNames, MachineCacheStatsReportedSchema } from "@emprops/contracts";
import type { Clock, EventBus, Logger } from "@emprops/platform";
import { pruneEvents } from "../db/cache-events.js";
import type { Db } from "../db/open-database.js";
import { pruneTombstones } from "../db/tombstones.js";
import { writeTransaction } from "../db/write-transaction.js";
import { cacheStats } from "./cache-stats.js";

const DAY_MS = 24 * 3600 * 1000;

/**
 * Publishes MachineCacheStatsReported as soon as NATS is reachable, then every
 * interval, and prunes the event rows the statistics no longer need. A sample
 * that cannot be published is logged and superseded by the next one.
 */
export class StatsPublisher {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private published!: () => void;
  /** Resolves when a first sample has been published (admins see the machine from then on). */
  readonly firstPublished = new Promise<void>((resolve) => (this.published = resolve));

  constructor(
    private readonly deps: {
      db: Db;
      bus: EventBus;
      names: EventNames;
      machineId: string;
      loraDir: string;
      userLoraDir: string;
      clock: Clock;
      logger: Logger;
      intervalMs: number;
    },
  ) {}

  start(): void {
    this.deps.bus.whenReady().then(
      () => {
        if (!this.stopped) void this.publish();
      },
      () => {}, // closed before NATS was reached
    );
    this.timer = setInterval(() => void this.publish(), this.deps.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** One sample now; false when it could not be sent. */
  async publish(): Promise<boolean> {
    const { db, bus, names, machineId, clock, logger } = this.deps;
    const nowMs = clock.now().getTime();
    try {
      await writeTransaction(db, () => {
        pruneEvents(db, nowMs - 7 * DAY_MS);
        pruneTombstones(db, nowMs - 30 * DAY_MS);
      });
      if (!bus.connected) return false;
      const stats = await cacheStats(this.deps);
      const message = create(MachineCacheStatsReportedSchema, { stats });
      await bus.publish(names.cacheStats(machineId), toBinary(MachineCacheStatsReportedSchema, message), {
        msgId: `${machineId}:${nowMs}`,
      });
      this.published();
      return true;
    } catch (err) {
      logger.warn({ err }, "cache statistics not published");
      return false;
    }
  }
}
