import { OTLPMetricExporter as GrpcMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { OTLPMetricExporter as JsonMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { OTLPMetricExporter as ProtoMetricExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { OTLPTraceExporter as GrpcTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc";
import { OTLPTraceExporter as JsonTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as ProtoTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { PeriodicExportingMetricReader, type PushMetricExporter } from "@opentelemetry/sdk-metrics";
import { BatchSpanProcessor, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_INSTANCE_ID } from "@opentelemetry/semantic-conventions";
import { ConfigError } from "./config.js";

/**
 * The standard OTEL_* variables the SDK honours (OpenTelemetry's
 * environment specification). Deployment checks accept these beside each
 * service's own variables.
 */
export const TELEMETRY_ENV_VARIABLES = [
  "OTEL_SDK_DISABLED",
  "OTEL_SERVICE_NAME",
  "OTEL_RESOURCE_ATTRIBUTES",
  "OTEL_LOG_LEVEL",
  "OTEL_PROPAGATORS",
  "OTEL_TRACES_SAMPLER",
  "OTEL_TRACES_SAMPLER_ARG",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_PROTOCOL",
  "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
  "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
  "OTEL_EXPORTER_OTLP_HEADERS",
  "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
  "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
  "OTEL_EXPORTER_OTLP_TIMEOUT",
  "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
  "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
  "OTEL_EXPORTER_OTLP_COMPRESSION",
  "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
  "OTEL_METRIC_EXPORT_INTERVAL",
  "OTEL_METRIC_EXPORT_TIMEOUT",
  "OTEL_BSP_SCHEDULE_DELAY",
  "OTEL_BSP_EXPORT_TIMEOUT",
  "OTEL_BSP_MAX_QUEUE_SIZE",
  "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
  "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
  "OTEL_ATTRIBUTE_COUNT_LIMIT",
  "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
  "OTEL_SPAN_EVENT_COUNT_LIMIT",
  "OTEL_SPAN_LINK_COUNT_LIMIT",
  "OTEL_NODE_RESOURCE_DETECTORS",
] as const;

const positive = (value: string | undefined): number | undefined =>
  value !== undefined && Number(value) > 0 ? Number(value) : undefined;

const set = (value: string | undefined): value is string => value !== undefined && value.trim() !== "";

const PROTOCOLS = ["http/protobuf", "http/json", "grpc"] as const;
type OtlpProtocol = (typeof PROTOCOLS)[number];

/**
 * The OTLP protocol of a signal as the OpenTelemetry specification reads it:
 * OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
 * else "http/protobuf" (the specification's default; as sdk-node's
 * getOtlpProtocolFromEnv). An unknown value stops the start.
 */
export function otlpProtocol(signal: "TRACES" | "METRICS", env: NodeJS.ProcessEnv = process.env): OtlpProtocol {
  const name = set(env[`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`])
    ? `OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`
    : "OTEL_EXPORTER_OTLP_PROTOCOL";
  const value = env[name]?.trim() || "http/protobuf";
  if (!(PROTOCOLS as readonly string[]).includes(value)) {
    throw new ConfigError([`${name}: must be one of ${PROTOCOLS.join(", ")} (got ${JSON.stringify(value)})`]);
  }
  return value as OtlpProtocol;
}

function traceExporter(protocol: OtlpProtocol): SpanExporter {
  if (protocol === "http/json") return new JsonTraceExporter();
  if (protocol === "grpc") return new GrpcTraceExporter();
  return new ProtoTraceExporter();
}

function metricExporter(protocol: OtlpProtocol): PushMetricExporter {
  if (protocol === "http/json") return new JsonMetricExporter();
  if (protocol === "grpc") return new GrpcMetricExporter();
  return new ProtoMetricExporter();
}

export interface TelemetryOptions {
  /**
   * `service.instance.id` of this process, e.g. the machine-cache's MACHINE_ID,
   * so metrics can be told apart by machine (host.name comes from the host).
   */
  serviceInstanceId?: string;
}

/**
 * Starts the OpenTelemetry Node SDK when the standard OTEL_* variables ask
 * for OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT, or the per-signal traces /
 * metrics endpoints): traces and metrics over OTLP in the protocol that
 * OTEL_EXPORTER_OTLP_PROTOCOL names (default http/protobuf; http/json and
 * grpc on request), W3C trace context propagation, `service.name` =
 * OTEL_SERVICE_NAME or the service's own name, `host.name` from the host
 * and `service.instance.id` when given. Otherwise the API stays a no-op. Call
 * it before the service builds its context, so instruments bind to the real
 * meter. Returns a shutdown hook that flushes what is buffered.
 */
export function startTelemetry(
  serviceName: string,
  env: NodeJS.ProcessEnv = process.env,
  options: TelemetryOptions = {},
): () => Promise<void> {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return async () => {};
  const traces = set(env.OTEL_EXPORTER_OTLP_ENDPOINT) || set(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const metrics = set(env.OTEL_EXPORTER_OTLP_ENDPOINT) || set(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT);
  if (!traces && !metrics) return async () => {};
  const traceProtocol = traces ? otlpProtocol("TRACES", env) : undefined;
  const metricProtocol = metrics ? otlpProtocol("METRICS", env) : undefined;
  const interval = positive(env.OTEL_METRIC_EXPORT_INTERVAL) ?? 60_000;
  const sdk = new NodeSDK({
    // Merged over the detectors' attributes (OTEL_RESOURCE_ATTRIBUTES, e.g. k8s.pod.name; host.name).
    serviceName: set(env.OTEL_SERVICE_NAME) ? env.OTEL_SERVICE_NAME : serviceName,
    ...(options.serviceInstanceId
      ? { resource: resourceFromAttributes({ [ATTR_SERVICE_INSTANCE_ID]: options.serviceInstanceId }) }
      : {}),
    // The exporters read endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
    spanProcessors: traceProtocol ? [new BatchSpanProcessor(traceExporter(traceProtocol))] : [],
    metricReaders: metricProtocol
      ? [
          new PeriodicExportingMetricReader({
            exporter: metricExporter(metricProtocol),
            exportIntervalMillis: interval,
            // The reader refuses a timeout longer than its interval.
            exportTimeoutMillis: Math.min(interval, positive(env.OTEL_METRIC_EXPORT_TIMEOUT) ?? 30_000),
          }),
        ]
      : [],
    // Logs are JSON lines on stdout (with trace ids), not OTLP log records.
    logRecordProcessors: [],
    // No automatic instrumentations: RPCs, NATS messages and the work inside them are traced by our own code.
    instrumentations: [],
  });
  sdk.start();
  return () => sdk.shutdown();
}
