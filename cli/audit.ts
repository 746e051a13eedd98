/**
 * `audit verify|export|checkpoint`: check the hash chains and the signed checkpoints, print
 * entries (or the checkpoints, or the public key) for an auditor, sign a checkpoint now.
 *
 * @module
 */
import type { Command } from "commander";
import { exportEntry } from "../core/audit.ts";
import { checkpointPaths, CheckpointSigner, readCheckpointFile } from "../core/audit_checkpoint.ts";
import { writeCheckpoint } from "../core/audit_checkpointer.ts";
import { type AuditVerdict, describeBreak, verifyAudit } from "../core/audit_verify.ts";
import { UsageError } from "../core/errors.ts";
import type { CommandState } from "./common.ts";
import { parseDateFlag, startLogging, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson } from "./output.ts";

/** One line for people about a verdict. */
export function verdictLine(verdict: AuditVerdict): string {
  if (!verdict.ok) {
    return `Audit chain broken at ${describeBreak(verdict)} (${verdict.entries} entries read)`;
  }
  const cp = verdict.checkpoints;
  const signed = cp.latest
    ? `; ${cp.verified} signed checkpoint${
      cp.verified === 1 ? "" : "s"
    } verified, the latest of ${cp.latest.at} (global entry ${cp.latest.pos})`
    : "";
  const purged = verdict.purgedBefore
    ? `; retention purged entries before ${verdict.purgedBefore}`
    : "";
  return `Audit chain intact: ${verdict.entries} entries in ${verdict.chains} chain${
    verdict.chains === 1 ? "" : "s"
  }, global head ${verdict.head}${signed}${purged}`;
}

const write = (text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text));

/** Registers the `audit` commands. */
export function registerAudit(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const audit = program.command("audit").description(
    "check and export the hash-chained audit trail and its signed checkpoints",
  );

  withJson(
    audit.command("verify")
      .description(
        "recomputes every hash chain and checks it against its seals and the signed checkpoints; " +
          "exit 1 naming the first bad entry",
      )
      .option("--checkpoints <file>", "an exported checkpoint file to check against (an auditor's)")
      .option("--public-key <file>", "the public key (JWK) that signed --checkpoints"),
  )
    .action(async (opts: { json?: boolean; checkpoints?: string; publicKey?: string }) => {
      if ((opts.checkpoints === undefined) !== (opts.publicKey === undefined)) {
        throw new UsageError("--checkpoints and --public-key go together");
      }
      const ctx = context();
      ctx.checkpointAudit = false;
      const store = await ctx.store();
      const verdict = await verifyAudit(
        store,
        opts.checkpoints
          ? { checkpoints: opts.checkpoints, publicKey: opts.publicKey! }
          : { home: ctx.home },
      );
      if (opts.json) printJson(verdict);
      else {
        console.log(verdictLine(verdict));
        for (const w of verdict.warnings) console.log(`Warning: ${w}`);
      }
      if (!verdict.ok) state.exitCode = 1;
    });

  audit.command("export")
    .description(
      "prints audit entries as JSON lines (or the signed checkpoints, or the public key)",
    )
    .option("--run <run_id>", "only the entries of this run (its correlation id)")
    .option("--since <iso>", "only entries at or after this time")
    .option("--checkpoints", "print the signed checkpoints (JSON lines) instead of entries")
    .option("--public-key", "print the public key (JWK) that verifies the checkpoints")
    .action(
      async (
        opts: { run?: string; since?: string; checkpoints?: boolean; publicKey?: boolean },
      ) => {
        const ctx = context();
        ctx.checkpointAudit = false;
        const paths = checkpointPaths(ctx.home);
        if (opts.publicKey) {
          const signer = await CheckpointSigner.open(paths.key, { create: false });
          if (!signer) {
            throw new UsageError(
              `No audit signing key at ${paths.key}: none was made yet (see \`audit checkpoint\`)`,
            );
          }
          write(JSON.stringify(signer.publicJwk) + "\n");
          return;
        }
        if (opts.checkpoints) {
          const file = await readCheckpointFile(paths.file);
          for (const c of file?.checkpoints ?? []) write(JSON.stringify(c.checkpoint) + "\n");
          return;
        }
        const since = parseDateFlag(opts.since, "--since");
        const store = await ctx.store();
        for await (
          const e of store.iterateAudit({
            ...(opts.run ? { correlationId: opts.run } : {}),
            ...(since ? { since } : {}),
          })
        ) {
          write(JSON.stringify(exportEntry(e)) + "\n");
        }
      },
    );

  withJson(
    audit.command("checkpoint")
      .description(
        "seals the run chains and signs the global chain's head now (Carrel also does this " +
          "after each command and every CARREL_AUDIT_INTERVAL)",
      )
      .option(
        "--restart",
        "keep the current checkpoint file aside and start a new one (after replacing the store on purpose)",
      ),
  )
    .action(async (opts: { json?: boolean; restart?: boolean }) => {
      const ctx = context();
      ctx.checkpointAudit = false;
      startLogging(ctx);
      const outcome = await writeCheckpoint(await ctx.store(), ctx.home, {
        restart: opts.restart ?? false,
      });
      if ("refused" in outcome) {
        if (opts.json) printJson({ written: false, file: outcome.file, reason: outcome.refused });
        else console.log(`Audit checkpoint refused: ${outcome.refused}`);
        state.exitCode = 1;
        return;
      }
      const cp = outcome.written;
      if (opts.json) printJson({ written: true, file: outcome.file, checkpoint: cp });
      else {
        console.log(
          `Audit checkpoint signed: global entry ${cp.global.pos} (${cp.chains} chains), key ${cp.keyId}, in ${outcome.file}`,
        );
      }
    });
}
