import { execFile, execFileSync } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
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
interface Received {
  path: string;
  contentType: string;
  body: Buffer;
}

/** Starts telemetry in a Node process against a real HTTP receiver; what the receiver got. */
async function exportTo(
  env: Record<string, string>,
  options: { serviceInstanceId?: string } = {},
): Promise<Received[]> {
  execFileSync(path.join(root, "node_modules/.bin/tsc"), ["-b", "libs/platform"], { cwd: root });
  const received: Received[] = [];
  const collector = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const contentType = req.headers["content-type"] ?? "";
      received.push({ path: req.url ?? "", contentType, body: Buffer.concat(chunks) });
      res.writeHead(200, { "content-type": contentType }).end(contentType.includes("json") ? "{}" : "");
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  try {
    const script = `
      const { startTelemetry, tracer, meter } = require(${JSON.stringify(path.join(root, "libs/platform/dist/index.js"))});
      const stop = startTelemetry("blob-gateway", process.env, ${JSON.stringify(options)});
      tracer().startSpan("blob.verify").end();
      meter().createCounter("blob_gateway.verifications").add(1, { status: "ok" });
      stop().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });`;
    const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`;
    await promisify(execFile)(process.execPath, ["-e", script], {
      env: { PATH: process.env.PATH, OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, ...env },
    });
  } finally {
    await new Promise((resolve) => collector.close(resolve));
  }
  return received;
}

const signal = (received: Received[], name: "traces" | "metrics") => {
  const found = received.find((r) => r.path === `/v1/${name}`);
  if (!found) throw new Error(`no /v1/${name} request among ${received.map((r) => r.path).join(", ")}`);
  return found;
};

/** The resource attributes of an OTLP/JSON export request, as a plain map. */
const jsonResource = (r: Received, key: "resourceSpans" | "resourceMetrics") => {
  const body = JSON.parse(r.body.toString()) as Record<
    string,
    { resource: { attributes: { key: string; value: { stringValue?: string } }[] } }[]
  >;
  return Object.fromEntries(body[key]![0]!.resource.attributes.map((a) => [a.key, a.value.stringValue]));
};

test("with OTEL_EXPORTER_OTLP_ENDPOINT alone, traces and metrics go out as OTLP/HTTP protobuf, the spec's default", async () => {
  const received = await exportTo({});
  for (const [name, instrument] of [
    ["traces", "blob.verify"],
    ["metrics", "blob_gateway.verifications"],
  ] as const) {
    const r = signal(received, name);
    expect(r.contentType).toBe("application/x-protobuf");
    // Field 1 (resource_spans / resource_metrics), length-delimited: a protobuf message, not JSON.
    expect(r.body[0]).toBe(0x0a);
    expect(r.body.includes(instrument)).toBe(true);
    expect(r.body.includes("blob-gateway")).toBe(true);
  }
});

test("OTEL_EXPORTER_OTLP_PROTOCOL=http/json sends OTLP/JSON; a per-signal protocol wins for its signal", async () => {
  const json = await exportTo({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" });
  expect(signal(json, "traces").contentType).toBe("application/json");
  expect(jsonResource(signal(json, "traces"), "resourceSpans")["service.name"]).toBe("blob-gateway");
  expect(jsonResource(signal(json, "metrics"), "resourceMetrics")["service.name"]).toBe("blob-gateway");

  const mixed = await exportTo({
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/protobuf",
  });
  expect(signal(mixed, "traces").contentType).toBe("application/json");
  expect(signal(mixed, "metrics").contentType).toBe("application/x-protobuf");
});

test("the machine id is the resource's service.instance.id, beside host.name", async () => {
  const received = await exportTo({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }, { serviceInstanceId: "gpu-node-7" });
  for (const [name, key] of [
    ["traces", "resourceSpans"],
    ["metrics", "resourceMetrics"],
  ] as const) {
    const resource = jsonResource(signal(received, name), key);
    expect(resource["service.instance.id"]).toBe("gpu-node-7");
    expect(resource["host.name"]).toBe(os.hostname());
  }
});

test("an unknown OTLP protocol stops the start with a message naming the variable", () => {
  expect(() =>
    startTelemetry("lora-registry", {
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "udp",
    }),
  ).toThrow(/OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: must be one of http\/protobuf, http\/json, grpc \(got "udp"\)/);
});
