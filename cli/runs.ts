/**
 * `runs list|show|resume|logs`.
 *
 * @module
 */
import type { Command } from "commander";
import { UsageError } from "../core/errors.ts";
import { formatDuration } from "../core/duration.ts";
import { type CommandState, runWithProgress, startLogging, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson, resultJson, runJson, table } from "./output.ts";
import { startRun } from "../core/run/worker.ts";
import {
  type Attempt,
  attemptsFromAudit,
  latestFinished,
  readAttemptLogs,
} from "../core/attempts.ts";
import { historyOf } from "../core/state/history.ts";
import { cliActor, guardResume } from "../core/actions.ts";
import { compareVersions, recordedVersion, type VersionChange } from "../core/dag_version.ts";

/** Records and quarantined records of a task's latest finished attempt, with reasons. */
export function recordCounts(attempts: readonly Attempt[] | undefined): {
  records: number | null;
  quarantined: number;
  quarantineReasons: Record<string, number>;
} {
  const a = latestFinished(attempts);
  return {
    records: a?.records ?? null,
    quarantined: a?.quarantined ?? 0,
    quarantineReasons: a?.quarantined ? a.quarantineReasons : {},
  };
}

/** Says on stderr that a run resumes under changed code (stdout stays the command's output). */
export function noteChange(change: VersionChange | undefined, dagId: string, runId: string): void {
  if (!change) return;
  console.error(
    `Note: DAG "${dagId}" changed since run "${runId}" recorded version ${
      change.from ?? "none"
    } (now ${change.to ?? "unknown"}${
      change.tasks.length ? `; changed tasks: ${change.tasks.join(", ")}` : ""
    }); resuming with the current code (--allow-changed)`,
  );
}

/** Registers the `runs` commands. */
export function registerRuns(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  const runs = program.command("runs").description("list, show, resume runs and read their logs");

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
      const current = (await ctx.dags()).dags.get(run.dagId);
      const order = current?.order;
      const audit = await historyOf(store).runAudit(runId);
      const attempts = attemptsFromAudit(audit);
      const base = runJson(run, tis, order);
      const misses = await store.listSlaMisses([runId]);
      const recorded = recordedVersion(audit);
      const change = current ? compareVersions(recorded, current) : undefined;
      const shown = {
        ...base,
        dagVersion: recorded.dagVersion,
        carrelVersion: recorded.carrelVersion,
        modules: recorded.modules,
        currentDagVersion: current?.version ?? null,
        dagChanged: change?.changed ?? false,
        changedTasks: change?.tasks ?? [],
        tasks: base.tasks.map((t) => ({ ...t, ...recordCounts(attempts.get(t.taskId)) })),
        slaMisses: misses.map((m) => ({
          taskId: m.taskId,
          slaMs: m.slaMs,
          deadline: m.deadline.toISOString(),
          detectedAt: m.detectedAt.toISOString(),
          detectedBy: m.detectedBy,
          state: m.state,
        })),
      };
      if (opts.json) {
        printJson(shown);
        return;
      }
      console.log(`Run ${shown.runId}: ${shown.state}`);
      console.log(
        `  DAG ${shown.dagId}, interval ${shown.dataInterval.start} to ${shown.dataInterval.end}, ${shown.runType}`,
      );
      const modules = Object.keys(shown.modules).length;
      console.log(
        `  DAG version ${shown.dagVersion ?? "not recorded"}${
          modules > 1 ? ` (its file and ${modules - 1} local module${modules > 2 ? "s" : ""})` : ""
        }, Carrel ${shown.carrelVersion ?? "not recorded"}${
          shown.dagChanged
            ? `; the DAG changed since (now ${shown.currentDagVersion ?? "unknown"}${
              shown.changedTasks.length ? `; tasks ${shown.changedTasks.join(", ")}` : ""
            })`
            : ""
        }`,
      );
      console.log("");
      console.log(table(
        [
          "TASK",
          "STATE",
          "TRIES",
          "DURATION",
          "RECORDS",
          "QUARANTINED",
          "ZONE",
          "JOB KEY",
          "ERROR",
        ],
        shown.tasks.map((t) => [
          t.taskId,
          t.state,
          t.attempts,
          t.durationMs === null ? null : formatDuration(t.durationMs),
          t.records,
          t.quarantined,
          t.zone,
          t.jobKey.slice(0, 12),
          t.error,
        ]),
      ));
      for (const t of shown.tasks) {
        const reasons = Object.entries(t.quarantineReasons);
        if (t.quarantined === 0 && reasons.length === 0) continue;
        console.log(
          `\n${t.taskId}: ${t.quarantined} quarantined${
            reasons.length ? `: ${reasons.map(([r, n]) => `${r} (${n})`).join(", ")}` : ""
          }`,
        );
      }
      for (const m of shown.slaMisses) {
        console.log(
          `\nSLA missed by ${m.taskId ? `task ${m.taskId}` : "the run"}: ${
            formatDuration(m.slaMs)
          } after the interval's end, deadline ${m.deadline}; ${m.state} when the ${m.detectedBy} saw it at ${m.detectedAt}`,
        );
      }
    });

  withJson(
    runs.command("logs")
      .description("the log lines of one attempt of a task (value-free)")
      .argument("<run_id>", "run id")
      .argument("<task>", "task id")
      .option("--attempt <n>", "which attempt (default: the latest)")
      .option("--limit <n>", "at most this many lines", "10000"),
  ).action(
    async (
      runId: string,
      taskId: string,
      opts: { attempt?: string; limit: string; json?: boolean },
    ) => {
      const attempt = opts.attempt === undefined ? undefined : Number(opts.attempt);
      if (attempt !== undefined && (!Number.isInteger(attempt) || attempt < 1)) {
        throw new UsageError(`Invalid --attempt "${opts.attempt}": expected a whole number >= 1`);
      }
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) {
        throw new UsageError(`Invalid --limit "${opts.limit}": expected a whole number >= 1`);
      }
      const store = await context().store();
      const run = await store.getRun(runId);
      if (!run) throw new UsageError(`Unknown run "${runId}": see \`runs list\``);
      const tasks = (await store.listTaskInstances(runId)).map((t) => t.taskId);
      if (!tasks.includes(taskId)) {
        throw new UsageError(
          `Unknown task "${taskId}" in run "${runId}": tasks are ${tasks.join(", ")}`,
        );
      }
      let page;
      try {
        page = await readAttemptLogs(historyOf(store), runId, taskId, { attempt, limit });
      } catch (error) {
        if (error instanceof RangeError) {
          throw new UsageError(`Invalid --attempt: ${error.message}`);
        }
        throw error;
      }
      const lines = page.lines.map((l) => ({
        at: l.at.toISOString(),
        level: l.level,
        category: l.category,
        message: l.message,
        properties: l.properties,
      }));
      if (opts.json) {
        printJson({
          runId,
          taskId,
          attempt: page.attempt?.attempt ?? attempt ?? null,
          attempts: page.attempts,
          state: page.attempt?.state ?? null,
          startedAt: page.attempt?.startedAt ?? null,
          endedAt: page.attempt?.endedAt ?? null,
          lines,
          truncated: page.next !== null,
        });
        return;
      }
      if (page.attempt) {
        console.log(
          `Task ${taskId} of ${runId}, attempt ${page.attempt.attempt} of ${page.attempts}: ${page.attempt.state}`,
        );
      } else console.log(`Task ${taskId} of ${runId}: no attempt recorded in the audit trail`);
      if (lines.length === 0) console.log("No log lines");
      for (const l of lines) {
        console.log(`${l.at}  ${l.level.toUpperCase().padEnd(7)}  ${l.message}`);
      }
      if (page.next !== null) console.log(`(more than ${limit} lines: raise --limit)`);
    },
  );

  withJson(
    runs.command("resume").description(
      "continues a failed or interrupted run (a run of workers is queued for them again)",
    ).argument(
      "<run_id>",
      "run id",
    ).option("--allow-changed", "resume even though the DAG's code changed since the run began"),
  )
    .action(async (runId: string, opts: { json?: boolean; allowChanged?: boolean }) => {
      const ctx = context();
      const store = await ctx.store();
      const run = await store.getRun(runId);
      if (!run) throw new UsageError(`Unknown run "${runId}": see \`runs list\``);
      const dag = await ctx.dag(run.dagId);
      noteChange(
        await guardResume(store, dag, runId, { allowChanged: opts.allowChanged, by: cliActor() }),
        dag.id,
        runId,
      );
      if (run.executor === "workers") {
        // A run handed to workers goes back to them, as the scheduler re-queues it: its failed
        // tasks are queued again with a fresh retry budget, and this process runs nothing.
        const queued = await startRun(
          store,
          dag,
          { start: run.intervalStart, end: run.intervalEnd },
          run.params,
          run.runType,
        );
        const tis = await store.listTaskInstances(runId);
        if (opts.json) printJson({ ...runJson(queued, tis, dag.order), executor: "workers" });
        else {
          const waiting = tis.filter((t) => t.state === "queued" || t.state === "scheduled");
          console.log(
            queued.state === "running"
              ? `Queued for workers: ${runId} (${waiting.length} tasks to run)`
              : `Nothing to resume: ${runId} is ${queued.state}`,
          );
          if (queued.state === "running") {
            console.log("Workers pick it up: deno task carrel worker");
          }
        }
        if (queued.state === "failed") state.exitCode = 1;
        return;
      }
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
