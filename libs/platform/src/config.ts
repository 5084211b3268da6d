import { Cron } from "croner";
import { z } from "zod";

/** Raised at start-up when the environment is wrong; names every bad variable. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/**
 * Reads the environment once through a zod schema whose keys are variable
 * names. Every problem is reported at once, each naming its variable.
 */
export function parseEnv<S extends z.ZodRawShape>(
  shape: S,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<z.ZodObject<S>> {
  const picked = Object.fromEntries(Object.keys(shape).map((k) => [k, env[k] === "" ? undefined : env[k]]));
  const result = z.object(shape).safeParse(picked);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => {
        const name = String(i.path[0] ?? "?");
        const value = picked[name];
        return `${name}: ${i.message}${value === undefined ? "" : ` (got ${JSON.stringify(redact(name, value))})`}`;
      }),
    );
  }
  return result.data;
}

function redact(name: string, value: string): string {
  return /SECRET|KEY|PASSWORD|TOKEN|CONNECTION_STRING/.test(name) ? "***" : value;
}

/** Reusable field schemas for environment variables. */
export const env = {
  port: (fallback: number) => z.coerce.number().int().min(0).max(65535).default(fallback),
  host: (fallback = "127.0.0.1") => z.string().min(1).default(fallback),
  url: (protocols: string[]) =>
    z.string().refine(
      (v) => {
        try {
          return protocols.includes(new URL(v).protocol.replace(/:$/, ""));
        } catch {
          return false;
        }
      },
      { message: `must be a URL with scheme ${protocols.join(" or ")}` },
    ),
  positiveInt: (fallback: number) => z.coerce.number().int().positive().default(fallback),
  nonNegativeNumber: (fallback: number) => z.coerce.number().min(0).default(fallback),
  bool: (fallback: boolean) =>
    z
      .enum(["true", "false", "1", "0", "yes", "no"], { message: "must be true or false" })
      .default(fallback ? "true" : "false")
      .transform((v) => v === "true" || v === "1" || v === "yes"),
  cron: (fallback: string) =>
    z
      .string()
      .refine(
        (v) => {
          try {
            new Cron(v, { paused: true }).stop();
            return true;
          } catch {
            return false;
          }
        },
        { message: "is not a cron pattern" },
      )
      .default(fallback),
  logLevel: () => z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  token: () =>
    z
      .string()
      .regex(/^[A-Za-z0-9_-]*$/, "must contain only letters, digits, _ and -")
      .default(""),
  /**
   * An optional PEM block of this label (e.g. "PUBLIC KEY"); "\\n" escapes
   * become newlines, so a key fits in one environment line.
   */
  pem: (label: string) =>
    z
      .string()
      .optional()
      .transform((v) => (v === undefined || v.trim() === "" ? undefined : v.replace(/\\n/g, "\n").trim() + "\n"))
      .refine(
        (v) => v === undefined || (v.startsWith(`-----BEGIN ${label}-----`) && v.includes(`-----END ${label}-----`)),
        {
          message: `must be a PEM block (-----BEGIN ${label}-----)`,
        },
      ),
  /** Comma-separated browser origins for CORS, or "*"; empty means none. */
  origins: () =>
    z
      .string()
      .default("")
      .transform((v) =>
        v
          .split(",")
          .map((o) => o.trim())
          .filter((o) => o !== ""),
      )
      .refine((list) => list.every(isOrigin), {
        message: "must be comma-separated origins such as https://studio.example.com (no path), or *",
      }),
};

function isOrigin(value: string): boolean {
  if (value === "*") return true;
  try {
    const u = new URL(value);
    return (u.protocol === "http:" || u.protocol === "https:") && u.origin === value;
  } catch {
    return false;
  }
}
