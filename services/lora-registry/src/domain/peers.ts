import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type PeerSource, PeerSourceSchema, type ResolvedLora } from "@emprops/contracts";
import type { AppContext } from "../context.js";
import { contentKey, type MachineEntry } from "../holdings/holdings-index.js";

/**
 * The peers a machine may fetch a resolved file from: other machines of
 * its pool (as its own holdings reports name it) that report a copy of this
 * reference with the same sha256 and a peer address, heard from within
 * HOLDINGS_MACHINE_TTL_SECONDS, most recently heard from first (the likelier
 * to be up), at most PEER_FETCH_MAX_PEERS, each with a token for this file,
 * this requester and that peer. None for a machine the index does not know:
 * its pool is unknown.
 */
export async function peersFor(ctx: AppContext, machineId: string, lora: ResolvedLora): Promise<PeerSource[]> {
  const { maxPeers } = ctx.cfg.peerFetch;
  const sign = ctx.peerTokens;
  if (maxPeers === 0 || !sign || !lora.ref) return [];
  const alive = ctx.clock.now().getTime() - ctx.cfg.holdingsMachineTtlMs;
  const requester = ctx.holdings.machines.get(machineId);
  if (!requester || requester.lastSeenMs < alive || requester.pool === "") return [];
  const sha256 = lora.sha256.toLowerCase();
  const key = contentKey(lora.ref.source, lora.ref.identifier);
  const holders: MachineEntry[] = [];
  for (const m of ctx.holdings.holdersOf(key).values()) {
    if (m.machineId === machineId || m.pool !== requester.pool || m.peerAddress === "" || m.lastSeenMs < alive)
      continue;
    if (m.holdings.get(key)?.sha256 === sha256) holders.push(m);
  }
  holders.sort((a, b) => b.lastSeenMs - a.lastSeenMs || (a.machineId < b.machineId ? -1 : 1));
  return Promise.all(
    holders.slice(0, maxPeers).map(async (m) => {
      const { token, expiresAt } = await sign({ sha256, requester: machineId, server: m.machineId });
      return create(PeerSourceSchema, {
        machineId: m.machineId,
        address: m.peerAddress,
        token,
        tokenExpireTime: timestampFromDate(expiresAt),
      });
    }),
  );
}
