/**
 * `tasks test|clear`.
 *
 * @module
 */
import type { Command } from "commander";
import { join } from "node:path";
import { type ResolvedDag } from "../dag.ts";
import { Dataset, isDatasetRef, Workspace } from "../dataset.ts";
import { DagError, UsageError } from "../errors.ts";
import { executeRun, jobKeysFor } from "../executor.ts";
import { descendants } from "../graph.ts";
import { ownerIsDead } from "../owner.ts";
import type { StateStore } from "../state/store.ts";
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
      await Deno.mkdir(join(ctx.home, "tmp"), { recursive: true, mode: 0o700 });
      const scratch = await Deno.makeTempDir({ dir: join(ctx.home, "tmp"), prefix: "tasks-test-" });
      try {
        // One attempt: retries are for production runs, not for a developer at the keyboard.
        const single: ResolvedDag = { ...dag, tasks: new Map(dag.tasks) };
        single.tasks.set(taskId, { ...t, retries: 0 });
        const result = await executeRun({
          dag: single,
          interval,
          params,
          home: scratch,
          seed,
          only: new Set([taskId]),
        });
        const summary = result.tasks.find((x) => x.taskId === taskId)!;
        const output = result.outputs.get(taskId);
        const shown = await describeOutput(output, t.outputZone === "enclave");
        if (opts.json) {
          printJson({
            dagId: dag.id,
            taskId,
            logicalDate: result.logicalDate,
            state: summary.state,
            attempts: summary.attempts,
            jobKey: summary.jobKey,
            zone: summary.zone,
            durationMs: summary.durationMs,
            error: summary.error,
            persisted: false,
            output: shown,
          });
        } else {
          console.log(
            `Task ${dag.id}.${taskId}: ${summary.state}${
              summary.durationMs === null ? "" : ` in ${summary.durationMs}ms`
            } (nothing persisted)`,
          );
          if (summary.error) console.log(`Error: ${summary.error}`);
          if (summary.state === "success") {
            console.log(`Output:\n${JSON.stringify(shown, null, 2)}`);
          }
        }
        if (summary.state !== "success" && summary.state !== "skipped") state.exitCode = 1;
      } finally {
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
      if (!dag.tasks.has(taskId)) {
        throw new UsageError(
          `Unknown task "${taskId}" in DAG "${dag.id}": tasks are ${dag.order.join(", ")}`,
        );
      }
      const store = await ctx.store();
      const run = await store.getRun(opts.run);
      if (!run || run.dagId !== dag.id) {
        throw new UsageError(
          `Unknown run "${opts.run}" of DAG "${dag.id}": see \`runs list --dag ${dag.id}\``,
        );
      }
      if (
        run.state === "running" && run.owner && !ownerIsDead(run.owner) &&
        (run.leaseUntil?.getTime() ?? 0) > Date.now()
      ) {
        throw new DagError(
          `Cannot clear tasks of "${run.runId}": it is running now; wait for it to end`,
        );
      }
      const ids = [taskId, ...(opts.downstream ? [...descendants(dag.downstream, [taskId])] : [])];
      const cleared = await clearTasks(store, dag, run.runId, ids);
      if (opts.json) printJson({ runId: run.runId, cleared });
      else {console.log(
          `Cleared ${cleared.length} task instance(s) of ${run.runId}: ${
            cleared.join(", ") || "none"
          }\nNext: deno task carrel runs resume ${run.runId}`,
        );}
    },
  );
}

/** Resets task instances to `scheduled` and re-queues the run. Returns the cleared task ids. */
export async function clearTasks(
  store: StateStore,
  dag: ResolvedDag,
  runId: string,
  ids: string[],
): Promise<string[]> {
  const run = (await store.getRun(runId))!;
  const keys = jobKeysFor(dag, { start: run.intervalStart, end: run.intervalEnd }, run.params);
  const cleared: string[] = [];
  for (const id of dag.order.filter((x) => ids.includes(x))) {
    const ok = await store.updateTaskInstance(keys.get(id)!, {
      state: "scheduled",
      nextAttemptAt: null,
      owner: null,
      leaseUntil: null,
      error: null,
      output: null,
      outputKind: null,
      endedAt: null,
    }, {
      audit: [{
        correlationId: runId,
        dagId: dag.id,
        taskId: id,
        operation: "task:clear",
        status: "scheduled",
      }],
    });
    if (ok) cleared.push(id);
  }
  if (cleared.length > 0) {
    await store.updateRun(runId, { state: "queued", endedAt: null }, {
      expect: { states: ["success", "failed", "queued"] },
      audit: [{
        correlationId: runId,
        dagId: dag.id,
        operation: "run:clear",
        status: "queued",
        recordCount: cleared.length,
      }],
    });
  }
  return cleared;
}

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
