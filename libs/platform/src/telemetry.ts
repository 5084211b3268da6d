import {
  context,
  metrics,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Meter,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from "@opentelemetry/api";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { ErrorInfoSchema } from "@emprops/contracts";

const INSTRUMENTATION = "@emprops/platform";

export const tracer = (): Tracer => trace.getTracer(INSTRUMENTATION);
export const meter = (): Meter => metrics.getMeter(INSTRUMENTATION);

/** Marks a span failed with the error (services need not import the API for this). */
export function recordSpanError(span: Span, err: unknown): void {
  const error = err instanceof Error ? err : new Error(String(err));
  span.recordException(error);
  span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
}

interface HeaderLike {
  get(name: string): string | null;
  set(name: string, value: string): void;
  keys(): IterableIterator<string>;
}

const headerGetter: TextMapGetter<HeaderLike> = {
  get: (carrier, key) => carrier.get(key) ?? undefined,
  keys: (carrier) => [...carrier.keys()],
};
const headerSetter: TextMapSetter<HeaderLike> = { set: (carrier, key, value) => carrier.set(key, value) };

/** The shared ErrorReason a ConnectError carries (google.rpc.ErrorInfo), if any. */
function reasonOf(err: ConnectError): string | undefined {
  try {
    return err.findDetails(ErrorInfoSchema)[0]?.reason || undefined;
  } catch {
    return undefined;
  }
}

const rpcAttributes = (service: string, method: string) => ({
  "rpc.system": "connect_rpc",
  "rpc.service": service,
  "rpc.method": method,
});

/**
 * Server side: one SERVER span per RPC, continuing the caller's trace, and
 * the `rpc.server.duration` histogram by service, method and status code
 * (plus the error reason, when the error carries one).
 */
export function serverTracingInterceptor(): Interceptor {
  const duration = meter().createHistogram("rpc.server.duration", {
    description: "Time to handle an RPC, by service, method, status code and error reason",
    unit: "s",
  });
  return (next) => async (req) => {
    // Health checks and reflection (probes every few seconds) would drown the traces.
    if (req.service.typeName.startsWith("grpc.")) return next(req);
    const parent = propagation.extract(context.active(), req.header as HeaderLike, headerGetter);
    const attributes = rpcAttributes(req.service.typeName, req.method.name);
    const span = tracer().startSpan(
      `${req.service.typeName}/${req.method.name}`,
      { kind: SpanKind.SERVER, attributes },
      parent,
    );
    const started = performance.now();
    const finish = (err?: unknown) => {
      let status = "ok";
      let reason: string | undefined;
      if (err !== undefined) {
        const ce = ConnectError.from(err);
        status = Code[ce.code];
        reason = reasonOf(ce);
        if (reason) span.setAttribute("emprops.error.reason", reason);
        if (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.Unavailable) {
          span.recordException(ce);
          span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
        }
      } else if (req.signal.aborted) {
        status = Code[Code.Canceled];
      }
      span.setAttribute("rpc.connect_rpc.status_code", status);
      span.end();
      duration.record((performance.now() - started) / 1000, {
        ...attributes,
        "rpc.connect_rpc.status_code": status,
        ...(reason ? { "emprops.error.reason": reason } : {}),
      });
    };
    return context.with(trace.setSpan(parent, span), async () => {
      let res;
      try {
        res = await next(req);
      } catch (err) {
        finish(err);
        throw err;
      }
      if (!res.stream) {
        finish();
        return res;
      }
      // A streamed answer ends with its last message, or its error.
      return { ...res, message: observeEnd(res.message, finish) };
    });
  };
}

/** The same messages; `finish` is told once the stream ends, with its error if it failed. */
async function* observeEnd<T>(messages: AsyncIterable<T>, finish: (err?: unknown) => void): AsyncIterable<T> {
  let failure: { err: unknown } | undefined;
  try {
    yield* messages;
  } catch (err) {
    failure = { err };
    throw err;
  } finally {
    finish(failure?.err);
  }
}

/**
 * Client side: a CLIENT span per call, the trace context in the request
 * headers, and the `rpc.client.duration` histogram.
 */
export function clientTracingInterceptor(): Interceptor {
  const duration = meter().createHistogram("rpc.client.duration", {
    description: "Time of an outgoing RPC, by service, method and status code",
    unit: "s",
  });
  return (next) => async (req) => {
    const attributes = rpcAttributes(req.service.typeName, req.method.name);
    const span = tracer().startSpan(`${req.service.typeName}/${req.method.name}`, {
      kind: SpanKind.CLIENT,
      attributes,
    });
    const ctx = trace.setSpan(context.active(), span);
    propagation.inject(ctx, req.header as HeaderLike, headerSetter);
    const started = performance.now();
    let status = "ok";
    try {
      return await context.with(ctx, () => next(req));
    } catch (err) {
      const ce = ConnectError.from(err);
      status = Code[ce.code];
      const reason = reasonOf(ce);
      if (reason) span.setAttribute("emprops.error.reason", reason);
      if (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.Unavailable) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
      }
      throw err;
    } finally {
      span.setAttribute("rpc.connect_rpc.status_code", status);
      span.end();
      duration.record((performance.now() - started) / 1000, { ...attributes, "rpc.connect_rpc.status_code": status });
    }
  };
}

/**
 * The active trace context as a small map (W3C traceparent/tracestate), to
 * store beside work that runs later, e.g. an outbox row; undefined outside a
 * trace.
 */
export function captureTraceContext(): Record<string, string> | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return Object.keys(carrier).length > 0 ? carrier : undefined;
}

/** Runs fn in the trace context captured by captureTraceContext (or the current one when there is none). */
export function withTraceContext<T>(carrier: Record<string, string> | null | undefined, fn: () => T): T {
  return carrier ? context.with(propagation.extract(context.active(), carrier), fn) : fn();
}

/** Puts the active trace context into message headers (e.g. NATS). */
export function injectTraceHeaders(set: (key: string, value: string) => void): void {
  propagation.inject(context.active(), undefined, { set: (_c, k, v) => set(k, v) });
}

/** Reads a trace context from message headers (e.g. NATS). */
export function extractTraceContext(get: (key: string) => string | undefined, keys: () => string[]) {
  return propagation.extract(context.active(), undefined, { get: (_c, k) => get(k), keys: () => keys() });
}
