/**
 * `scheduler`, `worker`, `dags trigger|backfill`, `pools set|list`.
 *
 * @module
 */
import type { Command } from "commander";
import { planBackfill, type Reprocess, runBackfill } from "../backfill.ts";
import { startRun } from "../distributed.ts";
import { UsageError } from "../errors.ts";
import { paramsHash } from "../executor.ts";
import { runIdFor } from "../job_key.ts";
import { type ExecutionMode, runScheduler } from "../scheduler.ts";
import type { SqlStateStore } from "../state/sql_store.ts";
import { runWorker } from "../worker.ts";
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
import { printJson, resultJson, table } from "./output.ts";
import { Progress } from "./progress.ts";

function executionMode(flag: boolean | undefined): ExecutionMode {
  if (flag) return "workers";
  const env = Deno.env.get("CARREL_EXECUTOR");
  if (env && env !== "local" && env !== "workers") {
    throw new UsageError(`Invalid CARREL_EXECUTOR "${env}": expected local or workers`);
  }
  return (env as ExecutionMode | undefined) ?? "local";
}

async function sqlStore(
  ctx: CliContext,
  needsServer: boolean,
  what: string,
): Promise<SqlStateStore> {
  const store = (await ctx.store()) as SqlStateStore;
  if (needsServer && store.kind !== "postgres") {
    throw new UsageError(
      `Cannot ${what}: workers need PostgreSQL (set CARREL_DATABASE_URL); the embedded store serves one process`,
    );
  }
  return store;
}

/** SIGINT/SIGTERM: the first stops new work, the second aborts what runs. */
function shutdownSignals(): { stop: AbortSignal; abort: AbortSignal; dispose(): void } {
  const stop = new AbortController();
  const abort = new AbortController();
  const handler = () => {
    if (stop.signal.aborted) abort.abort();
    else {
      console.error(
        "Stopping: no new work is started; send the signal again to cancel running work",
      );
      stop.abort();
    }
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, handler);
  return {
    stop: stop.signal,
    abort: abort.signal,
    dispose: () => signals.forEach((s) => Deno.removeSignalListener(s, handler)),
  };
}

/** Registers the scheduling commands. */
export function registerScheduling(
  program: Command,
  context: () => CliContext,
  state: CommandState,
): void {
  withJson(
    program.command("scheduler")
      .description("the long-running scheduler; --once makes one pass, runs what is due, and exits")
      .option("--once", "one scheduling pass, run what is due, exit")
      .option(
        "--workers",
        "queue runs for workers instead of running them here (PostgreSQL; or CARREL_EXECUTOR=workers)",
      )
      .option("--tick <seconds>", "longest sleep between passes", "30"),
  ).action(async (opts: { once?: boolean; workers?: boolean; tick: string; json?: boolean }) => {
    const ctx = context();
    const mode = executionMode(opts.workers);
    const store = await sqlStore(ctx, mode === "workers", "queue runs for workers");
    startLogging(ctx, { console: !opts.once && !opts.json });
    const signals = shutdownSignals();
    const progress = opts.json ? undefined : new Progress(Deno.stdout);
    try {
      const reports = await runScheduler({
        store,
        dagsDir: ctx.dagsDir,
        home: ctx.home,
        mode,
        once: opts.once ?? false,
        tickMs: Math.max(1, Number(opts.tick) || 30) * 1000,
        signal: signals.stop,
        abort: signals.abort,
        ...(progress ? { onEvent: progress.event } : {}),
      });
      const created = reports.flatMap((r) => r.created);
      const started = reports.flatMap((r) => r.started);
      const results = reports.flatMap((r) => r.results);
      const errors = reports.flatMap((r) => r.errors);
      if (opts.json) {
        printJson({
          created,
          started,
          runs: results.map((r) => resultJson(r)),
          errors,
        });
      } else if (opts.once) {
        console.log(
          `Scheduler pass: ${created.length} runs created, ${started.length} started${
            mode === "workers" ? " (queued for workers)" : ""
          }`,
        );
        for (const e of errors) console.error(`Error: DAG ${e.dagId}: ${e.message}`);
      }
      if (results.some((r) => r.state !== "success") || errors.length) state.exitCode = 1;
    } finally {
      signals.dispose();
      progress?.stop();
    }
  });

  withJson(
    program.command("worker")
      .description("claims and runs queued task instances from PostgreSQL")
      .option("--concurrency <n>", "claims running at once", "1")
      .option(
        "--lease <seconds>",
        "lease of a claim, renewed by heartbeats; a lost worker's claims are retried after it",
        "30",
      )
      .option("--exit-when-idle", "exit when nothing is ready instead of waiting"),
  ).action(async (
    opts: { concurrency: string; lease: string; exitWhenIdle?: boolean; json?: boolean },
  ) => {
    const concurrency = Number(opts.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new UsageError(
        `Invalid --concurrency "${opts.concurrency}": expected a whole number >= 1`,
      );
    }
    const leaseSeconds = Number(opts.lease);
    if (!Number.isFinite(leaseSeconds) || leaseSeconds < 0.3) {
      throw new UsageError(`Invalid --lease "${opts.lease}": expected seconds >= 0.3`);
    }
    const ctx = context();
    const store = await sqlStore(ctx, true, "start a worker");
    startLogging(ctx, { console: !opts.json });
    const signals = shutdownSignals();
    try {
      const executed = await runWorker({
        store,
        dagsDir: ctx.dagsDir,
        home: ctx.home,
        concurrency,
        leaseMs: Math.round(leaseSeconds * 1000),
        signal: signals.stop,
        abort: signals.abort,
        exitWhenIdle: opts.exitWhenIdle ?? false,
      });
      if (opts.json) printJson({ executed });
      else console.log(`Worker stopped after ${executed} claims`);
    } finally {
      signals.dispose();
    }
  });

  const dags = program.commands.find((c) => c.name() === "dags")!;
  withJson(
    dags.command("trigger")
      .description("queues a run for the scheduler and workers instead of running it here")
      .argument("<dag>", "DAG id")
      .option("--date <iso>", "logical date (default: the latest complete interval, or now)")
      .option("--param <key=value>", "override a param (repeatable)", collectParam)
      .option("--workers", "hand the run to workers now (PostgreSQL; or CARREL_EXECUTOR=workers)"),
  ).action(
    async (
      id: string,
      opts: { date?: string; param?: Record<string, string>; workers?: boolean; json?: boolean },
    ) => {
      const ctx = context();
      const dag = await ctx.dag(id);
      const interval = chooseInterval(dag, parseDateFlag(opts.date));
      const params = paramsFor(dag, opts.param);
      const mode = executionMode(opts.workers);
      const store = await sqlStore(ctx, mode === "workers", "queue a run for workers");
      const runId = runIdFor(dag.id, interval.start);
      let created: boolean;
      if (mode === "workers") {
        const before = await store.getRun(runId);
        await startRun(store, dag, interval, params, "triggered");
        created = !before;
      } else {
        ({ created } = await store.createRun({
          runId,
          dagId: dag.id,
          logicalDate: interval.start,
          intervalStart: interval.start,
          intervalEnd: interval.end,
          params,
          paramsHash: paramsHash(params),
          runType: "triggered",
          state: "queued",
          executor: "local",
        }, {
          correlationId: runId,
          dagId: dag.id,
          operation: "run:create",
          status: "queued",
          detail: { runType: "triggered" },
        }));
      }
      const run = (await store.getRun(runId))!;
      if (opts.json) {
        printJson({
          runId,
          dagId: dag.id,
          logicalDate: interval.start.toISOString(),
          state: run.state,
          created,
          executor: mode,
        });
      } else {
        console.log(`${created ? "Queued" : "Already exists"}: ${runId} (${run.state})`);
        console.log(
          mode === "workers"
            ? "Workers pick it up: deno task carrel worker"
            : "The scheduler runs it: deno task carrel scheduler --once",
        );
      }
    },
  );

  withJson(
    dags.command("backfill")
      .description(
        "creates and runs the runs of every interval in a range; rerunning it adds nothing",
      )
      .argument("<dag>", "DAG id")
      .requiredOption("--from <iso>", "first logical date")
      .requiredOption("--to <iso>", "last logical date (inclusive)")
      .option("--reprocess <which>", "existing runs to run again: none, failed or all", "none")
      .option("--dry-run", "show the plan without running it"),
  ).action(
    async (
      id: string,
      opts: { from: string; to: string; reprocess: string; dryRun?: boolean; json?: boolean },
    ) => {
      const ctx = context();
      const dag = await ctx.dag(id);
      if (!dag.schedule) {
        throw new UsageError(`Cannot backfill DAG "${dag.id}": it has no schedule`);
      }
      if (!["none", "failed", "all"].includes(opts.reprocess)) {
        throw new UsageError(
          `Invalid --reprocess "${opts.reprocess}": expected none, failed or all`,
        );
      }
      const from = parseDateFlag(opts.from, "--from")!;
      const to = parseDateFlag(opts.to, "--to")!;
      if (from > to) throw new UsageError("Invalid range: --from is after --to");
      const store = await ctx.store();
      const plan = await planBackfill(store, dag, from, to, opts.reprocess as Reprocess);
      if (opts.dryRun) {
        if (opts.json) {
          printJson({
            plan: plan.map((p) => ({
              ...p,
              interval: {
                start: p.interval.start.toISOString(),
                end: p.interval.end.toISOString(),
              },
            })),
          });
        } else {console.log(
            table(["RUN", "EXISTING", "ACTION"], plan.map((p) => [p.runId, p.existing, p.action])),
          );}
        return;
      }
      startLogging(ctx);
      const signals = shutdownSignals();
      const progress = opts.json ? undefined : new Progress(Deno.stdout);
      try {
        const results = await runBackfill(store, dag, plan, {
          home: ctx.home,
          signal: signals.abort,
          ...(progress ? { onEvent: progress.event } : {}),
        });
        const skipped = plan.filter((p) => p.action === "skip").length;
        if (opts.json) printJson({ runs: results.map((r) => resultJson(r)), skipped });
        else console.log(`Backfill: ${results.length} runs executed, ${skipped} left as they were`);
        if (results.some((r) => r.state !== "success")) state.exitCode = 1;
      } finally {
        signals.dispose();
        progress?.stop();
      }
    },
  );

  const pools = program.command("pools").description("named concurrency limits across all workers");
  withJson(
    pools.command("set").description("creates or changes a pool").argument("<name>", "pool name")
      .argument("<slots>", "tasks at once"),
  )
    .action(async (name: string, slotsText: string, opts: { json?: boolean }) => {
      const slots = Number(slotsText);
      if (!/^[a-z][a-z0-9_]*$/.test(name)) {
        throw new UsageError(`Invalid pool name "${name}": expected /^[a-z][a-z0-9_]*$/`);
      }
      if (!Number.isInteger(slots) || slots < 1) {
        throw new UsageError(`Invalid slots "${slotsText}": expected a whole number >= 1`);
      }
      const store = await context().store();
      await store.setPool(name, slots);
      if (opts.json) printJson({ name, slots });
      else console.log(`Pool ${name}: ${slots} slots`);
    });
  withJson(pools.command("list").description("pools with their slots and running tasks"))
    .action(async (opts: { json?: boolean }) => {
      const list = await (await context().store()).listPools();
      if (opts.json) printJson(list);
      else if (list.length === 0) console.log("No pools");
      else {console.log(
          table(["POOL", "SLOTS", "RUNNING"], list.map((p) => [p.name, p.slots, p.running])),
        );}
    });
  withJson(pools.command("delete").description("removes a pool").argument("<name>", "pool name"))
    .action(async (name: string, opts: { json?: boolean }) => {
      await (await context().store()).setPool(name, null);
      if (opts.json) printJson({ name, deleted: true });
      else console.log(`Pool ${name} deleted`);
    });
}
