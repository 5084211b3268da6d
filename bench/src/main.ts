/**
 * The benchmark suite: every figure against its baseline measured in the same
 * run, on this machine, against the real services (child processes) on the
 * embedded dependencies.
 *
 *   npm run bench                          full: writes docs/benchmarks.md
 *   npm run bench:quick                    CI: small sizes, same code paths, writes test-artifacts/
 *   npm run bench -- --only cold-fetch,verify   some suites (written to test-artifacts/)
 *   npm run bench -- --out /tmp/x.md       anywhere else
 *   npm run bench -- --link 40,20,400      the shaped link: MB/s per connection, RTT ms, total MB/s
 *   npm run bench -- --only shaped-fetch --rounds 2   fewer rounds while working on one figure
 *   npm run bench -- --only formats --merge   those suites' figures into docs/benchmarks.md, keeping the others'
 *
 * Exits non-zero when any suite fails; numbers never fail a run.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { type BenchEnvironment, startBenchEnvironment } from "./harness/environment.js";
import { LoraPool } from "./harness/lora-pool.js";
import { describeMachine, loadAverage } from "./harness/machine.js";
import { mergeResults, renderResults, spliceResults } from "./harness/report.js";
import { type Mode, SIZES, type Suite, type SuiteContext, type SuiteReport } from "./harness/suite.js";
import { cachePolicySuite } from "./suites/cache-policy.js";
import { fleetSuite } from "./suites/fleet.js";
import { formatsSuite } from "./suites/formats.js";
import { getLoraRpsSuite } from "./suites/get-lora-rps.js";
import { listLatencySuite } from "./suites/list-latency.js";
import { CLOUD_LINK, describeLink, parseLink } from "./harness/shaped-link.js";
import { cachedHitSuite, coldFetchSuite, threeLorasSuite } from "./suites/machine-cache.js";
import { peakMemorySuite } from "./suites/peak-memory.js";
import { placementSuite } from "./suites/placement.js";
import { profilesSuite } from "./suites/profiles.js";
import { shapedFetchSuite, shapedThreeSuite, shapedVerifySuite, stopShapedLink } from "./suites/shaped-link.js";
import { singleFlightSuite } from "./suites/single-flight.js";
import { uploadSuite } from "./suites/upload.js";
import { verifySuite } from "./suites/verify.js";

/** In running order: the upload suite makes the LoRA the next ones share; profiles read the step timings. */
const SUITES: Suite[] = [
  uploadSuite,
  verifySuite,
  formatsSuite,
  coldFetchSuite,
  shapedFetchSuite,
  threeLorasSuite,
  shapedThreeSuite,
  shapedVerifySuite,
  cachedHitSuite,
  singleFlightSuite,
  getLoraRpsSuite,
  listLatencySuite,
  peakMemorySuite,
  cachePolicySuite,
  placementSuite,
  fleetSuite,
  profilesSuite,
];

const REPO = path.resolve(__dirname, "../../../..");

/** The commit measured, and whether the code that ran differed from it. */
function describeCommit(): string {
  const git = (...args: string[]) => execFileSync("git", args, { cwd: REPO, encoding: "utf8" }).trim();
  const commit = git("rev-parse", "--short", "HEAD");
  const changed = git("status", "--porcelain", "--", "bench/src", "services/*/src", "services/*/bench", "libs/*/src");
  return changed ? `\`${commit}\` with uncommitted changes in the working tree` : `\`${commit}\``;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      only: { type: "string" },
      out: { type: "string" },
      "azurite-disk": { type: "boolean", default: false },
      link: { type: "string" },
      rounds: { type: "string" },
      merge: { type: "boolean", default: false },
    },
  });
  const mode: Mode = values.quick ? "quick" : "full";
  const only = values.only?.split(",").map((s) => s.trim());
  const unknown = only?.filter((id) => !SUITES.some((s) => s.id === id)) ?? [];
  if (unknown.length > 0) {
    process.stderr.write(`unknown suite(s): ${unknown.join(", ")}; suites: ${SUITES.map((s) => s.id).join(", ")}\n`);
    return 2;
  }
  const suites = only ? SUITES.filter((s) => only.includes(s.id)) : SUITES;
  const link = values.link ? parseLink(values.link) : CLOUD_LINK;
  const complete = !only && mode === "full";
  const merge = values.merge && only !== undefined && mode === "full";
  const out =
    values.out ??
    (complete || merge
      ? path.join(REPO, "docs", "benchmarks.md")
      : path.join(REPO, "test-artifacts", `benchmarks-${mode}.md`));
  const extra = [
    only ? `--only ${only.join(",")}` : "",
    merge ? "--merge" : "",
    values.link ? `--link ${values.link}` : "",
    values.rounds ? `--rounds ${values.rounds}` : "",
  ].filter(Boolean);
  const command = ["npm run", mode === "full" ? "bench" : "bench:quick", extra.length ? `-- ${extra.join(" ")}` : ""]
    .join(" ")
    .trim();

  const started = new Date();
  const log = (line: string) =>
    process.stderr.write(`[${((Date.now() - started.getTime()) / 1000).toFixed(0)} s] ${line}\n`);
  // Storage calls alone do not keep Node's event loop alive (the children are unref'd): this does.
  const alive = setInterval(() => {}, 60_000);
  let env: BenchEnvironment | undefined;
  const results: { suite: Suite; report: SuiteReport }[] = [];
  const failures: string[] = [];
  const profileDir = path.join(REPO, "test-artifacts", "profiles");
  try {
    if (suites.some((s) => s.needsEnvironment)) {
      log("starting PostgreSQL, NATS, Azurite and the services ...");
      env = await startBenchEnvironment({ azuriteOnDisk: values["azurite-disk"] });
      log(env.summary);
    }
    const machine = describeMachine(env?.work ?? REPO);
    const ctx: SuiteContext = {
      mode,
      // --rounds N: fewer (or more) rounds while working on one figure.
      sizes: values.rounds ? { ...SIZES[mode], rounds: Number(values.rounds) } : SIZES[mode],
      env,
      loras: new LoraPool(() => {
        if (!env) throw new Error("no services");
        return env;
      }),
      log,
      profileDir,
      link,
      earlier: new Map(),
    };
    for (const suite of suites) {
      log(`${suite.id}: ${suite.title}`);
      const began = performance.now();
      try {
        const report = await suite.run(ctx);
        ctx.earlier.set(suite.id, report);
        results.push({ suite, report });
        for (const f of report.figures) log(`  ${f.benchmark}: ${f.measured} vs ${f.baseline} → ${f.ratio.toFixed(2)}`);
      } catch (err) {
        failures.push(suite.id);
        log(`  FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      log(`  ${suite.id} took ${((performance.now() - began) / 1000).toFixed(0)} s`);
    }
    await stopShapedLink(ctx);
    const run = {
      mode,
      command,
      started,
      seconds: (Date.now() - started.getTime()) / 1000,
      commit: describeCommit(),
      machine,
      loadAtEnd: loadAverage(),
      dependencies: env ? `${env.summary}; Azurite ${values["azurite-disk"] ? "on disk" : "in memory"}` : "none",
      link: describeLink(link),
    };
    // A failed full run never replaces the committed figures.
    const target =
      failures.length > 0 && (complete || merge) ? path.join(REPO, "test-artifacts", "benchmarks-failed.md") : out;
    await fs.mkdir(path.dirname(target), { recursive: true });
    const existing = await fs.readFile(target, "utf8").catch(() => "# Benchmarks\n");
    await fs.writeFile(
      target,
      merge ? mergeResults(existing, run, results) : spliceResults(existing, renderResults(run, results)),
    );
    log(`written to ${path.relative(REPO, target)}`);
  } finally {
    await env?.stop();
    clearInterval(alive);
  }
  if (failures.length > 0) {
    log(`failed: ${failures.join(", ")}`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
