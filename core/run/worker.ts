/**
 * The worker driver: claims ready task instances (or whole enclave units) from the state store
 * and runs them, any number of workers in any number of processes (PostgreSQL), or in one process
 * (the embedded PGlite). Like the local driver it decides nothing itself: the decider
 * (`decide.ts`) says what an attempt's end means (success, retry, failure; which tasks it
 * releases; whether the run ends), and the worker writes that in one statement, fenced by its
 * lease. A worker whose lease is lost abandons the attempt and writes nothing more.
 *
 * - {@link startRun} opens a run for workers (creating or resuming it) and queues its first tasks.
 * - {@link runWorker} claims and runs; LISTEN/NOTIFY wakes idle workers, a slow poll is the
 *   fallback; heartbeats renew leases and tell when one is lost.
 * - {@link reapLost} takes back the task instances of workers that are gone (lease expired, or a
 *   dead process on this host): each lost attempt counts against its retry budget.
 *
 * Enclave data never passes through the state store: the enclave tasks of a run that are
 * connected to each other form one claim unit, run whole by one worker (with the local driver's
 * loop), and recorded at once when it ends.
 *
 * @module
 */
import { sandboxScope } from "../sandbox/pool.ts";
import { getLogger } from "@logtape/logtape";
import { AlertDispatcher, alertRunOf } from "../alerts/dispatch.ts";
import type { DataInterval, ResolvedDag } from "../dag.ts";
import { isDatasetRef, sharedDatasetsIn, Workspace } from "../dataset.ts";
import { DagError, errorMessage } from "../errors.ts";
import { canonicalJson } from "../job_key.ts";
import { loadDags } from "../loader.ts";
import { ownerId, ownerIsDead } from "../owner.ts";
import { assertNoSecretsInParams } from "../privacy/secrets.ts";
import type {
  Claim,
  RunRecord,
  RunType,
  StateStore,
  TaskInstanceRecord,
  TaskState,
} from "../state/store.ts";
import {
  type AttemptOutcome,
  LeaseLostError,
  runAttempt,
  taskContext,
  WorkerStoppedError,
} from "./attempt.ts";
import {
  attemptOf,
  claimedStart,
  decide,
  decideExpansion,
  type DecideInput,
  type Decision,
  isFinal,
  type LostReason,
  RunView,
  type TaskView,
  toBatch,
} from "./decide.ts";
import { logEvent } from "./events.ts";
import { drive, RunBusyError } from "./local.ts";
import {
  expandedDag,
  inputsFor,
  inputTagsFor,
  mappedInstances,
  mappedTasks,
  workersRefuse,
} from "./mapping.ts";
import { planRun, runCreateAudit } from "./plan.ts";

const log = getLogger(["carrel", "worker"]);

const DEFAULT_LEASE = 30_000;
const MAX_OUTPUT = 1024 * 1024;
/**
 * A claimed attempt still running after this long has its start recorded on its own; one that
 * ends sooner has it recorded with its end (one statement instead of two).
 */
const CONFIRM_AFTER_MS = 50;
/** How often opening a run is tried again when it changed meanwhile. */
const MAX_CONFLICTS = 50;

// ---------------------------------------------------------------------------------------------
// What a worker knows of a run

/**
 * A run as a worker last read it: the run, its task instances (a decider's `RunView`, so that a
 * decision costs what it changes, not the run's size), the version of that view.
 */
class SeenRun {
  constructor(
    public run: RunRecord,
    readonly tasks: RunView,
    public version: number,
  ) {}

  merge(run: RunRecord, changed: readonly TaskInstanceRecord[]): void {
    this.run = run;
    this.version = run.version;
    for (const t of changed) this.tasks.set(t.taskId, t);
  }
}

/** The runs a worker has read, refreshed by what changed since. */
class RunViews {
  readonly #views = new Map<string, SeenRun>();
  /** `alerts`: told of every decision recorded through these views (callbacks, SLA misses). */
  constructor(readonly store: StateStore, readonly alerts?: AlertDispatcher) {}

  /** The view of a run, read whole the first time, else refreshed when `stale` says so. */
  async get(runId: string, stale: (v: SeenRun) => boolean = () => false): Promise<SeenRun> {
    const known = this.#views.get(runId);
    if (known && !stale(known)) return known;
    return await this.refresh(runId);
  }

  /** Reads what changed since the view (everything, the first time). */
  async refresh(
    runId: string,
    held?: { jobKey: string; token: string },
  ): Promise<SeenRun & { held?: boolean }> {
    const known = this.#views.get(runId);
    const snapshot = await this.store.readRun(runId, {
      since: known?.version ?? -1,
      ...(held ? { held } : {}),
    });
    if (!snapshot) throw new Error(`Cannot read run "${runId}": it was deleted meanwhile`);
    let view = known;
    if (!view) {
      view = new SeenRun(snapshot.run, new RunView(), snapshot.run.version);
      this.#views.set(runId, view);
      if (this.#views.size > 512) this.#views.delete(this.#views.keys().next().value!);
    }
    view.merge(snapshot.run, snapshot.tasks);
    return Object.assign(view, snapshot.held === undefined ? {} : { held: snapshot.held });
  }

  forget(runId: string): void {
    this.#views.delete(runId);
  }
}

function decideInput(
  dag: ResolvedDag,
  run: RunRecord,
  tasks: ReadonlyMap<string, TaskView>,
  owner: string,
  leaseMs: number,
): Omit<DecideInput, "now"> & { now: Date } {
  return {
    dag,
    run: {
      runId: run.runId,
      dagId: run.dagId,
      logicalDate: run.logicalDate,
      state: run.state,
      startedAt: run.startedAt,
      keyVersion: run.keyVersion,
    },
    tasks,
    now: new Date(),
    mode: "workers",
    owner,
    leaseMs,
    persist: true,
    maxOutputBytes: MAX_OUTPUT,
    since: run.startedAt ?? new Date(),
  };
}

/** True for the error a batch fails with when a row changed under it (`carrel_expect`). */
function isConflict(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (error as { code?: unknown }).code === "40001";
}

/**
 * Decides and writes: first on the view this worker has (one statement, guarded); when that was
 * stale, again on the run's changes read with the run locked (never refused as stale). Returns
 * the decision written, or `undefined` when the writer's lease is gone.
 */
async function settle(
  store: StateStore,
  views: RunViews,
  runId: string,
  dag: ResolvedDag,
  make: (view: SeenRun) => {
    decision: Decision;
    batch: ReturnType<typeof toBatch>;
    /** Decisions recorded with it before (an enclave unit's, run in place). */
    before?: readonly Decision[];
  },
  held?: { jobKey: string; token: string },
  /** A worker's next claim, in the same statement, unless the decision gave it a task already. */
  claimNext?: { owner: string; leaseMs: number },
): Promise<Decision | undefined> {
  const view = await views.get(runId);
  let made = make(view);
  const empty = (m: typeof made) =>
    m.batch.tasks.length === 0 && !m.batch.run && m.batch.audit.length === 0;
  if (empty(made)) return made.decision;
  let result: Awaited<ReturnType<StateStore["applyBatch"]>>;
  try {
    result = await store.applyBatch(
      made.batch,
      claimNext && made.decision.start.length === 0 ? claimNext : undefined,
    );
  } catch (error) {
    if (!isConflict(error)) throw error;
    result = { applied: false, reason: "conflict" };
  }
  if (!result.applied && result.reason === "conflict") {
    // Stale: decide again on what changed, with the run locked meanwhile.
    const locked = await store.applyLocked(
      runId,
      { since: view.version, ...(held ? { held } : {}) },
      (snapshot) => {
        if (held && snapshot.held === false) return undefined;
        view.merge(snapshot.run, snapshot.tasks);
        made = make(view);
        return empty(made) ? undefined : made.batch;
      },
    );
    if (!locked.result) return held && locked.snapshot.held === false ? undefined : made.decision;
    result = locked.result;
  }
  if (!result.applied) return undefined; // fenced
  const { decision, before = [] } = made;
  // Only when nothing else was written in between does the view now match that version.
  if (result.version === view.version + 1) view.version = result.version;
  view.run = { ...view.run, unfinished: result.unfinished };
  for (const d of [...before, decision]) {
    for (const t of d.transitions) view.tasks.set(t.taskId, t.next);
  }
  views.alerts?.recorded([...before, decision], dag, alertRunOf(view.run), view.tasks);
  if (decision.run?.final) {
    view.run = { ...view.run, state: decision.run.final };
    views.forget(runId);
  } else if (result.unfinished === 0) {
    // The last task of the run became final here: end it (guarded, once).
    await endRun(store, views, runId, dag);
  }
  if (result.claim && result.claim !== "contended") claimed.set(decision, result.claim);
  return decision;
}

/** The claim made with a decision's statement (see `settle`'s `claimNext`). */
const claimed = new WeakMap<Decision, Claim>();

/** Ends a run whose task instances are all final. */
async function endRun(
  store: StateStore,
  views: RunViews,
  runId: string,
  dag: ResolvedDag,
): Promise<void> {
  await views.refresh(runId);
  await settle(store, views, runId, dag, (view) => {
    const decision = decide(decideInput(dag, view.run, view.tasks, ownerId(), DEFAULT_LEASE));
    return { decision, batch: toBatch(runId, [decision], { version: view.version }) };
  });
}

// ---------------------------------------------------------------------------------------------
// Starting a run for workers

/**
 * Creates (or resumes) a run to be executed by workers and queues its first tasks. Resuming runs
 * failed tasks again with a fresh retry budget (an enclave unit whole); what workers hold now is
 * left to them.
 *
 * @example
 * ```ts ignore
 * const run = await startRun(store, dag, interval, params, "triggered");
 * ```
 */
export async function startRun(
  store: StateStore,
  dag: ResolvedDag,
  interval: DataInterval,
  params: Record<string, unknown>,
  runType: RunType,
): Promise<RunRecord> {
  assertNoSecretsInParams(dag.id, params);
  const refused = workersRefuse(dag);
  if (refused) throw new DagError(refused);
  const plan = planRun(dag, interval, params, { runType, executor: "workers" });
  const owner = ownerId();
  for (let i = 0; i < MAX_CONFLICTS; i++) {
    const { created, snapshot } = await store.openRun(
      plan.run,
      plan.tasks,
      runCreateAudit(dag, plan.runId, runType, { executor: "workers" }),
    );
    const found = snapshot.run;
    if (!created && found.paramsHash !== plan.run.paramsHash) {
      const differing = Object.keys({ ...found.params, ...params }).filter((k) =>
        canonicalJson(found.params[k] ?? null) !== canonicalJson(params[k] ?? null)
      );
      throw new RunBusyError(
        `Cannot run "${plan.runId}": it exists with different params (${
          differing.join(", ")
        }); clear it or use its params`,
      );
    }
    const now = Date.now();
    let takeover: LostReason | undefined;
    if (found.owner !== null) {
      const expired = found.leaseUntil !== null && found.leaseUntil.getTime() < now;
      if (!expired && !ownerIsDead(found.owner)) {
        throw new RunBusyError(
          `Cannot run "${plan.runId}": another process is running it (owner ${found.owner}); wait for it or stop it`,
        );
      }
      takeover = expired ? "lease expired" : "owner process gone";
    }
    const tasks = new Map(snapshot.tasks.map((t) => [t.taskId, t as TaskView]));
    const lost = new Map<string, LostReason>();
    for (const t of snapshot.tasks) {
      if (t.state !== "running") continue;
      if (t.leaseToken === null) {
        lost.set(t.taskId, takeover ?? "owner process gone");
        continue;
      }
      const expired = t.leaseUntil === null || t.leaseUntil.getTime() < now;
      if (expired) lost.set(t.taskId, "lease expired");
      else if (ownerIsDead(t.owner)) lost.set(t.taskId, "owner process gone");
    }
    const decision = decide({
      ...decideInput(dag, found, tasks, owner, DEFAULT_LEASE),
      open: { resume: "retry_failed", created, ...(takeover ? { takeover } : {}) },
      lost,
    });
    const result = await store.applyBatch(
      toBatch(plan.runId, [decision], { version: found.version, runToken: found.leaseToken }),
    ).catch((error) => {
      if (isConflict(error)) return { applied: false as const, reason: "conflict" as const };
      throw error;
    });
    if (result.applied) {
      for (const t of decision.transitions) for (const e of t.events) logEvent(e);
      for (const t of decision.transitions) tasks.set(t.taskId, t.next);
      const alerts = new AlertDispatcher({ store });
      alerts.recorded([decision], dag, alertRunOf(found), tasks);
      await alerts.settled();
      return (await store.getRun(plan.runId))!;
    }
  }
  throw new RunBusyError(`Cannot start "${plan.runId}": it keeps changing meanwhile; try again`);
}

// ---------------------------------------------------------------------------------------------
// Taking back lost work

/**
 * Takes back task instances whose worker is gone (lease expired, or a dead process on this
 * host): each lost attempt counts, and is retried by its policy or fails (an enclave unit goes
 * whole). Also ends the runs whose every task is final but whose last writer stopped before
 * ending them. Returns the affected run ids.
 *
 * @example
 * ```ts ignore
 * const runs = await reapLost(store, (id) => dags.get(id));
 * ```
 */
export async function reapLost(
  store: StateStore,
  dags: (dagId: string) => ResolvedDag | undefined,
  views: RunViews = new RunViews(store),
): Promise<string[]> {
  const leased = await store.leasedTasks();
  const lostTokens = new Map<string, LostReason>();
  for (const t of leased) {
    if (t.expired) lostTokens.set(t.leaseToken!, "lease expired");
    else if (ownerIsDead(t.owner) && !lostTokens.has(t.leaseToken!)) {
      lostTokens.set(t.leaseToken!, "owner process gone");
    }
  }
  const byRun = new Map<string, typeof leased>();
  for (const t of leased) {
    if (!lostTokens.has(t.leaseToken!)) continue;
    byRun.set(t.runId, [...(byRun.get(t.runId) ?? []), t]);
  }
  const owner = ownerId();
  const affected: string[] = [];
  for (const [runId, rows] of byRun) {
    const dag = dags(rows[0]!.dagId);
    if (!dag) continue;
    await views.refresh(runId);
    const decision = await settle(store, views, runId, dag, (view) => {
      for (const r of rows) view.tasks.set(r.taskId, stripExpired(r));
      const lost = new Map<string, LostReason>();
      for (const r of rows) {
        if (r.state === "running") lost.set(r.taskId, lostTokens.get(r.leaseToken!)!);
      }
      const decision = decide({
        ...decideInput(dag, view.run, view.tasks, owner, DEFAULT_LEASE),
        lost,
      });
      return {
        decision,
        batch: toBatch(runId, [decision], decision.guarded ? { version: view.version } : {}),
      };
    });
    if (decision) {
      affected.push(runId);
      for (const t of decision.transitions) {
        if (t.audit.some((a) => a.operation === "task:lost")) {
          log.warn("Task {taskId} of {runId} lost: {reason}", {
            taskId: t.taskId,
            runId,
            reason: rows.find((r) => r.taskId === t.taskId)?.leaseToken
              ? lostTokens.get(rows.find((r) => r.taskId === t.taskId)!.leaseToken!)
              : "lost",
          });
        }
      }
    }
  }
  // Runs whose last task's writer stopped before it ended them: every task is final, none leased.
  for (const { runId, dagId } of await store.strandedRuns(STRANDED_AFTER_MS)) {
    const dag = dags(dagId);
    if (!dag) continue;
    log.warn("Run {runId} has every task final but had not ended (its last worker stopped)", {
      runId,
    });
    await endRun(store, views, runId, dag);
    affected.push(runId);
  }
  return affected;
}

/**
 * How long a run with every task final may stay open before a reaper ends it: its last writer
 * ends it at once, so only one that stopped in between leaves it that long.
 */
const STRANDED_AFTER_MS = 5_000;

function stripExpired(t: TaskInstanceRecord & { expired?: boolean }): TaskInstanceRecord {
  const { expired: _expired, ...rest } = t;
  return rest;
}

// ---------------------------------------------------------------------------------------------
// The worker

/** Options of a worker. */
export interface WorkerOptions {
  store: StateStore;
  dagsDir: string;
  home: string;
  /** Claims running at once in this worker. Default 1. */
  concurrency?: number;
  /** Lease length; heartbeats renew it every third. Default 30s. */
  leaseMs?: number;
  /** Fallback poll when no notification arrives. Default 2s. */
  pollMs?: number;
  /** Stops the worker: no new claims; running ones finish (or are aborted by `abort`). */
  signal?: AbortSignal;
  /** Aborts running attempts (recorded failed and retried by their policy). */
  abort?: AbortSignal;
  /** Stop when idle (nothing claimable) instead of waiting: for tests and one-shot drains. */
  exitWhenIdle?: boolean;
  /** Called after each claim (or handed-off task) is recorded. */
  onClaimDone?: (taskIds: string[]) => void;
  /**
   * Where shared datasets go: `files` under `home`, or `database` (the store; workers need no
   * common `CARREL_HOME`). Default: `CARREL_DATASETS`, else `files`.
   */
  datasets?: "files" | "database";
}

/** Work a worker holds: a claim, or a task it took over directly from one it finished. */
interface Held {
  run: RunRecord;
  tasks: TaskInstanceRecord[];
  token: string;
  /** Started by a handoff (its start is recorded already). */
  handoff: boolean;
}

/**
 * Runs a worker until its signal aborts (or, with `exitWhenIdle`, until nothing is ready).
 * Returns how many claims it executed.
 *
 * @example
 * ```ts ignore
 * const controller = new AbortController();
 * await runWorker({ store, dagsDir: "dags", home: ".carrel", concurrency: 4, signal: controller.signal });
 * ```
 */
export async function runWorker(options: WorkerOptions): Promise<number> {
  const { store } = options;
  // Sandbox Workers are pooled while this worker runs.
  using _sandboxes = sandboxScope();
  const owner = ownerId();
  const concurrency = options.concurrency ?? 1;
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE;
  const pollMs = options.pollMs ?? 2_000;
  const alerts = new AlertDispatcher({ store });
  const views = new RunViews(store, alerts);
  const chunks = (options.datasets ?? sharedDatasetsIn()) === "database" ? store : undefined;
  const workspaces = new Map<string, Workspace>();
  const sharedWorkspace = (runId: string) => {
    let w = workspaces.get(runId);
    if (!w) {
      w = new Workspace(options.home, runId, undefined, chunks);
      workspaces.set(runId, w);
      if (workspaces.size > 256) workspaces.delete(workspaces.keys().next().value!);
    }
    return w;
  };
  let dags = new Map<string, ResolvedDag>();
  const reload = async () => {
    dags = (await loadDags(options.dagsDir, { fresh: true })).dags;
  };
  await reload();
  const dagOf = async (id: string) => {
    if (!dags.has(id)) await reload();
    return dags.get(id);
  };

  // A wake-up that comes while the loop is not sleeping (claiming) is kept for the next sleep.
  let woken = false;
  const asleep = () => {
    woken = true;
  };
  let wake: () => void = asleep;
  const unlisten = await store.onReady(() => wake()).catch(() => undefined);
  /** Attempts by lease token: aborted when their lease is lost. */
  const held = new Map<string, AbortController>();
  const heartbeat = setInterval(() => {
    const tokens = [...held.keys()];
    if (tokens.length === 0) return;
    store.renewTaskLeases(owner, tokens, leaseMs).then((renewed) => {
      for (const token of tokens) {
        if (renewed.has(token)) continue;
        const controller = held.get(token);
        if (!controller || controller.signal.aborted) continue;
        log.warn("Lease {token} lost: its attempt is abandoned, nothing more is written", {
          token: token.slice(0, 8),
        });
        controller.abort(new LeaseLostError("Lease lost: another worker took the task over"));
      }
    }).catch((error) => log.warn("Cannot renew leases: {error}", { error: errorMessage(error) }));
  }, Math.max(50, Math.floor(leaseMs / 3)));
  let lastReap = 0;
  let executed = 0;
  const active = new Set<Promise<void>>();
  log.info("Worker {owner} started with concurrency {concurrency}", { owner, concurrency });

  /** Runs held work, then whatever it hands off to this worker, in one slot. */
  const work = async (first: Held) => {
    let next: Held | undefined = first;
    while (next) {
      const current: Held = next;
      next = undefined;
      const controller = new AbortController();
      held.set(current.token, controller);
      const onAbort = () => controller.abort(new WorkerStoppedError());
      options.abort?.addEventListener("abort", onAbort, { once: true });
      try {
        const dag = await dagOf(current.run.dagId);
        if (!dag) {
          // Left to its lease: another worker (with the DAG) retries it after the reaper.
          throw new Error(`DAG "${current.run.dagId}" is not in ${options.dagsDir}`);
        }
        next = current.tasks.length === 1 && !current.tasks[0]!.unit
          ? await runTask(dag, current, controller.signal)
          : await runUnit(dag, current, controller.signal);
      } catch (error) {
        log.error("Cannot execute {tasks} of {runId}: {error}", {
          tasks: current.tasks.map((t) => t.taskId).join(","),
          runId: current.run.runId,
          error: errorMessage(error),
        });
      } finally {
        options.abort?.removeEventListener("abort", onAbort);
        held.delete(current.token);
        executed++;
        options.onClaimDone?.(current.tasks.map((t) => t.taskId));
      }
      // What this worker took with a task's end (a handoff, a claim) is held: it runs even when
      // the worker is stopping (a graceful stop finishes what it holds).
    }
  };

  /** One task alone: run it, then record its end and what it releases (one statement). */
  const runTask = async (
    dag: ResolvedDag,
    current: Held,
    signal: AbortSignal,
  ): Promise<Held | undefined> => {
    const ti = current.tasks[0]!;
    // A mapped instance (`load[3]`) is in the DAG as its task expanded.
    const shape = mappedTasks(dag).length === 0
      ? dag
      : expandedDag(dag, (await views.get(ti.runId, (v) => !v.tasks.has(ti.taskId))).tasks);
    const t = shape.tasks.get(ti.taskId);
    if (!t) throw new Error(`Task "${ti.taskId}" is not in DAG "${dag.id}"`);
    const attempt = attemptOf(t, ti);
    // A claimed attempt's start enters the audit trail once it has run CONFIRM_AFTER_MS, or with
    // its end if it ends sooner (one statement for a short task). A handoff's is recorded already.
    const start = current.handoff ? undefined : claimedStart(t, ti, owner, current.run.keyVersion);
    let confirmed: Promise<boolean> | undefined;
    const confirm = start
      ? setTimeout(() => {
        confirmed = store.confirmClaim(ti.jobKey, current.token, [start.audit]);
      }, CONFIRM_AFTER_MS)
      : undefined;
    if (start) logEvent(start.event);
    // Inputs: its upstreams' outputs, from a view in which they are all final.
    const view = await views.get(
      ti.runId,
      (v) => t.after.some((u) => !isFinal(v.tasks.get(u)?.state ?? "scheduled")),
    );
    // Shared tasks write no enclave scratch: one workspace serves a run's shared tasks.
    const workspace = t.outputZone === "enclave"
      ? new Workspace(options.home, ti.runId, undefined, chunks)
      : sharedWorkspace(ti.runId);
    const inputs = inputsFor(t, (up) => view.tasks.get(up)?.state, (up) => {
      const u = view.tasks.get(up)!;
      return u.outputKind === "dataset" && isDatasetRef(u.output)
        ? workspace.open(u.output)
        : u.output;
    });
    const inputTags = inputTagsFor(shape, t);
    let outcome: AttemptOutcome;
    try {
      outcome = await runAttempt({
        task: t,
        attempt,
        signal,
        context: taskContext(
          {
            dagId: dag.id,
            runId: ti.runId,
            interval: { start: current.run.intervalStart, end: current.run.intervalEnd },
            params: current.run.params,
            workspace,
          },
          t,
          ti.jobKey,
          inputs,
          inputTags,
        ),
      });
    } finally {
      clearTimeout(confirm);
      // Only a task whose output is enclave data writes encrypted scratch.
      if (t.outputZone === "enclave") await workspace.removeEnclave();
    }
    if (t.expand !== undefined) {
      // A mapped task's expansion: its instances exist before its end is decided on.
      const known = await views.refresh(ti.runId);
      const expansion = decideExpansion(dag, known.tasks, ti.taskId, outcome);
      outcome = expansion.outcome;
      if (expansion.create > 0) {
        await store.ensureTaskInstances(mappedInstances(dag, ti.taskId, expansion.create, {
          runId: ti.runId,
          interval: { start: current.run.intervalStart, end: current.run.intervalEnd },
          params: current.run.params,
        }));
        await views.refresh(ti.runId);
      }
    }
    const startRecorded = confirmed !== undefined;
    if ((confirmed && !(await confirmed)) || signal.reason instanceof LeaseLostError) {
      log.warn("Task {taskId} of {runId}: lease lost, its end is not recorded", {
        taskId: ti.taskId,
        runId: ti.runId,
      });
      return undefined;
    }
    const guard = { jobKey: ti.jobKey, token: current.token };
    const going = !options.signal?.aborted;
    const handoff = going ? 1 : 0;
    const decision = await settle(
      store,
      views,
      ti.runId,
      dag,
      (v) => {
        v.tasks.set(ti.taskId, { ...(v.tasks.get(ti.taskId) ?? ti), ...ti });
        const decision = decide({
          ...decideInput(dag, v.run, v.tasks, owner, leaseMs),
          outcomes: new Map([[ti.taskId, outcome]]),
          slots: handoff,
        });
        const batch = toBatch(ti.runId, [decision], {
          task: guard,
          ...(decision.guarded ? { version: v.version } : {}),
        });
        // Its start first, when it was not recorded while it ran.
        if (start && !startRecorded) batch.audit = [start.audit, ...batch.audit];
        return { decision, batch };
      },
      guard,
      going ? { owner, leaseMs } : undefined,
    );
    if (!decision) {
      log.warn("Task {taskId} of {runId}: lease lost, its end is not recorded", {
        taskId: ti.taskId,
        runId: ti.runId,
      });
      return undefined;
    }
    for (const tr of decision.transitions) for (const e of tr.events) logEvent(e);
    for (const e of decision.run?.events ?? []) logEvent(e);
    const [taken] = decision.start;
    if (!taken) {
      // The next task, claimed with this one's end (its start is recorded as it runs, or with
      // its end).
      const next = claimed.get(decision);
      return next ? { ...next, handoff: false } : undefined;
    }
    const next = decision.transitions.findLast((tr) => tr.taskId === taken)!.next;
    return {
      run: current.run,
      tasks: [next],
      token: next.leaseToken!,
      handoff: true,
    };
  };

  /**
   * An enclave unit: run whole in this process (the local driver's loop, scoped to it), then
   * recorded at once with what it releases.
   */
  const runUnit = async (
    dag: ResolvedDag,
    current: Held,
    signal: AbortSignal,
  ): Promise<undefined> => {
    const runId = current.run.runId;
    const members = new Set(current.tasks.map((t) => t.taskId));
    const external = [...members].flatMap((m) => dag.tasks.get(m)?.after ?? []).filter((u) =>
      !members.has(u)
    );
    const view = await views.get(
      runId,
      (v) => external.some((u) => !isFinal(v.tasks.get(u)?.state ?? "scheduled")),
    );
    const stored = new Map<string, TaskState>(current.tasks.map((t) => [t.jobKey, t.state]));
    // The unit as the drive starts it: its members scheduled (the claim counted the first
    // member's try, which the drive's start counts again).
    const local = new Map<string, TaskView>(view.tasks);
    for (const t of current.tasks) {
      local.set(t.taskId, {
        ...t,
        state: "scheduled",
        tryNumber: t.state === "running" ? t.tryNumber - 1 : t.tryNumber,
      });
    }
    const workspace = new Workspace(options.home, runId, undefined, chunks);
    const outputs = new Map<string, unknown>();
    for (const up of external) {
      const u = view.tasks.get(up);
      if (u?.state !== "success") continue;
      outputs.set(
        up,
        u.outputKind === "dataset" && isDatasetRef(u.output) ? workspace.open(u.output) : u.output,
      );
    }
    const base = decideInput(dag, view.run, local, owner, leaseMs);
    const input = { ...base, mode: "local" as const, scope: members };
    const buffered: Decision[] = [];
    const lease = new AbortController();
    signal.addEventListener("abort", () => {
      if (signal.reason instanceof LeaseLostError) lease.abort(signal.reason);
    }, { once: true });
    let driven;
    try {
      driven = await drive({
        ...input,
        view: local,
        outputs,
        first: decide(input),
        runContext: {
          dagId: dag.id,
          runId,
          interval: { start: current.run.intervalStart, end: current.run.intervalEnd },
          params: current.run.params,
          workspace,
        },
        write: (ds) => {
          buffered.push(...ds);
          return Promise.resolve();
        },
        emit: () => {},
        signal,
        lease: lease.signal,
        fusion: Deno.env.get("CARREL_FUSION") !== "off",
      });
    } catch (error) {
      if (error instanceof LeaseLostError) return undefined;
      throw error;
    } finally {
      await workspace.removeEnclave();
    }
    const rep = current.tasks.find((t) => t.state === "running")!;
    const guard = { jobKey: rep.jobKey, token: current.token };
    const complete = [...members].every((m) => isFinal(driven.view.get(m)!.state));
    const decision = await settle(store, views, runId, dag, (v) => {
      if (!complete) {
        // Stopped halfway: the unit goes back whole, as if its worker were lost.
        for (const t of current.tasks) v.tasks.set(t.taskId, t);
        const d = decide({
          ...decideInput(dag, v.run, v.tasks, owner, leaseMs),
          lost: new Map([[rep.taskId, "worker stopped" as const]]),
        });
        return { decision: d, batch: toBatch(runId, [d], { task: guard, version: v.version }) };
      }
      const after = new Map<string, TaskView>(v.tasks);
      for (const m of members) after.set(m, driven.view.get(m)!);
      const d = decide({
        ...decideInput(dag, v.run, after, owner, leaseMs),
        changed: members,
      });
      return {
        decision: d,
        before: buffered,
        batch: toBatch(runId, [...buffered, d], { task: guard, version: v.version }, stored),
      };
    }, guard);
    if (!decision) {
      log.warn("Unit {unit} of {runId}: lease lost, its end is not recorded", {
        unit: rep.taskId,
        runId,
      });
      return undefined;
    }
    if (complete) {
      for (const d of buffered) {
        for (const tr of d.transitions) for (const e of tr.events) logEvent(e);
      }
    }
    for (const tr of decision.transitions) for (const e of tr.events) logEvent(e);
    return undefined;
  };

  try {
    while (!options.signal?.aborted) {
      if (Date.now() - lastReap > Math.min(leaseMs, 5_000)) {
        lastReap = Date.now();
        await reapLost(store, (id) => dags.get(id), views).catch((error) =>
          log.warn("Cannot reap lost task instances: {error}", { error: errorMessage(error) })
        );
      }
      let claimedAny = false;
      while (active.size < concurrency && !options.signal?.aborted) {
        const claim: Claim | "contended" | undefined = await store.claimTask(owner, leaseMs);
        if (claim === "contended") continue;
        if (!claim) break;
        claimedAny = true;
        const job = work({ ...claim, handoff: false }).finally(() => {
          active.delete(job);
          wake();
        });
        active.add(job);
      }
      if (!claimedAny && active.size === 0 && options.exitWhenIdle) break;
      await new Promise<void>((resolve) => {
        // A stop that came while claiming ends the loop now: its abort event has been fired.
        if (woken || options.signal?.aborted) {
          woken = false;
          return resolve();
        }
        const timer = setTimeout(done, pollMs);
        function done() {
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", done);
          wake = asleep;
          resolve();
        }
        wake = done;
        options.signal?.addEventListener("abort", done, { once: true });
      });
    }
    await Promise.all(active);
  } finally {
    clearInterval(heartbeat);
    await unlisten?.().catch(() => {});
    await alerts.settled();
    log.info("Worker {owner} stopped after {executed} claims", { owner, executed });
  }
  return executed;
}
