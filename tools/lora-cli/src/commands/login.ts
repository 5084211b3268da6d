import { Code, ConnectError } from "@connectrpc/connect";
import { formatBytes, formatPercent } from "@emprops/contracts";
import { createRegistryClients } from "../clients.js";
import { updateConfig } from "../config-store.js";
import { type CliContext, tokenClaims } from "../context.js";
import { CliError, EXIT, reasonOf } from "../errors.js";

/** Reads a token from a pipe, or asks for it on a terminal. */
async function readToken(ctx: CliContext): Promise<string> {
  if (ctx.stdin.isTTY) ctx.stderr.write("Paste your token and press Enter: ");
  let text = "";
  for await (const chunk of ctx.stdin) {
    text += chunk.toString();
    if (ctx.stdin.isTTY && text.includes("\n")) break;
  }
  return text.trim();
}

/** `lora login`: checks the token against the registry, then stores it with the registry's address. */
export async function loginCommand(ctx: CliContext, opts: { token?: string }): Promise<void> {
  const token = (opts.token ?? (await readToken(ctx))).trim();
  if (!token) throw new CliError("no token given: pass --token <token> or pipe one in", EXIT.USAGE);
  const claims = tokenClaims(token);
  if (!claims?.sub) throw new CliError("that is not a JWT bearer token (no subject could be read)", EXIT.USAGE);

  let summary: string;
  try {
    const { quota } = await createRegistryClients(ctx.registryUrl, token).lora.getQuota({});
    summary = quota
      ? `LoRA storage: ${formatBytes(quota.usedBytes + quota.reservedBytes)} of ${formatBytes(quota.maxBytes)} used (${formatPercent(quota.utilizationPercent)})`
      : "";
  } catch (err) {
    // An admin or service token acts for no user: it cannot read a quota, but it is valid.
    if (!(err instanceof ConnectError && err.code === Code.PermissionDenied && reasonOf(err) === "ROLE_REQUIRED")) {
      throw err;
    }
    summary = `Roles: ${(claims.roles ?? []).join(", ") || "none"}`;
  }
  updateConfig(ctx.configFile, (config) => {
    config.registryUrl = ctx.registryUrl;
    config.token = token;
  });
  ctx.print(`Logged in to ${ctx.registryUrl} as ${claims.sub}.`);
  if (summary) ctx.print(summary);
  ctx.note(`Token stored in ${ctx.configFile}`);
}

/** `lora logout`: forgets the stored token. */
export function logoutCommand(ctx: CliContext): void {
  updateConfig(ctx.configFile, (config) => {
    delete config.token;
  });
  ctx.print("Logged out.");
}
