/**
 * Runs one DAG run: creates or resumes it in the state store, computes the ready set in
 * topological order, runs tasks with `maxActiveTasks` parallelism, retries with backoff,
 * per-attempt timeouts and Airflow's trigger rules, and records every transition (with its audit
 * entry) in one transaction. Without a store it runs in-process and persists nothing.
 *
 * @module
 */
import type { AuditInput } from "./audit.ts";
import type { DataInterval, ResolvedDag, ResolvedTask, TaskContext, Zone } from "./dag.ts";
import { Dataset, isDatasetRef, Workspace } from "./dataset.ts";
import { formatDuration } from "./duration.ts";
import { errorMessage, FatalTaskError, SkipTask } from "./errors.ts";
import { canonicalJson, jobKey, runIdFor, sha256Hex } from "./job_key.ts";
import { runLogger } from "./log.ts";
import { ownerId, ownerIsDead } from "./owner.ts";
import { isPrivacySafe } from "./privacy_safe.ts";
import { assertNoSecretsInParams } from "./secrets.ts";
import { decideTrigger, runStateFromLeaves } from "./trigger_rules.ts";
import type {
  RunRecord,
  RunState,
  RunType,
  StateStore,
  TaskInstanceRecord,
  TaskState,
} from "./state/store.ts";

/** Typed executor events, for progress displays and tests. */
export type ExecutorEvent =
  | {
    type: "run:start";
    runId: string;
    dagId: string;
    logicalDate: Date;
    resumed: boolean;
    tasks: number;
    alreadyDone: number;
  }
  | { type: "task:start"; runId: string; taskId: string; attempt: number; maxAttempts: number }
  | {
    type: "task:success";
    runId: string;
    taskId: string;
    attempt: number;
    durationMs: number;
    records?: number;
  }
  | {
    type: "task:retry";
    runId: string;
    taskId: string;
    attempt: number;
    delayMs: number;
    error: string;
  }
  | {
    type: "task:failed";
    runId: string;
    taskId: string;
    attempt: number;
    durationMs: number;
    error: string;
  }
  | { type: "task:skipped"; runId: string; taskId: string; reason: string }
  | { type: "task:upstream_failed"; runId: string; taskId: string }
  | { type: "task:done_before"; runId: string; taskId: string }
  | { type: "run:end"; runId: string; state: RunState; durationMs: number };

/** The outcome of one task in a run. */
export interface TaskSummary {
  taskId: string;
  state: TaskState;
  attempts: number;
  jobKey: string;
  zone: Zone;
  /** `shared` when the output may leave the enclave (shared tasks and checkpoints). */
  outputZone: Zone;
  startedAt: string | null;
  endedAt: string | null;
  durationMs: number | null;
  error: string | null;
  /** Executed in this invocation (false when it had succeeded before). */
  executed: boolean;
}

/** What `executeRun` returns. */
export interface RunResult {
  runId: string;
  dagId: string;
  logicalDate: string;
  state: RunState;
  tasks: TaskSummary[];
  /** Outputs of this invocation by task id (enclave outputs included, in memory only). */
  outputs: Map<string, unknown>;
}

/** Options of `executeRun`. */
export interface ExecuteOptions {
  dag: ResolvedDag;
  interval: DataInterval;
  params: Record<string, unknown>;
  /** Absent: an in-process test run that persists nothing. */
  store?: StateStore;
  /** `CARREL_HOME`, for workspaces. */
  home: string;
  runType?: RunType;
  signal?: AbortSignal;
  onEvent?: (event: ExecutorEvent) => void;
  /** How long a run or task lease lasts without a heartbeat. Default 30s. */
  leaseMs?: number;
  /** The largest JSON output stored in the state store. Default 1 MiB. */
  maxOutputBytes?: number;
  /** The key version in use (for the run record and the audit trail). */
  keyVersion?: string;
  /** Outputs of tasks taken as already succeeded (for `tasks test` and workers). */
  seed?: ReadonlyMap<string, unknown>;
  /** Final states other than success of tasks outside `only` (for workers). */
  seedStates?: ReadonlyMap<string, TaskState>;
  /** Without a store: receives the audit entries a store would have recorded. */
  onAudit?: (entries: AuditInput[]) => void;
  /** Only these tasks execute; the others (unless seeded) are left out. */
  only?: ReadonlySet<string>;
}

const DEFAULT_MAX_OUTPUT = 1024 * 1024;

/** Thrown when the run is already being executed by a live process. */
export class RunBusyError extends Error {
  override name = "RunBusyError";
}

interface Node {
  task: ResolvedTask;
  jobKey: string;
  state: TaskState;
  tryNumber: number;
  maxTries: number;
  startedAt: Date | null;
  endedAt: Date | null;
  error: string | null;
  /** The output is known in this process. */
  hasOutput: boolean;
  output: unknown;
  executed: boolean;
  /** Succeeded before, but its enclave output must be recomputed for a downstream task. */
  recompute: boolean;
  /** Run only to feed a downstream (its own success was already recorded). */
  retryAt: number | null;
}

const FINAL: ReadonlySet<TaskState> = new Set(["success", "failed", "upstream_failed", "skipped"]);

/** The job keys of a run's tasks. */
export function jobKeysFor(
  dag: ResolvedDag,
  interval: DataInterval,
  params: Record<string, unknown>,
): Map<string, string> {
  const keys = new Map<string, string>();
  for (const id of dag.order) {
    keys.set(id, jobKey({ dag: dag.id, task: id, interval, params, mapIndex: -1 }));
  }
  return keys;
}

/** The hash of a run's params (stored instead of comparing values). */
export function paramsHash(params: Record<string, unknown>): string {
  return sha256Hex(canonicalJson(params));
}

/**
 * Executes (or resumes) the run of `dag` for `interval.start`.
 *
 * @example
 * ```ts ignore
 * import { executeRun } from "./executor.ts";
 * const result = await executeRun({ dag, interval, params: {}, store, home: ".carrel" });
 * console.log(result.state);
 * ```
 */
export async function executeRun(options: ExecuteOptions): Promise<RunResult> {
  const { dag, interval, params, store } = options;
  if (store) assertNoSecretsInParams(dag.id, params);
  const logicalDate = interval.start;
  const runId = runIdFor(dag.id, logicalDate);
  const owner = ownerId();
  const leaseMs = options.leaseMs ?? 30_000;
  const maxOutputBytes = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const emit = options.onEvent ?? (() => {});
  const keys = jobKeysFor(dag, interval, params);
  const runLog = runLogger({ runId, dagId: dag.id });
  const audit = (input: Omit<AuditInput, "correlationId" | "dagId">): AuditInput => ({
    correlationId: runId,
    dagId: dag.id,
    keyVersion: options.keyVersion ?? null,
    ...input,
  });
  const t0 = performance.now();

  // ---- Create or claim the run --------------------------------------------------------------
  let resumed = false;
  let existing: TaskInstanceRecord[] = [];
  if (store) {
    const hash = paramsHash(params);
    const { run, created } = await store.createRun(
      {
        runId,
        dagId: dag.id,
        logicalDate,
        intervalStart: interval.start,
        intervalEnd: interval.end,
        params,
        paramsHash: hash,
        runType: options.runType ?? "manual",
        state: "queued",
      },
      audit({
        operation: "run:create",
        status: "queued",
        detail: { runType: options.runType ?? "manual" },
      }),
    );
    if (!created && run.paramsHash !== hash) {
      const differing = Object.keys({ ...run.params, ...params })
        .filter((k) => canonicalJson(run.params[k] ?? null) !== canonicalJson(params[k] ?? null));
      throw new RunBusyError(
        `Cannot run "${runId}": it exists with different params (${
          differing.join(", ")
        }); clear it or use its params`,
      );
    }
    resumed = !created;
    await claimRun(store, run, owner, leaseMs, audit);
    await store.ensureTaskInstances(dag.order.map((id) => {
      const t = dag.tasks.get(id)!;
      return {
        jobKey: keys.get(id)!,
        runId,
        dagId: dag.id,
        taskId: id,
        mapIndex: -1,
        zone: t.zone,
        pool: t.pool ?? null,
        state: "scheduled" as const,
        maxTries: t.retries + 1,
      };
    }));
    existing = await store.listTaskInstances(runId);
  }
  const byKey = new Map(existing.map((r) => [r.jobKey, r]));
  const workspace = new Workspace(options.home, runId);

  // ---- Build the in-memory state ------------------------------------------------------------
  const nodes = new Map<string, Node>();
  for (const id of dag.order) {
    const t = dag.tasks.get(id)!;
    const rec = byKey.get(keys.get(id)!);
    const done = rec?.state === "success" || rec?.state === "skipped";
    const node: Node = {
      task: t,
      jobKey: keys.get(id)!,
      state: done ? rec!.state : "scheduled",
      tryNumber: rec?.tryNumber ?? 0,
      maxTries: (rec?.tryNumber ?? 0) + t.retries + 1,
      startedAt: rec?.startedAt ?? null,
      endedAt: rec?.endedAt ?? null,
      error: done ? null : rec?.error ?? null,
      hasOutput: false,
      output: undefined,
      executed: false,
      recompute: false,
      retryAt: null,
    };
    const seededState = options.seedStates?.get(id);
    if (seededState) {
      node.state = seededState;
      node.hasOutput = seededState === "skipped";
      node.output = null;
    } else if (options.seed?.has(id)) {
      node.state = "success";
      node.hasOutput = true;
      node.output = options.seed.get(id);
    } else if (options.only && !options.only.has(id)) {
      node.state = "skipped";
      node.hasOutput = true;
      node.output = null;
    } else if (rec?.state === "success") {
      const restored = await restoreOutput(rec, workspace);
      if (restored.ok) {
        node.hasOutput = true;
        node.output = restored.value;
      }
    } else if (rec?.state === "skipped") {
      node.hasOutput = true;
      node.output = null;
    }
    nodes.set(id, node);
  }
  // Tasks that succeeded before but whose output is not available (enclave data is never
  // stored) are recomputed when a task that will execute needs it.
  for (const id of [...dag.order].reverse()) {
    const n = nodes.get(id)!;
    if (n.state !== "success" || n.hasOutput) continue;
    const needed = dag.downstream.get(id)!.some((d) => {
      const dn = nodes.get(d)!;
      return dn.state !== "success" && dn.state !== "skipped" || dn.recompute;
    });
    if (needed) {
      n.recompute = true;
      n.state = "scheduled";
    }
  }
  // Reset what will run again, so the stored state matches this execution.
  if (store) {
    for (const n of nodes.values()) {
      const rec = byKey.get(n.jobKey);
      if (n.state !== "scheduled" || !rec || rec.state === "scheduled" && !n.recompute) continue;
      if (n.recompute) continue; // keeps its recorded success
      await store.updateTaskInstance(n.jobKey, {
        state: "scheduled",
        maxTries: n.maxTries,
        owner: null,
        leaseUntil: null,
        nextAttemptAt: null,
        error: null,
        endedAt: null,
      }, {
        audit: [
          audit({
            taskId: n.task.id,
            operation: "task:reset",
            status: "scheduled",
            detail: { from: rec.state },
          }),
        ],
      });
    }
  }
  const alreadyDone = [...nodes.values()].filter((n) => FINAL.has(n.state)).length;
  emit({
    type: "run:start",
    runId,
    dagId: dag.id,
    logicalDate,
    resumed,
    tasks: dag.order.length,
    alreadyDone,
  });
  for (const n of nodes.values()) {
    if (n.state === "success") emit({ type: "task:done_before", runId, taskId: n.task.id });
  }
  runLog.info("Run {runId} started: {tasks} tasks, {done} done before", {
    runId,
    tasks: dag.order.length,
    done: alreadyDone,
  });

  // ---- Heartbeat ----------------------------------------------------------------------------
  const running = new Map<string, { promise: Promise<void> }>();
  const heartbeat = store
    ? setInterval(() => {
      const until = new Date(Date.now() + leaseMs);
      store.updateRun(runId, { leaseUntil: until }, { expect: { owner } }).catch(() => {});
      for (const id of running.keys()) {
        store.updateTaskInstance(nodes.get(id)!.jobKey, { leaseUntil: until }, {
          expect: { owner, states: ["running"] },
        }).catch(() => {});
      }
    }, Math.max(100, Math.floor(leaseMs / 3)))
    : undefined;

  // ---- The scheduling loop ------------------------------------------------------------------
  const runSignal = options.signal ?? new AbortController().signal;
  let wake: () => void = () => {};
  let cancelled = false;
  const onAbort = () => {
    cancelled = true;
    wake();
  };
  runSignal.addEventListener("abort", onAbort, { once: true });
  if (runSignal.aborted) onAbort();

  const transition = async (
    n: Node,
    state: TaskState,
    patch: Parameters<StateStore["updateTaskInstance"]>[1],
    entries: AuditInput[],
  ) => {
    n.state = state;
    if (!store) {
      options.onAudit?.(entries);
      return;
    }
    if (n.recompute && state !== "failed") {
      // Its success was recorded before: the recomputation is noted in the audit trail only.
      await store.appendAudit(entries);
      return;
    }
    await store.updateTaskInstance(n.jobKey, { ...patch, state }, { audit: entries });
  };

  const decide = (n: Node) =>
    decideTrigger(n.task.triggerRule, n.task.after.map((u) => nodes.get(u)!.state));

  const inputsOf = async (n: Node): Promise<Record<string, unknown>> => {
    const inputs: Record<string, unknown> = {};
    for (const up of n.task.after) {
      const u = nodes.get(up)!;
      if (u.state === "success" && u.hasOutput) inputs[up] = u.output;
    }
    return await Promise.resolve(inputs);
  };

  const attempt = async (n: Node): Promise<void> => {
    const t = n.task;
    n.tryNumber++;
    const attemptNo = n.tryNumber - (n.maxTries - t.retries - 1);
    const maxAttempts = t.retries + 1;
    const started = new Date();
    n.startedAt = started;
    const signals = [runSignal];
    if (t.timeoutMs !== undefined) signals.push(AbortSignal.timeout(t.timeoutMs));
    const signal = AbortSignal.any(signals);
    await transition(n, "running", {
      tryNumber: n.tryNumber,
      maxTries: n.maxTries,
      startedAt: started,
      endedAt: null,
      owner,
      leaseUntil: new Date(Date.now() + leaseMs),
      nextAttemptAt: null,
      error: null,
    }, [
      audit({
        taskId: t.id,
        operation: n.recompute ? "task:recompute" : "task:start",
        status: "running",
        detail: { attempt: attemptNo },
      }),
    ]);
    emit({ type: "task:start", runId, taskId: t.id, attempt: attemptNo, maxAttempts });
    const log = runLogger({ runId, dagId: dag.id, taskId: t.id, attempt: attemptNo });
    log.info("Task {taskId} started (attempt {attempt} of {maxAttempts})", {
      taskId: t.id,
      attempt: attemptNo,
      maxAttempts,
    });
    const counts: AuditInput[] = [];
    const ctx: TaskContext = {
      dagId: dag.id,
      taskId: t.id,
      runId,
      jobKey: n.jobKey,
      logicalDate,
      dataInterval: { start: interval.start, end: interval.end },
      params: structuredClone(params),
      attempt: attemptNo,
      signal,
      log,
      inputs: await inputsOf(n),
      inputTags: Object.fromEntries(t.after.map((u) => [u, nodes.get(u)!.task.outputTags])),
      zone: t.zone,
      workspace,
      dataset: (name = "data", opts) =>
        workspace.create(t.id, name, t.outputZone === "enclave" && opts?.valueFree !== true),
      count: (operation, records, detail) => {
        const { keyVersion, ...rest } = detail ?? {};
        counts.push(audit({
          taskId: t.id,
          operation,
          status: "counted",
          recordCount: records,
          ...(typeof keyVersion === "string" ? { keyVersion } : {}),
          ...(Object.keys(rest).length ? { detail: rest } : {}),
        }));
      },
    };
    let outcome: { ok: true; value: unknown } | { ok: false; error: unknown };
    try {
      const value = await raceAbort(Promise.resolve().then(() => t.run(ctx)), signal);
      outcome = { ok: true, value: await materialize(value, ctx, t) };
    } catch (error) {
      outcome = {
        ok: false,
        error: signal.aborted && !(error instanceof SkipTask)
          // The run signal's own reason reaches the attempt's signal before `onAbort` runs.
          ? runSignal.aborted ? new CancelledError() : abortReason(signal, t, error)
          : error,
      };
    }
    const ended = new Date();
    n.endedAt = ended;
    const durationMs = ended.getTime() - started.getTime();
    if (outcome.ok) {
      const stored = store
        ? storedOutput(t, outcome.value, maxOutputBytes)
        : { ok: true as const, kind: null, value: null };
      if (!stored.ok) outcome = { ok: false, error: new FatalTaskError(stored.error) };
      else {
        n.hasOutput = true;
        n.output = outcome.value;
        n.executed = true;
        const records = countRecords(outcome.value);
        await transition(n, "success", {
          endedAt: ended,
          owner: null,
          leaseUntil: null,
          outputKind: stored.kind,
          output: stored.value,
          error: null,
        }, [
          ...counts,
          audit({
            taskId: t.id,
            operation: n.recompute ? "task:recomputed" : "task:success",
            status: "success",
            recordCount: records ?? null,
            detail: { attempt: attemptNo, durationMs },
          }),
        ]);
        emit({
          type: "task:success",
          runId,
          taskId: t.id,
          attempt: attemptNo,
          durationMs,
          ...(records === undefined ? {} : { records }),
        });
        log.info("Task {taskId} succeeded in {duration}", {
          taskId: t.id,
          duration: formatDuration(durationMs),
        });
        return;
      }
    }
    const error = (outcome as { error: unknown }).error;
    n.executed = true;
    if (error instanceof SkipTask) {
      const reason = safeMessage(error, t);
      n.error = reason;
      await transition(n, "skipped", {
        endedAt: ended,
        owner: null,
        leaseUntil: null,
        error: reason,
      }, [
        ...counts,
        audit({ taskId: t.id, operation: "task:skipped", status: "skipped" }),
      ]);
      emit({ type: "task:skipped", runId, taskId: t.id, reason });
      return;
    }
    const message = safeMessage(error, t);
    n.error = message;
    const canRetry = !cancelled && !(error instanceof FatalTaskError) && n.tryNumber < n.maxTries;
    if (canRetry) {
      const delayMs = retryDelay(t, attemptNo);
      n.retryAt = Date.now() + delayMs;
      await transition(n, "up_for_retry", {
        endedAt: ended,
        owner: null,
        leaseUntil: null,
        nextAttemptAt: new Date(n.retryAt),
        error: message,
      }, [
        ...counts,
        audit({
          taskId: t.id,
          operation: "task:retry",
          status: "up_for_retry",
          detail: { attempt: attemptNo, delayMs },
        }),
      ]);
      emit({
        type: "task:retry",
        runId,
        taskId: t.id,
        attempt: attemptNo,
        delayMs,
        error: message,
      });
      log.warn("Task {taskId} failed, retrying in {delay}: {error}", {
        taskId: t.id,
        delay: formatDuration(delayMs),
        error: message,
      });
      return;
    }
    await transition(
      n,
      "failed",
      { endedAt: ended, owner: null, leaseUntil: null, error: message },
      [
        ...counts,
        audit({
          taskId: t.id,
          operation: "task:failed",
          status: "failed",
          detail: { attempt: attemptNo, durationMs },
        }),
      ],
    );
    emit({
      type: "task:failed",
      runId,
      taskId: t.id,
      attempt: attemptNo,
      durationMs,
      error: message,
    });
    log.error("Task {taskId} failed: {error}", { taskId: t.id, error: message });
  };

  // Encrypted intermediate datasets are deleted as soon as every task that reads them is final,
  // so a large run does not hold all its enclave data on disk until it ends.
  const released = new Set<string>();
  const releaseConsumed = async () => {
    for (const n of nodes.values()) {
      const out = n.output;
      if (!(out instanceof Dataset) || !out.ref.$dataset.encrypted || released.has(n.task.id)) {
        continue;
      }
      const readers = dag.downstream.get(n.task.id)!;
      if (readers.length === 0 || !readers.every((d) => FINAL.has(nodes.get(d)!.state))) continue;
      released.add(n.task.id);
      await Deno.remove(`${workspace.home}/${out.ref.$dataset.path}`).catch(() => {});
    }
  };
  try {
    while (true) {
      await releaseConsumed();
      let progressed = false;
      if (!cancelled) {
        for (const id of dag.order) {
          const n = nodes.get(id)!;
          if (n.state !== "scheduled" && n.state !== "up_for_retry") continue;
          if (running.has(id)) continue;
          if (n.state === "up_for_retry") {
            if (n.retryAt !== null && n.retryAt > Date.now()) continue;
          } else {
            const verdict = decide(n);
            if (verdict === "wait") continue;
            if (verdict === "skip" || verdict === "upstream_failed") {
              const state = verdict === "skip" ? "skipped" : "upstream_failed";
              await transition(n, state, { endedAt: new Date(), error: null }, [
                audit({ taskId: id, operation: `task:${state}`, status: state }),
              ]);
              if (state === "skipped") {
                n.hasOutput = true;
                n.output = null;
                emit({ type: "task:skipped", runId, taskId: id, reason: "upstream skipped" });
              } else emit({ type: "task:upstream_failed", runId, taskId: id });
              progressed = true;
              continue;
            }
          }
          if (running.size >= dag.maxActiveTasks) break;
          const promise = attempt(n).catch((error) => {
            // A store failure while recording: the run cannot go on safely.
            runLog.error("Cannot record task {taskId}: {error}", {
              taskId: id,
              error: errorMessage(error),
            });
            n.state = "failed";
            n.error = `Cannot record the task's state: ${errorMessage(error)}`;
          }).finally(() => {
            running.delete(id);
            wake();
          });
          running.set(id, { promise });
          progressed = true;
        }
      }
      if (running.size === 0) {
        if (cancelled) break;
        const pending = [...nodes.values()].filter((n) => !FINAL.has(n.state));
        if (pending.length === 0) break;
        if (!progressed) {
          const retryAt = Math.min(...pending.map((n) => n.retryAt ?? Infinity));
          if (retryAt === Infinity) break; // Nothing can run: should not happen with a valid DAG.
          await sleepUntil(retryAt, runSignal);
          continue;
        }
      }
      if (!progressed) {
        const nextRetry = Math.min(
          ...[...nodes.values()].filter((n) => n.state === "up_for_retry").map((n) =>
            n.retryAt ?? Infinity
          ),
        );
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (nextRetry !== Infinity) setTimeout(resolve, Math.max(0, nextRetry - Date.now()));
        });
        wake = () => {};
      }
    }
    await Promise.all([...running.values()].map((r) => r.promise));
  } finally {
    runSignal.removeEventListener("abort", onAbort);
    if (heartbeat !== undefined) clearInterval(heartbeat);
    await workspace.removeEnclave();
  }

  // ---- Finish -------------------------------------------------------------------------------
  let state: RunState;
  if (cancelled) {
    state = "failed";
    if (store) {
      for (const n of nodes.values()) {
        if (n.state === "running" || n.state === "up_for_retry") {
          n.state = "failed";
          n.error = "Cancelled: the run was interrupted";
          await store.updateTaskInstance(n.jobKey, {
            state: "failed",
            error: n.error,
            owner: null,
            leaseUntil: null,
            endedAt: new Date(),
          }, {
            audit: [audit({ taskId: n.task.id, operation: "task:cancelled", status: "failed" })],
          });
        }
      }
    }
  } else {
    const leaves = dag.order.filter((id) => dag.downstream.get(id)!.length === 0);
    const unfinished = [...nodes.values()].some((n) => !FINAL.has(n.state));
    state = unfinished ? "failed" : runStateFromLeaves(leaves.map((id) => nodes.get(id)!.state));
  }
  const durationMs = performance.now() - t0;
  if (store) {
    await store.updateRun(runId, { state, owner: null, leaseUntil: null, endedAt: new Date() }, {
      expect: { owner },
      audit: [
        audit({
          operation: cancelled ? "run:cancelled" : "run:end",
          status: state,
          detail: { durationMs: Math.round(durationMs) },
        }),
      ],
    });
  }
  emit({ type: "run:end", runId, state, durationMs });
  runLog.info("Run {runId} ended: {state}", { runId, state });
  return {
    runId,
    dagId: dag.id,
    logicalDate: logicalDate.toISOString(),
    state,
    tasks: dag.order.map((id) => {
      const n = nodes.get(id)!;
      return {
        taskId: id,
        state: n.state,
        attempts: n.tryNumber,
        jobKey: n.jobKey,
        zone: n.task.zone,
        outputZone: n.task.outputZone,
        startedAt: n.startedAt?.toISOString() ?? null,
        endedAt: n.endedAt?.toISOString() ?? null,
        durationMs: n.startedAt && n.endedAt ? n.endedAt.getTime() - n.startedAt.getTime() : null,
        error: n.error,
        executed: n.executed,
      };
    }),
    outputs: new Map([...nodes].filter(([, n]) => n.hasOutput).map(([id, n]) => [id, n.output])),
  };
}

/** Claims the run for this process, taking it over from a dead or expired owner. */
async function claimRun(
  store: StateStore,
  run: RunRecord,
  owner: string,
  leaseMs: number,
  audit: (input: Omit<AuditInput, "correlationId" | "dagId">) => AuditInput,
): Promise<void> {
  const patch = {
    state: "running" as const,
    owner,
    leaseUntil: new Date(Date.now() + leaseMs),
    startedAt: run.startedAt ?? new Date(),
    endedAt: null,
  };
  const entry = audit({
    operation: run.state === "queued" && !run.startedAt ? "run:start" : "run:resume",
    status: "running",
  });
  if (await store.updateRun(run.runId, patch, { expect: { owner: null }, audit: [entry] })) return;
  const current = await store.getRun(run.runId);
  if (!current) throw new RunBusyError(`Cannot run "${run.runId}": it was deleted meanwhile`);
  const expired = current.leaseUntil !== null && current.leaseUntil.getTime() < Date.now();
  if (current.owner === null || expired || ownerIsDead(current.owner)) {
    const taken = await store.updateRun(run.runId, patch, {
      expect: { owner: current.owner },
      audit: [
        audit({
          operation: "run:takeover",
          status: "running",
          detail: { reason: expired ? "lease expired" : "owner process gone" },
        }),
      ],
    });
    if (taken) return;
  }
  throw new RunBusyError(
    `Cannot run "${run.runId}": another process is running it (owner ${current.owner}); wait for it or stop it`,
  );
}

async function restoreOutput(
  rec: TaskInstanceRecord,
  workspace: Workspace,
): Promise<{ ok: true; value: unknown } | { ok: false }> {
  if (rec.outputKind === "json") return { ok: true, value: rec.output };
  if (rec.outputKind === "dataset" && isDatasetRef(rec.output)) {
    const path = `${workspace.home}/${rec.output.$dataset.path}`;
    try {
      await Deno.stat(path);
      return { ok: true, value: workspace.open(rec.output) };
    } catch {
      return { ok: false };
    }
  }
  if (rec.outputKind === null) return { ok: true, value: null };
  return { ok: false };
}

async function materialize(value: unknown, ctx: TaskContext, t: ResolvedTask): Promise<unknown> {
  if (value instanceof Dataset || value === undefined || value === null) return value ?? null;
  if (typeof value !== "object" || Array.isArray(value) || isDatasetRef(value)) return value;
  if (Symbol.asyncIterator in value || (Symbol.iterator in value && !(value instanceof Map))) {
    const writer = await ctx.dataset(t.id.replace(/[^A-Za-z0-9_-]/g, "_"));
    try {
      await writer.writeAll(value as AsyncIterable<unknown>);
    } catch (error) {
      await writer.abort();
      throw error;
    }
    return await writer.close();
  }
  return value;
}

/**
 * What the state store keeps of a task's output: JSON up to `maxBytes`, a dataset reference, or
 * nothing for enclave data (kept in memory and recomputed when needed).
 */
export function storedOutput(
  t: Pick<ResolvedTask, "id" | "outputZone">,
  value: unknown,
  maxBytes: number,
): { ok: true; kind: "json" | "dataset" | "enclave" | null; value: unknown } | {
  ok: false;
  error: string;
} {
  if (t.outputZone === "enclave") return { ok: true, kind: "enclave", value: null };
  if (value instanceof Dataset) return { ok: true, kind: "dataset", value: value.ref };
  if (value === null || value === undefined) return { ok: true, kind: null, value: null };
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    return {
      ok: false,
      error: `Cannot store the output of task "${t.id}": it is not JSON-serialisable`,
    };
  }
  if (text === undefined) {
    return {
      ok: false,
      error: `Cannot store the output of task "${t.id}": it is not JSON-serialisable`,
    };
  }
  const bytes = new TextEncoder().encode(text).length;
  if (bytes > maxBytes) {
    return {
      ok: false,
      error: `Cannot store the output of task "${t.id}": ${
        formatBytes(bytes)
      } of JSON exceeds the ${
        formatBytes(maxBytes)
      } limit; return a dataset instead (ctx.dataset() or an async generator)`,
    };
  }
  return { ok: true, kind: "json", value: JSON.parse(text) };
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function countRecords(value: unknown): number | undefined {
  if (Array.isArray(value)) return value.length;
  if (value instanceof Dataset) return value.records;
  return undefined;
}

/** The delay before the next attempt: exponential with full jitter in [d/2, d], or fixed. */
export function retryDelay(
  t: Pick<ResolvedTask, "retryDelayMs" | "retryBackoff" | "maxRetryDelayMs">,
  attempt: number,
  random = Math.random,
): number {
  if (t.retryBackoff === "fixed") return t.retryDelayMs;
  const base = Math.min(t.maxRetryDelayMs, t.retryDelayMs * 2 ** (attempt - 1));
  return Math.round(base / 2 + random() * (base / 2));
}

class CancelledError extends Error {
  override name = "CancelledError";
  constructor() {
    super("Cancelled: the run was interrupted");
  }
}

class TimeoutError extends Error {
  override name = "TimeoutError";
}

function abortReason(signal: AbortSignal, t: ResolvedTask, error: unknown): unknown {
  const reason = signal.reason;
  if (reason instanceof CancelledError) return reason;
  if (reason instanceof DOMException && reason.name === "TimeoutError") {
    return new TimeoutError(`Task "${t.id}" timed out after ${formatDuration(t.timeoutMs ?? 0)}`);
  }
  return error;
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

function sleepUntil(at: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, Math.max(0, at - Date.now()));
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * The message recorded for a task's error. Errors of enclave tasks may carry patron data, so
 * only messages vetted as privacy-safe (Carrel's own operators, timeouts, cancellation) are
 * kept; others are replaced by their error class.
 */
export function safeMessage(error: unknown, t: Pick<ResolvedTask, "zone" | "id">): string {
  if (error instanceof TimeoutError || error instanceof CancelledError) return error.message;
  if (t.zone === "enclave" && !isPrivacySafe(error)) {
    const name = error instanceof Error ? error.name : typeof error;
    return `${name} in enclave task "${t.id}" (message withheld: it may carry patron data; use \`tasks test\` in the enclave to see it)`;
  }
  return errorMessage(error);
}
