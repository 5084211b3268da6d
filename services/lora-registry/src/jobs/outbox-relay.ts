import pRetry, { AbortError } from "p-retry";
import { withTraceContext } from "@emprops/platform";
import { lockUnsentEvents, markEventsSent, recordPublishFailure } from "../db/queries/outbox.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

const BATCH = 100;

/** Publishes up to one batch of unsent outbox rows; throws if one could not be published. */
export async function relayBatch(ctx: AppContext): Promise<number> {
  const outcome = await ctx.db.transaction().execute(async (trx) => {
    const rows = await lockUnsentEvents(trx, BATCH);
    const sent: string[] = [];
    let failure: { id: string; error: unknown } | undefined;
    for (const row of rows) {
      try {
        await relayRow(ctx, row);
        sent.push(row.id);
      } catch (error) {
        failure = { id: row.id, error };
        break;
      }
    }
    const now = ctx.clock.now();
    await markEventsSent(trx, sent, now);
    if (failure) await recordPublishFailure(trx, failure.id, String(failure.error));
    return { sent: sent.length, failure, more: rows.length === BATCH };
  });
  if (outcome.sent > 0) ctx.metrics.outbox.add(outcome.sent, { outcome: "published" });
  if (outcome.failure) {
    ctx.metrics.outbox.add(1, { outcome: "failed" });
    throw outcome.failure.error;
  }
  return outcome.more ? BATCH : outcome.sent;
}

/** Publishes one row in the trace of the request that wrote it, with the time it waited. */
function relayRow(
  ctx: AppContext,
  row: {
    event_id: string;
    subject: string;
    payload: Uint8Array;
    trace_context: Record<string, string> | null;
    created_at: Date;
  },
): Promise<void> {
  return withTraceContext(row.trace_context, () =>
    withSpan(
      "outbox.relay",
      {
        "messaging.message.id": row.event_id,
        "outbox.wait_ms": Math.max(0, ctx.clock.now().getTime() - row.created_at.getTime()),
      },
      () => ctx.bus.publish(row.subject, row.payload, { msgId: row.event_id }),
    ),
  );
}

/**
 * Relays the outbox to JetStream: at once when a transaction wrote to it,
 * and every OUTBOX_POLL_MS for rows other replicas wrote. While NATS is
 * down it retries with backoff; a row is marked sent only after JetStream
 * stored it, and a republished row carries the same Nats-Msg-Id, so the
 * stream keeps each event once.
 */
export function startOutboxRelay(ctx: AppContext): { stop(): Promise<void> } {
  const abort = new AbortController();
  const run = async () => {
    while (!abort.signal.aborted) {
      const published = await pRetry(
        async () => {
          if (abort.signal.aborted) throw new AbortError("relay stopped");
          // p-retry gives up on a TypeError; the relay must keep trying whatever failed.
          return relayBatch(ctx).catch((err: unknown) => {
            throw err instanceof TypeError ? new Error(err.message, { cause: err }) : err;
          });
        },
        {
          retries: Number.POSITIVE_INFINITY,
          minTimeout: 200,
          maxTimeout: 5_000,
          randomize: true,
          signal: abort.signal,
          onFailedAttempt: ({ error, attemptNumber }) => {
            if (!abort.signal.aborted) {
              ctx.logger.warn({ err: error, attempt: attemptNumber }, "outbox relay could not publish; retrying");
            }
          },
        },
      ).catch((err: unknown) => {
        if (abort.signal.aborted) return 0;
        throw err;
      });
      if (abort.signal.aborted) return;
      if (published < BATCH) await ctx.outboxWritten.wait(ctx.cfg.outboxPollMs);
    }
  };
  const done = run().catch((err: unknown) => ctx.logger.error({ err }, "outbox relay stopped unexpectedly"));
  return {
    stop: async () => {
      abort.abort();
      ctx.outboxWritten.notify();
      await done;
    },
  };
}
