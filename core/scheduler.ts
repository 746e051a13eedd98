/**
 * The scheduler: for every unpaused DAG it computes the data intervals that are due (with
 * `catchup`, every missed interval since `start` or the last scheduled run; without, only the
 * latest), creates their runs (unique on DAG and logical date, so two schedulers never duplicate
 * a run), honours `maxActiveRuns`, and starts runs: in this process, or queued for workers. A
 * local run left running by a process that is gone is taken over and continued (its lost
 * attempts count against their retry budgets, as Airflow handles zombies). With PostgreSQL, one
 * scheduler decides at a time (an advisory lock); others wait as standbys.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { sleep } from "./sleep.ts";
import { AlertDispatcher } from "./alerts/dispatch.ts";
import { checkSlas } from "./alerts/sla.ts";
import type { DataInterval, ResolvedDag } from "./dag.ts";
import { errorMessage } from "./errors.ts";
import type { ExecutorEvent, RunResult } from "./run/events.ts";
import { executeRun } from "./run/local.ts";
import { planRun, runCreateAudit } from "./run/plan.ts";
import { startRun } from "./run/worker.ts";
import { resendCutShortAlerts } from "./alerts/recover.ts";
import { loadDags, type LoadedDags } from "./loader.ts";
import { ownerIsDead } from "./owner.ts";
import { intervalAt, latestCompleteInterval, nextFireAfter } from "./schedule.ts";
import type { Leadership, RunRecord, StateStore } from "./state/store.ts";

const log = getLogger(["carrel", "scheduler"]);

/** How runs are executed. */
export type ExecutionMode = "local" | "workers";

/** The intervals due for a DAG at `now`, oldest first, given its last scheduled run. */
export function dueIntervals(
  dag: ResolvedDag,
  lastLogicalDate: Date | undefined,
  now: Date,
  limit = 1000,
): DataInterval[] {
  if (!dag.schedule || !dag.start) return [];
  const inRange = (i: DataInterval) =>
    i.start.getTime() >= dag.start!.getTime() && (!dag.end || i.start < dag.end);
  if (!dag.catchup) {
    const latest = latestCompleteInterval(dag, now);
    if (!latest || !inRange(latest)) return [];
    if (lastLogicalDate && latest.start.getTime() <= lastLogicalDate.getTime()) return [];
    return [latest];
  }
  const out: DataInterval[] = [];
  let start = lastLogicalDate
    ? nextFireAfter(dag, lastLogicalDate)
    : nextFireAfter(dag, new Date(dag.start.getTime() - 1));
  while (start && out.length < limit) {
    const interval = intervalAt(dag, start);
    if (interval.end.getTime() > now.getTime() || !inRange(interval)) break;
    out.push(interval);
    start = interval.end;
  }
  return out;
}

/** What one scheduling pass did. */
export interface PassReport {
  created: string[];
  started: string[];
  /** Interrupted local runs taken over from a gone process and continued. */
  resumed: string[];
  results: RunResult[];
  errors: { dagId: string; message: string }[];
}

/** Options of a scheduling pass. */
export interface PassOptions {
  store: StateStore;
  home: string;
  mode: ExecutionMode;
  now?: Date;
  signal?: AbortSignal;
  onEvent?: (event: ExecutorEvent) => void;
  /** Runs started by earlier passes that are still executing here (local mode). */
  running?: Map<string, Promise<RunResult>>;
  /** Wait for started local runs before returning (`--once`). */
  wait?: boolean;
}

async function lastScheduled(store: StateStore, dagId: string): Promise<Date | undefined> {
  const [last] = await store.listRuns({ dagId, runType: "scheduled", limit: 1 });
  return last?.logicalDate;
}

/** A local run whose owner is gone (dead process, or a lease nobody renews). */
function interrupted(run: RunRecord, now: Date): boolean {
  if (run.executor !== "local" || run.owner === null) return false;
  return (run.leaseUntil !== null && run.leaseUntil.getTime() < now.getTime()) ||
    ownerIsDead(run.owner);
}

/**
 * One scheduling pass over the loaded DAGs: creates due runs, then starts queued runs within
 * `maxActiveRuns`.
 */
export async function schedulerPass(loaded: LoadedDags, options: PassOptions): Promise<PassReport> {
  const { store } = options;
  const now = options.now ?? new Date();
  const report: PassReport = { created: [], started: [], resumed: [], results: [], errors: [] };
  const paused = await store.pausedDags();
  const running = options.running ?? new Map<string, Promise<RunResult>>();
  const local: Promise<RunResult>[] = [];
  /** Runs a run in this process (in the background; awaited with `wait`). */
  const startLocal = (
    dag: ResolvedDag,
    run: RunRecord,
    resume: "retry_failed" | "continue",
  ) => {
    const promise = executeRun({
      dag,
      interval: { start: run.intervalStart, end: run.intervalEnd },
      params: run.params,
      store,
      home: options.home,
      runType: run.runType,
      resume,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onEvent ? { onEvent: options.onEvent } : {}),
    });
    running.set(run.runId, promise);
    promise.catch(() => {}).finally(() => running.delete(run.runId));
    local.push(promise);
  };
  for (const dag of [...loaded.dags.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    if (paused.get(dag.id)) continue;
    try {
      for (const interval of dueIntervals(dag, await lastScheduled(store, dag.id), now)) {
        const { run } = planRun(dag, interval, dag.paramDefaults, {
          runType: "scheduled",
          executor: options.mode,
        });
        const { created } = await store.createRun(
          run,
          runCreateAudit(dag, run.runId, "scheduled"),
        );
        if (created) report.created.push(run.runId);
      }
      const active = await store.listRuns({ dagId: dag.id, states: ["running"], limit: 10_000 });
      for (const run of active) {
        if (running.has(run.runId) || !interrupted(run, new Date()) || options.signal?.aborted) {
          continue;
        }
        // Continued, not retried: what failed stays failed; lost attempts count.
        report.resumed.push(run.runId);
        startLocal(dag, run, "continue");
      }
      let slots = dag.maxActiveRuns - active.length;
      if (slots <= 0) continue;
      const queued = await store.listRuns({
        dagId: dag.id,
        states: ["queued"],
        limit: slots,
        oldest: true,
      });
      for (const run of queued) {
        if (slots-- <= 0 || options.signal?.aborted) break;
        if (running.has(run.runId)) continue;
        report.started.push(run.runId);
        if (run.executor === "workers" || options.mode === "workers") {
          await startRun(
            store,
            dag,
            { start: run.intervalStart, end: run.intervalEnd },
            run.params,
            run.runType,
          );
          continue;
        }
        startLocal(dag, run, "retry_failed");
      }
    } catch (error) {
      report.errors.push({ dagId: dag.id, message: errorMessage(error) });
      log.error("Cannot schedule DAG {dagId}: {error}", {
        dagId: dag.id,
        error: errorMessage(error),
      });
    }
  }
  // SLA misses of scheduled runs still unfinished past their deadline (each recorded once, by
  // whichever process sees it first).
  const alerts = new AlertDispatcher({ store, now: () => options.now ?? new Date() });
  await checkSlas([...loaded.dags.values()].filter((d) => !paused.get(d.id)), store, alerts, now)
    .catch((error) => report.errors.push({ dagId: "-", message: errorMessage(error) }));
  // Alerts whose process ended before it sent them (at least once: see alerts/recover.ts).
  await resendCutShortAlerts(store, loaded.dags, alerts, now)
    .catch((error) => report.errors.push({ dagId: "-", message: errorMessage(error) }));
  await alerts.settled();
  if (options.wait) {
    for (const settled of await Promise.allSettled(local)) {
      if (settled.status === "fulfilled") report.results.push(settled.value);
      else report.errors.push({ dagId: "-", message: errorMessage(settled.reason) });
    }
  }
  return report;
}

/** Holds the scheduler role: an advisory lock on PostgreSQL; always granted on PGlite. */
export function acquireLeadership(store: StateStore): Promise<Leadership> {
  return store.leadership();
}

/** Options of the long-running scheduler. */
export interface SchedulerOptions {
  store: StateStore;
  dagsDir: string;
  home: string;
  mode: ExecutionMode;
  /** One pass, run what is due, exit. */
  once?: boolean;
  /** Longest sleep between passes. Default 30s. */
  tickMs?: number;
  /** Stops creating runs; running local runs finish (or are cancelled by `abort`). */
  signal?: AbortSignal;
  abort?: AbortSignal;
  onEvent?: (event: ExecutorEvent) => void;
  onPass?: (report: PassReport, dags: LoadedDags) => void;
}

/**
 * Runs the scheduler until its signal aborts (or one pass with `once`). Picks up new and changed
 * DAG files on every pass, survives DAG load errors, and logs each DAG's next fire time.
 */
export async function runScheduler(options: SchedulerOptions): Promise<PassReport[]> {
  const reports: PassReport[] = [];
  const running = new Map<string, Promise<RunResult>>();
  const leadership = await acquireLeadership(options.store);
  const tickMs = options.tickMs ?? 30_000;
  try {
    while (!options.signal?.aborted) {
      const loaded = await loadDags(options.dagsDir, { fresh: true });
      for (const e of loaded.errors) {
        log.warn("DAG file {file} failed to load: {message}", { ...e });
      }
      if (await leadership.held()) {
        // With --once, passes repeat while they start runs, so a catchup within maxActiveRuns
        // completes in one invocation (in workers mode, runs are handed over once).
        for (let i = 0; i < 10_000; i++) {
          const report = await schedulerPass(loaded, {
            store: options.store,
            home: options.home,
            mode: options.mode,
            running,
            wait: options.once ?? false,
            ...(options.abort ? { signal: options.abort } : {}),
            ...(options.onEvent ? { onEvent: options.onEvent } : {}),
          });
          reports.push(report);
          options.onPass?.(report, loaded);
          if (!options.once || options.mode === "workers" || report.started.length === 0) break;
          if (options.signal?.aborted) break;
        }
      } else {
        log.info("Another scheduler holds the lock: standing by");
      }
      if (options.once) break;
      const now = new Date();
      let next = now.getTime() + tickMs;
      for (const dag of loaded.dags.values()) {
        const fire = nextFireAfter(dag, now);
        if (fire) {
          log.info("DAG {dagId} fires next at {next}", { dagId: dag.id, next: fire.toISOString() });
          next = Math.min(next, fire.getTime() + 1000);
        }
      }
      await sleep(Math.max(1000, Math.min(tickMs, next - Date.now())), options.signal);
    }
    await Promise.allSettled(running.values());
  } finally {
    await leadership.release();
  }
  return reports;
}

/** Re-exported for the CLI. */
export type { RunRecord };
