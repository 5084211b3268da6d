import { measureListLatency } from "../../../services/lora-registry/bench/list-latency.js";
import { table } from "../harness/report.js";
import type { Suite } from "../harness/suite.js";

/** The registry's list and name-search latency at the larger flat_file against the smaller (its own bench). */
export const listLatencySuite: Suite = {
  id: "list-latency",
  title: "ListLoras and search (name, tags, trigger words, description) at 1,000,000 flat_file rows vs 10,000",
  needsEnvironment: true,
  async run(ctx) {
    const adminUrl = process.env.TEST_DATABASE_URL;
    if (!adminUrl) throw new Error("no PostgreSQL: TEST_DATABASE_URL is not set");
    const [small, large] = ctx.sizes.listSizes;
    const result = await measureListLatency({
      adminUrl,
      sizes: ctx.sizes.listSizes,
      userLoras: ctx.sizes.listUserLoras,
      runs: ctx.sizes.listRuns,
      log: ctx.log,
    });
    const rows = (n: number) => n.toLocaleString("en");
    const pick = (label: string) => {
      const found = result.scenarios.find((s) => s.label.startsWith(label));
      if (!found) throw new Error(`no scenario ${label}`);
      return found;
    };
    const worst = (q: "p50" | "p95") =>
      [...result.scenarios].sort((a, b) => b.cells[1]![q] / b.cells[0]![q] - a.cells[1]![q] / a.cells[0]![q])[0]!;
    const figures = [
      ["ListLoras, newest first, first page", pick("list, newest first, page 1")],
      ["Name search 'anime'", pick("search 'anime'")],
      ["Search across fields: tag 'watercolor'", pick("search tag 'watercolor'")],
      ["Search across fields: trigger word 'moonlit'", pick("search trigger word 'moonlit'")],
    ].flatMap(([name, s]) => {
      const sc = s as (typeof result.scenarios)[number];
      return (["p50", "p95"] as const).map((q) => ({
        benchmark: `${name as string}: ${q} at ${rows(large)} rows vs ${rows(small)}`,
        measured: `${sc.cells[1]![q].toFixed(2)} ms`,
        baseline: `${sc.cells[0]![q].toFixed(2)} ms`,
        ratio: sc.cells[1]![q] / sc.cells[0]![q],
        ratioOf: `${q} latency`,
        target: "≤ 1.5",
      }));
    });
    // The worst of all scenarios too, so no figure hides behind the ones chosen.
    for (const q of ["p50", "p95"] as const) {
      const w = worst(q);
      figures.push({
        benchmark: `Worst of ${result.scenarios.length} list/search scenarios (${w.label}): ${q}`,
        measured: `${w.cells[1]![q].toFixed(2)} ms`,
        baseline: `${w.cells[0]![q].toFixed(2)} ms`,
        ratio: w.cells[1]![q] / w.cells[0]![q],
        ratioOf: `${q} latency`,
        target: "≤ 1.5",
      });
    }
    return {
      figures,
      details: [
        `One user with ${rows(ctx.sizes.listUserLoras)} LoRAs; the other rows belong to 20,000 other users, 40 % of ` +
          `them are not LoRAs, 2 % of the LoRAs are deleted; every LoRA has a style tag (1 of 7), a trigger word ` +
          `(1 of 13) and a token, and a description (1 of 7 subjects). ${ctx.sizes.listRuns} calls per scenario and size after ` +
          `20 warm-up calls, one at a time, gRPC. A database of each size with a registry of its own (in the ` +
          `harness process), seeded alike; the calls to the two take turns, so a change of the machine's load ` +
          `affects both. p50 / p95 in ms.`,
        "",
        table(
          ["scenario", `${rows(small)} rows`, `${rows(large)} rows`, "p50 ratio", "p95 ratio"],
          result.scenarios.map((s) => [
            s.label,
            `${s.cells[0]!.p50.toFixed(2)} / ${s.cells[0]!.p95.toFixed(2)}`,
            `${s.cells[1]!.p50.toFixed(2)} / ${s.cells[1]!.p95.toFixed(2)}`,
            (s.cells[1]!.p50 / s.cells[0]!.p50).toFixed(2),
            (s.cells[1]!.p95 / s.cells[0]!.p95).toFixed(2),
          ]),
        ),
        "",
        `Plan of a search across fields ('moonlit', newest first, a keyset page) at ${rows(large)} rows:`,
        "",
        "```",
        result.plan,
        "```",
      ].join("\n"),
    };
  },
};
