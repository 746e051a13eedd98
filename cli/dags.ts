/**
 * `dags list|show|validate|run|test|pause|unpause`.
 *
 * @module
 */
import type { Command } from "commander";
import { join } from "node:path";
import { UsageError } from "../core/errors.ts";
import { cliActor, guardResume, refuseFutureDate, setDagPaused } from "../core/actions.ts";
import { runIdFor } from "../core/job_key.ts";
import { noteChange } from "./runs.ts";
import { type GraphFormat, renderGraph } from "../core/render.ts";
import { nextFireAfter } from "../core/schedule.ts";
import {
  chooseInterval,
  collectParam,
  type CommandState,
  paramsFor,
  parseDateFlag,
  runWithProgress,
  startLogging,
  withJson,
} from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson, resultJson, table } from "./output.ts";

/** Registers the `dags` commands. */
export function registerDags(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const dags = program.command("dags").description("list, show, validate, run and test DAGs");

  withJson(
    dags.command("list").description(
      "the DAGs found, with schedule, next run, paused state and load errors",
    ),
  )
    .action(async (opts: { json?: boolean }) => {
      const ctx = context();
      const { dags: found, errors } = await ctx.dags();
      const store = await ctx.store();
      const paused = await store.pausedDags();
      const now = new Date();
      const rows = [...found.values()].sort((a, b) => a.id.localeCompare(b.id)).map((dag) => ({
        id: dag.id,
        schedule: dag.schedule,
        file: dag.file ?? null,
        tasks: dag.tasks.size,
        paused: paused.get(dag.id) ?? false,
        nextRun:
          nextFireAfter(dag, dag.start && dag.start > now ? new Date(dag.start.getTime() - 1) : now)
            ?.toISOString() ?? null,
        timezone: dag.timezone,
        description: dag.description ?? null,
      }));
      if (opts.json) {
        printJson({ dags: rows, errors });
        return;
      }
      if (rows.length === 0) console.log(`No DAGs in ${ctx.dagsDir}`);
      else {
        console.log(table(
          ["DAG", "SCHEDULE", "NEXT RUN", "PAUSED", "TASKS", "FILE"],
          rows.map((
            r,
          ) => [
            r.id,
            r.schedule ?? "manual",
            r.nextRun ?? "-",
            r.paused ? "yes" : "no",
            r.tasks,
            r.file,
          ]),
        ));
      }
      for (const e of errors) console.error(`Error: ${e.message}`);
    });

  withJson(
    dags.command("show").description("the graph, with zones and checkpoints marked").argument(
      "<dag>",
      "DAG id",
    )
      .option("--format <format>", "text, mermaid, dot or json", "text"),
  ).action(async (id: string, opts: { format: string; json?: boolean }) => {
    const format = (opts.json ? "json" : opts.format) as GraphFormat;
    if (!["text", "mermaid", "dot", "json"].includes(format)) {
      throw new UsageError(
        `Invalid --format "${opts.format}": expected text, mermaid, dot or json`,
      );
    }
    console.log(renderGraph(await context().dag(id), format));
  });

  withJson(
    dags.command("validate").description("loads and checks every DAG; exit 1 if any is invalid"),
  )
    .action(async (opts: { json?: boolean }) => {
      const { dags: found, errors } = await context().dags();
      if (opts.json) printJson({ valid: [...found.keys()].sort(), errors });
      else {
        for (const id of [...found.keys()].sort()) {
          console.log(`ok     ${id} (${found.get(id)!.file})`);
        }
        for (const e of errors) console.log(`error  ${e.message}`);
        console.log(`${found.size} valid, ${errors.length} invalid`);
      }
      if (errors.length > 0) state.exitCode = 1;
    });

  for (const [name, persist] of [["run", true], ["test", false]] as const) {
    withJson(
      dags.command(name)
        .description(
          persist
            ? "runs (or resumes) the run for a logical date, persisting state"
            : "runs the whole DAG in-process with nothing persisted",
        )
        .argument("<dag>", "DAG id")
        .option(
          "--date <iso>",
          "logical date (default: the latest complete interval, or now for manual DAGs)",
        )
        .option("--param <key=value>", "override a param (repeatable)", collectParam)
        .option("--allow-future", "run a logical date that lies in the future")
        .option(
          "--allow-changed",
          "resume the run even though the DAG's code changed since it began",
        ),
    ).action(
      async (
        id: string,
        opts: {
          date?: string;
          param?: Record<string, string>;
          json?: boolean;
          allowFuture?: boolean;
          allowChanged?: boolean;
        },
      ) => {
        const ctx = context();
        const dag = await ctx.dag(id);
        const interval = chooseInterval(dag, parseDateFlag(opts.date));
        refuseFutureDate(dag.id, interval.start, opts.allowFuture === true);
        const params = paramsFor(dag, opts.param);
        if (persist) {
          const runId = runIdFor(dag.id, interval.start);
          noteChange(
            await guardResume(await ctx.store(), dag, runId, {
              allowChanged: opts.allowChanged,
              by: cliActor(),
            }),
            dag.id,
            runId,
          );
        }
        startLogging(ctx);
        let home = ctx.home;
        let scratch: string | undefined;
        if (!persist) {
          await Deno.mkdir(join(ctx.home, "tmp"), { recursive: true, mode: 0o700 });
          scratch = await Deno.makeTempDir({ dir: join(ctx.home, "tmp"), prefix: "dags-test-" });
          home = scratch;
        }
        try {
          const result = await runWithProgress({
            dag,
            interval,
            params,
            store: persist ? await ctx.store() : undefined,
            home,
            json: opts.json ?? false,
          });
          if (opts.json) printJson(resultJson(result, { persisted: persist }));
          else if (persist) {
            console.log(`\nNext: deno task carrel runs show ${result.runId}`);
          }
          if (result.state !== "success") state.exitCode = 1;
        } finally {
          if (scratch) await Deno.remove(scratch, { recursive: true }).catch(() => {});
        }
      },
    );
  }

  for (const [name, paused] of [["pause", true], ["unpause", false]] as const) {
    withJson(
      dags.command(name).description(paused ? "stops scheduling a DAG" : "resumes scheduling a DAG")
        .argument("<dag>", "DAG id"),
    )
      .action(async (id: string, opts: { json?: boolean }) => {
        const ctx = context();
        const dag = await ctx.dag(id);
        const store = await ctx.store();
        await setDagPaused(store, dag.id, paused, cliActor());
        if (opts.json) printJson({ dagId: dag.id, paused });
        else console.log(`DAG ${dag.id} ${paused ? "paused" : "unpaused"}`);
      });
  }
}
