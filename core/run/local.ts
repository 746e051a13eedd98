/**
 * The local driver: runs a DAG run in this process. It opens (creates or resumes) the run in the
 * state store, then loops: it asks the decider (`decide.ts`) what happens next, records the
 * decided transitions in one statement (fenced by this process's lease on the run), emits their
 * events, and runs the started tasks with the attempt runner (`attempt.ts`), at most
 * `maxActiveTasks` at once. It decides nothing itself. Without a store it runs in memory and
 * persists nothing (`dags test`).
 *
 * {@link drive} is the loop itself; a worker uses it to run an enclave unit.
 *
 * @module
 */
import { AlertDispatcher } from "../alerts/dispatch.ts";
import type { AuditInput } from "../audit.ts";
import type { DataInterval, ResolvedDag } from "../dag.ts";
import { Dataset, isDatasetRef, sharedDatasetsIn, Workspace } from "../dataset.ts";
import { sandboxScope } from "../sandbox/pool.ts";
import { ownerId, ownerIsDead } from "../owner.ts";
import { assertNoSecretsInParams } from "../privacy/secrets.ts";
import { canonicalJson } from "../job_key.ts";
import type { NewTaskInstance, RunType, StateStore, TaskInstanceRecord } from "../state/store.ts";
import {
  type AttemptOutcome,
  CancelledError,
  LeaseLostError,
  runAttempt,
  type RunContext,
  taskContext,
} from "./attempt.ts";
import {
  attemptOf,
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
import { type ExecutorEvent, logEvent, type RunResult } from "./events.ts";
import { expandedDag, inputsFor, inputTagsFor, mappedInstances, mappedTasks } from "./mapping.ts";
import { fusedChain, type HeldOutcome, runFusedPass } from "./fuse.ts";
import { instanceRecord, planRun, runCreateAudit } from "./plan.ts";

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
  /** How long the run's lease lasts without a heartbeat. Default 30s. */
  leaseMs?: number;
  /** The largest JSON output stored in the state store. Default 1 MiB. */
  maxOutputBytes?: number;
  /** The key version in use (for the audit trail). */
  keyVersion?: string;
  /**
   * What resuming does with failed tasks: `retry_failed` (default; a person asked) runs them
   * again with a fresh retry budget; `continue` (the scheduler taking over an interrupted run)
   * leaves them failed. Either way, a lost attempt counts and a scheduled retry keeps its time.
   */
  resume?: "retry_failed" | "continue";
  /** Without a store: receives the audit entries a store would have recorded. */
  onAudit?: (entries: AuditInput[]) => void;
  /**
   * Fuse consecutive streaming tasks into one pass (`core/run/fuse.ts`). Default: on, unless
   * `CARREL_FUSION=off`.
   */
  fusion?: boolean;
  /** Where shared datasets go (with a store): see `sharedDatasetsIn`. Default `CARREL_DATASETS`. */
  datasets?: "files" | "database";
}

const DEFAULT_MAX_OUTPUT = 1024 * 1024;
const DEFAULT_LEASE = 30_000;
/** Decisions the local driver may run ahead of the store (group commit). */
const PIPELINE = 64;

/** Thrown when the run is already being executed by a live process. */
export class RunBusyError extends Error {
  override name = "RunBusyError";
}

/**
 * Executes (or resumes) the run of `dag` for `interval.start`.
 *
 * @example
 * ```ts ignore
 * import { executeRun } from "./local.ts";
 * const result = await executeRun({ dag, interval, params: {}, store, home: ".carrel" });
 * console.log(result.state);
 * ```
 */
export async function executeRun(options: ExecuteOptions): Promise<RunResult> {
  const { dag, interval, params, store } = options;
  // Sandbox Workers are pooled for the run, and terminated when it ends.
  using _sandboxes = sandboxScope();
  if (store) assertNoSecretsInParams(dag.id, params);
  const since = new Date();
  const owner = ownerId();
  const token = crypto.randomUUID();
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE;
  // Callbacks and SLA misses of persisted runs (an in-memory test run pages nobody).
  const alerts = store ? new AlertDispatcher({ store }) : undefined;
  const emit = (e: ExecutorEvent) => {
    options.onEvent?.(e);
    logEvent(e);
    alerts?.observe(e, dag, alertRun, opened.view);
  };
  const plan = planRun(dag, interval, params, {
    runType: options.runType ?? "manual",
    executor: "local",
  });
  const { runId } = plan;
  const alertRun = { runId, dagId: dag.id, interval, runType: plan.run.runType };
  const inStore = store !== undefined &&
    (options.datasets ?? sharedDatasetsIn()) === "database";
  const workspace = new Workspace(options.home, runId, undefined, inStore ? store : undefined);
  const runContext: RunContext = { dagId: dag.id, runId, interval, params, workspace };
  const base = {
    dag,
    owner,
    leaseMs,
    persist: store !== undefined,
    maxOutputBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT,
    since,
    mode: "local" as const,
  };

  const lease = new AbortController();
  let version = 0;
  let runToken: string | null = token;
  let opened: Opened;
  if (store) {
    opened = await openLocal(store, plan, options, owner, token);
    version = opened.version;
    runToken = opened.runToken;
  } else {
    opened = {
      run: {
        runId,
        dagId: dag.id,
        logicalDate: interval.start,
        state: "queued",
        startedAt: null,
        keyVersion: options.keyVersion ?? null,
      },
      view: new RunView(plan.tasks.map((t) => [t.taskId, instanceRecord(t)])),
      created: true,
      lost: new Map(),
      version: 0,
      runToken: null,
    };
  }
  const outputs = await restoreOutputs(opened.view, workspace);
  const run = { ...opened.run, keyVersion: options.keyVersion ?? opened.run.keyVersion };

  /** When this process last saw its lease confirmed (a write or a heartbeat accepted). */
  let confirmed = performance.now();
  /** Whether a write of this process was accepted (its claim of the run). */
  let claimed = false;
  const write = async (decisions: readonly Decision[]) => {
    if (!store) {
      for (const d of decisions) {
        options.onAudit?.([...d.transitions.flatMap((t) => t.audit), ...(d.run?.audit ?? [])]);
      }
      return;
    }
    const sent = performance.now();
    const result = await store.applyBatch(toBatch(runId, decisions, { version, runToken }));
    if (!result.applied) {
      // Refused before this process recorded anything: another one opened the run at the same
      // moment and claimed it first (nothing ran here; the claim is written before any task).
      if (!claimed) {
        throw new RunBusyError(
          `Cannot run "${runId}": another process is running it (it claimed the run at the same moment); wait for it or stop it`,
        );
      }
      throw new LeaseLostError(
        `Cannot continue run "${runId}": another process took it over (this one stopped writing)`,
      );
    }
    claimed = true;
    version = result.version;
    runToken = token;
    confirmed = sent;
  };

  const first = decide({
    ...base,
    run,
    tasks: opened.view,
    now: new Date(),
    open: {
      resume: options.resume ?? "retry_failed",
      created: opened.created,
      ...(opened.takeover ? { takeover: opened.takeover } : {}),
      available: new Set(outputs.keys()),
      token,
    },
    lost: opened.lost,
  });

  // Heartbeat: the run's lease; losing it stops everything.
  const heartbeat = store
    ? setInterval(() => {
      const sent = performance.now();
      store.renewRunLease(runId, token, leaseMs).then((held) => {
        if (held) confirmed = Math.max(confirmed, sent);
        else if (runToken === token) {
          lease.abort(
            new LeaseLostError(
              `Cannot continue run "${runId}": its lease was taken by another process`,
            ),
          );
        }
      }).catch(() => {});
    }, Math.max(100, Math.floor(leaseMs / 3)))
    : undefined;

  let announced = false;
  const announce = (view: ReadonlyMap<string, TaskView>) => {
    if (announced) return;
    announced = true;
    const decidedNow = new Set(
      first.transitions.filter((t) => isFinal(t.to) && !isFinal(t.from)).map((t) => t.taskId),
    );
    const shape = expandedDag(dag, view);
    const alreadyDone = shape.order.filter((id) => {
      const v = view.get(id);
      return v !== undefined && isFinal(v.state) && !decidedNow.has(id);
    }).length;
    const start: ExecutorEvent = {
      type: "run:start",
      runId,
      dagId: dag.id,
      logicalDate: interval.start,
      resumed: !opened.created,
      tasks: shape.order.length,
      alreadyDone,
    };
    emit(start);
    for (const id of shape.order) {
      if (view.get(id)?.state === "success") emit({ type: "task:done_before", runId, taskId: id });
    }
  };

  try {
    const result = await drive({
      ...base,
      run,
      view: opened.view,
      outputs,
      first,
      runContext,
      write,
      ...(store
        ? {
          insert: async (rows: readonly NewTaskInstance[]) => {
            // Outside a batch: the run's version moves on, and this process follows it.
            await store.ensureTaskInstances(rows);
            version = (await store.getRun(runId))!.version;
          },
        }
        : {}),
      emit,
      ...(options.signal ? { signal: options.signal } : {}),
      lease: lease.signal,
      beforeEvents: announce,
      // After a crash, every start is recorded before its task runs (see DriveOptions).
      pipeline: opened.takeover === undefined,
      fusion: options.fusion ?? Deno.env.get("CARREL_FUSION") !== "off",
      leaseFresh: () => performance.now() - confirmed < leaseMs / 2,
    });
    const state = result.decision.run?.final ?? "failed";
    const shape = expandedDag(dag, result.view);
    return {
      runId,
      dagId: dag.id,
      logicalDate: interval.start.toISOString(),
      state,
      tasks: shape.order.map((id) => {
        const v = result.view.get(id)!;
        const t = shape.tasks.get(id)!;
        return {
          taskId: id,
          state: v.state,
          attempts: v.tryNumber,
          jobKey: v.jobKey,
          zone: t.zone,
          outputZone: t.outputZone,
          startedAt: v.startedAt?.toISOString() ?? null,
          endedAt: v.endedAt?.toISOString() ?? null,
          durationMs: v.startedAt && v.endedAt && v.endedAt >= v.startedAt
            ? v.endedAt.getTime() - v.startedAt.getTime()
            : null,
          error: v.error,
          executed: result.executed.has(id),
        };
      }),
      outputs,
    };
  } finally {
    if (heartbeat !== undefined) clearInterval(heartbeat);
    await workspace.removeEnclave();
    await alerts?.settled();
  }
}

/** What opening a local run found. */
interface Opened {
  run: DecideInput["run"];
  view: Map<string, TaskView>;
  created: boolean;
  takeover?: LostReason;
  /** Running attempts of a previous owner: lost. */
  lost: Map<string, LostReason>;
  version: number;
  /** The run's lease token as found (the first batch must still find it). */
  runToken: string | null;
}

/** Creates or finds the run, and tells whether this process may take it. */
async function openLocal(
  store: StateStore,
  plan: ReturnType<typeof planRun>,
  options: ExecuteOptions,
  owner: string,
  _token: string,
): Promise<Opened> {
  const { run: newRun } = plan;
  const { created, snapshot } = await store.openRun(
    newRun,
    plan.tasks,
    runCreateAudit(options.dag, plan.runId, newRun.runType, {
      keyVersion: options.keyVersion ?? null,
    }),
  );
  const found = snapshot.run;
  if (!created && found.paramsHash !== newRun.paramsHash) {
    const differing = Object.keys({ ...found.params, ...newRun.params })
      .filter((k) =>
        canonicalJson(found.params[k] ?? null) !== canonicalJson(newRun.params[k] ?? null)
      );
    throw new RunBusyError(
      `Cannot run "${plan.runId}": it exists with different params (${
        differing.join(", ")
      }); clear it or use its params`,
    );
  }
  const now = Date.now();
  let takeover: LostReason | undefined;
  if (found.owner !== null && found.owner !== owner) {
    const expired = found.leaseUntil !== null && found.leaseUntil.getTime() < now;
    if (!expired && !ownerIsDead(found.owner)) {
      throw new RunBusyError(
        `Cannot run "${plan.runId}": another process is running it (owner ${found.owner}); wait for it or stop it`,
      );
    }
    takeover = expired ? "lease expired" : "owner process gone";
  }
  const view = new RunView(snapshot.tasks.map((t) => [t.taskId, t]));
  const lost = new Map<string, LostReason>();
  for (const t of snapshot.tasks) {
    if (t.leaseToken !== null && !isFinal(t.state)) {
      // Held by a worker: refused while its lease lives.
      const expired = t.leaseUntil === null || t.leaseUntil.getTime() < now;
      const dead = ownerIsDead(t.owner);
      if (!expired && !dead) {
        throw new RunBusyError(
          `Cannot run "${plan.runId}": workers are running it (task "${t.taskId}"); wait for them or stop them`,
        );
      }
      if (t.state === "running") {
        lost.set(t.taskId, expired ? "lease expired" : "owner process gone");
      }
    } else if (t.state === "running") {
      lost.set(
        t.taskId,
        takeover ?? (ownerIsDead(t.owner) ? "owner process gone" : "lease expired"),
      );
    }
  }
  return {
    run: {
      runId: found.runId,
      dagId: found.dagId,
      logicalDate: found.logicalDate,
      state: found.state,
      startedAt: found.startedAt,
      keyVersion: found.keyVersion,
    },
    view,
    created,
    ...(takeover ? { takeover } : {}),
    lost,
    version: found.version,
    runToken: found.leaseToken,
  };
}

/**
 * The outputs this process can read of tasks that succeeded (or were skipped) before: JSON from
 * the store, datasets whose files exist. Enclave outputs are never stored: they are recomputed.
 */
export async function restoreOutputs(
  view: ReadonlyMap<string, TaskInstanceRecord>,
  workspace: Workspace,
): Promise<Map<string, unknown>> {
  const outputs = new Map<string, unknown>();
  for (const [id, rec] of view) {
    if (rec.state === "skipped") {
      outputs.set(id, null);
      continue;
    }
    if (rec.state !== "success") continue;
    if (rec.outputKind === "json") outputs.set(id, rec.output);
    else if (rec.outputKind === null) outputs.set(id, null);
    else if (rec.outputKind === "dataset" && isDatasetRef(rec.output)) {
      if (rec.output.$dataset.stored === "database") {
        // In the store: readable wherever the store is used for datasets.
        if (workspace.chunks) outputs.set(id, workspace.open(rec.output));
        continue;
      }
      try {
        await Deno.stat(`${workspace.home}/${rec.output.$dataset.path}`);
        outputs.set(id, workspace.open(rec.output));
      } catch { /* gone: recomputed if needed */ }
    }
  }
  return outputs;
}

/** What {@link drive} needs. */
export interface DriveOptions extends
  Pick<
    DecideInput,
    "dag" | "run" | "owner" | "leaseMs" | "persist" | "maxOutputBytes" | "since" | "scope"
  > {
  /** The task instances as this process sees them; updated as decisions are recorded. */
  view: Map<string, TaskView>;
  /** Outputs known in this process, by task id; filled as tasks succeed. */
  outputs: Map<string, unknown>;
  /** The first decision (opening the run, or a unit's start), not yet recorded. */
  first: Decision;
  runContext: RunContext;
  /** Records decisions, in order, at once; throws (a `LeaseLostError`) when it may not. */
  write: (decisions: readonly Decision[]) => Promise<void>;
  /**
   * Creates the instances of a mapped task's items in the store (absent: a run in memory), once
   * every decision before is recorded.
   */
  insert?: (rows: readonly NewTaskInstance[]) => Promise<void>;
  /**
   * Group commit: later decisions are recorded (several per statement) while the tasks they
   * start already run. Off after a crash: then every start is recorded before its task runs, so
   * an attempt that crashes its process always counts.
   */
  pipeline?: boolean;
  /**
   * Whether this process's lease is certainly still valid (confirmed recently). When it is not,
   * decisions are recorded before anything they start runs, so that a process that lost its
   * lease (stopped past it, say) starts nothing more.
   */
  leaseFresh?: () => boolean;
  emit: (event: ExecutorEvent) => void;
  /** Cancels the run: attempts abort, nothing new starts. */
  signal?: AbortSignal;
  /** Aborts when this process loses its lease: it abandons its attempts and writes nothing. */
  lease: AbortSignal;
  /** Called once, after the first decision is recorded and before its events. */
  beforeEvents?: (view: ReadonlyMap<string, TaskView>) => void;
  /** Fuse consecutive streaming tasks into one pass (`core/run/fuse.ts`). Default: off. */
  fusion?: boolean;
}

/** What {@link drive} ends with. */
export interface Driven {
  view: Map<string, TaskView>;
  /** The last decision recorded (its `run` ends the run, unless scoped). */
  decision: Decision;
  executed: Set<string>;
}

/**
 * The loop of a run in this process: record a decision, emit its events, start its tasks, wait
 * for an attempt to end (or a retry to fall due, or cancellation), decide again. Ends when the
 * run ends (or, scoped, when every task in scope is final). Throws a `LeaseLostError` when a write
 * is refused or the lease is lost; its attempts are aborted then.
 */
export async function drive(options: DriveOptions): Promise<Driven> {
  const { view, outputs } = options;
  /** The DAG as its mapped tasks expanded so far (the DAG itself when none is mapped). */
  const shape = () => expandedDag(options.dag, view);
  const attempts = new Map<string, AbortController>();
  /** Outcomes of attempts that ended, not yet decided on. */
  const pending = new Map<string, AttemptOutcome>();
  const executed = new Set<string>();
  /** Outcomes a fused pass computed for tasks the decider has not started yet. */
  const held = new Map<string, HeldOutcome>();
  let wake: () => void = () => {};
  const poke = () => wake();
  const abortAll = (reason: unknown) => {
    for (const c of attempts.values()) c.abort(reason);
  };
  const onCancel = () => {
    abortAll(new CancelledError());
    wake();
  };
  const onLease = () => {
    abortAll(options.lease.reason);
    wake();
  };
  options.signal?.addEventListener("abort", onCancel);
  options.lease.addEventListener("abort", onLease);

  // ---- The writer: decisions are recorded in order, several per statement (group commit);
  // their events are emitted once they are recorded.
  const queue: Decision[] = [];
  let writing: Promise<void> | undefined;
  let failure: { error: unknown } | undefined;
  let announced = false;
  const writeQueued = async () => {
    while (queue.length > 0 && !failure) {
      const decisions = queue.splice(0);
      try {
        await options.write(decisions);
      } catch (error) {
        failure = { error };
        abortAll(error);
        wake();
        return;
      }
      if (!announced) {
        announced = true;
        options.beforeEvents?.(view);
      }
      for (const d of decisions) {
        for (const t of d.transitions) for (const e of t.events) options.emit(e);
        for (const e of d.run?.events ?? []) options.emit(e);
      }
    }
  };
  const kick = () => {
    writing ??= writeQueued().finally(() => writing = undefined);
    return writing;
  };
  /**
   * Writes once this burst of decisions is over (a macrotask): tasks that return at once batch
   * up to PIPELINE decisions per statement; a task that waits for anything lets them be written.
   */
  let soon: ReturnType<typeof setTimeout> | undefined;
  const later = () => {
    soon ??= setTimeout(() => {
      soon = undefined;
      void kick();
    }, 0);
  };
  /** Whether an unwritten decision ends one of `id`'s upstream tasks. */
  const upstreamEndQueued = (id: string) => {
    const ups = shape().tasks.get(id)!.after;
    return ups.length > 0 &&
      queue.some((d) =>
        d.transitions.some((t) => isFinal(t.to) && !isFinal(t.from) && ups.includes(t.taskId))
      );
  };
  /** Throws what refused a write, if one was. */
  const check = () => {
    if (failure) throw failure.error;
  };
  /** Waits until every queued decision is recorded; throws what refused one. */
  const flush = async () => {
    while (queue.length > 0 || writing) await kick();
    check();
  };

  /** Encrypted datasets to delete once read (see releaseConsumed): only those are looked at. */
  const released: Releases = { held: new Set(), done: new Set() };
  for (const [id, out] of outputs) if (isEncrypted(out)) released.held.add(id);
  let decision: Decision = options.first;
  /** The outcomes the current decision was made on. */
  let decided = new Map<string, AttemptOutcome>();
  // The first decision (the run's claim) is recorded before anything runs.
  let strict = true;
  try {
    while (true) {
      if (options.lease.aborted) throw options.lease.reason;
      for (const t of decision.transitions) {
        view.set(t.taskId, t.next);
        const outcome = decided.get(t.taskId);
        if (t.to === "success" && outcome?.kind === "success") {
          outputs.set(t.taskId, outcome.value);
          if (isEncrypted(outcome.value) && !released.done.has(t.taskId)) {
            released.held.add(t.taskId);
          }
        } else if (t.to === "skipped") outputs.set(t.taskId, null);
      }
      if (decision.transitions.length > 0 || decision.run) queue.push(decision);
      if (decision.run?.final) break;
      // What starts now is recorded first (strict), or while it runs: at most PIPELINE
      // decisions behind the store.
      // A task starts only once its upstreams' ends are recorded: a crash then never loses a
      // task whose output another already used (it is not run again on resume).
      const fresh = options.leaseFresh?.() ?? true;
      if (
        strict || !options.pipeline || !fresh || queue.length >= PIPELINE ||
        decision.start.some((id) => upstreamEndQueued(id))
      ) await flush();
      else later();
      strict = false;
      check();
      await releaseConsumed(shape(), view, outputs, options.runContext.workspace, released);
      if (options.scope && [...options.scope].every((id) => isFinal(view.get(id)!.state))) break;
      for (const id of decision.start) launch(id);
      if (attempts.size === 0 && pending.size === 0 && !decision.wakeAt && options.scope) break;
      await waitForWork(decision.wakeAt);
      check();
      if (options.lease.aborted) throw options.lease.reason;
      decided = new Map(pending);
      pending.clear();
      for (const [id, outcome] of decided) {
        // A mapped task's expansion: its instances exist before its end is decided on.
        const expansion = decideExpansion(shape(), view, id, outcome);
        if (expansion.outcome !== outcome) decided.set(id, expansion.outcome);
        if (expansion.create === 0) continue;
        const rows = mappedInstances(options.dag, id, expansion.create, options.runContext)
          .filter((r) => !view.has(r.taskId));
        if (rows.length === 0) continue;
        await flush();
        await options.insert?.(rows);
        for (const r of rows) view.set(r.taskId, instanceRecord(r));
      }
      decision = decide({
        dag: options.dag,
        run: options.run,
        tasks: view,
        now: new Date(),
        mode: "local",
        owner: options.owner,
        leaseMs: options.leaseMs,
        persist: options.persist,
        maxOutputBytes: options.maxOutputBytes,
        since: options.since,
        outcomes: decided,
        waiting: decision.waiting,
        ...(options.scope ? { scope: options.scope } : {}),
        ...(options.signal?.aborted ? { cancelled: true } : {}),
      });
    }
    await flush();
    await releaseConsumed(shape(), view, outputs, options.runContext.workspace, released);
  } finally {
    options.signal?.removeEventListener("abort", onCancel);
    options.lease.removeEventListener("abort", onLease);
    if (options.lease.aborted) abortAll(options.lease.reason);
    if (soon !== undefined) clearTimeout(soon);
    await writing?.catch(() => {});
  }
  return { view, decision, executed };

  function launch(id: string) {
    const dag = shape();
    const t = dag.tasks.get(id)!;
    const v = view.get(id)!;
    const controller = new AbortController();
    attempts.set(id, controller);
    executed.add(id);
    if (options.signal?.aborted) controller.abort(new CancelledError());
    const inputs = inputsFor(
      t,
      (up) => view.get(up)?.state,
      (up) => outputs.get(up),
      (up) => outputs.has(up),
    );
    const inputTags = inputTagsFor(dag, t);
    const attempt = attemptOf(t, v);
    const kept = held.get(id);
    held.delete(id);
    // Mapped tasks do not fuse: their instances are not a single-upstream chain.
    const chain = options.fusion && mappedTasks(options.dag).length === 0
      ? fusedChain(dag, id, view, options.scope)
      : [id];
    let ended: Promise<AttemptOutcome>;
    if (kept?.attempt === attempt) {
      // Its work ran in a fused pass; it ends now, after the start the decider just recorded.
      ended = Promise.resolve({ ...kept.outcome, endedAt: new Date() });
    } else if (chain.length > 1) {
      ended = runFusedPass({
        dag,
        chain,
        view,
        attempt,
        inputs,
        inputTags,
        runContext: options.runContext,
        signal: controller.signal,
        held,
      });
    } else {
      ended = runAttempt({
        task: t,
        attempt,
        signal: controller.signal,
        context: taskContext(options.runContext, t, v.jobKey, inputs, inputTags),
      });
    }
    ended.then((outcome) => {
      attempts.delete(id);
      pending.set(id, outcome);
      poke();
    });
  }

  function waitForWork(wakeAt: Date | null): Promise<void> {
    if (pending.size > 0 || options.lease.aborted || failure) return Promise.resolve();
    if (options.signal?.aborted && attempts.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      wake = () => {
        if (timer !== undefined) clearTimeout(timer);
        wake = () => {};
        resolve();
      };
      if (wakeAt) timer = setTimeout(poke, Math.max(0, wakeAt.getTime() - Date.now()));
    });
  }
}

/** Encrypted datasets of a run: those still on disk (by task id), and those deleted. */
interface Releases {
  held: Set<string>;
  done: Set<string>;
}

function isEncrypted(out: unknown): out is Dataset {
  return out instanceof Dataset && out.ref.$dataset.encrypted === true;
}

/**
 * Encrypted intermediate datasets are deleted as soon as every task that reads them is final, so
 * a large run does not hold all its enclave data on disk until it ends.
 */
async function releaseConsumed(
  dag: ResolvedDag,
  view: ReadonlyMap<string, TaskView>,
  outputs: ReadonlyMap<string, unknown>,
  workspace: Workspace,
  released: Releases,
): Promise<void> {
  if (released.held.size === 0) return;
  for (const id of [...released.held]) {
    const out = outputs.get(id);
    if (!isEncrypted(out)) {
      released.held.delete(id);
      continue;
    }
    const readers = dag.downstream.get(id) ?? [];
    if (readers.length === 0 || !readers.every((d) => isFinal(view.get(d)?.state ?? "scheduled"))) {
      continue;
    }
    released.held.delete(id);
    released.done.add(id);
    await Deno.remove(`${workspace.home}/${out.ref.$dataset.path}`).catch(() => {});
  }
}
