/**
 * Backfill: the runs of every interval in a range, created and run within the DAG's
 * `maxActiveRuns`. Running it again adds nothing: existing runs are left alone unless
 * `reprocess` says to run failed ones (`failed`) or every one (`all`) again.
 *
 * @module
 */
import type { DataInterval, ResolvedDag } from "./dag.ts";
import type { ExecutorEvent, RunResult } from "./run/events.ts";
import { executeRun } from "./run/local.ts";
import { jobKeysFor } from "./run/plan.ts";
import { runIdFor } from "./job_key.ts";
import { intervalsBetween } from "./schedule.ts";
import type { StateStore } from "./state/store.ts";

/** Which existing runs a backfill runs again. */
export type Reprocess = "none" | "failed" | "all";

/** What a backfill does with one interval. */
export interface BackfillItem {
  runId: string;
  interval: DataInterval;
  existing: string | null;
  action: "create" | "rerun" | "resume" | "skip";
}

/** Plans a backfill without running anything. */
export async function planBackfill(
  store: StateStore,
  dag: ResolvedDag,
  from: Date,
  to: Date,
  reprocess: Reprocess,
): Promise<BackfillItem[]> {
  const intervals = intervalsBetween(dag, from, to);
  const items: BackfillItem[] = [];
  for (const interval of intervals) {
    const runId = runIdFor(dag.id, interval.start);
    const run = await store.getRun(runId);
    let action: BackfillItem["action"];
    if (!run) action = "create";
    else if (run.state === "running" || run.state === "queued") action = "resume";
    else if (run.state === "failed" && reprocess !== "none") action = "resume";
    else if (run.state === "success" && reprocess === "all") action = "rerun";
    else action = "skip";
    items.push({ runId, interval, existing: run?.state ?? null, action });
  }
  return items;
}

/**
 * Runs a planned backfill, at most `dag.maxActiveRuns` runs at a time.
 *
 * @example
 * ```ts ignore
 * const plan = await planBackfill(store, dag, from, to, "failed");
 * const results = await runBackfill(store, dag, plan, { home: ".carrel" });
 * ```
 */
export async function runBackfill(
  store: StateStore,
  dag: ResolvedDag,
  plan: BackfillItem[],
  options: {
    home: string;
    params?: Record<string, unknown>;
    signal?: AbortSignal;
    onEvent?: (e: ExecutorEvent) => void;
  },
): Promise<RunResult[]> {
  const todo = plan.filter((p) => p.action !== "skip");
  const results: RunResult[] = [];
  let next = 0;
  const lane = async () => {
    while (next < todo.length && !options.signal?.aborted) {
      const item = todo[next++]!;
      const existing = await store.getRun(item.runId);
      const params = existing?.params ?? options.params ?? dag.paramDefaults;
      if (item.action === "rerun" && existing) {
        // Every task runs again: clear them all.
        const keys = jobKeysFor(dag, item.interval, params);
        for (const id of dag.order) {
          await store.updateTaskInstance(keys.get(id)!, {
            state: "scheduled",
            output: null,
            outputKind: null,
            error: null,
            endedAt: null,
          }, {
            audit: [{
              correlationId: item.runId,
              dagId: dag.id,
              taskId: id,
              operation: "task:clear",
              status: "scheduled",
              detail: { by: "backfill" },
            }],
          });
        }
      }
      results.push(
        await executeRun({
          dag,
          interval: item.interval,
          params,
          store,
          home: options.home,
          runType: existing?.runType ?? "backfill",
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.onEvent ? { onEvent: options.onEvent } : {}),
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, dag.maxActiveRuns) }, lane));
  return results;
}
