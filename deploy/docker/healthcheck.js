// Container health check: asks the service's own grpc.health.v1.Health/Check
// over Connect JSON (a plain HTTP/1.1 POST), so the image needs no probe
// binary. Usage: node healthcheck.js <PORT_VARIABLE> <default port>
"use strict";

const [portVariable, fallback] = process.argv.slice(2);
const port = Number((portVariable && process.env[portVariable]) || fallback);

fetch(`http://127.0.0.1:${port}/grpc.health.v1.Health/Check`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ service: "" }),
  signal: AbortSignal.timeout(3000),
})
  .then(async (res) => {
    const body = await res.json();
    if (res.ok && body.status === "SERVING") process.exit(0);
    process.stderr.write(`not serving: HTTP ${res.status} ${JSON.stringify(body)}\n`);
    process.exit(1);
  })
  .catch((err) => {
    process.stderr.write(`health check failed: ${err.message}\n`);
    process.exit(1);
  });
