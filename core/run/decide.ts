/**
 * The decider: the one place a run's fate is decided, for the local driver and the workers
 * alike. Pure (no I/O, no clock, no randomness of its own): given a resolved DAG, a run's task
 * instances as the driver sees them, the attempts that ended, and the time, it returns the
 * transitions to apply, each with its state patch, its audit entries and its events. The drivers
 * (`core/run/local.ts`, `core/run/worker.ts`) only apply its decisions.
 *
 * It decides: Airflow's trigger rules and skip propagation, attempt numbering, retry delays
 * (exponential with jitter, or fixed), what output is stored where, what a resume resets (and
 * what it keeps: an attempt lost with its process counts, a scheduled retry keeps its time and
 * budget), enclave claim units, and when and how a run ends.
 *
 * @module
 */
import type { AuditInput } from "../audit.ts";
import type { ResolvedDag, ResolvedTask, TriggerRule } from "../dag.ts";
import { Dataset } from "../dataset.ts";
import { formatDuration } from "../duration.ts";
import {
  type Batch,
  type BatchGuard,
  FINISHED_STATES,
  type RunPatch,
  type RunState,
  type TaskInstanceRecord,
  type TaskPatch,
  type TaskState,
  type TaskWrite,
} from "../state/store.ts";
import type { AttemptOutcome, TaskCount } from "./attempt.ts";
import type { ExecutorEvent, TaskCounts } from "./events.ts";
import { expandedDag, mapCounts } from "./mapping.ts";
import { alertsOwed } from "../alerts/hooks.ts";

// ---------------------------------------------------------------------------------------------
// Trigger rules

/** What a trigger rule decides. */
export type TriggerVerdict = "run" | "wait" | "skip" | "upstream_failed";

const FAILED: ReadonlySet<TaskState> = new Set(["failed", "upstream_failed"]);

/**
 * Evaluates a trigger rule with Airflow's semantics. `one_success`, `one_failed` and `always`
 * fire without waiting for every upstream; a skipped upstream skips `all_success` and
 * `all_failed` tasks, and counts as not failed for `none_failed`.
 *
 * @example
 * ```ts
 * import { decideTrigger } from "./decide.ts";
 * decideTrigger("all_success", ["success", "skipped"]); // "skip"
 * decideTrigger("none_failed", ["success", "skipped"]); // "run"
 * ```
 */
export function decideTrigger(rule: TriggerRule, upstream: readonly TaskState[]): TriggerVerdict {
  if (upstream.length === 0) return "run";
  let done = 0, success = 0, failed = 0, skipped = 0;
  for (const s of upstream) {
    if (FINISHED_STATES.has(s)) done++;
    if (s === "success") success++;
    else if (FAILED.has(s)) failed++;
    else if (s === "skipped") skipped++;
  }
  const all = done === upstream.length;
  switch (rule) {
    case "all_success":
      if (failed > 0) return "upstream_failed";
      if (skipped > 0) return "skip";
      return all ? "run" : "wait";
    case "all_failed":
      if (success > 0 || skipped > 0) return "skip";
      return all ? "run" : "wait";
    case "all_done":
      return all ? "run" : "wait";
    case "one_success":
      if (success > 0) return "run";
      if (!all) return "wait";
      return skipped === upstream.length ? "skip" : "upstream_failed";
    case "one_failed":
      if (failed > 0) return "run";
      return all ? "skip" : "wait";
    case "none_failed":
      if (failed > 0) return "upstream_failed";
      return all ? "run" : "wait";
    case "none_failed_min_one_success":
    case "none_failed_or_skipped":
      if (failed > 0) return "upstream_failed";
      if (!all) return "wait";
      return success > 0 ? "run" : "skip";
    case "always":
    case "dummy":
      return "run";
    default:
      return decideAddedTrigger(rule, upstream, { done, success, skipped });
  }
}

/**
 * The rules Airflow added later (`all_skipped`, `one_done`, `none_skipped`,
 * `all_done_min_one_success`), as Airflow's trigger rule dependency decides them. `one_done`
 * counts `failed` but not `upstream_failed` as done by running, as Airflow does.
 */
function decideAddedTrigger(
  rule: TriggerRule,
  upstream: readonly TaskState[],
  n: { done: number; success: number; skipped: number },
): TriggerVerdict {
  const all = n.done === upstream.length;
  const ran = n.success + upstream.filter((s) => s === "failed").length;
  switch (rule) {
    case "all_skipped":
      if (n.done > n.skipped) return "skip";
      return all ? "run" : "wait";
    case "one_done":
      if (ran > 0) return "run";
      return all ? "skip" : "wait";
    case "none_skipped":
      if (n.skipped > 0) return "skip";
      return all ? "run" : "wait";
    case "all_done_min_one_success":
      if (n.skipped > 0) return "skip";
      if (!all) return "wait";
      return n.success > 0 ? "run" : "upstream_failed";
    default:
      throw new Error(`Unknown trigger rule "${rule}"`);
  }
}

/**
 * Whether a task instance state is final.
 *
 * @example
 * ```ts
 * import { isFinal } from "./decide.ts";
 * isFinal("up_for_retry"); // false
 * ```
 */
export function isFinal(state: TaskState): boolean {
  return FINISHED_STATES.has(state);
}

/**
 * A run's state once all its tasks are final: failed when a leaf failed (Airflow's rule).
 *
 * @example
 * ```ts
 * import { runStateFromLeaves } from "./decide.ts";
 * runStateFromLeaves(["success", "skipped"]); // "success"
 * ```
 */
export function runStateFromLeaves(leafStates: readonly TaskState[]): "success" | "failed" {
  return leafStates.some((s) => FAILED.has(s)) ? "failed" : "success";
}

// ---------------------------------------------------------------------------------------------
// Attempts, retries, outputs

/**
 * The delay before the next attempt: exponential with full jitter in [d/2, d] (capped at
 * `maxRetryDelayMs`), or fixed.
 *
 * @example
 * ```ts
 * import { retryDelay } from "./decide.ts";
 * const t = { retryDelayMs: 1000, retryBackoff: "exponential" as const, maxRetryDelayMs: 60_000 };
 * retryDelay(t, 3, () => 1); // 4000
 * ```
 */
export function retryDelay(
  t: Pick<ResolvedTask, "retryDelayMs" | "retryBackoff" | "maxRetryDelayMs">,
  attempt: number,
  random: () => number = Math.random,
): number {
  if (t.retryBackoff === "fixed") return t.retryDelayMs;
  const base = Math.min(t.maxRetryDelayMs, t.retryDelayMs * 2 ** (attempt - 1));
  return Math.round(base / 2 + random() * (base / 2));
}

/**
 * The attempt number, within the current retry budget, of try `tryNumber` (`ctx.attempt`, "attempt
 * 2 of 3"). A budget starts when a task is first scheduled or reset; `maxTries` ends it.
 *
 * @example
 * ```ts
 * import { attemptOf } from "./decide.ts";
 * attemptOf({ retries: 2 }, { tryNumber: 5, maxTries: 6 }); // 2 (a resumed task's second attempt)
 * ```
 */
export function attemptOf(
  t: Pick<ResolvedTask, "retries">,
  rec: Pick<TaskInstanceRecord, "tryNumber" | "maxTries">,
): number {
  return Math.max(1, rec.tryNumber - (rec.maxTries - t.retries - 1));
}

/** Where an output lives in the state store. */
export type StoredOutput =
  | { ok: true; kind: "json" | "dataset" | "enclave" | null; value: unknown }
  | { ok: false; error: string };

/**
 * What the state store keeps of a task's output: JSON up to `maxBytes`, a dataset reference, or
 * nothing for enclave data (kept in memory and recomputed when needed).
 *
 * @example
 * ```ts
 * import { storedOutput } from "./decide.ts";
 * storedOutput({ id: "a", outputZone: "enclave" }, [{ patron_id: "p1" }], 1024).ok; // true, kind "enclave"
 * ```
 */
export function storedOutput(
  t: Pick<ResolvedTask, "id" | "outputZone">,
  value: unknown,
  maxBytes: number,
): StoredOutput {
  if (t.outputZone === "enclave") return { ok: true, kind: "enclave", value: null };
  if (value instanceof Dataset) return { ok: true, kind: "dataset", value: value.ref };
  if (value === null || value === undefined) return { ok: true, kind: null, value: null };
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    text = undefined;
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

/**
 * The lease token of an attempt a worker starts itself (a direct handoff): unique per task
 * instance and try, so a late write of an earlier attempt never matches.
 */
export function attemptToken(owner: string, jobKey: string, tryNumber: number): string {
  return `${owner}#${jobKey.slice(0, 12)}#${tryNumber}`;
}

/**
 * The audit entry and event of an attempt a worker claimed: the claim (a statement of the store)
 * started it; this is how the start is recorded. A handoff's start is a transition instead.
 *
 * @example
 * ```ts ignore
 * const { audit, event } = claimedStart(dag.tasks.get("load")!, record, owner);
 * ```
 */
export function claimedStart(
  t: Pick<ResolvedTask, "id" | "retries">,
  rec: Pick<TaskInstanceRecord, "runId" | "dagId" | "tryNumber" | "maxTries">,
  owner: string,
  keyVersion: string | null,
): { audit: AuditInput; event: ExecutorEvent } {
  const attempt = attemptOf(t, rec);
  return {
    audit: {
      correlationId: rec.runId,
      dagId: rec.dagId,
      keyVersion,
      taskId: t.id,
      operation: "task:start",
      status: "running",
      detail: { attempt, owner: hostPid(owner) },
    },
    event: {
      type: "task:start",
      runId: rec.runId,
      taskId: t.id,
      attempt,
      maxAttempts: t.retries + 1,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Decisions

/** A task instance as the decider sees it: its record, and what only this process knows. */
export interface TaskView extends TaskInstanceRecord {
  /**
   * It succeeded before and runs again only to feed a downstream task (its output, enclave data,
   * was never stored). Its recorded success stays; the audit trail notes the recomputation.
   */
  recompute?: boolean;
}

/**
 * A run's task instances by task id, as a driver keeps them from decision to decision, that
 * keeps up, as instances change, what every decision needs to know of the whole run: how many
 * instances are unfinished, and which are running or waiting for a retry (or a reschedule). With
 * it, a decision costs what it changes, not the size of the run (a 1,000-task chain is not
 * quadratic). A plain `Map` works too: the decider then counts over every instance.
 *
 * @example
 * ```ts ignore
 * const view = new RunView(records.map((r) => [r.taskId, r]));
 * const decision = decide({ ...input, tasks: view });
 * for (const t of decision.transitions) view.set(t.taskId, t.next);
 * ```
 */
export class RunView extends Map<string, TaskView> {
  #unfinished = 0;
  /** Running, up for retry or up for reschedule. */
  readonly #active = new Set<string>();
  /** Moves when a task id is added or removed (the ids outside a DAG are counted again). */
  #keys = 0;
  #stray: { dag: ResolvedDag; keys: number; ids: string[] } | undefined;

  constructor(entries?: Iterable<readonly [string, TaskView]>) {
    super();
    if (entries) { for (const [id, v] of entries) this.set(id, v); }
  }

  override set(id: string, v: TaskView): this {
    const prev = super.get(id);
    if (prev) this.#count(id, prev, -1);
    else this.#keys++;
    this.#count(id, v, 1);
    return super.set(id, v);
  }

  override delete(id: string): boolean {
    const prev = super.get(id);
    if (!prev) return false;
    this.#count(id, prev, -1);
    this.#keys++;
    return super.delete(id);
  }

  override clear(): void {
    this.#unfinished = 0;
    this.#active.clear();
    this.#keys++;
    super.clear();
  }

  #count(id: string, v: TaskView, sign: 1 | -1): void {
    if (!isFinal(v.state)) this.#unfinished += sign;
    if (v.state === "running" || v.state === "up_for_retry" || v.state === "up_for_reschedule") {
      if (sign > 0) this.#active.add(id);
      else this.#active.delete(id);
    }
  }

  /**
   * Of the instances of `dag`'s tasks (records of tasks no longer in the DAG are ignored, as the
   * decider ignores them): how many are unfinished, and which are running or waiting for a retry.
   */
  summary(dag: ResolvedDag): { unfinished: number; active: string[] } {
    if (!this.#stray || this.#stray.dag !== dag || this.#stray.keys !== this.#keys) {
      const ids: string[] = [];
      for (const id of this.keys()) if (!dag.tasks.has(id)) ids.push(id);
      this.#stray = { dag, keys: this.#keys, ids };
    }
    let unfinished = this.#unfinished;
    for (const id of this.#stray.ids) if (!isFinal(super.get(id)!.state)) unfinished--;
    const active: string[] = [];
    for (const id of this.#active) if (dag.tasks.has(id)) active.push(id);
    return { unfinished, active };
  }
}

/** Why a running attempt is lost. */
export type LostReason = "lease expired" | "owner process gone" | "worker stopped";

/** Opening a run in this process: what it finds decides what a resume does. */
export interface OpenInput {
  /**
   * `retry_failed` (a person asked: `dags run` again, `runs resume`): failed tasks run again with
   * a fresh retry budget. `continue` (the scheduler taking over an interrupted run): nothing
   * final changes, lost attempts count against their budget.
   */
  resume: "retry_failed" | "continue";
  /** The run was created by this invocation. */
  created: boolean;
  /** This process takes the run over from a gone owner. */
  takeover?: LostReason;
  /** Tasks whose recorded output this process can read (local runs). */
  available?: ReadonlySet<string>;
  /** The lease token this process writes under (local runs). */
  token?: string;
}

/** Everything the decider looks at. */
export interface DecideInput {
  dag: ResolvedDag;
  run: {
    runId: string;
    dagId: string;
    logicalDate: Date;
    state: RunState;
    startedAt: Date | null;
    keyVersion: string | null;
  };
  /** The run's task instances by task id (records of tasks no longer in the DAG are ignored). */
  tasks: ReadonlyMap<string, TaskView>;
  now: Date;
  /**
   * `local`: this process starts ready tasks itself (up to `maxActiveTasks`) and retries in
   * place. `workers`: ready tasks are queued for claims; retries wait in the store.
   */
  mode: "local" | "workers";
  /** This process, recorded as the owner of what it starts. */
  owner: string;
  /** The lease of what this process starts. */
  leaseMs: number;
  /** Whether outputs go to the state store (a test run in memory stores nothing). */
  persist: boolean;
  maxOutputBytes: number;
  /** When this process took the run up (a run's duration counts from it). */
  since: Date;
  /** Randomness for retry jitter (deterministic in tests). */
  random?: () => number;

  /** The run is being opened by this process. */
  open?: OpenInput;
  /** Attempts that ended and are not recorded yet, by task id. */
  outcomes?: ReadonlyMap<string, AttemptOutcome>;
  /** Running attempts (and enclave units, by any member) whose process is gone, by task id. */
  lost?: ReadonlyMap<string, LostReason>;
  /** The run was cancelled: nothing new starts, and what is left over fails. */
  cancelled?: boolean;
  /**
   * Workers: how many ready tasks this process may start itself at once (a direct handoff, as
   * Airflow's mini-scheduler does) instead of queueing them.
   */
  slots?: number;
  /** The only tasks this process may change (a worker's enclave unit). */
  scope?: ReadonlySet<string>;
  /**
   * Workers: tasks that became final since the view was read (an enclave unit run in place):
   * their downstream tasks are decided on too.
   */
  changed?: ReadonlySet<string>;
  /**
   * Local: the previous decision's {@link Decision.waiting}, passed on unchanged. With it, a
   * decision made while every slot was taken looks at those tasks (and at what changed) instead
   * of at every task of the run.
   */
  waiting?: readonly string[];
}

/** One decided change of one task instance. */
export interface Transition {
  taskId: string;
  jobKey: string;
  /** The state it is in (the compare-and-set). */
  from: TaskState;
  to: TaskState;
  /** The stored columns to set; null when the stored record stays (a recomputation). */
  patch: TaskPatch | null;
  /** The lease token it must hold (absent: not checked). */
  token?: string | null;
  /** Leased from the database's clock for this long. */
  leaseMs?: number;
  /** Claimable by workers from now (the database's clock). */
  readyNow?: boolean;
  /** The view after the change. */
  next: TaskView;
  audit: AuditInput[];
  events: ExecutorEvent[];
}

/** A decided change of the run itself. */
export interface RunTransition {
  patch: RunPatch;
  leaseMs?: number;
  /** The run's final state, when this ends it. */
  final?: RunState;
  audit: AuditInput[];
  events: ExecutorEvent[];
}

/** What the decider decided. */
export interface Decision {
  /** In order: a task may change twice (up for retry, then started again). */
  transitions: Transition[];
  run: RunTransition | null;
  /** Tasks this process runs now (its local starts and handoffs), in order. */
  start: string[];
  /** The earliest due time of a retry this process waits for (local): decide again then. */
  wakeAt: Date | null;
  /**
   * Local: tasks ready to start but for a free slot, in the order they start (pass them on as
   * {@link DecideInput.waiting}).
   */
  waiting: string[];
  /**
   * The decisions read task states other processes may change meanwhile (a join, a unit, the
   * end of the run, a resume): a worker must write them guarded by the run's version.
   */
  guarded: boolean;
}

/**
 * Decides what happens next in a run.
 *
 * @example
 * ```ts ignore
 * const decision = decide({ dag, run, tasks, now: new Date(), mode: "local", owner, leaseMs,
 *   persist: true, maxOutputBytes: 1 << 20, since, outcomes: new Map([["extract", outcome]]) });
 * for (const t of decision.transitions) console.log(t.taskId, t.from, "->", t.to);
 * ```
 */
export function decide(input: DecideInput): Decision {
  // Mapped tasks: the DAG as expanded by the instances that exist (see mapping.ts).
  const dag = expandedDag(input.dag, input.tasks);
  // A mapped task's expansion reorders the run: what waited for a slot is looked at again.
  if (dag === input.dag) return new Decider(input).decide();
  const { waiting: _reordered, ...rest } = input;
  return new Decider({ ...rest, dag }).decide();
}

/**
 * What a mapped task's expansion that ended means before it is decided on: how many instances
 * must exist (the driver creates them, then decides), or, when instances made by an earlier
 * expansion do not match its count (expand gave other items), a failed outcome.
 *
 * @example
 * ```ts ignore
 * const { outcome, create } = decideExpansion(dag, view, "load", ended);
 * if (create > 0) await store.ensureTaskInstances(mappedInstances(dag, "load", create, run));
 * ```
 */
export function decideExpansion(
  dag: ResolvedDag,
  instances: { has(id: string): boolean },
  taskId: string,
  outcome: AttemptOutcome,
): { outcome: AttemptOutcome; create: number } {
  if (dag.tasks.get(taskId)?.expand === undefined) return { outcome, create: 0 };
  const existing = mapCounts(dag, instances).get(taskId) ?? 0;
  const n = outcome.kind === "success"
    ? Number((outcome.value as { mapped?: unknown } | null)?.mapped ?? 0)
    : outcome.kind === "skipped"
    ? 0
    : existing;
  if (existing > n) {
    return {
      create: 0,
      outcome: {
        kind: "failed",
        message:
          `Cannot expand task "${taskId}": it yields ${n} items where an earlier attempt yielded ${existing} (expand must give the same items each time)`,
        permanent: true,
        cancelled: false,
        startedAt: outcome.startedAt,
        endedAt: outcome.endedAt,
        counts: outcome.counts,
      },
    };
  }
  return { outcome, create: outcome.kind === "success" ? n : 0 };
}

class Decider {
  readonly #in: DecideInput;
  /** What this decision changed, over the input's view (never copied whole). */
  readonly #view: Overlay;
  readonly #transitions: Transition[] = [];
  #run: RunTransition | null = null;
  readonly #start: string[] = [];
  #guarded = false;
  /** Workers: the tasks whose inputs changed in this decision (evaluated again). */
  readonly #frontier = new Set<string>();
  /** Counted once, then kept up to date by each transition. */
  #stats: { running: number; unfinished: number } | undefined;
  /** The input as found: how many ran, which waited for a retry (in scope). */
  readonly #found: { running: number; retrying: string[] };
  /** Running and retrying tasks as found, when the view keeps them ({@link RunView}). */
  readonly #active: readonly string[] | undefined;
  /** Local: scheduled tasks found ready that wait for a slot. */
  #waiting: string[] = [];
  /** Tasks whose upstream became final in this decision, in the order they did. */
  #touched: string[] = [];
  readonly #random: () => number;

  constructor(input: DecideInput) {
    this.#in = input;
    this.#view = new Overlay(input.tasks);
    this.#random = input.random ?? Math.random;
    let running = 0, unfinished = 0;
    const retrying: string[] = [];
    const count = (id: string, v: TaskView) => {
      if (!this.#inScope(id)) return;
      if (v.state === "running") running++;
      else if (v.state === "up_for_retry" || v.state === "up_for_reschedule") retrying.push(id);
    };
    if (input.tasks instanceof RunView) {
      // Kept up by the view: this decision costs what it changes, not the run's size.
      const summary = input.tasks.summary(input.dag);
      unfinished = summary.unfinished;
      this.#active = summary.active;
      for (const id of summary.active) count(id, input.tasks.get(id)!);
    } else {
      this.#active = undefined;
      for (const id of input.dag.order) {
        const v = input.tasks.get(id);
        if (!v) continue;
        if (!isFinal(v.state)) unfinished++;
        count(id, v);
      }
    }
    this.#found = { running, retrying };
    this.#stats = { running, unfinished };
    for (const id of input.changed ?? []) {
      for (const d of input.dag.downstream.get(id) ?? []) this.#frontier.add(d);
    }
  }

  decide(): Decision {
    const { open } = this.#in;
    if (open) this.#open(open);
    for (const [id, reason] of this.#in.lost ?? []) this.#lose(id, reason);
    for (const [id, outcome] of this.#in.outcomes ?? []) this.#settle(id, outcome);
    if (open) this.#resume(open);
    if (this.#in.cancelled) {
      this.#cancel();
      this.#waiting = [...this.#in.waiting ?? []];
    } else this.#advance();
    this.#finish();
    return {
      transitions: this.#transitions,
      run: this.#run,
      start: this.#start,
      wakeAt: this.#wakeAt(),
      waiting: this.#waiting,
      guarded: this.#guarded || this.#in.open !== undefined,
    };
  }

  // ---- helpers ------------------------------------------------------------------------------

  #task(id: string): ResolvedTask | undefined {
    return this.#in.dag.tasks.get(id);
  }

  #inScope(id: string): boolean {
    return !this.#in.scope || this.#in.scope.has(id);
  }

  #audit(e: Omit<AuditInput, "correlationId" | "dagId">): AuditInput {
    return {
      correlationId: this.#in.run.runId,
      dagId: this.#in.run.dagId,
      keyVersion: this.#in.run.keyVersion,
      ...e,
    };
  }

  #counts(taskId: string, counts: readonly TaskCount[]): AuditInput[] {
    return counts.map((c) =>
      this.#audit({
        taskId,
        operation: c.operation,
        status: "counted",
        recordCount: c.records,
        ...(c.keyVersion ? { keyVersion: c.keyVersion } : {}),
        ...(c.detail ? { detail: c.detail } : {}),
      })
    );
  }

  /** Running tasks (in scope) and unfinished tasks (all), as of now in this decision. */
  #counts_(): { running: number; unfinished: number } {
    return this.#stats!;
  }

  #record(
    id: string,
    to: TaskState,
    patch: TaskPatch | null,
    audit: AuditInput[],
    events: ExecutorEvent[] = [],
    extra: Partial<Pick<Transition, "token" | "leaseMs" | "readyNow">> & {
      view?: Partial<TaskView>;
    } = {},
  ): void {
    const prev = this.#view.get(id)!;
    const { view, ...write } = extra;
    const next: TaskView = { ...prev, ...(patch ?? {}), ...(view ?? {}), state: to };
    this.#transitions.push({
      taskId: id,
      jobKey: prev.jobKey,
      from: prev.state,
      to,
      patch: patch === null ? null : { ...patch, state: to },
      next,
      audit,
      events,
      ...write,
    });
    this.#view.set(id, next);
    if (this.#stats) {
      this.#stats.unfinished += (isFinal(to) ? 0 : 1) - (isFinal(prev.state) ? 0 : 1);
      if (this.#inScope(id)) {
        this.#stats.running += (to === "running" ? 1 : 0) - (prev.state === "running" ? 1 : 0);
      }
    }
    // What may start in this decision: a retry that falls due now, and downstream tasks.
    if (to === "up_for_retry" || to === "up_for_reschedule") this.#touched.push(id);
    if (isFinal(to) !== isFinal(prev.state)) {
      for (const d of this.#in.dag.downstream.get(id) ?? []) {
        this.#frontier.add(d);
        this.#touched.push(d);
      }
    }
  }

  /** The patch that releases a task instance from whoever held it. */
  #released(): TaskPatch {
    return { owner: null, leaseToken: null, leaseUntil: null, readyAt: null };
  }

  // ---- opening a run ------------------------------------------------------------------------

  #open(open: OpenInput): void {
    const { run, mode, now, owner } = this.#in;
    const local = mode === "local";
    const operation = open.takeover
      ? "run:takeover"
      : run.state === "queued" && !run.startedAt
      ? "run:start"
      : "run:resume";
    const detail = open.takeover
      ? { reason: open.takeover }
      : local
      ? undefined
      : { executor: "workers" };
    this.#run = {
      patch: {
        state: "running",
        executor: mode,
        owner: local ? owner : null,
        leaseToken: local ? open.token ?? null : null,
        ...(local ? {} : { leaseUntil: null }),
        startedAt: run.startedAt ?? now,
        endedAt: null,
      },
      ...(local ? { leaseMs: this.#in.leaseMs } : {}),
      audit: [this.#audit({ operation, status: "running", ...(detail ? { detail } : {}) })],
      events: [],
    };
  }

  /** What a resume does, after lost attempts are counted. */
  #resume(open: OpenInput): void {
    const { dag, mode } = this.#in;
    const local = mode === "local";
    for (const id of dag.order) {
      const v = this.#view.get(id);
      const t = this.#task(id)!;
      if (!v) continue;
      // Work handed to workers comes back to this process (a local run), or stays with them.
      if (v.state === "queued" && local) {
        this.#record(id, "scheduled", { ...this.#released(), queuedAt: null }, []);
        continue;
      }
      if (
        (v.state === "up_for_retry" || v.state === "up_for_reschedule") && local &&
        (v.readyAt !== null || v.owner !== null)
      ) {
        this.#record(id, v.state, this.#released(), []);
        continue;
      }
      if (
        (v.state === "failed" || v.state === "upstream_failed") && open.resume === "retry_failed"
      ) {
        this.#reset(id, t, v.state);
        continue;
      }
      if (v.state === "scheduled" && v.maxTries !== v.tryNumber + t.retries + 1) {
        // A new budget for what has not started in it (cleared tasks, changed `retries`).
        this.#record(id, "scheduled", { maxTries: v.tryNumber + t.retries + 1 }, []);
      }
    }
    if (local) this.#markRecomputation(open.available ?? new Set());
    else this.#resetUnits();
  }

  #reset(id: string, t: ResolvedTask, from: TaskState, detail: Record<string, unknown> = {}): void {
    const v = this.#view.get(id)!;
    this.#record(id, "scheduled", {
      ...this.#released(),
      maxTries: v.tryNumber + t.retries + 1,
      nextAttemptAt: null,
      queuedAt: null,
      error: null,
      endedAt: null,
    }, [
      this.#audit({
        taskId: id,
        operation: "task:reset",
        status: "scheduled",
        detail: { from, ...detail },
      }),
    ]);
  }

  /**
   * Local runs: a task that succeeded before but whose output this process cannot read (enclave
   * data is never stored) runs again when a task that will execute needs it.
   */
  #markRecomputation(available: ReadonlySet<string>): void {
    const { dag } = this.#in;
    for (const id of [...dag.order].reverse()) {
      const v = this.#view.get(id);
      if (!v || v.state !== "success" || available.has(id)) continue;
      const needed = dag.downstream.get(id)!.some((d) => {
        const dv = this.#view.get(d);
        return dv !== undefined && (!isFinal(dv.state) || dv.recompute === true);
      });
      if (!needed) continue;
      const next: TaskView = { ...v, state: "scheduled", recompute: true };
      this.#view.set(id, next);
    }
  }

  /**
   * Worker runs: an enclave unit runs whole (its members' outputs were never stored), so a unit
   * that has a member to run again runs again entirely, unless a worker holds it now.
   */
  #resetUnits(): void {
    const { dag } = this.#in;
    const units = new Map<string, string[]>();
    for (const id of dag.order) {
      const v = this.#view.get(id);
      if (v?.unit) units.set(v.unit, [...(units.get(v.unit) ?? []), id]);
    }
    for (const [unit, members] of units) {
      const views = members.map((m) => this.#view.get(m)!);
      if (views.some((v) => v.leaseToken !== null)) continue;
      if (
        views.every((v) => v.state === "success") || views.every((v) => v.state === "scheduled")
      ) {
        continue;
      }
      for (const m of members) {
        const v = this.#view.get(m)!;
        if (
          v.state === "scheduled" || v.state === "queued" || v.state === "up_for_retry" ||
          v.state === "up_for_reschedule"
        ) continue;
        this.#reset(m, this.#task(m)!, v.state, { unit });
      }
    }
  }

  // ---- attempts that ended ------------------------------------------------------------------

  /** A running attempt whose process is gone counts as a failed attempt (Airflow's zombies). */
  #lose(id: string, reason: LostReason): void {
    const v = this.#view.get(id);
    const t = this.#task(id);
    if (!v || !t || !this.#inScope(id)) return;
    if (v.unit && v.state !== "running") return; // a unit goes with its running member
    if (v.state !== "running") return;
    const token = v.leaseToken;
    const attempt = attemptOf(t, v);
    const message = reason === "lease expired"
      ? `Lost: the process running attempt ${attempt} stopped renewing its lease`
      : reason === "worker stopped"
      ? `Lost: the worker running attempt ${attempt} stopped`
      : `Lost: the process running attempt ${attempt} is gone`;
    const retry = v.tryNumber < v.maxTries && !this.#in.cancelled;
    const members: TaskView[] = [];
    if (v.unit) {
      for (const mid of this.#in.dag.order) {
        const m = this.#view.get(mid);
        if (
          m && m.unit === v.unit && m.jobKey !== v.jobKey && m.leaseToken !== null &&
          m.leaseToken === token
        ) members.push(m);
      }
    }
    const delayMs = retry ? retryDelay(t, attempt, this.#random) : 0;
    const nextAttemptAt = retry ? new Date(this.#in.now.getTime() + delayMs) : null;
    this.#record(
      id,
      retry ? "up_for_retry" : "failed",
      {
        ...this.#released(),
        endedAt: this.#in.now,
        nextAttemptAt,
        error: message,
        ...(retry && this.#in.mode === "workers" ? { readyAt: nextAttemptAt } : {}),
      },
      [
        this.#audit({
          taskId: id,
          operation: "task:lost",
          status: retry ? "up_for_retry" : "failed",
          // The attempt accounted for whole: its start may not be in the trail (a worker records
          // it with the attempt's end when that comes soon, and this one did not come).
          detail: {
            attempt,
            reason,
            ...(v.owner ? { owner: hostPid(v.owner) } : {}),
            ...(v.startedAt ? { startedAt: v.startedAt.toISOString() } : {}),
            ...(retry ? { delayMs } : {}),
          },
        }),
      ],
      [],
      { token },
    );
    // The rest of its enclave unit goes back with it, or fails with it: their outputs were in
    // the lost process only.
    for (const m of members) {
      if (retry) {
        this.#record(m.taskId, "queued", this.#released(), [], [], { token });
      } else {
        this.#record(
          m.taskId,
          "failed",
          {
            ...this.#released(),
            endedAt: this.#in.now,
            error: message,
          },
          [
            this.#audit({
              taskId: m.taskId,
              operation: "task:lost",
              status: "failed",
              detail: { reason },
            }),
          ],
          [],
          { token },
        );
      }
    }
    this.#guarded ||= members.length > 0;
  }

  #settle(id: string, outcome: AttemptOutcome): void {
    const v = this.#view.get(id);
    const t = this.#task(id);
    if (!v || !t) return;
    const { run } = this.#in;
    const attempt = attemptOf(t, v);
    const durationMs = outcome.endedAt.getTime() - outcome.startedAt.getTime();
    const counts = this.#counts(id, outcome.counts);
    const countsEvent = countsOf(outcome.counts);
    const token = v.leaseToken !== null ? { token: v.leaseToken } : {};
    const done: TaskPatch = { ...this.#released(), endedAt: outcome.endedAt };
    const recompute = v.recompute === true;

    let result = outcome;
    if (result.kind === "success") {
      // What the store keeps of the output (nothing, in memory: a test run stores nothing).
      const stored: StoredOutput = this.#in.persist
        ? storedOutput(t, result.value, this.#in.maxOutputBytes)
        : { ok: true, kind: null, value: undefined };
      if (!stored.ok) {
        result = {
          ...result,
          kind: "failed",
          message: stored.error,
          permanent: true,
          cancelled: false,
        };
      } else {
        const records = result.records;
        const output = this.#in.persist ? { outputKind: stored.kind, output: stored.value } : {};
        this.#record(
          id,
          "success",
          recompute ? null : { ...done, ...output, error: null },
          [
            ...counts,
            this.#audit({
              taskId: id,
              operation: recompute ? "task:recomputed" : "task:success",
              status: "success",
              recordCount: records ?? null,
              detail: { attempt, durationMs, ...alertsOwed(this.#in.dag, "task_success", id) },
            }),
          ],
          [{
            type: "task:success",
            runId: run.runId,
            taskId: id,
            attempt,
            durationMs,
            ...(records === undefined ? {} : { records }),
            ...(countsEvent ? { counts: countsEvent } : {}),
          }],
          { ...token, view: { recompute: false, endedAt: outcome.endedAt } },
        );
        return;
      }
    }
    if (result.kind === "reschedule") {
      const next = this.#reschedule(id, v, result, token);
      if (!next) return;
      result = next;
    }
    if (result.kind === "skipped") {
      this.#record(id, "skipped", recompute ? null : { ...done, error: result.message }, [
        ...counts,
        this.#audit({ taskId: id, operation: "task:skipped", status: "skipped" }),
      ], [{
        type: "task:skipped",
        runId: run.runId,
        taskId: id,
        reason: result.message,
        ...(countsEvent ? { counts: countsEvent } : {}),
      }], {
        ...token,
        view: { recompute: false, error: result.message, endedAt: outcome.endedAt },
      });
      return;
    }
    const canRetry = !result.cancelled && !this.#in.cancelled && !result.permanent &&
      v.tryNumber < v.maxTries;
    if (canRetry) {
      const delayMs = retryDelay(t, attempt, this.#random);
      const at = new Date(outcome.endedAt.getTime() + delayMs);
      this.#record(
        id,
        "up_for_retry",
        recompute ? null : {
          ...done,
          nextAttemptAt: at,
          error: result.message,
          ...(this.#in.mode === "workers" && !this.#in.scope ? { readyAt: at } : {}),
        },
        [
          ...counts,
          this.#audit({
            taskId: id,
            operation: "task:retry",
            status: "up_for_retry",
            detail: { attempt, delayMs, ...alertsOwed(this.#in.dag, "task_retry", id) },
          }),
        ],
        [{
          type: "task:retry",
          runId: run.runId,
          taskId: id,
          attempt,
          delayMs,
          error: result.message,
          ...(countsEvent ? { counts: countsEvent } : {}),
        }],
        { ...token, view: { nextAttemptAt: at, error: result.message, endedAt: outcome.endedAt } },
      );
      return;
    }
    // A failed recomputation is recorded: the task did not succeed this time.
    this.#record(id, "failed", { ...done, error: result.message }, [
      ...counts,
      this.#audit({
        taskId: id,
        operation: "task:failed",
        status: "failed",
        detail: { attempt, durationMs, ...alertsOwed(this.#in.dag, "task_failure", id) },
      }),
    ], [{
      type: "task:failed",
      runId: run.runId,
      taskId: id,
      attempt,
      durationMs,
      error: result.message,
      ...(countsEvent ? { counts: countsEvent } : {}),
    }], { ...token, view: { recompute: false } });
  }

  /**
   * A sensor's poke that found nothing (reschedule mode): up for reschedule after its interval
   * (not counted as a try, its slot freed), or timed out once its timeout from the first poke has
   * passed (the outcome to decide on instead: skipped with `softFail`, else failed for good).
   */
  #reschedule(
    id: string,
    v: TaskView,
    r: Extract<AttemptOutcome, { kind: "reschedule" }>,
    token: { token?: string },
  ): Extract<AttemptOutcome, { kind: "skipped" | "failed" }> | undefined {
    const kept = sensorState(v.output);
    const since = kept?.since ?? (v.startedAt ?? r.startedAt).getTime();
    const pokes = (kept?.pokes ?? 0) + 1;
    const deadline = since + r.timeoutMs;
    const { startedAt, endedAt, counts } = r;
    if (endedAt.getTime() >= deadline) {
      const message = `Sensor "${id}" timed out after ${formatDuration(r.timeoutMs)} (${pokes} ${
        pokes === 1 ? "poke" : "pokes"
      })`;
      return r.softFail ? { kind: "skipped", message, startedAt, endedAt, counts } : {
        kind: "failed",
        message,
        permanent: true,
        cancelled: false,
        startedAt,
        endedAt,
        counts,
      };
    }
    const at = new Date(Math.min(endedAt.getTime() + r.delayMs, deadline));
    const sensor = { sensor: { since: new Date(since).toISOString(), pokes } };
    this.#record(
      id,
      "up_for_reschedule",
      {
        ...this.#released(),
        endedAt,
        nextAttemptAt: at,
        // A poke is not a try: the next start counts this one again.
        tryNumber: v.tryNumber - 1,
        error: null,
        outputKind: "json",
        output: sensor,
        ...(this.#in.mode === "workers" && !this.#in.scope ? { readyAt: at } : {}),
      },
      [
        ...this.#counts(id, counts),
        this.#audit({
          taskId: id,
          operation: "task:reschedule",
          status: "up_for_reschedule",
          detail: { poke: pokes, delayMs: at.getTime() - endedAt.getTime() },
        }),
      ],
      [{
        type: "task:reschedule",
        runId: this.#in.run.runId,
        taskId: id,
        poke: pokes,
        delayMs: at.getTime() - endedAt.getTime(),
      }],
      { ...token, view: { nextAttemptAt: at, endedAt } },
    );
    return undefined;
  }

  #cancel(): void {
    if (this.#counts_().running > 0) return;
    for (const id of this.#in.dag.order) {
      const v = this.#view.get(id);
      if (
        !v || !this.#inScope(id) || (v.state !== "up_for_retry" && v.state !== "up_for_reschedule")
      ) continue;
      this.#record(
        id,
        "failed",
        {
          ...this.#released(),
          endedAt: this.#in.now,
          error: "Cancelled: the run was interrupted",
        },
        [this.#audit({ taskId: id, operation: "task:cancelled", status: "failed" })],
        [],
        {
          view: { recompute: false },
        },
      );
    }
  }

  // ---- what runs next -----------------------------------------------------------------------

  #advance(): void {
    if (this.#in.mode === "local") this.#advanceLocal();
    else this.#advanceWorkers();
  }

  /** No upstream is final yet: every rule but `always` waits (a cheap test before the rule). */
  #surelyWaits(t: ResolvedTask): boolean {
    if (t.after.length === 0 || t.triggerRule === "always") return false;
    for (const u of t.after) {
      const s = this.#view.get(u)?.state;
      if (s !== undefined && isFinal(s)) return false;
    }
    return true;
  }

  #upstreamStates(t: ResolvedTask): TaskState[] {
    return t.after.map((u) => this.#view.get(u)?.state ?? "scheduled");
  }

  /** Skip or fail a task by its trigger rule; true when decided. */
  #trigger(id: string, verdict: TriggerVerdict): boolean {
    if (verdict === "skip") {
      this.#record(id, "skipped", { ...this.#released(), endedAt: this.#in.now, error: null }, [
        this.#audit({ taskId: id, operation: "task:skipped", status: "skipped" }),
      ], [{
        type: "task:skipped",
        runId: this.#in.run.runId,
        taskId: id,
        reason: "upstream skipped",
      }], {
        view: { recompute: false },
      });
      return true;
    }
    if (verdict === "upstream_failed") {
      this.#record(id, "upstream_failed", {
        ...this.#released(),
        endedAt: this.#in.now,
        error: null,
      }, [
        this.#audit({ taskId: id, operation: "task:upstream_failed", status: "upstream_failed" }),
      ], [
        { type: "task:upstream_failed", runId: this.#in.run.runId, taskId: id },
      ], { view: { recompute: false } });
      return true;
    }
    return false;
  }

  #startPatch(t: ResolvedTask, v: TaskView): {
    patch: TaskPatch;
    attempt: number;
  } {
    const tryNumber = v.tryNumber + 1;
    return {
      attempt: attemptOf(t, { tryNumber, maxTries: v.maxTries }),
      patch: {
        tryNumber,
        maxTries: v.maxTries,
        startedAt: this.#in.now,
        endedAt: null,
        owner: this.#in.owner,
        nextAttemptAt: null,
        error: null,
        readyAt: null,
      },
    };
  }

  #advanceLocal(): void {
    const { dag, run } = this.#in;
    const stats = this.#counts_();
    // Which tasks can have become ready: those whose upstream changed, and due retries. Every
    // task when opening, when nothing ran (a first decision), or when slots were full (a ready
    // task may be waiting for one).
    // With the tasks that waited for a slot as the last decision left them (`waiting`), those
    // and what changed are enough while something runs.
    const hinted = this.#in.waiting !== undefined && this.#in.open === undefined &&
      this.#found.running > 0;
    const full = !hinted && (this.#in.open !== undefined || this.#found.running === 0 ||
      this.#found.running >= dag.maxActiveTasks);
    const rank = rankOf(dag);
    const byRank = (a: string, b: string) => rank.get(a)! - rank.get(b)!;
    let round: string[] = full ? [...dag.order] : [...this.#touched, ...this.#found.retrying];
    this.#touched = [];
    /** Ready tasks that waited for a slot, in rank order, not looked at yet. */
    let carried: readonly string[] = hinted ? this.#in.waiting! : [];
    /** What is still waiting of `carried` once the slots are taken again. */
    let kept: readonly string[] = [];
    const deferred: string[] = [];
    while (round.length > 0 || carried.length > 0) {
      const ids = [...new Set(round)].sort(byRank);
      const inRound = carried.length > 0 ? new Set(ids) : undefined;
      let i = 0, j = 0;
      while (i < ids.length || j < carried.length) {
        let id: string;
        if (j < carried.length && (i >= ids.length || byRank(carried[j]!, ids[i]!) < 0)) {
          if (stats.running >= dag.maxActiveTasks) {
            // Still ready, still no slot: they keep waiting, in order, unexamined.
            kept = carried.slice(j);
            j = carried.length;
            continue;
          }
          id = carried[j++]!;
          if (inRound!.has(id)) continue;
        } else id = ids[i++]!;
        const v = this.#view.get(id);
        if (!v || !this.#inScope(id)) continue;
        if (v.state === "scheduled") {
          const task = dag.tasks.get(id)!;
          if (this.#surelyWaits(task)) continue;
          const verdict = decideTrigger(task.triggerRule, this.#upstreamStates(task));
          if (verdict === "wait") continue;
          if (this.#trigger(id, verdict)) continue;
        } else if (v.state === "up_for_retry" || v.state === "up_for_reschedule") {
          if (v.nextAttemptAt && v.nextAttemptAt.getTime() > this.#in.now.getTime()) continue;
        } else continue;
        if (stats.running >= dag.maxActiveTasks) {
          if (v.state === "scheduled") deferred.push(id);
          continue;
        }
        const t = dag.tasks.get(id)!;
        const { patch, attempt } = this.#startPatch(t, v);
        const recompute = v.recompute === true;
        this.#record(id, "running", recompute ? null : patch, [
          this.#audit({
            taskId: id,
            operation: recompute ? "task:recompute" : "task:start",
            status: "running",
            // A worker running an enclave unit names itself, as a claim does.
            detail: this.#in.scope ? { attempt, owner: hostPid(this.#in.owner) } : { attempt },
          }),
        ], [{
          type: "task:start",
          runId: run.runId,
          taskId: id,
          attempt,
          maxAttempts: t.retries + 1,
        }], {
          view: recompute ? patch : {},
        });
        this.#start.push(id);
      }
      carried = [];
      // Skips and failures propagate: what they touched is decided on next.
      round = this.#touched;
      this.#touched = [];
    }
    // A task looked at twice (`one_success`, say, touched again) waits once.
    const fresh = [...new Set(deferred)].sort(byRank);
    if (fresh.length > 0 && kept.length > 0) {
      const again = new Set(fresh);
      kept = kept.filter((id) => !again.has(id));
    }
    this.#waiting = mergeSorted(fresh, kept, byRank);
  }

  #advanceWorkers(): void {
    const { dag, run } = this.#in;
    let slots = this.#in.slots ?? 0;
    const all = this.#in.open !== undefined;
    const seen = new Set<string>();
    let changed = true;
    while (changed) {
      changed = false;
      const candidates = all ? byPriority(dag) : this.#workerCandidates();
      for (const id of candidates) {
        const v = this.#view.get(id);
        const t = dag.tasks.get(id)!;
        if (!v || v.state !== "scheduled" || !this.#inScope(id)) continue;
        if (v.unit) {
          if (seen.has(v.unit)) continue;
          seen.add(v.unit);
          if (this.#queueUnit(v.unit)) changed = true;
          continue;
        }
        this.#guarded ||= t.after.length > 1;
        const verdict = decideTrigger(t.triggerRule, this.#upstreamStates(t));
        if (verdict === "wait") continue;
        if (this.#trigger(id, verdict)) {
          changed = true;
          continue;
        }
        if (slots > 0 && !t.pool) {
          // A direct handoff: this worker runs it next, under its own lease.
          slots--;
          const { patch, attempt } = this.#startPatch(t, v);
          const token = attemptToken(this.#in.owner, v.jobKey, patch.tryNumber!);
          this.#record(id, "running", { ...patch, leaseToken: token, queuedAt: this.#in.now }, [
            this.#audit({
              taskId: id,
              operation: "task:start",
              status: "running",
              detail: { attempt, owner: hostPid(this.#in.owner) },
            }),
          ], [{
            type: "task:start",
            runId: run.runId,
            taskId: id,
            attempt,
            maxAttempts: t.retries + 1,
          }], {
            leaseMs: this.#in.leaseMs,
          });
          this.#start.push(id);
          continue;
        }
        this.#record(
          id,
          "queued",
          { queuedAt: this.#in.now, readyAt: null },
          [
            this.#audit({ taskId: id, operation: "task:queued", status: "queued" }),
          ],
          [],
          { readyNow: true, view: { readyAt: this.#in.now } },
        );
      }
    }
  }

  /**
   * The tasks a worker decision looks at, by priority: those whose upstreams changed, and every
   * member of an enclave unit one of them belongs to (a unit member whose external upstream
   * changed makes its unit a candidate). Sorting the frontier costs what changed,
   * not the size of the DAG (a walk of the whole DAG per decision made a run quadratic).
   */
  #workerCandidates(): string[] {
    const { dag } = this.#in;
    const units = new Set<string>();
    for (const id of this.#frontier) {
      const unit = this.#view.get(id)?.unit;
      if (unit) units.add(unit);
    }
    if (units.size > 0) {
      return byPriority(dag).filter((id) => {
        const unit = this.#view.get(id)?.unit;
        return this.#frontier.has(id) || (unit != null && units.has(unit));
      });
    }
    const rank = priorityRank(dag);
    return [...this.#frontier].filter((id) => rank.has(id)).sort((a, b) =>
      rank.get(a)! - rank.get(b)!
    );
  }

  /** Queues a whole enclave unit once every upstream outside it is final. */
  #queueUnit(unit: string): boolean {
    const { dag } = this.#in;
    this.#guarded = true;
    const members = dag.order.filter((id) => this.#view.get(id)?.unit === unit);
    if (!members.every((m) => this.#view.get(m)!.state === "scheduled")) return false;
    const inside = new Set(members);
    const external = members.flatMap((m) => dag.tasks.get(m)!.after).filter((u) => !inside.has(u));
    if (!external.every((u) => isFinal(this.#view.get(u)?.state ?? "scheduled"))) return false;
    for (const m of members) {
      const first = m === unit;
      this.#record(
        m,
        "queued",
        { queuedAt: this.#in.now, readyAt: null },
        [
          this.#audit({ taskId: m, operation: "task:queued", status: "queued" }),
        ],
        [],
        first ? { readyNow: true, view: { readyAt: this.#in.now } } : {},
      );
    }
    return true;
  }

  #wakeAt(): Date | null {
    if (this.#in.mode !== "local" || this.#in.cancelled) return null;
    const now = this.#in.now.getTime();
    let at: number | null = null;
    // Only a task waiting for a retry as found, or changed by this decision, can be one now.
    const ids = this.#active
      ? new Set([...this.#active, ...this.#view.changed()])
      : this.#in.dag.order;
    for (const id of ids) {
      const v = this.#view.get(id);
      if (
        !v || (v.state !== "up_for_retry" && v.state !== "up_for_reschedule") ||
        !v.nextAttemptAt || !this.#inScope(id)
      ) continue;
      const t = v.nextAttemptAt.getTime();
      if (t > now && (at === null || t < at)) at = t;
    }
    return at === null ? null : new Date(at);
  }

  // ---- the end of a run ---------------------------------------------------------------------

  #finish(): void {
    const { dag, run, now, mode } = this.#in;
    if (this.#in.scope) return;
    // Workers: a run another worker ended already stays ended.
    if (
      mode === "workers" && !this.#in.open && (run.state === "success" || run.state === "failed")
    ) {
      return;
    }
    const stats = this.#counts_();
    const running = stats.running > 0;
    const unfinished = stats.unfinished > 0;
    let state: RunState;
    let operation = "run:end";
    if (this.#in.cancelled) {
      if (running) return;
      state = "failed";
      operation = "run:cancelled";
    } else if (!unfinished) {
      const leaves = dag.order.filter((id) =>
        this.#view.has(id) && dag.downstream.get(id)!.length === 0
      );
      state = runStateFromLeaves(leaves.map((id) => this.#view.get(id)!.state));
    } else if (
      mode === "local" && !running && this.#start.length === 0 && this.#wakeAt() === null
    ) {
      // Nothing can run any more (a valid DAG never gets here): the run cannot succeed.
      state = "failed";
    } else return;
    const durationMs = Math.max(0, now.getTime() - this.#in.since.getTime());
    const claim = this.#run?.patch ?? {};
    this.#run = {
      patch: {
        ...claim,
        state,
        owner: null,
        leaseToken: null,
        leaseUntil: null,
        endedAt: now,
      },
      final: state,
      audit: [
        ...(this.#run?.audit ?? []),
        this.#audit({
          operation,
          status: state,
          detail: {
            ...(mode === "local"
              ? { durationMs: Math.round(durationMs) }
              : { executor: "workers" }),
            ...alertsOwed(dag, state === "success" ? "run_success" : "run_failure", null),
          },
        }),
      ],
      events: [{ type: "run:end", runId: run.runId, state, durationMs }],
    };
    this.#guarded = true;
  }
}

/** A view with this decision's changes over it. */
class Overlay {
  readonly #changed = new Map<string, TaskView>();
  constructor(readonly base: ReadonlyMap<string, TaskView>) {}
  get(id: string): TaskView | undefined {
    return this.#changed.get(id) ?? this.base.get(id);
  }
  has(id: string): boolean {
    return this.#changed.has(id) || this.base.has(id);
  }
  set(id: string, v: TaskView): void {
    this.#changed.set(id, v);
  }
  /** The ids this decision changed. */
  changed(): IterableIterator<string> {
    return this.#changed.keys();
  }
}

/** Two lists sorted by `order`, merged into one. */
function mergeSorted(
  a: readonly string[],
  b: readonly string[],
  order: (x: string, y: string) => number,
): string[] {
  if (a.length === 0) return [...b];
  if (b.length === 0) return [...a];
  const out: string[] = [];
  let i = 0, j = 0;
  while (i < a.length && j < b.length) out.push(order(a[i]!, b[j]!) <= 0 ? a[i++]! : b[j++]!);
  while (i < a.length) out.push(a[i++]!);
  while (j < b.length) out.push(b[j++]!);
  return out;
}

const RANKS = new WeakMap<ResolvedDag, Map<string, number>>();

/** Each task's place in the DAG's topological order (ties start in that order). */
function rankOf(dag: ResolvedDag): Map<string, number> {
  let rank = RANKS.get(dag);
  if (!rank) {
    rank = new Map(byPriority(dag).map((id, i) => [id, i]));
    RANKS.set(dag, rank);
  }
  return rank;
}

/** What a sensor in reschedule mode keeps between pokes (in its output column): value-free. */
function sensorState(output: unknown): { since: number; pokes: number } | undefined {
  const s = (output as { sensor?: { since?: unknown; pokes?: unknown } } | null)?.sensor;
  if (!s || typeof s.since !== "string" || typeof s.pokes !== "number") return undefined;
  const since = Date.parse(s.since);
  return Number.isNaN(since) ? undefined : { since, pokes: s.pokes };
}

const BY_PRIORITY = new WeakMap<ResolvedDag, string[]>();
const PRIORITY_RANK = new WeakMap<ResolvedDag, Map<string, number>>();

/** Each task's place in {@link byPriority}'s order. */
function priorityRank(dag: ResolvedDag): Map<string, number> {
  let rank = PRIORITY_RANK.get(dag);
  if (!rank) {
    rank = new Map(byPriority(dag).map((id, i) => [id, i]));
    PRIORITY_RANK.set(dag, rank);
  }
  return rank;
}

/**
 * The DAG's task ids in the order ready tasks start: the highest effective priority first (the
 * task's `priority`, Airflow's `priority_weight` by its weight rule), then the DAG's order.
 */
export function byPriority(dag: ResolvedDag): string[] {
  let ids = BY_PRIORITY.get(dag);
  if (!ids) {
    const at = new Map(dag.order.map((id, i) => [id, i]));
    ids = [...dag.order].sort((a, b) =>
      (dag.tasks.get(b)!.priority ?? 1) - (dag.tasks.get(a)!.priority ?? 1) ||
      at.get(a)! - at.get(b)!
    );
    BY_PRIORITY.set(dag, ids);
  }
  return ids;
}

function countsOf(counts: readonly TaskCount[]): TaskCounts | undefined {
  if (counts.length === 0) return undefined;
  const out: TaskCounts = {};
  for (const c of counts) out[c.operation] = (out[c.operation] ?? 0) + c.records;
  return out;
}

/** `host:pid` of an owner id (`host:pid:nonce`), as the audit trail names workers. */
function hostPid(owner: string): string {
  return owner.split(":").slice(0, 2).join(":");
}

// ---------------------------------------------------------------------------------------------
// From decisions to a batch

/**
 * The batch that records a decision (or several, in order): one write per task instance (its
 * transitions folded, compare-and-set on the state it is stored in), the run's change, the audit
 * entries in order, and how many task instances it finishes.
 *
 * @example
 * ```ts ignore
 * const batch = toBatch(runId, [decision], { version: 7, runToken: token });
 * await store.applyBatch(batch);
 * ```
 */
export function toBatch(
  runId: string,
  decisions: readonly Pick<Decision, "transitions" | "run">[],
  guard: BatchGuard,
  stored?: ReadonlyMap<string, TaskState>,
): Batch {
  const writes = new Map<string, TaskWrite>();
  const audit: AuditInput[] = [];
  let finished = 0;
  let notify = false;
  let pooled = false;
  let run: Batch["run"];
  for (const d of decisions) {
    for (const t of d.transitions) {
      audit.push(...t.audit);
      // A pooled task (or unit) that stops running frees its pool slot.
      if (t.from === "running" && t.to !== "running" && t.next.pool !== null) pooled = true;
      if (t.patch === null) continue;
      const prev = writes.get(t.jobKey);
      const from = prev?.from ?? stored?.get(t.jobKey) ?? t.from;
      const write: TaskWrite = {
        jobKey: t.jobKey,
        from,
        patch: { ...prev?.patch, ...t.patch },
        ...(prev?.token !== undefined
          ? { token: prev.token }
          : t.token !== undefined
          ? { token: t.token }
          : {}),
        ...(t.leaseMs !== undefined
          ? { leaseMs: t.leaseMs }
          : prev?.leaseMs !== undefined
          ? { leaseMs: prev.leaseMs }
          : {}),
        ...(t.readyNow || (prev?.readyNow && t.patch.readyAt === undefined)
          ? { readyNow: true }
          : {}),
      };
      if (t.readyNow) notify = true;
      writes.set(t.jobKey, write);
    }
    if (d.run) {
      audit.push(...d.run.audit);
      run = {
        patch: { ...run?.patch, ...d.run.patch },
        ...(d.run.leaseMs !== undefined
          ? { leaseMs: d.run.leaseMs }
          : run?.leaseMs !== undefined
          ? { leaseMs: run.leaseMs }
          : {}),
      };
    }
  }
  for (const w of writes.values()) {
    const to = w.patch.state ?? w.from;
    finished += (isFinal(to) ? 1 : 0) - (isFinal(w.from) ? 1 : 0);
  }
  return {
    runId,
    guard,
    ...(run ? { run } : {}),
    tasks: [...writes.values()],
    finished,
    audit,
    ...(notify ? { notify } : {}),
    ...(pooled ? { pooled } : {}),
  };
}
