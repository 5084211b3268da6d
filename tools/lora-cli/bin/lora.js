#!/usr/bin/env node
// The lora command (compiled by `npm run build`).
require("../dist/main.js");
