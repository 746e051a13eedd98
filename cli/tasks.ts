/**
 * `tasks test|clear`.
 *
 * @module
 */
import type { Command } from "commander";
import { join } from "node:path";
import { type ResolvedDag } from "../core/dag.ts";
import { Dataset, isDatasetRef, Workspace } from "../core/dataset.ts";
import { UsageError } from "../core/errors.ts";
import { clearTask, cliActor } from "../core/actions.ts";
import { runIdFor } from "../core/job_key.ts";
import { runAttempt, taskContext } from "../core/run/attempt.ts";
import { jobKeysFor } from "../core/run/plan.ts";
import {
  chooseInterval,
  collectParam,
  type CommandState,
  paramsFor,
  parseDateFlag,
  startLogging,
  withJson,
} from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson } from "./output.ts";

const PREVIEW = 20;

/** Registers the `tasks` commands. */
export function registerTasks(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const tasks = program.command("tasks").description(
    "test one task alone, or clear task instances",
  );

  withJson(
    tasks.command("test")
      .description("runs one task alone: no dependency checks, nothing persisted")
      .argument("<dag>", "DAG id")
      .argument("<task>", "task id")
      .option("--date <iso>", "logical date")
      .option("--input <file>", "JSON object of upstream outputs keyed by upstream task id")
      .option("--param <key=value>", "override a param (repeatable)", collectParam),
  ).action(
    async (
      dagId: string,
      taskId: string,
      opts: { date?: string; input?: string; param?: Record<string, string>; json?: boolean },
    ) => {
      const ctx = context();
      const dag = await ctx.dag(dagId);
      const t = dag.tasks.get(taskId);
      if (!t) {
        throw new UsageError(
          `Unknown task "${taskId}" in DAG "${dag.id}": tasks are ${dag.order.join(", ")}`,
        );
      }
      const interval = chooseInterval(dag, parseDateFlag(opts.date));
      const params = paramsFor(dag, opts.param);
      const seed = opts.input
        ? await inputsFromFile(opts.input, dag, taskId)
        : await inputsFromLatestRun(ctx, dag, taskId);
      startLogging(ctx, { console: true });
      await ctx.keepLogsOutOfStore();
      await Deno.mkdir(join(ctx.home, "tmp"), { recursive: true, mode: 0o700 });
      const scratch = await Deno.makeTempDir({ dir: join(ctx.home, "tmp"), prefix: "tasks-test-" });
      const workspace = new Workspace(scratch, runIdFor(dag.id, interval.start));
      try {
        // The body alone, once, whatever its trigger rule: no dependency checks, no retries (as
        // Airflow's `tasks test`); inputs are given, nothing is persisted.
        const jobKey = jobKeysFor(dag, interval, params).get(taskId)!;
        const inputs = Object.fromEntries(seed);
        const inputTags = Object.fromEntries(t.after.map((u) => [u, dag.tasks.get(u)!.outputTags]));
        const run = {
          dagId: dag.id,
          runId: runIdFor(dag.id, interval.start),
          interval,
          params,
          workspace,
        };
        const outcome = await runAttempt({
          task: t,
          attempt: 1,
          context: taskContext(run, t, jobKey, inputs, inputTags),
        });
        // A sensor's poke that found nothing (reschedule mode) is shown in Airflow's state name.
        const taskState = outcome.kind === "reschedule" ? "up_for_reschedule" : outcome.kind;
        const durationMs = outcome.endedAt.getTime() - outcome.startedAt.getTime();
        const error = outcome.kind === "success" || outcome.kind === "reschedule"
          ? null
          : outcome.message;
        const shown = outcome.kind === "success"
          ? await describeOutput(outcome.value, t.outputZone === "enclave")
          : null;
        const counts = Object.fromEntries(outcome.counts.map((c) => [c.operation, c.records]));
        if (opts.json) {
          printJson({
            dagId: dag.id,
            taskId,
            logicalDate: interval.start.toISOString(),
            state: taskState,
            attempts: 1,
            jobKey,
            zone: t.zone,
            durationMs,
            error,
            counts,
            persisted: false,
            output: shown,
          });
        } else {
          console.log(
            `Task ${dag.id}.${taskId}: ${taskState} in ${durationMs}ms (nothing persisted)`,
          );
          if (error) console.log(`Error: ${error}`);
          for (const c of outcome.counts) console.log(`Counted: ${c.operation} ${c.records}`);
          if (outcome.kind === "success") {
            console.log(`Output:\n${JSON.stringify(shown, null, 2)}`);
          }
        }
        if (outcome.kind === "failed") state.exitCode = 1;
      } finally {
        await workspace.removeEnclave();
        await Deno.remove(scratch, { recursive: true }).catch(() => {});
      }
    },
  );

  withJson(
    tasks.command("clear")
      .description("marks task instances for re-execution")
      .argument("<dag>", "DAG id")
      .argument("<task>", "task id")
      .requiredOption("--run <run_id>", "the run whose task instances to clear")
      .option("--downstream", "clear the tasks downstream of it too"),
  ).action(
    async (
      dagId: string,
      taskId: string,
      opts: { run: string; downstream?: boolean; json?: boolean },
    ) => {
      const ctx = context();
      const dag = await ctx.dag(dagId);
      const store = await ctx.store();
      const cleared = await clearTask(store, dag, opts.run, taskId, {
        downstream: opts.downstream,
        by: cliActor(),
      });
      const run = { runId: opts.run };
      if (opts.json) printJson({ runId: run.runId, cleared });
      else {console.log(
          `Cleared ${cleared.length} task instance(s) of ${run.runId}: ${
            cleared.join(", ") || "none"
          }\nNext: deno task carrel runs resume ${run.runId}`,
        );}
    },
  );
}

/** Shared with the console (`core/actions.ts`). */
export { clearTasks } from "../core/actions.ts";

async function inputsFromFile(
  path: string,
  dag: ResolvedDag,
  taskId: string,
): Promise<Map<string, unknown>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound
      ? "the file does not exist"
      : "it is not valid JSON";
    throw new UsageError(`Cannot read --input ${path}: ${why}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new UsageError(
      `Cannot read --input ${path}: expected a JSON object keyed by upstream task id`,
    );
  }
  const upstream = dag.tasks.get(taskId)!.after;
  const unknown = Object.keys(parsed).filter((k) => !upstream.includes(k));
  if (unknown.length) {
    throw new UsageError(
      `Cannot use --input ${path}: ${unknown.join(", ")} ${
        unknown.length > 1 ? "are not upstreams" : "is not an upstream"
      } of "${taskId}" (upstreams: ${upstream.join(", ") || "none"})`,
    );
  }
  return new Map(upstream.map((id) => [id, (parsed as Record<string, unknown>)[id] ?? null]));
}

async function inputsFromLatestRun(
  ctx: CliContext,
  dag: ResolvedDag,
  taskId: string,
): Promise<Map<string, unknown>> {
  const upstream = dag.tasks.get(taskId)!.after;
  const seed = new Map<string, unknown>();
  if (upstream.length === 0) return seed;
  const store = await ctx.store();
  const runs = await store.listRuns({ dagId: dag.id, limit: 50 });
  for (const run of runs) {
    const tis = await store.listTaskInstances(run.runId);
    const byTask = new Map(tis.map((ti) => [ti.taskId, ti]));
    if (!upstream.every((u) => byTask.get(u)?.state === "success")) continue;
    const workspace = new Workspace(ctx.home, run.runId);
    for (const u of upstream) {
      const ti = byTask.get(u)!;
      if (ti.outputKind === "enclave") {
        throw new UsageError(
          `Cannot test task "${taskId}" with inputs from ${run.runId}: upstream "${u}" is in the enclave and its output is never stored; pass --input FILE`,
        );
      }
      seed.set(
        u,
        ti.outputKind === "dataset" && isDatasetRef(ti.output)
          ? workspace.open(ti.output)
          : ti.output,
      );
    }
    return seed;
  }
  throw new UsageError(
    `Cannot test task "${taskId}": no persisted run of "${dag.id}" has all of its upstreams (${
      upstream.join(", ")
    }) succeeded; pass --input FILE`,
  );
}

async function describeOutput(output: unknown, enclave: boolean): Promise<unknown> {
  if (output instanceof Dataset) {
    if (enclave) return { withheld: "enclave output", records: output.records };
    const preview: unknown[] = [];
    for await (const r of output) {
      if (preview.length >= PREVIEW) break;
      preview.push(r);
    }
    return { dataset: output.ref.$dataset.path, records: output.records, preview };
  }
  if (enclave) {
    const fields = Array.isArray(output) && output[0] && typeof output[0] === "object"
      ? Object.keys(output[0] as object)
      : undefined;
    return {
      withheld: "enclave output",
      ...(Array.isArray(output)
        ? { records: output.length }
        : { type: output === null ? "null" : typeof output }),
      ...(fields ? { fields } : {}),
    };
  }
  return output ?? null;
}
