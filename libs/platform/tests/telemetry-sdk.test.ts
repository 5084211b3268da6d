import { execFile, execFileSync } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import { startTelemetry, tracer } from "../src/index.js";

const root = path.resolve(__dirname, "../../..");

test("without an OTLP endpoint the SDK is not started and telemetry stays a no-op", async () => {
  const stop = startTelemetry("lora-registry", {});
  const span = tracer().startSpan("nothing");
  expect(span.isRecording()).toBe(false);
  span.end();
  await stop();
});

// The OTLP exporters load node:http with a dynamic import(), which jest's CommonJS sandbox cannot
// run: the service's own start-up is exercised in a plain Node process, as in production.
test("with OTEL_EXPORTER_OTLP_ENDPOINT, traces and metrics go out over OTLP/HTTP with the service's name", async () => {
  execFileSync(path.join(root, "node_modules/.bin/tsc"), ["-b", "libs/platform"], { cwd: root });
  const received: { path: string; body: Buffer }[] = [];
  const collector = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      received.push({ path: req.url ?? "", body: Buffer.concat(chunks) });
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  try {
    const script = `
      const { startTelemetry, tracer, meter } = require(${JSON.stringify(path.join(root, "libs/platform/dist/index.js"))});
      const stop = startTelemetry("blob-gateway");
      tracer().startSpan("blob.verify").end();
      meter().createCounter("blob_gateway.verifications").add(1, { status: "ok" });
      stop().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });`;
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    await promisify(execFile)(process.execPath, ["-e", script], {
      env: { PATH: process.env.PATH, OTEL_EXPORTER_OTLP_ENDPOINT: endpoint },
    });
  } finally {
    await new Promise((resolve) => collector.close(resolve));
  }
  const traces = received.find((r) => r.path === "/v1/traces");
  const exported = received.find((r) => r.path === "/v1/metrics");
  expect(traces?.body.includes("blob.verify")).toBe(true);
  expect(traces?.body.includes("blob-gateway")).toBe(true);
  expect(exported?.body.includes("blob_gateway.verifications")).toBe(true);
  expect(exported?.body.includes("blob-gateway")).toBe(true);
});
