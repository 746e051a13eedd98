/**
 * Runs one task body in a sandbox Worker, for the attempt runner: the body's `ctx` crosses as
 * data, logs and counts come back by message into the real `ctx`, and the outcome is returned
 * (or thrown) as if the body had run here. A denied access becomes a `SandboxDeniedError` naming
 * the task and the capability.
 *
 * @module
 */
import type { ResolvedTask, TaskContext } from "../dag.ts";
import { Dataset, isDatasetRef, workspaceTransfer } from "../dataset.ts";
import { FatalTaskError, RescheduleTask, SkipTask } from "../errors.ts";
import { markPrivacySafe } from "../privacy/privacy_safe.ts";
import { ensurePgliteTemplate, pgliteTemplateDir } from "../state/pglite_database.ts";
import { SandboxDeniedError } from "./denial.ts";
import { sandboxPermissions } from "./permissions.ts";
import {
  acquireWorker,
  permissionKey,
  prewarmWorker,
  releaseWorker,
  retireWorkers,
} from "./pool.ts";
import type { SandboxErrorData, SandboxJob } from "./protocol.ts";
import {
  isStreamed,
  type Served,
  serveInput,
  serveOutput,
  STREAM_OUTPUT,
  type StreamOutput,
} from "./stream_ports.ts";

/**
 * What a run (by its workspace) knows of its sandboxes: each strict task's permission set (its
 * pool key), and the tasks whose attempt succeeded.
 */
interface RunSandboxes {
  readonly keys: Map<string, string>;
  readonly done: Set<string>;
  /** Strict tasks not done yet, by permission set (so a check costs one lookup, not a walk). */
  readonly pending: Map<string, number>;
  /** Strict tasks not done yet whose permission set is unknown (refused when worked out). */
  unknown: number;
}

/** Runs whose sandboxes were warmed up, by workspace. */
const runs = new WeakMap<object, RunSandboxes>();

/**
 * At a run's first sandboxed attempt, starts one Worker per permission set of the run's other
 * strict tasks, so their start-up overlaps the work before them instead of adding to it, and
 * notes each task's permission set.
 */
function prewarm(t: ResolvedTask, ctx: TaskContext, key: string): RunSandboxes {
  const known = runs.get(ctx.workspace);
  if (known) return known;
  const run: RunSandboxes = {
    keys: new Map([[t.id, key]]),
    done: new Set(),
    pending: new Map(),
    unknown: 0,
  };
  runs.set(ctx.workspace, run);
  const siblings = dagTasks.get(t.module!) ?? [];
  for (const other of siblings) {
    if (!isSandboxed(other) || other.module !== t.module) continue;
    if (other === t) {
      run.pending.set(key, (run.pending.get(key) ?? 0) + 1);
      continue;
    }
    try {
      const permissions = sandboxPermissions(
        other,
        ctx.params as Record<string, unknown>,
        ctx.workspace,
      );
      const theirs = permissionKey(permissions);
      run.keys.set(other.id, theirs);
      run.pending.set(theirs, (run.pending.get(theirs) ?? 0) + 1);
      // The Worker this attempt runs in serves its permission set's later tasks.
      if (theirs !== key) prewarmWorker(permissions, t.module!, ctx.dagId);
    } catch {
      // Refused: its own attempt says why. Until then nothing is let go.
      run.unknown++;
    }
  }
  return run;
}

/**
 * Whether a Worker with pool key `key` may serve another task of the run once `t` succeeded:
 * some task not done yet has the same permissions (a task whose permission set is unknown
 * counts, so nothing is let go that might be needed). Workers nothing needs any more are
 * terminated at once, this one and idle ones with its permissions: each holds what its tasks
 * left behind (an embedded database's memory, say) until then.
 */
function stillNeeded(run: RunSandboxes, t: ResolvedTask, key: string): boolean {
  // A mapped task's other instances may still run with the same permissions.
  if (t.expand !== undefined) return true;
  if (!run.done.has(t.id)) {
    run.done.add(t.id);
    const own = run.keys.get(t.id);
    if (own !== undefined) run.pending.set(own, (run.pending.get(own) ?? 1) - 1);
  }
  if (!dagTasks.has(t.module!)) return true;
  return run.unknown > 0 || (run.pending.get(key) ?? 0) > 0;
}

/** The tasks of each loaded DAG file, by module URL (for warming up). */
const dagTasks = new Map<string, ResolvedTask[]>();

/**
 * Records a loaded DAG's tasks so that a run's first sandboxed attempt can warm up the others'.
 *
 * @example
 * ```ts ignore
 * registerSandboxedTasks([...dag.tasks.values()]);
 * ```
 */
export function registerSandboxedTasks(tasks: readonly ResolvedTask[]): void {
  const module = tasks.find((t) => t.module)?.module;
  if (!module) return;
  dagTasks.delete(module);
  dagTasks.set(module, [...tasks]);
  // The scheduler reloads changed files under new URLs: keep the most recent ones only.
  if (dagTasks.size > 512) dagTasks.delete(dagTasks.keys().next().value!);
}

/** True when task `t` runs in a sandbox Worker. */
export function isSandboxed(t: ResolvedTask): boolean {
  return t.sandbox?.mode === "strict";
}

/** Template folders made (or found) in this process, by path. */
const templates = new Map<string, Promise<string | undefined>>();

/**
 * The embedded databases' template folder once it holds a cluster (made here when missing: a
 * sandbox may not write the cache folder), or `undefined` when it cannot be made (the Worker
 * then runs initdb itself, as it would without a template).
 */
function templateReady(template: string): Promise<string | undefined> {
  let ready = templates.get(template);
  if (!ready) {
    ready = ensurePgliteTemplate(template).then(() => template, () => undefined);
    templates.set(template, ready);
  }
  return ready;
}

function thrownFrom(t: ResolvedTask, e: SandboxErrorData): Error {
  if (e.denied) return new SandboxDeniedError(t.id, t.zone, e.denied);
  if (e.reschedule) return new RescheduleTask(e.reschedule);
  if (e.skip) return new SkipTask(e.message);
  const error = e.permanent ? new FatalTaskError(e.message) : new Error(e.message);
  error.name = e.name;
  return e.safe ? markPrivacySafe(error) : error;
}

/**
 * Runs `t`'s body in a Worker with exactly its permissions, with `ctx` as the attempt runner
 * built it.
 *
 * @example
 * ```ts ignore
 * const value = isSandboxed(t) ? await runSandboxed(t, ctx) : await t.run(ctx);
 * ```
 */
export async function runSandboxed(t: ResolvedTask, ctx: TaskContext): Promise<unknown> {
  if (!t.module) {
    throw markPrivacySafe(
      new FatalTaskError(
        `Cannot run task "${t.id}" in its sandbox: its DAG was not loaded from a file (a sandbox Worker imports the DAG file to find the task)`,
      ),
    );
  }
  const permissions = sandboxPermissions(t, ctx.params as Record<string, unknown>, ctx.workspace);
  const template = pgliteTemplateDir();
  const pgliteTemplate = template !== undefined && permissions.read.includes(template)
    ? await templateReady(template)
    : undefined;
  const inputs = Object.fromEntries(
    Object.entries(ctx.inputs).map(([k, v]) => [k, v instanceof Dataset ? v.ref : v]),
  );
  const w = acquireWorker(permissions);
  // In a fused pass, records stream to and from the Worker over ports instead of files; the
  // ports are closed (an open one keeps the process alive) and the Worker released in any case.
  const served: Served[] = [];
  let reusable = false;
  let retire = false;
  try {
    const streamedInputs: Record<string, MessagePort> = {};
    for (const [k, v] of Object.entries(ctx.inputs)) {
      if (!isStreamed(v)) continue;
      const input = serveInput(v);
      served.push(input);
      streamedInputs[k] = input.port;
    }
    const streamOutput = (ctx as { [STREAM_OUTPUT]?: StreamOutput })[STREAM_OUTPUT];
    const output = streamOutput ? serveOutput(streamOutput) : undefined;
    if (output) served.push(output);
    const job: SandboxJob = {
      type: "run",
      module: t.module,
      dagId: ctx.dagId,
      taskId: t.id,
      runId: ctx.runId,
      jobKey: ctx.jobKey,
      dataInterval: { start: ctx.dataInterval.start, end: ctx.dataInterval.end },
      params: ctx.params as Record<string, unknown>,
      attempt: ctx.attempt,
      inputs,
      inputTags: ctx.inputTags,
      zone: t.zone,
      outputZone: t.outputZone,
      workspace: workspaceTransfer(ctx.workspace, t.zone === "enclave"),
      ...(pgliteTemplate ? { pgliteTemplate } : {}),
      ...(served.length > 0
        ? {
          streams: {
            inputs: streamedInputs,
            ...(output ? { output: output.port } : {}),
          },
        }
        : {}),
    };
    const run = prewarm(t, ctx, w.key);
    return await new Promise<unknown>((resolve, reject) => {
      const onAbort = () => {
        w.worker.postMessage({ type: "abort" });
        reject(ctx.signal.reason);
      };
      if (ctx.signal.aborted) return onAbort();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      const settle = (ok: boolean, value: unknown) => {
        ctx.signal.removeEventListener("abort", onAbort);
        // A failed attempt keeps its Worker for a retry.
        reusable = !ok || stillNeeded(run, t, w.key);
        retire = !reusable;
        if (ok) resolve(value);
        else reject(value);
      };
      w.onMessage = (m) => {
        switch (m.type) {
          case "log":
            ctx.log[m.level](m.message, m.properties);
            break;
          case "count":
            ctx.count(m.operation, m.records, m.detail);
            break;
          case "done":
            // A streamed output stands for what went through the pass's pipe.
            settle(
              true,
              streamOutput && isDatasetRef(m.value) && m.value.$dataset.streamed === true
                ? streamOutput.handle
                : isDatasetRef(m.value)
                ? new Dataset(m.value, ctx.workspace)
                : m.value,
            );
            break;
          case "failed": {
            const error = thrownFrom(t, m.error);
            // The audit trail records what was refused: a capability and its name, no data.
            if (error instanceof SandboxDeniedError) {
              ctx.count("sandbox:denied", 1, {
                capability: error.denial.kind,
                resource: error.denial.resource,
              });
            }
            settle(false, error);
            break;
          }
        }
      };
      w.onError = (message) => {
        reusable = false;
        ctx.signal.removeEventListener("abort", onAbort);
        const denied = /Requires (\w+) access to "([^"]*)"/.exec(message);
        reject(
          denied
            ? new SandboxDeniedError(t.id, t.zone, { kind: denied[1]!, resource: denied[2]! })
            : new Error(`Task "${t.id}" crashed its sandbox: ${message}`),
        );
      };
      try {
        w.worker.postMessage(job, served.map((s) => s.port));
      } catch (error) {
        reusable = true;
        ctx.signal.removeEventListener("abort", onAbort);
        reject(
          markPrivacySafe(
            new FatalTaskError(
              `Cannot pass the context of task "${t.id}" to its sandbox: ${
                (error as Error).name
              } (inputs and params must be plain data or datasets)`,
            ),
          ),
        );
      }
    });
  } finally {
    for (const s of served) s.close();
    releaseWorker(w, reusable && !ctx.signal.aborted);
    if (retire) retireWorkers(w.key);
  }
}
