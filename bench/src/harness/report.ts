import type { MachineInfo } from "./machine.js";
import type { Figure, Mode, Suite, SuiteReport } from "./suite.js";

export const BEGIN = "<!-- bench:begin (written by `npm run bench`; edit outside these markers) -->";
export const END = "<!-- bench:end -->";

export interface RunInfo {
  mode: Mode;
  command: string;
  started: Date;
  seconds: number;
  /** Markdown: the commit, and whether the working tree differed. */
  commit: string;
  machine: MachineInfo;
  loadAtEnd: string;
  dependencies: string;
  /** The shaped-link suites' link. */
  link: string;
}

const fmt = (ratio: number) => (Number.isFinite(ratio) ? ratio.toFixed(2) : "—");

/** "met" or "missed" for a target such as "≤ 1.1", "≥ 0.9" or "= 1", on the ratio as shown (two decimals). */
export function verdict(ratio: number, target: string | undefined): string {
  const m = /^\s*(≤|≥|=)\s*([\d.]+)/.exec(target ?? "");
  if (!m || !Number.isFinite(ratio)) return "";
  const shown = Number(ratio.toFixed(2));
  const bound = Number(m[2]);
  const met = m[1] === "≤" ? shown <= bound : m[1] === "≥" ? shown >= bound : shown === bound;
  return met ? "met" : "**missed**";
}

/** Reproduces one suite with the mode's sizes. */
export function suiteCommand(mode: Mode, id: string): string {
  return mode === "full" ? `npm run bench -- --only ${id}` : `npm run bench:quick -- --only ${id}`;
}

export function renderResults(run: RunInfo, results: { suite: Suite; report: SuiteReport }[]): string {
  const m = run.machine;
  const rows = results.flatMap(({ suite, report }) => report.figures.map((f) => ({ suite, f })));
  const out = [
    BEGIN,
    "",
    `## Results of the last ${run.mode} run`,
    "",
    `\`${run.command}\` on ${run.started.toISOString().slice(0, 16).replace("T", " ")} UTC, commit ${run.commit}, ` +
      `${(run.seconds / 60).toFixed(1)} min.`,
    "",
    "| machine | |",
    "|---|---|",
    `| CPU | ${m.cpu}, ${m.cores} cores |`,
    `| RAM | ${m.ramGb} GB |`,
    `| Node | ${m.node} (${m.os}) |`,
    `| disk (scratch files, machine caches) | ${m.disk} |`,
    `| dependencies | ${run.dependencies} |`,
    `| shaped link (the shaped-link suites) | ${run.link} |`,
    `| load average (1, 5, 15 min) | at the start ${m.loadAverage}; at the end ${run.loadAtEnd} |`,
    "",
    "### Ratios",
    "",
    "Each figure against its baseline measured in the same run (medians over the rounds unless stated).",
    "",
    // Quick sizes exercise the code paths; their numbers are not held against the targets.
    `| benchmark | measured | baseline (same run) | ratio | target | ${run.mode === "full" ? "met?" : "(quick: not judged)"} | reproduce |`,
    "|---|---|---|---|---|---|---|",
    ...rows.map(
      ({ suite, f }: { suite: Suite; f: Figure }) =>
        `| ${f.benchmark} | ${f.measured} | ${f.baseline} | **${fmt(f.ratio)}** (${f.ratioOf}) | ${f.target ?? ""} | ${run.mode === "full" ? verdict(f.ratio, f.target) : ""} | \`${suiteCommand(run.mode, suite.id)}\` |`,
    ),
    "",
    ...results.flatMap(({ suite, report }) => [
      `### ${suite.title}`,
      "",
      `\`${suiteCommand(run.mode, suite.id)}\``,
      "",
      report.details.trim(),
      "",
    ]),
    END,
  ];
  return out.join("\n");
}

/**
 * Puts some suites' figures and sections into the generated part of a document, keeping every other suite's:
 * rows of the ratio table reproduced by `--only <id>` and the `### <title>` section of each suite are replaced
 * (or added), and each section says which run it comes from. With no generated part yet, renders one.
 */
export function mergeResults(document: string, run: RunInfo, results: { suite: Suite; report: SuiteReport }[]): string {
  const begin = document.indexOf(BEGIN);
  const end = document.indexOf(END);
  if (begin === -1 || end === -1 || end < begin) return spliceResults(document, renderResults(run, results));
  let lines = document.slice(begin, end).split("\n");
  const when = run.started.toISOString().slice(0, 16).replace("T", " ");
  for (const { suite, report } of results) {
    const marker = `\`${suiteCommand(run.mode, suite.id)}\``;
    const rows = report.figures.map(
      (f) =>
        `| ${f.benchmark} | ${f.measured} | ${f.baseline} | **${fmt(f.ratio)}** (${f.ratioOf}) | ${f.target ?? ""} | ${marker} |`,
    );
    const firstRow = lines.findIndex((l) => l.startsWith("| ") && l.endsWith(`| ${marker} |`));
    lines = lines.filter((l) => !(l.startsWith("| ") && l.endsWith(`| ${marker} |`)));
    const ratios = lines.indexOf("### Ratios");
    const tableEnd = lines.findIndex((l, i) => i > ratios && lines[i - 1]?.startsWith("|") && !l.startsWith("|"));
    lines.splice(firstRow >= 0 ? firstRow : tableEnd, 0, ...rows);
    const section = [
      `### ${suite.title}`,
      "",
      marker,
      "",
      `From a run of this suite alone (\`${run.command}\`) on ${when} UTC, commit ${run.commit}, load average at ` +
        `the start ${run.machine.loadAverage}, at the end ${run.loadAtEnd}.`,
      "",
      report.details.trim(),
      "",
    ];
    const start = lines.indexOf(`### ${suite.title}`);
    if (start >= 0) {
      let stop = lines.findIndex((l, i) => i > start && l.startsWith("### "));
      if (stop < 0) stop = lines.length;
      lines.splice(start, stop - start, ...section);
    } else {
      lines.push(...section);
    }
  }
  return document.slice(0, begin) + lines.join("\n") + document.slice(end);
}

/** Replaces the generated part of a document (or appends it when there is none). */
export function spliceResults(document: string, generated: string): string {
  const begin = document.indexOf(BEGIN);
  const end = document.indexOf(END);
  if (begin === -1 || end === -1 || end < begin) return `${document.trimEnd()}\n\n${generated}\n`;
  return document.slice(0, begin) + generated + document.slice(end + END.length);
}

/** A markdown table. */
export function table(header: string[], rows: (string | number)[][]): string {
  return [
    `| ${header.join(" | ")} |`,
    `|${header.map((_, i) => (i === 0 ? "---" : "--:")).join("|")}|`,
    // A pipe inside a cell (a regular expression's name, say) would end the cell.
    ...rows.map((r) => `| ${r.map((c) => String(c).replace(/\|/g, "\\|")).join(" | ")} |`),
  ].join("\n");
}
