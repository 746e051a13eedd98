/**
 * The `carrel` command line: `deno task carrel <command>`.
 *
 * Exit codes: 0 success; 1 a run failed or a DAG is invalid; 2 a usage error.
 *
 * @module
 */
import { Command, CommanderError } from "commander";
import { DagError, errorMessage, UsageError } from "../core/errors.ts";
import { LeaseLostError } from "../core/run/attempt.ts";
import { RunBusyError } from "../core/run/local.ts";
import type { CommandState } from "./common.ts";
import { CliContext } from "./context.ts";
import { registerDags } from "./dags.ts";
import { registerRuns } from "./runs.ts";
import { registerTasks } from "./tasks.ts";
import { registerAudit } from "./audit.ts";
import { registerCompliance } from "./compliance.ts";
import { registerKeys } from "./keys.ts";
import { registerPurge } from "./purge.ts";
import { registerScheduling } from "./scheduling.ts";
import { registerUi } from "./ui.ts";

/** Builds the program. */
export function buildProgram(state: CommandState, contextRef: { current?: CliContext }): Command {
  const program = new Command();
  program
    .name("carrel")
    .description("Carrel: privacy-bounded DAG pipelines for library systems")
    .option("--dags <dir>", "the DAGs folder (default: $CARREL_DAGS_DIR or ./dags)")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => Deno.stdout.writeSync(new TextEncoder().encode(s)),
      writeErr: (s) => Deno.stderr.writeSync(new TextEncoder().encode(s)),
      outputError: (s, write) => write(s.replace(/^error: /, "Error: ")),
    });
  const context = () => {
    contextRef.current ??= new CliContext({ dags: program.opts<{ dags?: string }>().dags });
    return contextRef.current;
  };
  registerDags(program, context, state);
  registerTasks(program, context, state);
  registerRuns(program, context, state);
  registerAudit(program, context, state);
  registerPurge(program, context, state);
  registerKeys(program, context, state);
  registerCompliance(program, context, state);
  registerScheduling(program, context, state);
  registerUi(program, context, state);
  const exitOverride = (cmd: Command) => {
    cmd.exitOverride();
    cmd.configureOutput(program.configureOutput());
    for (const sub of cmd.commands) exitOverride(sub);
  };
  exitOverride(program);
  return program;
}

/** Runs the CLI with `args` and returns the exit code. Never shows a stack trace. */
export async function main(args: string[]): Promise<number> {
  const state: CommandState = { exitCode: 0 };
  const ref: { current?: CliContext } = {};
  const program = buildProgram(state, ref);
  try {
    if (args.length === 0) {
      program.outputHelp();
      return 0;
    }
    await program.parseAsync(args, { from: "user" });
    return state.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (
        error.code === "commander.helpDisplayed" || error.code === "commander.help" ||
        error.code === "commander.version"
      ) return 0;
      return 2;
    }
    const message = errorMessage(error);
    console.error(`Error: ${message}`);
    if (error instanceof UsageError) return 2;
    if (
      error instanceof DagError || error instanceof RunBusyError || error instanceof LeaseLostError
    ) return 1;
    return 1;
  } finally {
    await ref.current?.[Symbol.asyncDispose]().catch(() => {});
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
