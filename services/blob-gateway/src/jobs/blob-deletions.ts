import { fromBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { type LoraDeleted, LoraDeletedSchema } from "@emprops/contracts";
import type { BusMessage, Consumer } from "@emprops/platform";
import type { AppContext } from "../context.js";
import { previewBlob, userBlob, type UserBlobRef } from "../storage/blob-paths.js";
import { deletePreviewBlob, deleteUserBlob } from "../storage/delete-user-blob.js";

/**
 * The durable consumer of LoraDeleted events: deletes the blob and its
 * preview image, acknowledging only after storage confirmed both (a blob
 * already gone counts). A failure is
 * redelivered with growing backoff by the bus, so a storage outage delays
 * deletions and never loses them; redelivery of a done deletion is harmless.
 */
export function startBlobDeletions(ctx: AppContext): Promise<Consumer> {
  return ctx.bus.consume({
    durable: ctx.names.durables.blobGatewayDeletions,
    filterSubjects: [ctx.names.loraDeletedAll],
    handler: (msg) => handleDeletion(ctx, msg),
  });
}

async function handleDeletion(ctx: AppContext, msg: BusMessage): Promise<void> {
  const ref = parseEvent(ctx, msg);
  // No retry can fix a malformed event: it is logged loudly and acknowledged.
  if (!ref) return;
  const deleted = await deleteUserBlob(ctx, ref, "event");
  // The preview lives next to the LoRA and goes with it.
  await deletePreviewBlob(ctx, previewBlob(ref), "event");
  ctx.logger.debug({ blob_path: ref.path, deleted, delivery: msg.deliveryCount }, "LoraDeleted applied");
}

function parseEvent(ctx: AppContext, msg: BusMessage): UserBlobRef | undefined {
  let event: LoraDeleted;
  try {
    event = fromBinary(LoraDeletedSchema, msg.data);
  } catch (err) {
    ctx.metrics.deletions.add(1, { source: "event", result: "malformed" });
    ctx.logger.error({ err, subject: msg.subject }, "LoraDeleted event cannot be decoded; dropped");
    return undefined;
  }
  try {
    // The path is rebuilt from the ids; the event's blob_path is only compared.
    const ref = userBlob({ userId: event.userId, loraId: event.loraId, extension: event.extension });
    if (event.blobPath && event.blobPath !== ref.path) {
      ctx.logger.warn(
        { event_path: event.blobPath, blob_path: ref.path },
        "LoraDeleted blob_path differs from its ids",
      );
    }
    return ref;
  } catch (err) {
    ctx.metrics.deletions.add(1, { source: "event", result: "malformed" });
    ctx.logger.error(
      { event_id: event.eventId, subject: msg.subject, reason: ConnectError.from(err).rawMessage },
      "LoraDeleted event has invalid ids; dropped",
    );
    return undefined;
  }
}
