/**
 * `purge --older-than DURATION [--audit-older-than DURATION] [--dry-run]`.
 *
 * @module
 */
import type { Command } from "commander";
import { parseDuration } from "../core/duration.ts";
import { UsageError } from "../core/errors.ts";
import { purge } from "../core/retention.ts";
import { type CommandState, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson } from "./output.ts";

function cutoff(flag: string, value: string): Date {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) {
    throw new UsageError(`Invalid ${flag} "${value}": expected a duration such as 90d or 12h`);
  }
  return new Date(Date.now() - ms);
}

/** Registers `purge`. */
export function registerPurge(
  program: Command,
  context: () => CliContext,
  _state: CommandState,
): void {
  withJson(
    program.command("purge")
      .description("retention: deletes run data older than a duration")
      .requiredOption(
        "--older-than <duration>",
        "delete runs, outputs, datasets, scratch and logs older than this (e.g. 90d)",
      )
      .option(
        "--audit-older-than <duration>",
        "also delete audit entries older than this (an anchor keeps the chain verifiable)",
      )
      .option("--dry-run", "show what would be deleted"),
  ).action(
    async (
      opts: { olderThan: string; auditOlderThan?: string; dryRun?: boolean; json?: boolean },
    ) => {
      const ctx = context();
      const report = await purge(await ctx.store(), ctx.home, {
        olderThan: cutoff("--older-than", opts.olderThan),
        ...(opts.auditOlderThan
          ? { auditOlderThan: cutoff("--audit-older-than", opts.auditOlderThan) }
          : {}),
        dryRun: opts.dryRun ?? false,
      });
      if (opts.json) {
        printJson(report);
        return;
      }
      const verb = report.dryRun ? "Would delete" : "Deleted";
      console.log(
        `${verb} ${report.runs} runs (${report.taskInstances} task instances) older than ${report.olderThan}`,
      );
      console.log(
        `${verb} ${report.files.workspaces} run workspaces, ${report.files.enclave} enclave scratch folders, ${report.files.tmp} temporary folders, ${report.files.logs} log files`,
      );
      if (report.auditEntries !== null) {
        console.log(
          `${verb} ${report.auditEntries} audit entries (an anchor entry keeps the chain verifiable)`,
        );
      }
    },
  );
}
