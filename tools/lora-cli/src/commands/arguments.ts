import { InvalidArgumentError } from "commander";

/** A LoRA id as the registry writes it: a positive decimal number. */
export function parseLoraId(value: string): string {
  if (!/^[1-9][0-9]{0,18}$/.test(value)) {
    throw new InvalidArgumentError(`a LoRA id is a positive number such as 123, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** "a, b,c" → ["a", "b", "c"], accumulated over repeated options. */
export function parseList(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(",")
      .map((v) => v.trim())
      .filter((v) => v !== ""),
  ];
}

/** A repeatable option. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`must be a positive whole number, got ${value}`);
  return n;
}

export function parseNonNegative(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || value.trim() === "") {
    throw new InvalidArgumentError(`must be a number of zero or more, got ${value}`);
  }
  return n;
}

export function parseUuid(value: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value)) {
    throw new InvalidArgumentError(`a user id is a UUID, got ${JSON.stringify(value)}`);
  }
  return value.toLowerCase();
}
