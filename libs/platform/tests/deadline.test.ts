import { outgoingTimeoutMs, requestTimeoutMs } from "../src/rpc/deadline.js";

test("a request's deadline is read from grpc-timeout (every unit) or connect-timeout-ms", () => {
  const of = (init: Record<string, string>) => requestTimeoutMs(new Headers(init));
  expect(of({ "grpc-timeout": "5000m" })).toBe(5000);
  expect(of({ "grpc-timeout": "2S" })).toBe(2000);
  expect(of({ "grpc-timeout": "1M" })).toBe(60_000);
  expect(of({ "grpc-timeout": "1H" })).toBe(3_600_000);
  expect(of({ "grpc-timeout": "1500000u" })).toBe(1500);
  expect(of({ "connect-timeout-ms": "750" })).toBe(750);
  expect(of({})).toBeUndefined();
  expect(of({ "grpc-timeout": "12.5m" })).toBeUndefined();
});

test("an outgoing call's deadline is cut to the caller's, less a tenth kept back to answer, in whole milliseconds", () => {
  expect(outgoingTimeoutMs(15_000, undefined)).toBe(15_000);
  expect(outgoingTimeoutMs(undefined, undefined)).toBeUndefined();
  expect(outgoingTimeoutMs(15_000, 3000.7)).toBe(2700);
  expect(outgoingTimeoutMs(1000, 60_000)).toBe(1000);
  expect(outgoingTimeoutMs(undefined, 60_000)).toBe(59_000);
  expect(outgoingTimeoutMs(5000, 150)).toBe(50);
  expect(outgoingTimeoutMs(5000, -20)).toBe(1);
});
