import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { health } from "@emprops/contracts";

const { HealthCheckResponseSchema, HealthCheckResponse_ServingStatus: Status } = health;
export const ServingStatus = Status;
export type ServingStatus = health.HealthCheckResponse_ServingStatus;

/** Serving status per service name ("" is the server as a whole). */
export class HealthState {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly listeners = new Set<() => void>();

  constructor(services: string[], initial: ServingStatus = Status.SERVING) {
    for (const name of ["", ...services]) this.statuses.set(name, initial);
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Sets one service, or every service when name is omitted. */
  set(status: ServingStatus, service?: string): void {
    const names = service === undefined ? [...this.statuses.keys()] : [service];
    for (const name of names) this.statuses.set(name, status);
    for (const listener of this.listeners) listener();
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** The standard grpc.health.v1.Health service over a HealthState. */
export function registerHealth(router: ConnectRouter, state: HealthState): void {
  router.service(health.Health, {
    check(req) {
      const status = state.get(req.service);
      if (status === undefined) throw new ConnectError(`unknown service ${req.service}`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status });
    },
    async *watch(req, ctx) {
      let last: ServingStatus | undefined;
      let wake: () => void = () => {};
      const unsubscribe = state.onChange(() => wake());
      const aborted = new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
      try {
        while (!ctx.signal.aborted) {
          const status = state.get(req.service) ?? Status.SERVICE_UNKNOWN;
          if (status !== last) {
            last = status;
            yield create(HealthCheckResponseSchema, { status });
          }
          await Promise.race([new Promise<void>((resolve) => (wake = resolve)), aborted]);
        }
      } finally {
        unsubscribe();
      }
    },
  });
}
