import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { API_REFERENCE, buildDescriptorSet, renderApiReference } from "./api-reference.js";
import { repoRoot } from "./workspace.js";

/** `npm run docs:api` writes docs/api-reference.md; with --check it only compares (exit 1 when stale). */
function main(): void {
  const file = path.join(repoRoot, API_REFERENCE);
  const fresh = renderApiReference(buildDescriptorSet());
  if (process.argv.includes("--check")) {
    const current = readFileSync(file, "utf8");
    if (current !== fresh) {
      process.stderr.write(`${API_REFERENCE} is stale: run npm run docs:api\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(`${API_REFERENCE} is up to date\n`);
    return;
  }
  writeFileSync(file, fresh);
  process.stdout.write(`wrote ${API_REFERENCE}\n`);
}

main();
