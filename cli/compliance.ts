/**
 * `compliance report [--json]`: the deployment and compliance checklist, each item pass/fail with
 * its NIST SP 800-53 Rev. 5 control. Exit 1 when a required item fails.
 *
 * @module
 */
import type { Command } from "commander";
import { complianceItems } from "../core/compliance.ts";
import { type CommandState, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson } from "./output.ts";

/** The checklist itself lives in core, shared with the console. */
export { type ComplianceItem, complianceItems } from "../core/compliance.ts";

/** Registers `compliance report`. */
export function registerCompliance(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const compliance = program.command("compliance").description(
    "the deployment and compliance checklist",
  );
  withJson(
    compliance.command("report").description(
      "each item pass/fail with its NIST SP 800-53 control; exit 1 when a required item fails",
    ),
  )
    .action(async (opts: { json?: boolean }) => {
      const ctx = context();
      // Verifying the trail must not extend it: no checkpoint is signed for this command.
      ctx.checkpointAudit = false;
      if (!Deno.env.get("CARREL_DATABASE_URL")) {
        await Deno.mkdir(ctx.home, { recursive: true, mode: 0o700 }).catch(() => {});
      }
      const items = await complianceItems(ctx);
      const failed = items.filter((i) => i.required && i.status === "fail");
      if (opts.json) printJson({ passed: failed.length === 0, items });
      else {
        for (const i of items) {
          console.log(
            `${i.status.toUpperCase().padEnd(4)}  ${i.control.padEnd(18)}  ${i.title}: ${i.detail}`,
          );
        }
        console.log(
          `\n${
            failed.length === 0
              ? "All required items pass"
              : `${failed.length} required item(s) fail`
          }`,
        );
      }
      if (failed.length > 0) state.exitCode = 1;
    });
}
