import type { Logger } from "pino";
import { eventNames, type EventNames } from "@emprops/contracts";
import type { EventBus } from "./event-bus.js";
import { JetStreamBus } from "./jetstream-bus.js";
import { MemoryBus } from "./memory-bus.js";

export * from "./event-bus.js";
export { JetStreamBus } from "./jetstream-bus.js";
export { MemoryBus } from "./memory-bus.js";

/** JetStream at natsUrl, or the in-process stand-in when natsUrl is "memory". */
export function createEventBus(opts: { natsUrl: string; namespace: string; logger: Logger; name: string }): {
  bus: EventBus;
  names: EventNames;
} {
  const names = eventNames(opts.namespace);
  const bus =
    opts.natsUrl === "memory"
      ? new MemoryBus(opts.logger)
      : new JetStreamBus({
          url: opts.natsUrl,
          stream: names.stream,
          subjects: names.streamSubjects,
          streams: [names.holdings.stream],
          logger: opts.logger,
          name: opts.name,
        });
  return { bus, names };
}
