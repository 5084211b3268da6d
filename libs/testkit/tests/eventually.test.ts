import { eventually } from "@emprops/testkit";

describe("eventually", () => {
  it("returns what the check returned once it passes", async () => {
    let tries = 0;
    const value = await eventually(() => (++tries < 3 ? false : { tries }), { intervalMs: 1 });
    expect(value).toEqual({ tries: 3 });
  });

  it("retries a check that throws, such as a failing expect", async () => {
    let tries = 0;
    await eventually(
      () => {
        tries++;
        expect(tries).toBeGreaterThanOrEqual(3);
      },
      { intervalMs: 1 },
    );
    expect(tries).toBe(3);
  });

  it("passes on the first try without waiting", async () => {
    let tries = 0;
    expect(await eventually(() => ++tries === 1, { intervalMs: 60_000 })).toBe(true);
  });

  it("throws the last failure of the check when the time is up", async () => {
    let tries = 0;
    const failure = eventually(
      () => {
        tries++;
        throw new Error(`attempt ${tries} found 2 files`);
      },
      { timeoutMs: 50, intervalMs: 5 },
    );
    await expect(failure).rejects.toThrow(/^not met within 50 ms: attempt \d+ found 2 files$/);
    expect(tries).toBeGreaterThan(1);
  });

  it("throws when the check still returns false", async () => {
    await expect(eventually(() => false, { timeoutMs: 20, intervalMs: 5 })).rejects.toThrow(
      "not met within 20 ms: the check returned false",
    );
  });

  it("waits for an async check", async () => {
    const ready = Date.now() + 30;
    await expect(eventually(async () => Date.now() >= ready, { intervalMs: 5 })).resolves.toBe(true);
  });
});
