import fs from "node:fs/promises";
import { Code } from "@connectrpc/connect";
import { ErrorReason } from "@emprops/contracts";
import { type Clock, type Logger, rpcError } from "@emprops/platform";
import pLimit from "p-limit";
import { evictedBytesSince } from "../db/cache-events.js";
import {
  evictableUserContents,
  evictableUserLoras,
  getModel,
  type KeyedModelRow,
  type ModelRow,
  userLoraBytes,
} from "../db/models.js";
import type { Db } from "../db/open-database.js";
import { inflationReader, raiseInflation } from "../db/gdsf-inflation.js";
import { type CacheSettings, EVICTION_POLICIES, readSettings } from "../db/settings.js";
import { type Evicted, type EvictionReason, type Evictor, warmEvictionReason } from "./evictor.js";
import { byLeastRecentlyUsed, lastUsedMs, pickAged, pickGdsf, pickLru } from "./eviction-policies.js";

export interface Reservation {
  release(): void;
}

export interface ReserveRequest {
  /** Absolute path of the file to be written. */
  path: string;
  sizeBytes: number;
  /** User LoRAs count against lora_cache_max_gb; every download against min_free_space_gb. */
  userLora: boolean;
  /** Warming: evict only within this budget, and mark such evictions. */
  maxEvictBytes?: number;
}

const DAY_MS = 24 * 3600 * 1000;

/**
 * The cache's budget: user LoRAs on disk plus downloads in flight never
 * exceed lora_cache_max_gb, and a download never leaves less than
 * min_free_space_gb free. Each content counts once: paths linked to one file
 * (identical LoRAs of several users) are one candidate, used when any of
 * them was, and making room removes all of them, since only that frees its
 * bytes. Making room evicts the least recently used user LoRAs that are
 * neither protected, ignored, pinned by a batch in progress nor being
 * downloaded, and only as many as needed. One decision at a time.
 */
export class SpaceManager {
  private readonly lock = pLimit(1);
  private reservedUserBytes = 0;
  private reservedBytes = 0;

  constructor(
    private readonly deps: {
      db: Db;
      loraDir: string;
      evictor: Evictor;
      clock: Clock;
      logger: Logger;
      /** True for paths eviction must leave alone now (pinned or downloading). */
      busy: (path: string) => boolean;
      warmMaxEvictPercent: number;
    },
  ) {}

  reserve(req: ReserveRequest): Promise<Reservation> {
    return this.lock(async () => {
      const settings = readSettings(this.deps.db);
      const needUser = req.userLora ? req.sizeBytes : 0;
      if (needUser > settings.loraCacheMaxBytes) {
        throw noSpace(`the LoRA (${req.sizeBytes} bytes) is larger than the whole cache`, {
          required_bytes: req.sizeBytes,
          cache_max_bytes: settings.loraCacheMaxBytes,
        });
      }
      const overBudget = req.userLora
        ? userLoraBytes(this.deps.db) + this.reservedUserBytes + needUser - settings.loraCacheMaxBytes
        : 0;
      const free = (await diskFreeBytes(this.deps.loraDir)) - this.reservedBytes;
      const diskShort = settings.minFreeBytes + req.sizeBytes - free;
      const toFree = Math.max(0, overBudget, diskShort);
      if (toFree > 0) {
        if (!settings.evictionEnabled) {
          throw noSpace("the cache is full and lora_eviction_enabled is false", {
            required_bytes: toFree,
          });
        }
        const choice = this.chooseVictims(settings, toFree);
        if (!choice) {
          throw noSpace("not enough cache space even after evicting every evictable LoRA", {
            required_bytes: toFree,
            cache_max_bytes: settings.loraCacheMaxBytes,
            min_free_bytes: settings.minFreeBytes,
          });
        }
        const { victims } = choice;
        const victimBytes = victims.reduce((s, v) => s + v.size_bytes, 0);
        if (req.maxEvictBytes !== undefined && victimBytes > req.maxEvictBytes) {
          throw noSpace("warming may not evict that much", { required_bytes: victimBytes });
        }
        for (const v of victims.flatMap((content) => choice.paths(content))) {
          await this.deps.evictor.evict(v, settings.evictionPolicy, {
            for_path: req.path,
            ...(req.maxEvictBytes !== undefined ? { for_warm: true } : {}),
          });
        }
        await choice.commit();
      }
      this.reservedUserBytes += needUser;
      this.reservedBytes += req.sizeBytes;
      let released = false;
      return {
        release: () => {
          if (released) return;
          released = true;
          this.reservedUserBytes -= needUser;
          this.reservedBytes -= req.sizeBytes;
        },
      };
    });
  }

  /** Bytes warming may still evict: its share of the cache per 24 hours, less what it evicted. */
  warmEvictBudget(): number {
    const settings = readSettings(this.deps.db);
    const share = Math.floor((settings.loraCacheMaxBytes * this.deps.warmMaxEvictPercent) / 100);
    const since = this.deps.clock.now().getTime() - DAY_MS;
    const used = EVICTION_POLICIES.reduce(
      (sum, policy) => sum + evictedBytesSince(this.deps.db, warmEvictionReason(policy), since),
      0,
    );
    return Math.max(0, share - used);
  }

  /** Evicts LRU user LoRAs until `bytes` are freed (admin); fewer when not enough may be evicted. */
  freeBytes(bytes: number, reason: "admin"): Promise<Evicted[]> {
    return this.lock(async () => {
      const evicted: Evicted[] = [];
      let freed = 0;
      const contents = this.contents();
      for (const content of byLeastRecentlyUsed([...contents.keys()])) {
        if (freed >= bytes) break;
        for (const row of contents.get(content) ?? []) evicted.push(await this.deps.evictor.evict(row, reason));
        freed += content.size_bytes;
      }
      return evicted;
    });
  }

  /** Evicts user LoRAs not used for lora_max_age_days, path by path (a linked file stays while any path does). */
  runAgePolicy(): Promise<Evicted[]> {
    return this.lock(async () => {
      const settings = readSettings(this.deps.db);
      if (!settings.evictionEnabled) return [];
      const now = this.deps.clock.now();
      const evicted: Evicted[] = [];
      for (const row of pickAged(this.candidates(), now, settings.loraMaxAgeDays)) {
        evicted.push(
          await this.deps.evictor.evict(row, "age", {
            last_used: row.last_used,
            max_age_days: settings.loraMaxAgeDays,
          }),
        );
      }
      return evicted;
    });
  }

  /**
   * Evicts the given files (admin; user or shared), except what eviction
   * must leave alone: protected or ignored rows, files of a batch in
   * progress or downloading.
   */
  evictSelected(rows: { path: string }[], reason: "admin"): Promise<Evicted[]> {
    return this.lock(async () => {
      const evicted: Evicted[] = [];
      for (const path of new Set(rows.map((r) => r.path))) {
        const row = getModel(this.deps.db, path);
        if (!row || row.protected || row.is_ignore || this.deps.busy(path)) continue;
        evicted.push(await this.deps.evictor.evict(row, reason));
      }
      return evicted;
    });
  }

  /**
   * Evicts one file as a decision of its own, whatever the eviction
   * settings: its LoRA was deleted or changed, or a copy is replaced.
   */
  evict(
    row: { path: string; size_bytes: number },
    reason: Extract<EvictionReason, "invalidation" | "reconcile">,
    detail: Record<string, unknown> = {},
  ): Promise<Evicted> {
    return this.lock(() => this.deps.evictor.evict(row, reason, detail));
  }

  /** Runs `fn` while no eviction decision is being made (a batch pins its files in it). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock(fn);
  }

  /**
   * `exclusive` for synchronous work: run at once when nothing holds the lock
   * or waits for it (no decision can be half-way, and none can start before
   * `fn` returns), else after the work ahead of it. A cached hit saves the
   * queue's round trips.
   */
  exclusiveSync<T>(fn: () => T): T | Promise<T> {
    if (this.lock.activeCount === 0 && this.lock.pendingCount === 0) return fn();
    return this.lock(async () => fn());
  }

  /**
   * The victims the configured policy picks to free `bytes` (undefined when
   * not enough may go), and what to record once they are gone.
   */
  private chooseVictims(
    settings: CacheSettings,
    bytes: number,
  ): { victims: ModelRow[]; paths(content: ModelRow): ModelRow[]; commit(): Promise<void> } | undefined {
    const contents = this.contents();
    const candidates = [...contents.keys()];
    const paths = (content: ModelRow) => contents.get(content) ?? [];
    if (settings.evictionPolicy === "lru") {
      const victims = pickLru(candidates, bytes);
      return victims && { victims, paths, commit: async () => {} };
    }
    const { db, clock } = this.deps;
    const inflationAt = inflationReader(db);
    const picked = pickGdsf(candidates, bytes, inflationAt);
    if (!picked) return undefined;
    return {
      victims: picked.victims,
      paths,
      commit: () => {
        const now = clock.now().getTime();
        const oldestUse = evictableUserLoras(db).reduce((min, row) => Math.min(min, lastUsedMs(row)), now);
        return raiseInflation(db, now, Math.max(inflationAt(now), picked.inflation), oldestUse);
      },
    };
  }

  private candidates(): ModelRow[] {
    return evictableUserLoras(this.deps.db).filter((row) => !this.deps.busy(row.path));
  }

  /**
   * Each content eviction may free now as one row for the policies (its
   * size, its latest use, the uses of all its paths), with its paths. A
   * content any of whose paths is busy stays whole.
   */
  private contents(): Map<ModelRow, KeyedModelRow[]> {
    const byContent = new Map<string, KeyedModelRow[]>();
    for (const row of evictableUserContents(this.deps.db)) {
      const paths = byContent.get(row.content);
      if (paths) paths.push(row);
      else byContent.set(row.content, [row]);
    }
    const contents = new Map<ModelRow, KeyedModelRow[]>();
    for (const paths of byContent.values()) {
      if (paths.some((row) => this.deps.busy(row.path))) continue;
      const latest = paths.reduce((a, b) => (lastUsedMs(b) > lastUsedMs(a) ? b : a));
      const content: ModelRow = {
        ...latest,
        id: Math.min(...paths.map((row) => row.id)),
        size_bytes: Math.max(...paths.map((row) => row.size_bytes)),
        use_count: paths.reduce((sum, row) => sum + (row.use_count ?? 0), 0),
      };
      contents.set(content, paths);
    }
    return contents;
  }
}

export async function diskFreeBytes(dir: string): Promise<number> {
  const stats = await fs.statfs(dir);
  return stats.bavail * stats.bsize;
}

function noSpace(message: string, metadata: Record<string, number>) {
  return rpcError(Code.ResourceExhausted, ErrorReason.NO_SPACE, message, metadata);
}
