/**
 * `runs list|show|resume`.
 *
 * @module
 */
import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import { formatDuration } from "../duration.ts";
import { type CommandState, runWithProgress, startLogging, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson, resultJson, runJson, table } from "./output.ts";

/** Registers the `runs` commands. */
export function registerRuns(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const runs = program.command("runs").description("list, show and resume runs");

  withJson(
    runs.command("list").description("runs, newest first").option(
      "--dag <dag>",
      "only this DAG's runs",
    )
      .option("--limit <n>", "at most this many", "100"),
  ).action(async (opts: { dag?: string; limit: string; json?: boolean }) => {
    const limit = Number(opts.limit);
    if (!Number.isInteger(limit) || limit < 1) {
      throw new UsageError(`Invalid --limit "${opts.limit}": expected a whole number >= 1`);
    }
    const store = await context().store();
    const list = await store.listRuns({ ...(opts.dag ? { dagId: opts.dag } : {}), limit });
    const rows = list.map((r) => ({
      runId: r.runId,
      dagId: r.dagId,
      logicalDate: r.logicalDate.toISOString(),
      state: r.state,
      runType: r.runType,
      startedAt: r.startedAt?.toISOString() ?? null,
      endedAt: r.endedAt?.toISOString() ?? null,
    }));
    if (opts.json) printJson(rows);
    else if (rows.length === 0) console.log("No runs");
    else {
      console.log(table(
        ["RUN", "STATE", "TYPE", "STARTED", "DURATION"],
        list.map((r) => [
          r.runId,
          r.state,
          r.runType,
          r.startedAt?.toISOString() ?? null,
          r.startedAt && r.endedAt
            ? formatDuration(r.endedAt.getTime() - r.startedAt.getTime())
            : null,
        ]),
      ));
    }
  });

  withJson(
    runs.command("show").description("a run and its task instances").argument("<run_id>", "run id"),
  )
    .action(async (runId: string, opts: { json?: boolean }) => {
      const ctx = context();
      const store = await ctx.store();
      const run = await store.getRun(runId);
      if (!run) throw new UsageError(`Unknown run "${runId}": see \`runs list\``);
      const tis = await store.listTaskInstances(runId);
      const order = (await ctx.dags()).dags.get(run.dagId)?.order;
      const shown = runJson(run, tis, order);
      if (opts.json) {
        printJson(shown);
        return;
      }
      console.log(`Run ${shown.runId}: ${shown.state}`);
      console.log(
        `  DAG ${shown.dagId}, interval ${shown.dataInterval.start} to ${shown.dataInterval.end}, ${shown.runType}`,
      );
      console.log("");
      console.log(table(
        ["TASK", "STATE", "TRIES", "DURATION", "ZONE", "JOB KEY", "ERROR"],
        shown.tasks.map((t) => [
          t.taskId,
          t.state,
          t.attempts,
          t.durationMs === null ? null : formatDuration(t.durationMs),
          t.zone,
          t.jobKey.slice(0, 12),
          t.error,
        ]),
      ));
    });

  withJson(
    runs.command("resume").description("continues a failed or interrupted run").argument(
      "<run_id>",
      "run id",
    ),
  )
    .action(async (runId: string, opts: { json?: boolean }) => {
      const ctx = context();
      const store = await ctx.store();
      const run = await store.getRun(runId);
      if (!run) throw new UsageError(`Unknown run "${runId}": see \`runs list\``);
      const dag = await ctx.dag(run.dagId);
      startLogging(ctx);
      const result = await runWithProgress({
        dag,
        interval: { start: run.intervalStart, end: run.intervalEnd },
        params: run.params,
        store,
        home: ctx.home,
        json: opts.json ?? false,
        runType: run.runType,
      });
      if (opts.json) printJson(resultJson(result));
      if (result.state !== "success") state.exitCode = 1;
    });
}
