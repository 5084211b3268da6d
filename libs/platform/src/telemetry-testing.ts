import { type Attributes, context, metrics, propagation, trace } from "@opentelemetry/api";
import { node as traceNode } from "@opentelemetry/sdk-node";
import {
  AggregationTemporality,
  type DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from "@opentelemetry/sdk-metrics";
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";

export interface MetricPoint {
  name: string;
  attributes: Attributes;
  /** A number for sums and gauges; for histograms the count, sum and buckets. */
  value: DataPoint<unknown>["value"];
}

export interface InMemoryTelemetry {
  /** Finished spans so far. */
  spans(): ReadableSpan[];
  /** Collects every instrument now (cumulative) and returns its points; rejects when a callback failed. */
  collect(): Promise<MetricPoint[]>;
  stop(): Promise<void>;
}

/**
 * Tests: registers global tracer and meter providers that keep everything in
 * memory (W3C propagation and async context as in production). Start it
 * before the services build their contexts, so their instruments bind to it.
 */
export function startInMemoryTelemetry(): InMemoryTelemetry {
  const spanExporter = new InMemorySpanExporter();
  const tracerProvider = new traceNode.NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] });
  tracerProvider.register();
  // collect() reads the reader directly; the exporter sets its temporality.
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 24 * 3600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  metrics.setGlobalMeterProvider(meterProvider);
  return {
    spans: () => spanExporter.getFinishedSpans(),
    async collect() {
      // The reader's own collection: a failing observable callback is an error here, not a log line.
      const { resourceMetrics, errors } = await reader.collect();
      if (errors.length > 0) throw new AggregateError(errors, "metric collection failed");
      return resourceMetrics.scopeMetrics
        .flatMap((sm) => sm.metrics)
        .flatMap((m) =>
          (m.dataPoints as DataPoint<unknown>[]).map((p) => ({
            name: m.descriptor.name,
            attributes: p.attributes,
            value: p.value,
          })),
        );
    },
    async stop() {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
      trace.disable();
      metrics.disable();
      propagation.disable();
      context.disable();
    },
  };
}
