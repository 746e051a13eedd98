/**
 * The scheduler: for every unpaused DAG it computes the data intervals that are due (with
 * `catchup`, every missed interval since `start` or the last scheduled run; without, only the
 * latest), creates their runs (unique on DAG and logical date, so two schedulers never duplicate
 * a run), honours `maxActiveRuns`, and starts runs: in this process, or queued for workers. With
 * PostgreSQL, one scheduler decides at a time (an advisory lock); others wait as standbys.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { DataInterval, ResolvedDag } from "./dag.ts";
import { startRun } from "./distributed.ts";
import { errorMessage } from "./errors.ts";
import { executeRun, type ExecutorEvent, paramsHash, type RunResult } from "./executor.ts";
import { runIdFor } from "./job_key.ts";
import { loadDags, type LoadedDags } from "./loader.ts";
import { intervalAt, latestCompleteInterval, nextFireAfter } from "./schedule.ts";
import type { SqlStateStore } from "./state/sql_store.ts";
import { toRun } from "./state/sql_store.ts";
import type { RunRecord } from "./state/store.ts";

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
  results: RunResult[];
  errors: { dagId: string; message: string }[];
}

/** Options of a scheduling pass. */
export interface PassOptions {
  store: SqlStateStore;
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

async function lastScheduled(store: SqlStateStore, dagId: string): Promise<Date | undefined> {
  const [row] = await store.client.query<{ logical_date: Date | string }>(
    `SELECT logical_date FROM dag_runs WHERE dag_id = $1 AND run_type = 'scheduled'
     ORDER BY logical_date DESC LIMIT 1`,
    [dagId],
  );
  return row ? new Date(row.logical_date) : undefined;
}

/**
 * One scheduling pass over the loaded DAGs: creates due runs, then starts queued runs within
 * `maxActiveRuns`.
 */
export async function schedulerPass(loaded: LoadedDags, options: PassOptions): Promise<PassReport> {
  const { store } = options;
  const now = options.now ?? new Date();
  const report: PassReport = { created: [], started: [], results: [], errors: [] };
  const paused = await store.pausedDags();
  const running = options.running ?? new Map<string, Promise<RunResult>>();
  const local: Promise<RunResult>[] = [];
  for (const dag of [...loaded.dags.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    if (paused.get(dag.id)) continue;
    try {
      for (const interval of dueIntervals(dag, await lastScheduled(store, dag.id), now)) {
        const runId = runIdFor(dag.id, interval.start);
        const { created } = await store.createRun({
          runId,
          dagId: dag.id,
          logicalDate: interval.start,
          intervalStart: interval.start,
          intervalEnd: interval.end,
          params: dag.paramDefaults,
          paramsHash: paramsHash(dag.paramDefaults),
          runType: "scheduled",
          state: "queued",
          executor: options.mode,
        }, {
          correlationId: runId,
          dagId: dag.id,
          operation: "run:create",
          status: "queued",
          detail: { runType: "scheduled" },
        });
        if (created) report.created.push(runId);
      }
      const active =
        (await store.listRuns({ dagId: dag.id, states: ["running"], limit: 10_000 })).length;
      let slots = dag.maxActiveRuns - active;
      if (slots <= 0) continue;
      const queued = (await store.client.query<Record<string, unknown>>(
        "SELECT * FROM dag_runs WHERE dag_id = $1 AND state = 'queued' ORDER BY logical_date LIMIT $2",
        [dag.id, slots],
      )).map(toRun);
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
        const promise = executeRun({
          dag,
          interval: { start: run.intervalStart, end: run.intervalEnd },
          params: run.params,
          store,
          home: options.home,
          runType: run.runType,
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.onEvent ? { onEvent: options.onEvent } : {}),
        });
        running.set(run.runId, promise);
        promise.catch(() => {}).finally(() => running.delete(run.runId));
        local.push(promise);
      }
    } catch (error) {
      report.errors.push({ dagId: dag.id, message: errorMessage(error) });
      log.error("Cannot schedule DAG {dagId}: {error}", {
        dagId: dag.id,
        error: errorMessage(error),
      });
    }
  }
  if (options.wait) {
    for (const settled of await Promise.allSettled(local)) {
      if (settled.status === "fulfilled") report.results.push(settled.value);
      else report.errors.push({ dagId: "-", message: errorMessage(settled.reason) });
    }
  }
  return report;
}

/** Holds the scheduler role: an advisory lock on PostgreSQL; always granted on PGlite. */
export async function acquireLeadership(
  store: SqlStateStore,
): Promise<{ held: () => Promise<boolean>; release: () => Promise<void> }> {
  if (store.kind !== "postgres") {
    return {
      held: () => Promise.resolve(true),
      release: () => Promise.resolve(),
    };
  }
  const client = store.client as unknown as {
    reserve(): Promise<{ unsafe(q: string): Promise<{ ok: boolean }[]>; release(): void }>;
  };
  const conn = await client.reserve();
  let holding = false;
  return {
    held: async () => {
      if (holding) return true;
      const [row] = await conn.unsafe("SELECT pg_try_advisory_lock(7368427) AS ok");
      holding = row?.ok === true;
      return holding;
    },
    release: async () => {
      if (holding) await conn.unsafe("SELECT pg_advisory_unlock(7368427) AS ok").catch(() => []);
      conn.release();
    },
  };
}

/** Options of the long-running scheduler. */
export interface SchedulerOptions {
  store: SqlStateStore;
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
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(1000, Math.min(tickMs, next - Date.now())));
        function done() {
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", done);
          resolve();
        }
        options.signal?.addEventListener("abort", done, { once: true });
      });
    }
    await Promise.allSettled(running.values());
  } finally {
    await leadership.release();
  }
  return reports;
}

/** Re-exported for the CLI. */
export type { RunRecord };
