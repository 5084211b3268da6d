import { fromBinary } from "@bufbuild/protobuf";
import { type EventNames, LoraDeletedSchema } from "@emprops/contracts";
import type { Clock, Consumer, EventBus, Logger } from "@emprops/platform";
import type { SpaceManager } from "../cache/space-manager.js";
import { findUserLoraFiles } from "../db/lora-files.js";
import type { Db } from "../db/open-database.js";
import { addTombstone } from "../db/tombstones.js";
import { writeTransaction } from "../db/write-transaction.js";

/**
 * The durable consumer named after this machine on every LoraDeleted: the
 * deleted LoRA's cached copy goes (file and rows), whatever the eviction
 * settings, and a tombstone stops a download in flight from registering it.
 * While NATS is down the events wait in the stream; nothing is lost.
 */
export function startInvalidationConsumer(deps: {
  bus: EventBus;
  names: EventNames;
  machineId: string;
  db: Db;
  space: SpaceManager;
  clock: Clock;
  logger: Logger;
}): Promise<Consumer> {
  const { bus, names, machineId, db, space, clock, logger } = deps;
  return bus.consume({
    durable: names.durables.machineInvalidations(machineId),
    filterSubjects: [names.loraDeletedAll],
    handler: async (msg) => {
      let event;
      try {
        event = fromBinary(LoraDeletedSchema, msg.data);
      } catch (err) {
        // Redelivering bytes that cannot be decoded would never succeed.
        logger.error({ err, subject: msg.subject }, "undecodable LoraDeleted event dropped");
        return;
      }
      const userId = event.userId.toLowerCase();
      if (!userId || !event.loraId) {
        logger.error({ event_id: event.eventId, subject: msg.subject }, "LoraDeleted without user or LoRA id dropped");
        return;
      }
      await writeTransaction(db, () => addTombstone(db, userId, event.loraId, clock.now().getTime()));
      const copies = findUserLoraFiles(db, event.loraId, userId);
      for (const row of copies) {
        await space.evict(row, "invalidation", { event_id: event.eventId, lora_id: event.loraId });
      }
      logger.debug({ event_id: event.eventId, lora_id: event.loraId, evicted: copies.length }, "LoraDeleted handled");
    },
  });
}
