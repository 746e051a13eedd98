/**
 * The attempt runner: executes one task body, for the local driver, the workers and `tasks test`
 * alike. It builds nothing itself that a caller may want built differently: the task's context
 * comes from a factory, and what it returns is data (an {@link AttemptOutcome}) that the decider
 * turns into a transition. It owns the attempt's signal (the caller's, plus the task's timeout),
 * materialises iterables into datasets, collects `ctx.count` records, and turns errors into
 * messages that are safe to record.
 *
 * @module
 */
import type { DataInterval, ResolvedTask, TaskContext } from "../dag.ts";
import { Dataset, isDatasetRef, type Workspace } from "../dataset.ts";
import { formatDuration } from "../duration.ts";
import { errorMessage, isPermanentError, RescheduleTask, SkipTask } from "../errors.ts";
import { runLogger } from "../log.ts";
import { isPrivacySafe, markPrivacySafe } from "../privacy/privacy_safe.ts";
import { isSandboxed, runSandboxed } from "../sandbox/run.ts";

/** One `ctx.count(...)`: an operation and how many records it concerned. Counts, never values. */
export interface TaskCount {
  operation: string;
  records: number;
  keyVersion?: string;
  detail?: Record<string, unknown>;
}

/** What an attempt ended with. Data only: the decider makes the transition. */
export type AttemptOutcome =
  & { startedAt: Date; endedAt: Date; counts: TaskCount[] }
  & (
    | {
      kind: "success";
      /** The output, datasets materialised (in memory: enclave data never leaves it). */
      value: unknown;
      /** Records in it, when it is an array or a dataset. */
      records?: number;
    }
    | { kind: "skipped"; message: string }
    | {
      /** A sensor's poke found nothing yet (`RescheduleTask`): offered again after `delayMs`. */
      kind: "reschedule";
      delayMs: number;
      timeoutMs: number;
      softFail: boolean;
    }
    | {
      kind: "failed";
      /** Privacy-safe: withheld for enclave tasks unless vetted. */
      message: string;
      /** Retrying cannot help (`isPermanentError`). */
      permanent: boolean;
      /** The run was cancelled (the caller aborted with a `CancelledError`): no retry. */
      cancelled: boolean;
    }
  );

/** What the runner gives the context factory. */
export interface ContextBase {
  signal: AbortSignal;
  attempt: number;
  count: TaskContext["count"];
}

/** Builds a task's `ctx` around what the runner provides. */
export type ContextFactory = (base: ContextBase) => TaskContext;

/** What {@link runAttempt} needs. */
export interface AttemptRequest {
  task: ResolvedTask;
  /** 1-based attempt within the task's retry budget (`ctx.attempt`). */
  attempt: number;
  /** The caller's signal (run cancelled, lease lost); its reason says why. */
  signal?: AbortSignal;
  context: ContextFactory;
}

/**
 * A timeout of an attempt. Its message names the task and the limit only.
 *
 * @example
 * ```ts
 * import { AttemptTimeoutError } from "./attempt.ts";
 * new AttemptTimeoutError("load", 5000).message; // 'Task "load" timed out after 5s'
 * ```
 */
export class AttemptTimeoutError extends Error {
  override name = "TimeoutError";
  constructor(taskId: string, ms: number) {
    super(`Task "${taskId}" timed out after ${formatDuration(ms)}`);
    markPrivacySafe(this);
  }
}

/**
 * The run was cancelled (SIGINT, SIGTERM, an aborted signal).
 *
 * @example
 * ```ts
 * import { CancelledError } from "./attempt.ts";
 * new CancelledError().message; // "Cancelled: the run was interrupted"
 * ```
 */
export class CancelledError extends Error {
  override name = "CancelledError";
  constructor() {
    super("Cancelled: the run was interrupted");
    markPrivacySafe(this);
  }
}

/**
 * A worker stopped (its second SIGTERM): its attempts are abandoned and retried by their policy.
 *
 * @example
 * ```ts
 * import { WorkerStoppedError } from "./attempt.ts";
 * new WorkerStoppedError().message; // "Worker stopped: the attempt was abandoned"
 * ```
 */
export class WorkerStoppedError extends Error {
  override name = "WorkerStoppedError";
  constructor() {
    super("Worker stopped: the attempt was abandoned");
    markPrivacySafe(this);
  }
}

/**
 * This process lost the lease it was writing under (another process took the run or the task
 * over): it abandons what it was doing and writes nothing more.
 *
 * @example
 * ```ts
 * import { LeaseLostError } from "./attempt.ts";
 * throw new LeaseLostError('Cannot finish run "d@2026-01-01T00:00:00Z": another process took it over');
 * ```
 */
export class LeaseLostError extends Error {
  override name = "LeaseLostError";
  constructor(message: string) {
    super(message);
    markPrivacySafe(this);
  }
}

/**
 * The message recorded for a task's error. Errors of enclave tasks may carry patron data, so only
 * messages vetted as privacy-safe (Carrel's own operators, timeouts, cancellation) are kept;
 * others are replaced by their error class.
 *
 * @example
 * ```ts
 * import { safeMessage } from "./attempt.ts";
 * safeMessage(new Error("P-123 not found"), { id: "extract", zone: "enclave" });
 * // 'Error in enclave task "extract" (message withheld: ...)'
 * ```
 */
export function safeMessage(error: unknown, t: { zone: string; id: string }): string {
  if (t.zone === "enclave" && !isPrivacySafe(error)) {
    const name = error instanceof Error ? error.name : typeof error;
    return `${name} in enclave task "${t.id}" (message withheld: it may carry patron data; use \`tasks test\` in the enclave to see it)`;
  }
  return errorMessage(error);
}

/**
 * Runs one attempt of a task body under its signal and timeout, and says how it ended. Never
 * throws for anything the body does.
 *
 * @example
 * ```ts ignore
 * const outcome = await runAttempt({ task, attempt: 1, signal, context: taskContext(run, task, inputs) });
 * if (outcome.kind === "failed") console.log(outcome.message);
 * ```
 */
export async function runAttempt(request: AttemptRequest): Promise<AttemptOutcome> {
  const { task: t } = request;
  const startedAt = new Date();
  const counts: TaskCount[] = [];
  const signals: AbortSignal[] = [];
  if (request.signal) signals.push(request.signal);
  if (t.timeoutMs !== undefined) signals.push(AbortSignal.timeout(t.timeoutMs));
  // One signal needs no combining (AbortSignal.any is costly, and most tasks have no timeout).
  const signal = signals.length > 1
    ? AbortSignal.any(signals)
    : signals[0] ?? new AbortController().signal;
  const count: TaskContext["count"] = (operation, records, detail) => {
    const { keyVersion, ...rest } = detail ?? {};
    counts.push({
      operation,
      records,
      ...(typeof keyVersion === "string" ? { keyVersion } : {}),
      ...(Object.keys(rest).length ? { detail: rest } : {}),
    });
  };
  const end = () => ({ startedAt, endedAt: new Date(), counts });
  let ctx: TaskContext;
  try {
    ctx = request.context({ signal, attempt: request.attempt, count });
  } catch (error) {
    return {
      kind: "failed",
      message: safeMessage(error, t),
      permanent: true,
      cancelled: false,
      ...end(),
    };
  }
  try {
    // Strict sandbox: the body runs in a Worker with only its declared capabilities.
    const body = isSandboxed(t) ? () => runSandboxed(t, ctx) : () => t.run(ctx);
    const value = await raceAbort(Promise.resolve().then(body), signal);
    const output = await materialize(value, ctx, t);
    return {
      kind: "success",
      value: output,
      ...(recordsIn(output) === undefined ? {} : { records: recordsIn(output)! }),
      ...end(),
    };
  } catch (thrown) {
    if (thrown instanceof SkipTask) {
      return { kind: "skipped", message: safeMessage(thrown, t), ...end() };
    }
    if (thrown instanceof RescheduleTask && !signal.aborted) {
      const { delayMs, timeoutMs, softFail } = thrown;
      return { kind: "reschedule", delayMs, timeoutMs, softFail, ...end() };
    }
    // Only a cancelled run makes the attempt final; a worker stopping, or a lost lease, is not
    // the task's fault (its attempt is retried by its policy, or was taken over).
    const cancelled = request.signal?.aborted === true &&
      request.signal.reason instanceof CancelledError;
    const error = signal.aborted ? abortReason(signal, request.signal, t, thrown) : thrown;
    return {
      kind: "failed",
      message: safeMessage(error, t),
      permanent: isPermanentError(error),
      cancelled,
      ...end(),
    };
  }
}

/** What aborted an attempt: the caller (its reason), or the task's timeout. */
function abortReason(
  signal: AbortSignal,
  caller: AbortSignal | undefined,
  t: ResolvedTask,
  thrown: unknown,
): unknown {
  if (caller?.aborted) {
    return caller.reason instanceof Error && isPrivacySafe(caller.reason)
      ? caller.reason
      : new CancelledError();
  }
  const reason = signal.reason;
  if (reason instanceof DOMException && reason.name === "TimeoutError") {
    return new AttemptTimeoutError(t.id, t.timeoutMs ?? 0);
  }
  return thrown;
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

/** Writes an iterable output into a dataset, so that it streams to downstream tasks. */
export async function materialize(
  value: unknown,
  ctx: TaskContext,
  t: ResolvedTask,
): Promise<unknown> {
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

function recordsIn(value: unknown): number | undefined {
  if (Array.isArray(value)) return value.length;
  if (value instanceof Dataset) return value.records;
  return undefined;
}

/** What a task's context is made of, besides what the attempt runner provides. */
export interface RunContext {
  dagId: string;
  runId: string;
  interval: DataInterval;
  params: Record<string, unknown>;
  workspace: Workspace;
}

/**
 * The context factory both drivers (and `tasks test`) use: `ctx` of task `t` with its job key,
 * its upstream outputs and their tags.
 *
 * @example
 * ```ts ignore
 * const context = taskContext(run, task, jobKey, { extract: rows }, { extract: ["pii:raw"] });
 * const outcome = await runAttempt({ task, attempt: 1, context });
 * ```
 */
export function taskContext(
  run: RunContext,
  t: ResolvedTask,
  jobKey: string,
  inputs: Record<string, unknown>,
  inputTags: Record<string, readonly string[]>,
): ContextFactory {
  return ({ signal, attempt, count }) => ({
    dagId: run.dagId,
    taskId: t.id,
    runId: run.runId,
    jobKey,
    logicalDate: run.interval.start,
    dataInterval: { start: run.interval.start, end: run.interval.end },
    // A copy per attempt (a task cannot change another's); most runs have none to copy.
    params: Object.keys(run.params).length === 0 ? {} : structuredClone(run.params),
    attempt,
    signal,
    log: runLogger({ runId: run.runId, dagId: run.dagId, taskId: t.id, attempt }),
    inputs,
    inputTags,
    zone: t.zone,
    workspace: run.workspace,
    dataset: (name = "data", opts) =>
      run.workspace.create(t.id, name, t.outputZone === "enclave" && opts?.valueFree !== true),
    count,
  });
}
