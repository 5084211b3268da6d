import { randomBytes } from "node:crypto";

const MAX_LABEL = 32;

/**
 * `<prefix><sep><label><sep><random>`: lower-case letters and digits joined by
 * `sep`, valid as a PostgreSQL identifier (sep "_"), a NATS token ("_") and an
 * Azure container name ("-"). The random part keeps parallel runs apart.
 */
export function uniqueName(prefix: string, label: string, sep: "_" | "-"): string {
  const cleaned =
    label
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, sep)
      .slice(0, MAX_LABEL)
      .replace(/^[-_]+|[-_]+$/g, "") || "x";
  return [prefix, cleaned, randomBytes(4).toString("hex")].join(sep);
}
