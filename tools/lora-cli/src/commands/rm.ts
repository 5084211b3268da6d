import { createInterface } from "node:readline/promises";
import { formatBytes } from "@emprops/contracts";
import type { CliContext } from "../context.js";
import { CliError, EXIT } from "../errors.js";
import { parseLoraId } from "./arguments.js";

/** `lora rm ID`: asks first on a terminal (unless --yes), then deletes. */
export async function rmCommand(ctx: CliContext, id: string, opts: { yes?: boolean }): Promise<void> {
  const loraId = parseLoraId(id);
  const { lora } = await ctx.clients().lora.getLora({ loraId });
  if (!lora) throw new Error("GetLora answered without a LoRA");
  if (ctx.stdin.isTTY && !opts.yes) {
    const rl = createInterface({ input: ctx.stdin, output: ctx.stderr });
    const answer = await rl.question(`Delete ${lora.name} (${formatBytes(lora.sizeBytes)})? [y/N] `);
    rl.close();
    if (!/^y(es)?$/i.test(answer.trim())) throw new CliError("Not deleted.", EXIT.FAILURE);
  }
  await ctx.clients().lora.deleteLora({ loraId });
  ctx.print(`Deleted ${lora.name} (LoRA ${lora.id}); ${formatBytes(lora.sizeBytes)} returned to your quota.`);
}
