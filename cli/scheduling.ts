/**
 * `scheduler`, `worker`, `dags trigger|backfill`, `pools set|list`.
 *
 * @module
 */
import type { Command } from "commander";
import { planBackfill, type Reprocess, runBackfill } from "../core/backfill.ts";
import { cliActor, triggerRun } from "../core/actions.ts";
import { UsageError } from "../core/errors.ts";
import { runWorker } from "../core/run/worker.ts";
import { type ExecutionMode, runScheduler } from "../core/scheduler.ts";
import {
  collectParam,
  type CommandState,
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

function concurrencyFlag(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    throw new UsageError(`Invalid --concurrency "${text}": expected a whole number >= 1`);
  }
  return n;
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
      .option("--tick <seconds>", "longest sleep between passes", "30")
      .option(
        "--concurrency <n>",
        "with --workers on the embedded store: workers run in this process, this many at once",
        "1",
      ),
  ).action(async (
    opts: { once?: boolean; workers?: boolean; tick: string; concurrency: string; json?: boolean },
  ) => {
    const ctx = context();
    const mode = executionMode(opts.workers);
    const concurrency = concurrencyFlag(opts.concurrency);
    const store = await ctx.store();
    startLogging(ctx, { console: !opts.once && !opts.json });
    const signals = shutdownSignals();
    const progress = opts.json ? undefined : new Progress(Deno.stdout);
    // The embedded store serves one process: its workers run here, beside the scheduler.
    const inProcess = mode === "workers" && store.kind === "pglite";
    const workerOptions = {
      store,
      dagsDir: ctx.dagsDir,
      home: ctx.home,
      concurrency,
      signal: signals.stop,
      abort: signals.abort,
    };
    const workers = inProcess && !opts.once ? runWorker(workerOptions) : undefined;
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
      if (inProcess && opts.once) await runWorker({ ...workerOptions, exitWhenIdle: true });
      const created = reports.flatMap((r) => r.created);
      const started = reports.flatMap((r) => r.started);
      const resumed = reports.flatMap((r) => r.resumed);
      const results = reports.flatMap((r) => r.results);
      const errors = reports.flatMap((r) => r.errors);
      if (opts.json) {
        printJson({
          created,
          started,
          resumed,
          runs: results.map((r) => resultJson(r)),
          errors,
        });
      } else if (opts.once) {
        console.log(
          `Scheduler pass: ${created.length} runs created, ${started.length} started${
            mode === "workers" ? " (queued for workers)" : ""
          }${resumed.length ? `, ${resumed.length} interrupted runs continued` : ""}`,
        );
        for (const e of errors) console.error(`Error: DAG ${e.dagId}: ${e.message}`);
      }
      if (results.some((r) => r.state !== "success") || errors.length) state.exitCode = 1;
    } finally {
      await workers;
      signals.dispose();
      progress?.stop();
    }
  });

  withJson(
    program.command("worker")
      .description(
        "claims and runs queued task instances (PostgreSQL: any number of workers; the embedded store: this process)",
      )
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
    const concurrency = concurrencyFlag(opts.concurrency);
    const leaseSeconds = Number(opts.lease);
    if (!Number.isFinite(leaseSeconds) || leaseSeconds < 0.3) {
      throw new UsageError(`Invalid --lease "${opts.lease}": expected seconds >= 0.3`);
    }
    const ctx = context();
    const store = await ctx.store();
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
      .option("--workers", "hand the run to workers now (PostgreSQL; or CARREL_EXECUTOR=workers)")
      .option("--allow-future", "queue a logical date that lies in the future"),
  ).action(
    async (
      id: string,
      opts: {
        date?: string;
        param?: Record<string, string>;
        workers?: boolean;
        allowFuture?: boolean;
        json?: boolean;
      },
    ) => {
      const ctx = context();
      const dag = await ctx.dag(id);
      const mode = executionMode(opts.workers);
      const store = await ctx.store();
      const triggered = await triggerRun(store, dag, {
        date: parseDateFlag(opts.date),
        params: opts.param,
        mode,
        by: cliActor(),
        allowFuture: opts.allowFuture === true,
      });
      if (opts.json) printJson(triggered);
      else {
        console.log(
          `${
            triggered.created ? "Queued" : "Already exists"
          }: ${triggered.runId} (${triggered.state})`,
        );
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
