/**
 * Helpers for the privacy tests that run DAGs in-process (`executeRun`, nothing persisted unless
 * a store is given): the run itself with its audit entries, task and audit lookups, a recording
 * shared sink, and a value-absence assertion. Declares no tests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import type { AuditInput } from "../../core/audit.ts";
import {
  type DagConfig,
  Dataset,
  defineDag,
  type ExecuteOptions,
  executeRun,
  resolveDag,
  type RunResult,
  task,
  type TaskSpec,
} from "../../core/mod.ts";

export const KEY = "carrel-privacy-test-key-0123456789abcdef";
export const KEY_ENV = { get: (name: string) => (name === "PII_HMAC_KEY" ? KEY : undefined) };
export const interval = {
  start: new Date("2026-01-05T00:00:00Z"),
  end: new Date("2026-01-06T00:00:00Z"),
};
export const TOKEN = /^[0-9a-f]{64}$/;

export function hmac(key: string, raw: string): string {
  return createHmac("sha256", key).update(raw, "utf8").digest("hex");
}

export interface Ran extends RunResult {
  audit: AuditInput[];
  home: string;
}

/** Runs a DAG in-process (nothing persisted) in `home`, collecting the audit entries. */
export async function run(
  home: string,
  tasks: Record<string, TaskSpec>,
  options: Partial<ExecuteOptions> = {},
): Promise<Ran> {
  const audit: AuditInput[] = [];
  const config: DagConfig = { id: "privacy_ops", tasks };
  const result = await executeRun({
    dag: resolveDag(defineDag(config)),
    interval,
    params: {},
    home,
    onAudit: (entries) => audit.push(...entries),
    ...options,
  });
  return { ...result, audit, home };
}

export function taskOf(result: RunResult, id: string) {
  const t = result.tasks.find((t) => t.taskId === id);
  assert.ok(t, `no task ${id}`);
  return t;
}

export function auditOf(result: Ran, operation: string, taskId?: string): AuditInput[] {
  return result.audit.filter((e) =>
    e.operation === operation && (taskId === undefined || e.taskId === taskId)
  );
}

/** Asserts that none of `values` appears in `text`. */
export function assertNone(text: string, values: readonly string[], what: string): void {
  for (const v of values) assert.ok(!text.includes(v), `${what} holds the value ${v}:\n${text}`);
}

/** A shared sink that records whether it ran and what it received. */
export function sink(after: string[]): { spec: TaskSpec; calls: unknown[] } {
  const calls: unknown[] = [];
  const spec = task({
    after,
    run: async (ctx) => {
      const input = ctx.inputs[after[0]!];
      const rows: unknown[] = [];
      if (input instanceof Dataset) { for await (const r of input) rows.push(r); }
      else rows.push(...(input as unknown[]));
      calls.push(rows);
      return { loaded: rows.length };
    },
  });
  return { spec, calls };
}
