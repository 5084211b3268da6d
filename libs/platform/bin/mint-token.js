#!/usr/bin/env node
// `npm run -s mint-token`: runs the compiled CLI without rebuilding (the dev
// stack's services run the same build). Only a checkout that was never built
// compiles this package first, with the compiler's output on stderr so stdout
// stays the token alone.
const { execFileSync } = require("node:child_process");
const { existsSync } = require("node:fs");
const path = require("node:path");

const pkg = path.join(__dirname, "..");
const cli = path.join(pkg, "dist", "cli", "mint-token.js");
if (!existsSync(cli)) {
  execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-b", pkg], { stdio: ["ignore", 2, 2] });
}
require(cli);
