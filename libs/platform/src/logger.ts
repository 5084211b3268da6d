import { trace } from "@opentelemetry/api";
import pino, { type DestinationStream, type Logger } from "pino";

export type { Logger } from "pino";

/** Structured JSON logs with the active trace and span ids on every line (stdout unless a destination is given). */
export function createLogger(service: string, level = "info", destination?: DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    name: service,
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    mixin() {
      const span = trace.getActiveSpan()?.spanContext();
      return span ? { trace_id: span.traceId, span_id: span.spanId } : {};
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
