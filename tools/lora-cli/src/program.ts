import { readFileSync } from "node:fs";
import path from "node:path";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import {
  adminAuditCommand,
  adminCacheStatsCommand,
  adminQuotaSetCommand,
  adminQuotaShowCommand,
} from "./commands/admin.js";
import {
  collect,
  parseList,
  parseLoraId,
  parseNonNegative,
  parsePositiveInt,
  parseUuid,
} from "./commands/arguments.js";
import { downloadCommand, type DownloadOptions } from "./commands/download.js";
import { loginCommand, logoutCommand } from "./commands/login.js";
import { lsCommand, type LsOptions } from "./commands/ls.js";
import { quotaCommand } from "./commands/quota.js";
import { rmCommand } from "./commands/rm.js";
import { showCommand } from "./commands/show.js";
import { uploadCommand, type UploadOptions } from "./commands/upload.js";
import { type CliContext, createContext, DEFAULT_REGISTRY_URL, type GlobalOptions, type Streams } from "./context.js";
import { CliError, describeError, EXIT } from "./errors.js";

const EXIT_CODES = `
Exit codes:
   0  success
   1  unexpected error
   2  bad command line (unknown option, missing argument, unreadable file)
   3  not logged in, or the token is invalid or expired
   4  the token lacks the role the command needs
   5  not found (LORA_NOT_FOUND, UPLOAD_NOT_FOUND)
   6  file rejected (INVALID_FILE_FORMAT, FILE_TOO_LARGE, UNSAFE_PICKLE, CHECKSUM_MISMATCH)
   7  quota exceeded (QUOTA_EXCEEDED)
   8  invalid request (other INVALID_ARGUMENT reasons)
   9  upload session expired or already finished
  10  registry or storage unreachable, or upload interrupted (run it again: it resumes)`;

/** This package's version (package.json sits one level above both src/ and dist/). */
export const VERSION = (
  JSON.parse(readFileSync(path.join(__dirname, "..", "package.json"), "utf8")) as { version: string }
).version;

function parseDate(value: string): Date {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new InvalidArgumentError(`not a date or time: ${value}`);
  return d;
}

/**
 * The lora command. run() parses argv, runs one command and resolves to the
 * exit code; nothing here calls process.exit, so tests can drive it too.
 */
export async function run(argv: string[], env: NodeJS.ProcessEnv, streams: Streams): Promise<number> {
  const program = new Command("lora");
  let context: CliContext | undefined;
  const ctx = (): CliContext => (context ??= createContext(program.opts<GlobalOptions>(), env, streams));
  const action =
    <A extends unknown[]>(fn: (c: CliContext, ...args: A) => Promise<void> | void) =>
    async (...args: A) => {
      await fn(ctx(), ...args);
    };

  program
    .description("Upload, list and manage your EmProps LoRAs")
    .version(VERSION, "-V, --version", "print the version of lora")
    .option(
      "--registry <url>",
      `lora-registry URL (else $LORA_REGISTRY_URL, the one logged in to, ${DEFAULT_REGISTRY_URL})`,
    )
    .option("--token <jwt>", "bearer token (else $LORA_TOKEN, or the one stored by login)")
    .option("--config <file>", "config file (else $LORA_CONFIG, or ~/.config/emprops/lora.json)")
    .addHelpText("after", EXIT_CODES)
    .showHelpAfterError("(run lora --help for usage)")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => streams.stdout.write(s),
      writeErr: (s) => streams.stderr.write(s),
    });

  program
    .command("login")
    .description("check a token against the registry and store it with the registry's address")
    .option("--token <jwt>", "the token (else read from standard input)")
    .action(action((c, opts: { token?: string }) => loginCommand(c, { token: opts.token ?? program.opts().token })));

  program
    .command("logout")
    .description("forget the stored token")
    .action(action((c) => logoutCommand(c)));

  program
    .command("upload")
    .description("upload a .safetensors or .pt LoRA; an interrupted upload resumes when run again")
    .argument("<file>", "the LoRA file")
    .option("--name <name>", "name shown in the library (default: the file name)")
    .option("--tags <tags>", "comma-separated tags", parseList)
    .option("--base-model <model>", "base model, e.g. SDXL (default: read from the file)")
    .option("--trigger-words <words>", "comma-separated trigger words (default: read from the file)", parseList)
    .option("--description <text>", "a description")
    .option("--restart", "start a new upload even if an earlier one of this file can be resumed")
    .option("--json", "print the uploaded LoRA as JSON")
    .action(action((c, file: string, opts: UploadOptions) => uploadCommand(c, file, opts)));

  program
    .command("ls")
    .description("list your LoRAs")
    .option("--search <text>", "only LoRAs whose name, tags, trigger words or description contain this text")
    .option("--tag <tag>", "only LoRAs with this tag (repeat for several)", collect)
    .option("--base-model <model>", "only LoRAs of this base model, e.g. SDXL")
    .option("--unused-since <time>", "only LoRAs not used since this time (ISO 8601), never used included", parseDate)
    .addOption(
      new Option("--sort <field>", "sort by (last_used: never used first with --order asc)")
        .choices(["created_at", "name", "size", "last_used"])
        .default("created_at"),
    )
    .addOption(new Option("--order <order>", "sort direction (default: desc)").choices(["asc", "desc"]))
    .option("--limit <n>", "page size (default 50, at most 200)", parsePositiveInt)
    .option("--page-token <token>", "the page after a previous listing")
    .option("--all", "follow every page")
    .option("--json", "print JSON")
    .action(action((c, opts: LsOptions) => lsCommand(c, opts)));

  program
    .command("show")
    .description("a LoRA's metadata and the workflows using it")
    .argument("<id>", "LoRA id", parseLoraId)
    .option("--json", "print JSON")
    .action(action((c, id: string, opts: { json?: boolean }) => showCommand(c, id, opts)));

  program
    .command("download")
    .description("download your own LoRA file as uploaded, with progress; its sha256 is checked")
    .argument("<id>", "LoRA id", parseLoraId)
    .option("-o, --output <file>", "where to save it (default: the LoRA's name, here)")
    .option("--force", "overwrite the file if it exists")
    .action(action((c, id: string, opts: DownloadOptions) => downloadCommand(c, id, opts)));

  program
    .command("rm")
    .description("delete a LoRA (asks first on a terminal)")
    .argument("<id>", "LoRA id", parseLoraId)
    .option("-y, --yes", "do not ask")
    .action(action((c, id: string, opts: { yes?: boolean }) => rmCommand(c, id, opts)));

  program
    .command("quota")
    .description("your storage quota and what uses it")
    .option("--json", "print JSON")
    .action(action((c, opts: { json?: boolean }) => quotaCommand(c, opts)));

  const admin = program.command("admin").description("administration (needs an admin token)");
  const quota = admin.command("quota").description("users' quotas");
  quota
    .command("set")
    .description("set a user's limits")
    .argument("<user>", "user id (UUID)", parseUuid)
    .option("--gb <n>", "storage limit in GiB", parseNonNegative)
    .option("--count <n>", "LoRA count limit", parseNonNegative)
    .option("--reset", "return to the default limits")
    .option("--json", "print JSON")
    .action(
      action((c, user: string, opts: { gb?: number; count?: number; reset?: boolean; json?: boolean }) =>
        adminQuotaSetCommand(c, user, opts),
      ),
    );
  quota
    .command("show")
    .description("a user's quota and LoRA sizes")
    .argument("<user>", "user id (UUID)", parseUuid)
    .option("--json", "print JSON")
    .action(action((c, user: string, opts: { json?: boolean }) => adminQuotaShowCommand(c, user, opts)));
  admin
    .command("cache-stats")
    .description("latest cache statistics of every machine")
    .option("--machine <id>", "only this machine")
    .option("--json", "print JSON")
    .action(action((c, opts: { machine?: string; json?: boolean }) => adminCacheStatsCommand(c, opts)));
  admin
    .command("audit")
    .description("the audit log, newest first")
    .option("--user <id>", "only events about this user", parseUuid)
    .option("--action <action>", "only this action, e.g. lora.delete")
    .option("--since <time>", "only events at or after this time (ISO 8601)", parseDate)
    .option("--limit <n>", "page size (default 50)", parsePositiveInt)
    .option("--page-token <token>", "the page after a previous listing")
    .option("--json", "print JSON")
    .action(action((c, opts: Parameters<typeof adminAuditCommand>[1]) => adminAuditCommand(c, opts)));

  try {
    await program.parseAsync(argv, { from: "user" });
    return EXIT.OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version end here too, with code 0; commander has printed the message.
      return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    const failure = describeError(err, context?.registryUrl ?? DEFAULT_REGISTRY_URL);
    streams.stderr.write(`lora: ${failure.message}\n`);
    return failure.exitCode;
  }
}

export { CliError };
