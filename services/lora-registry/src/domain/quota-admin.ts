import { writeAudit } from "../db/queries/audit.js";
import { compareLedgers, ensureLedger, type LedgerComparison, repairLedger, setLimits } from "../db/queries/quota.js";
import type { AppContext } from "../context.js";
import { withSpan } from "../telemetry.js";

/** An admin's change of a user's limits: new overrides, or back to the defaults. */
export interface LimitChange {
  resetToDefaults: boolean;
  maxBytes?: number;
  maxCount?: number;
}

/** Sets (or clears) a user's overrides, creating the ledger if needed, with an audit row. */
export async function changeLimits(ctx: AppContext, userId: string, actor: string, c: LimitChange): Promise<void> {
  const now = ctx.clock.now();
  const reset = c.resetToDefaults ? null : undefined;
  await ctx.db.transaction().execute(async (trx) => {
    await ensureLedger(trx, userId, now);
    await setLimits(trx, userId, { maxBytes: c.maxBytes ?? reset, maxCount: c.maxCount ?? reset }, now);
    await writeAudit(trx, now, [
      {
        actorId: actor,
        actorRole: "admin",
        action: "quota.set",
        userId,
        details: {
          reset_to_defaults: c.resetToDefaults,
          ...(c.maxBytes !== undefined ? { max_bytes: c.maxBytes } : {}),
          ...(c.maxCount !== undefined ? { max_count: c.maxCount } : {}),
        },
      },
    ]);
  });
}

function drifted(c: LedgerComparison): boolean {
  return (
    Number(c.ledger_used_bytes) !== Number(c.actual_used_bytes) ||
    c.ledger_used_count !== Number(c.actual_used_count) ||
    Number(c.ledger_reserved_bytes) !== Number(c.actual_reserved_bytes) ||
    c.ledger_reserved_count !== Number(c.actual_reserved_count)
  );
}

/**
 * Compares ledgers (one user's, or all) with the rows and pending sessions;
 * with `repair`, rewrites each drifted one, re-read under its lock so the
 * repair matches the rows at that moment.
 */
export async function reconcileLedgers(
  ctx: AppContext,
  opts: { userId?: string; repair: boolean; actor: string },
): Promise<{ checked: number; drifts: LedgerComparison[] }> {
  const compared = await withSpan("reconcile_quota", { "lora.repair": opts.repair }, () =>
    compareLedgers(ctx.db, opts.userId, false),
  );
  const drifts = compared.filter(drifted);
  if (opts.repair) {
    const now = ctx.clock.now();
    for (const d of drifts) {
      await ctx.db.transaction().execute(async (trx) => {
        const [c] = await compareLedgers(trx, d.user_id, true);
        if (!c || !drifted(c)) return;
        await repairLedger(trx, c, now);
        await writeAudit(trx, now, [
          { actorId: opts.actor, actorRole: "admin", action: "quota.reconcile", userId: c.user_id, details: { ...c } },
        ]);
      });
    }
  }
  return { checked: compared.length, drifts };
}
