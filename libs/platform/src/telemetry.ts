import {
  context,
  metrics,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Meter,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from "@opentelemetry/api";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

const INSTRUMENTATION = "@emprops/platform";

export const tracer = (): Tracer => trace.getTracer(INSTRUMENTATION);
export const meter = (): Meter => metrics.getMeter(INSTRUMENTATION);

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

/** Server side: one span per RPC, continuing the caller's trace. */
export function serverTracingInterceptor(): Interceptor {
  return (next) => async (req) => {
    const parent = propagation.extract(context.active(), req.header as HeaderLike, headerGetter);
    const span = tracer().startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: { "rpc.system": "connect_rpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name },
      },
      parent,
    );
    return context.with(trace.setSpan(parent, span), async () => {
      try {
        const res = await next(req);
        span.setAttribute("rpc.connect_rpc.status_code", "ok");
        return res;
      } catch (err) {
        const ce = ConnectError.from(err);
        span.setAttribute("rpc.connect_rpc.status_code", Code[ce.code]);
        if (ce.code === Code.Internal || ce.code === Code.Unknown || ce.code === Code.Unavailable) {
          span.recordException(ce);
          span.setStatus({ code: SpanStatusCode.ERROR, message: ce.rawMessage });
        }
        throw err;
      } finally {
        span.end();
      }
    });
  };
}

/** Client side: a span per call and the trace context in the headers. */
export function clientTracingInterceptor(): Interceptor {
  return (next) => async (req) => {
    const span = tracer().startSpan(`${req.service.typeName}/${req.method.name}`, {
      kind: SpanKind.CLIENT,
      attributes: { "rpc.system": "connect_rpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name },
    });
    const ctx = trace.setSpan(context.active(), span);
    propagation.inject(ctx, req.header as HeaderLike, headerSetter);
    try {
      return await context.with(ctx, () => next(req));
    } catch (err) {
      span.setAttribute("rpc.connect_rpc.status_code", Code[ConnectError.from(err).code]);
      throw err;
    } finally {
      span.end();
    }
  };
}

/** Puts the active trace context into message headers (e.g. NATS). */
export function injectTraceHeaders(set: (key: string, value: string) => void): void {
  propagation.inject(context.active(), undefined, { set: (_c, k, v) => set(k, v) });
}

/** Reads a trace context from message headers (e.g. NATS). */
export function extractTraceContext(get: (key: string) => string | undefined, keys: () => string[]) {
  return propagation.extract(context.active(), undefined, { get: (_c, k) => get(k), keys: () => keys() });
}
