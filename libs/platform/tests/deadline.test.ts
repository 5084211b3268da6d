import { requestTimeoutMs } from "../src/rpc/deadline.js";

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
