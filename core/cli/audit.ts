/**
 * `audit verify|export`: check the hash chain, print entries as JSON lines.
 *
 * @module
 */
import type { Command } from "commander";
import { type AuditEntry, verifyChain } from "../audit.ts";
import type { CommandState } from "./common.ts";
import { parseDateFlag, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson } from "./output.ts";

/** An entry in the export format: the seed guide's field names, plus the chain. */
export function exportEntry(e: AuditEntry) {
  return {
    timestamp: e.at,
    correlation_id: e.correlationId,
    service: "carrel",
    operation: e.operation,
    record_count: e.recordCount,
    status: e.status,
    compliance_boundary: "enforced",
    dag_id: e.dagId,
    task_id: e.taskId,
    key_version: e.keyVersion,
    detail: e.detail,
    seq: e.seq,
    prev_hash: e.prevHash,
    hash: e.hash,
  };
}

/** Registers the `audit` commands. */
export function registerAudit(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const audit = program.command("audit").description(
    "check and export the hash-chained audit trail",
  );

  withJson(
    audit.command("verify").description(
      "recomputes the hash chain; exit 1 naming the first bad entry",
    ),
  )
    .action(async (opts: { json?: boolean }) => {
      const store = await context().store();
      const verdict = await verifyChain(store.iterateAudit(), await store.auditHead());
      if (opts.json) printJson(verdict);
      else if (verdict.ok) {
        console.log(`Audit chain intact: ${verdict.entries} entries, head ${verdict.head}`);
      } else {console.log(
          `Audit chain broken at entry ${verdict.seq}: ${verdict.reason} (${verdict.entries} entries read)`,
        );}
      if (!verdict.ok) state.exitCode = 1;
    });

  audit.command("export")
    .description("prints audit entries as JSON lines")
    .option("--run <run_id>", "only the entries of this run (its correlation id)")
    .option("--since <iso>", "only entries at or after this time")
    .action(async (opts: { run?: string; since?: string }) => {
      const since = parseDateFlag(opts.since, "--since");
      const store = await context().store();
      const encoder = new TextEncoder();
      for await (
        const e of store.iterateAudit({
          ...(opts.run ? { correlationId: opts.run } : {}),
          ...(since ? { since } : {}),
        })
      ) {
        Deno.stdout.writeSync(encoder.encode(JSON.stringify(exportEntry(e)) + "\n"));
      }
    });
}
