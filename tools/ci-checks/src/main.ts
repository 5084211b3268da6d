import { checkDeployment, printReport } from "./deploy-checks.js";

/** `npm run check:deploy`: the deployment checks, exit 1 on any problem. */
function main(): void {
  const problems = printReport(checkDeployment());
  process.stdout.write(problems === 0 ? "deployment checks passed\n" : `${problems} deployment problem(s)\n`);
  process.exitCode = problems === 0 ? 0 : 1;
}

main();
