/**
 * CLI output: one JSON document for `--json`, aligned tables for people, and the shapes the
 * contract names.
 *
 * @module
 */
import { Dataset } from "../core/dataset.ts";
import type { RunResult } from "../core/run/events.ts";

function jsonOutput(value: unknown): unknown {
  return value instanceof Dataset ? value.ref : value ?? null;
}
import type { RunRecord, TaskInstanceRecord } from "../core/state/store.ts";

/** Prints exactly one JSON document on stdout. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** Formats rows as an aligned table. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [
    headers,
    ...rows.map((r) => r.map((c) => (c === null || c === undefined ? "-" : String(c)))),
  ];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells.map((r) =>
    r.map((c, i) => (i === r.length - 1 ? c : (c ?? "").padEnd(widths[i]!))).join("  ").trimEnd()
  )
    .join("\n");
}

/** The contract's run shape, from a stored run and its task instances. */
export function runJson(run: RunRecord, tis: TaskInstanceRecord[], order?: string[]) {
  const rank = new Map((order ?? []).map((id, i) => [id, i]));
  // A mapped instance (`load[3]`) is listed with its task, by index.
  const place = (t: TaskInstanceRecord) =>
    rank.get(t.mapIndex >= 0 ? t.taskId.replace(/\[\d+\]$/, "") : t.taskId) ?? 1e9;
  const sorted = [...tis].sort((a, b) =>
    place(a) - place(b) || a.mapIndex - b.mapIndex || a.taskId.localeCompare(b.taskId)
  );
  return {
    runId: run.runId,
    dagId: run.dagId,
    logicalDate: run.logicalDate.toISOString(),
    dataInterval: { start: run.intervalStart.toISOString(), end: run.intervalEnd.toISOString() },
    state: run.state,
    runType: run.runType,
    startedAt: run.startedAt?.toISOString() ?? null,
    endedAt: run.endedAt?.toISOString() ?? null,
    tasks: sorted.map((t) => ({
      taskId: t.taskId,
      ...(t.mapIndex >= 0 ? { mapIndex: t.mapIndex } : {}),
      state: t.state,
      attempts: t.tryNumber,
      jobKey: t.jobKey,
      zone: t.zone,
      startedAt: t.startedAt?.toISOString() ?? null,
      endedAt: t.endedAt?.toISOString() ?? null,
      durationMs: t.startedAt && t.endedAt && t.endedAt >= t.startedAt
        ? t.endedAt.getTime() - t.startedAt.getTime()
        : null,
      error: t.error,
      // Shared outputs only: enclave outputs are never stored.
      ...(t.outputKind === "json" || t.outputKind === "dataset" ? { output: t.output } : {}),
    })),
  };
}

/** The contract's run shape, from an executor result. */
export function resultJson(result: RunResult, extra: Record<string, unknown> = {}) {
  return {
    runId: result.runId,
    dagId: result.dagId,
    logicalDate: result.logicalDate,
    state: result.state,
    ...extra,
    tasks: result.tasks.map((t) => ({
      taskId: t.taskId,
      state: t.state,
      attempts: t.attempts,
      jobKey: t.jobKey,
      zone: t.zone,
      startedAt: t.startedAt,
      endedAt: t.endedAt,
      durationMs: t.durationMs,
      executed: t.executed,
      error: t.error,
      // Shared outputs only: what may leave the enclave.
      ...(t.outputZone === "shared" && t.state === "success" && result.outputs.has(t.taskId)
        ? { output: jsonOutput(result.outputs.get(t.taskId)) }
        : {}),
    })),
  };
}
