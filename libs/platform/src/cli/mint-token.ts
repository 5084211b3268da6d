import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { maxTokenLifetimeSeconds, mintToken, ROLES, type Role } from "../auth.js";
import { tokenEnvShape, tokenLifetimeLimits } from "../common-config.js";
import { parseEnv } from "../config.js";

const USAGE = `Mints an HS256 bearer token for local development and prints only the token.

  npm run -s mint-token -- --sub <uuid|id> [--role admin|machine|service|scheduler]... [--ttl 1h]
  export TOKEN=$(npm run -s mint-token -- --sub 00000000-0000-4000-8000-000000000001)

  --sub          the token's subject: a user's UUID, or a machine/service id
  --role         a role to grant; repeat for several (a plain user has none)
  --ttl          lifetime: seconds, or a number with s, m, h or d (default 1h); at
                 most the services' limit for the token's roles
                 (JWT_MAX_LIFETIME_*_SECONDS: a day for users and admins, 30 days
                 for machine, service and scheduler tokens)
  --secret-file  a file holding the secret

The secret: JWT_SECRET when set, else --secret-file, else the one npm start
keeps in $EMPROPS_DATA_DIR/jwt-secret (default .data/jwt-secret).
JWT_ISSUER and JWT_AUDIENCE are added when set, as the services check them.`;

function parseTtl(value: string): number {
  const match = /^([1-9]\d*)([smhd]?)$/.exec(value);
  if (!match)
    throw new Error(`--ttl must be positive seconds or a number with s, m, h or d, got ${JSON.stringify(value)}`);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as "" | "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sub: { type: "string" },
      role: { type: "string", multiple: true },
      ttl: { type: "string", default: "1h" },
      "secret-file": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (!values.sub) throw new Error("--sub is required");
  const roles = (values.role ?? []).map((r) => {
    if (!ROLES.includes(r as Role))
      throw new Error(`--role must be one of ${ROLES.join(", ")}, got ${JSON.stringify(r)}`);
    return r as Role;
  });
  const secret = readSecret(values["secret-file"]);
  const ttlSeconds = parseTtl(values.ttl);
  const max = maxTokenLifetimeSeconds(roles, tokenLifetimeLimits(parseEnv(tokenEnvShape)));
  if (ttlSeconds > max) {
    const who = roles.length === 0 ? "a user token" : `a token with the ${roles.join(" and ")} role`;
    throw new Error(`--ttl must be at most ${max} s for ${who} (the services refuse longer), got ${ttlSeconds} s`);
  }
  const token = await mintToken(secret, {
    subject: values.sub,
    roles,
    ttlSeconds,
    issuer: process.env.JWT_ISSUER || undefined,
    audience: process.env.JWT_AUDIENCE || undefined,
  });
  process.stdout.write(`${token}\n`);
}

/** The same secret the services were started with: the environment's, else the dev stack's file. */
function readSecret(secretFile: string | undefined): string {
  if (process.env.JWT_SECRET) return process.env.JWT_SECRET;
  const file = secretFile ?? path.resolve(process.env.EMPROPS_DATA_DIR ?? ".data", "jwt-secret");
  if (!existsSync(file)) {
    throw new Error(
      secretFile
        ? `--secret-file ${file} does not exist`
        : `no secret: JWT_SECRET is not set and ${file} does not exist (npm start creates it)`,
    );
  }
  return readFileSync(file, "utf8").trim();
}

main().catch((err: unknown) => {
  process.stderr.write(`mint-token: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}\n`);
  process.exit(64);
});
