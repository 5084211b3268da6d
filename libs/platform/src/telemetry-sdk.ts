import { NodeSDK } from "@opentelemetry/sdk-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";

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

/**
 * Starts the OpenTelemetry Node SDK when the standard OTEL_* variables ask
 * for OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT, or the per-signal traces /
 * metrics endpoints): traces and metrics over OTLP/HTTP, W3C trace context
 * propagation, `service.name` = OTEL_SERVICE_NAME or the service's own name.
 * Otherwise the API stays a no-op. Call it before the service builds its
 * context, so instruments bind to the real meter. Returns a shutdown hook
 * that flushes what is buffered.
 */
export function startTelemetry(serviceName: string, env: NodeJS.ProcessEnv = process.env): () => Promise<void> {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return async () => {};
  const traces = set(env.OTEL_EXPORTER_OTLP_ENDPOINT) || set(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const metrics = set(env.OTEL_EXPORTER_OTLP_ENDPOINT) || set(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT);
  if (!traces && !metrics) return async () => {};
  const interval = positive(env.OTEL_METRIC_EXPORT_INTERVAL) ?? 60_000;
  const sdk = new NodeSDK({
    // Merged over the env detector's OTEL_RESOURCE_ATTRIBUTES (e.g. k8s.pod.name).
    serviceName: set(env.OTEL_SERVICE_NAME) ? env.OTEL_SERVICE_NAME : serviceName,
    // The exporters read endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
    spanProcessors: traces ? [new BatchSpanProcessor(new OTLPTraceExporter())] : [],
    metricReaders: metrics
      ? [
          new PeriodicExportingMetricReader({
            exporter: new OTLPMetricExporter(),
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
