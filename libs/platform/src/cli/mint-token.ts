import { parseArgs } from "node:util";
import { mintToken, type Role } from "../auth.js";

const USAGE = `Mints an HS256 bearer token for local development (secret from JWT_SECRET).

  npm run mint-token -- --sub <uuid|id> [--role admin|machine|service]... [--ttl 1h]

  --sub   the token's subject: a user's UUID, or a machine/service id
  --role  a role to grant; repeat for several (a plain user has none)
  --ttl   lifetime: seconds, or a number with s, m, h or d (default 1h)

JWT_ISSUER and JWT_AUDIENCE are added when set, as the services check them.`;

const ROLES: Role[] = ["admin", "machine", "service"];

function parseTtl(value: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(value);
  if (!match) throw new Error(`--ttl must be seconds or a number with s, m, h or d, got ${JSON.stringify(value)}`);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as "" | "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sub: { type: "string" },
      role: { type: "string", multiple: true },
      ttl: { type: "string", default: "1h" },
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
  const secret = process.env.JWT_SECRET;
  if (!secret) throw new Error("JWT_SECRET is not set (the services' HS256 secret, at least 16 characters)");
  const token = await mintToken(secret, {
    subject: values.sub,
    roles,
    ttlSeconds: parseTtl(values.ttl),
    issuer: process.env.JWT_ISSUER || undefined,
    audience: process.env.JWT_AUDIENCE || undefined,
  });
  process.stdout.write(`${token}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`mint-token: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}\n`);
  process.exit(64);
});
