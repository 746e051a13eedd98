/**
 * `/metrics` in the Prometheus text exposition format (version 0.0.4). Labels are DAG, task,
 * state, pool and operation names only: identifiers from DAG files, never data values.
 *
 * @module
 */
import { DURATION_BUCKETS_S, type History } from "../core/state/history.ts";
import type { StateStore } from "../core/state/store.ts";

/** The content type Prometheus expects. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${label(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

class Exposition {
  readonly lines: string[] = [];
  family(name: string, type: "gauge" | "counter" | "histogram", help: string): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  }
  sample(name: string, pairs: Record<string, string>, value: number): void {
    this.lines.push(`${name}${labels(pairs)} ${Number.isFinite(value) ? value : 0}`);
  }
}

/**
 * Renders the metrics from the store's current state.
 *
 * @example
 * ```ts ignore
 * import { renderMetrics } from "./metrics.ts";
 * const text = await renderMetrics(store, historyOf(store));
 * ```
 */
export async function renderMetrics(
  store: StateStore,
  history: History,
  options: { dagIds?: readonly string[] } = {},
): Promise<string> {
  const [runs, states, attempts, histograms, verdicts, quarantined, pools, paused, head] =
    await Promise.all([
      history.runCounts(),
      history.taskStateCounts(),
      history.attemptTotals(),
      history.durationHistograms(),
      history.checkpointVerdicts(),
      history.quarantinedTotals(),
      store.listPools(),
      store.pausedDags(),
      store.auditHead(),
    ]);
  const m = new Exposition();

  m.family("carrel_runs", "gauge", "Runs in the state store by DAG and state.");
  for (const r of runs) m.sample("carrel_runs", { dag: r.dagId, state: r.state }, r.count);

  m.family("carrel_task_instances", "gauge", "Task instances by state.");
  for (const s of states) m.sample("carrel_task_instances", { state: s.state }, s.count);

  const count = (wanted: string[]) =>
    states.filter((s) => wanted.includes(s.state)).reduce((n, s) => n + s.count, 0);
  m.family(
    "carrel_queue_depth",
    "gauge",
    "Task instances waiting to be claimed (queued, up_for_retry, up_for_reschedule).",
  );
  m.sample("carrel_queue_depth", {}, count(["queued", "up_for_retry", "up_for_reschedule"]));
  m.family("carrel_claims", "gauge", "Task instances claimed and running now.");
  m.sample(
    "carrel_claims",
    {},
    states.filter((s) => s.state === "running").reduce((n, s) => n + s.claimed, 0),
  );

  m.family("carrel_task_attempts_total", "counter", "Task attempts made, by DAG.");
  for (const a of attempts) m.sample("carrel_task_attempts_total", { dag: a.dagId }, a.attempts);

  m.family(
    "carrel_task_duration_seconds",
    "histogram",
    "Durations of finished task instances (their latest attempt), by DAG and task.",
  );
  for (const h of histograms) {
    const base = { dag: h.dagId, task: h.taskId };
    DURATION_BUCKETS_S.forEach((le, i) =>
      m.sample("carrel_task_duration_seconds_bucket", { ...base, le: String(le) }, h.buckets[i]!)
    );
    m.sample("carrel_task_duration_seconds_bucket", { ...base, le: "+Inf" }, h.count);
    m.sample("carrel_task_duration_seconds_sum", base, Math.round(h.sumSeconds * 1000) / 1000);
    m.sample("carrel_task_duration_seconds_count", base, h.count);
  }

  m.family(
    "carrel_checkpoint_verdicts_total",
    "counter",
    "Privacy checkpoint verdicts by DAG and outcome.",
  );
  for (const v of verdicts) {
    m.sample("carrel_checkpoint_verdicts_total", { dag: v.dagId, verdict: "passed" }, v.passed);
    m.sample("carrel_checkpoint_verdicts_total", { dag: v.dagId, verdict: "failed" }, v.failed);
  }
  m.family(
    "carrel_checkpoint_failures_total",
    "counter",
    "Privacy checkpoints that failed, by DAG.",
  );
  for (const v of verdicts) {
    m.sample("carrel_checkpoint_failures_total", { dag: v.dagId }, v.failed);
  }

  m.family(
    "carrel_quarantined_records_total",
    "counter",
    "Records set aside by quarantining operators, by DAG and operation.",
  );
  for (const q of quarantined) {
    m.sample(
      "carrel_quarantined_records_total",
      { dag: q.dagId, operation: q.operation },
      q.records,
    );
  }

  m.family("carrel_pool_slots", "gauge", "Slots of each pool.");
  for (const p of pools) m.sample("carrel_pool_slots", { pool: p.name }, p.slots);
  m.family("carrel_pool_running", "gauge", "Claims running in each pool.");
  for (const p of pools) m.sample("carrel_pool_running", { pool: p.name }, p.running);

  m.family("carrel_dag_paused", "gauge", "1 when the DAG is paused.");
  const dagIds = new Set([...(options.dagIds ?? []), ...paused.keys()]);
  for (const id of [...dagIds].sort()) {
    m.sample("carrel_dag_paused", { dag: id }, paused.get(id) ? 1 : 0);
  }

  m.family("carrel_audit_entries", "gauge", "Sequence number of the audit chain's head.");
  m.sample("carrel_audit_entries", {}, head.seq);
  return m.lines.join("\n") + "\n";
}
