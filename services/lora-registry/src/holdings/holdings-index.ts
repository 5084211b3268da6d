import { type Holding, LoraSource, type MachineHoldingsReported } from "@emprops/contracts";

/** (generation, sequence): the order of one machine's reports. */
interface Version {
  generation: number;
  sequence: number;
}

const ZERO: Version = { generation: 0, sequence: 0 };

function after(a: Version, b: Version): boolean {
  return a.generation > b.generation || (a.generation === b.generation && a.sequence > b.sequence);
}

/** A copy a machine holds, as of the report that last changed it. */
export interface HeldCopy {
  sha256: string;
  sizeBytes: number;
  version: Version;
}

/** What the index knows of one machine. */
export interface MachineEntry {
  machineId: string;
  pool: string;
  peerAddress: string;
  freeCacheBytes: number;
  cacheMaxBytes: number;
  evictedBytes1h: number;
  /** When the stream stored its latest report (ms; the NATS server's clock, the same for every replica). */
  lastSeenMs: number;
  /** Copies by content key. */
  holdings: Map<string, HeldCopy>;
  /** Copies removed after the latest snapshot, so an older add arriving late cannot bring them back. */
  removed: Map<string, Version>;
  /** The latest snapshot applied: everything at or before it is known. */
  snapshot: Version;
  /** The report the pool, address and free space came from. */
  facts: Version;
}

/** "u:{lora id}" for a user LoRA, "s:{name}" for a shared one: how the index names a content. */
export function contentKey(source: LoraSource, identifier: string): string {
  return `${source === LoraSource.USER ? "u" : "s"}:${identifier}`;
}

/**
 * Every machine's holdings, folded from MachineHoldingsReported. Each copy
 * is a last-writer-wins register ordered by the machine's (generation,
 * sequence), and a snapshot writes every copy at once, so applying the same
 * reports in any order, any number of times, gives the same index: a
 * redelivered, repeated or late report changes nothing, and every replica
 * reading the stream agrees.
 */
export class HoldingsIndex {
  readonly machines = new Map<string, MachineEntry>();
  /** Content key → the machines holding it. */
  private readonly holders = new Map<string, Map<string, MachineEntry>>();
  /** One string per distinct sha256, whoever reports it. */
  private readonly shas = new Map<string, string>();
  private copies = 0;
  /** Set once the stream has been read up to where it was when following began. */
  caughtUp = false;

  /** Copies in the index. */
  get size(): number {
    return this.copies;
  }

  apply(report: MachineHoldingsReported, storedAtMs: number): void {
    if (!report.machineId) throw new Error("a holdings report without machine_id");
    const version = { generation: Number(report.generation), sequence: Number(report.sequence) };
    let machine = this.machines.get(report.machineId);
    if (!machine) {
      machine = {
        machineId: report.machineId,
        pool: "",
        peerAddress: "",
        freeCacheBytes: 0,
        cacheMaxBytes: 0,
        evictedBytes1h: 0,
        lastSeenMs: 0,
        holdings: new Map(),
        removed: new Map(),
        snapshot: ZERO,
        facts: ZERO,
      };
      this.machines.set(report.machineId, machine);
    }
    machine.lastSeenMs = Math.max(machine.lastSeenMs, storedAtMs);
    if (after(version, machine.facts)) {
      machine.facts = version;
      machine.pool = report.pool;
      machine.peerAddress = report.peerAddress;
      machine.freeCacheBytes = Number(report.freeCacheBytes);
      machine.cacheMaxBytes = Number(report.cacheMaxBytes);
      machine.evictedBytes1h = Number(report.evictedBytes1h);
    }
    const r = report.report;
    if (r.case === "snapshot") this.applySnapshot(machine, version, r.value.holdings);
    else if (r.case === "delta") {
      for (const h of r.value.added) this.change(machine, version, h, true);
      for (const h of r.value.removed) this.change(machine, version, h, false);
    }
  }

  /** Drops machines whose latest report is older than `beforeMs` (the stream has forgotten them too). */
  forgetSilent(beforeMs: number): number {
    let dropped = 0;
    for (const machine of this.machines.values()) {
      if (machine.lastSeenMs >= beforeMs) continue;
      for (const key of [...machine.holdings.keys()]) this.unhold(machine, key);
      this.machines.delete(machine.machineId);
      dropped++;
    }
    return dropped;
  }

  /** The machines holding a content (any sha256; callers compare). */
  holdersOf(key: string): ReadonlyMap<string, MachineEntry> {
    return this.holders.get(key) ?? EMPTY;
  }

  private applySnapshot(machine: MachineEntry, version: Version, list: Holding[]): void {
    if (!after(version, machine.snapshot)) return;
    const listed = new Map(list.map((h) => [contentKey(h.source, h.identifier), h]));
    // A copy changed after this snapshot keeps that change; every other copy is what the snapshot says.
    for (const [key, copy] of [...machine.holdings]) {
      if (!after(copy.version, version) && !listed.has(key)) this.unhold(machine, key);
    }
    for (const [key, removedAt] of [...machine.removed]) {
      if (!after(removedAt, version)) machine.removed.delete(key);
    }
    for (const [key, h] of listed) {
      const copy = machine.holdings.get(key);
      if (copy && after(copy.version, version)) continue;
      if (machine.removed.has(key)) continue;
      this.hold(machine, key, h, version);
    }
    machine.snapshot = version;
  }

  private change(machine: MachineEntry, version: Version, h: Holding, present: boolean): void {
    const key = contentKey(h.source, h.identifier);
    const current = machine.holdings.get(key)?.version ?? machine.removed.get(key) ?? machine.snapshot;
    if (!after(version, current)) return;
    if (present) {
      machine.removed.delete(key);
      this.hold(machine, key, h, version);
    } else {
      this.unhold(machine, key);
      machine.removed.set(key, version);
    }
  }

  private hold(machine: MachineEntry, key: string, h: Holding, version: Version): void {
    if (!machine.holdings.has(key)) {
      this.copies++;
      let holders = this.holders.get(key);
      if (!holders) this.holders.set(key, (holders = new Map()));
      holders.set(machine.machineId, machine);
    }
    const sha = h.sha256.toLowerCase();
    let shared = this.shas.get(sha);
    if (shared === undefined) this.shas.set(sha, (shared = sha));
    machine.holdings.set(key, { sha256: shared, sizeBytes: Number(h.sizeBytes), version });
  }

  private unhold(machine: MachineEntry, key: string): void {
    if (!machine.holdings.delete(key)) return;
    this.copies--;
    const holders = this.holders.get(key);
    holders?.delete(machine.machineId);
    if (holders?.size === 0) this.holders.delete(key);
  }
}

const EMPTY: ReadonlyMap<string, MachineEntry> = new Map();
