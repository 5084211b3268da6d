#!/usr/bin/env node
// The lora command. Runs the compiled CLI (`npm run build` or `npm start`
// compile it); a checkout that was never built compiles it first, with the
// compiler's output on stderr, so `lora` works right after `npm ci`.
const { execFileSync } = require("node:child_process");
const { existsSync } = require("node:fs");
const path = require("node:path");

const pkg = path.join(__dirname, "..");
const main = path.join(pkg, "dist", "main.js");
if (!existsSync(main)) {
  execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-b", pkg], { stdio: ["ignore", 2, 2] });
}
require(main);
