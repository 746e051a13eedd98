/**
 * Distributed execution with PostgreSQL as the coordinator (the PGlite store works the same way
 * in one process). A run's task instances become `queued` when their trigger rules allow;
 * workers claim them with `SELECT ... FOR UPDATE SKIP LOCKED` in short transactions, hold a
 * lease renewed by heartbeats, and record results; a lost worker's lease expires and its task is
 * retried by the retry policy.
 *
 * Enclave data never passes through the database: the enclave tasks of a run that are connected
 * to each other form one claim unit, claimed and executed whole by one worker, so enclave
 * outputs stay in that process's memory (or its encrypted scratch).
 *
 * @module
 */
import type { AuditInput } from "./audit.ts";
import type { DataInterval, ResolvedDag } from "./dag.ts";
import { isDatasetRef, Workspace } from "./dataset.ts";
import { errorMessage } from "./errors.ts";
import { executeRun, jobKeysFor, paramsHash, retryDelay, storedOutput } from "./executor.ts";
import { runIdFor } from "./job_key.ts";
import { ownerIsDead } from "./owner.ts";
import { assertNoSecretsInParams } from "./secrets.ts";
import type { SqlStateStore } from "./state/sql_store.ts";
import { toRun, toTask } from "./state/sql_store.ts";
import type { RunRecord, RunType, TaskInstanceRecord, TaskState } from "./state/store.ts";
import { decideTrigger, isFinal, runStateFromLeaves } from "./trigger_rules.ts";

/** The channel workers listen on. */
export const QUEUE_CHANNEL = "carrel_queue";

/**
 * The claim units of a DAG: each enclave task maps to the id of its connected enclave component
 * (the first of its tasks in topological order); shared tasks are claimed alone.
 */
export function claimUnits(dag: ResolvedDag): Map<string, string | null> {
  const units = new Map<string, string | null>();
  const parent = new Map<string, string>();
  const find = (x: string): string => {
    let r = x;
    while (parent.get(r) !== r) r = parent.get(r)!;
    return r;
  };
  for (const id of dag.order) if (dag.tasks.get(id)!.zone === "enclave") parent.set(id, id);
  for (const id of dag.order) {
    const t = dag.tasks.get(id)!;
    if (t.zone !== "enclave") continue;
    for (const up of t.after) {
      if (dag.tasks.get(up)!.zone !== "enclave") continue;
      const a = find(up), b = find(id);
      if (a !== b) parent.set(b, a);
    }
  }
  const firstOf = new Map<string, string>();
  for (const id of dag.order) {
    if (!parent.has(id)) {
      units.set(id, null);
      continue;
    }
    const root = find(id);
    if (!firstOf.has(root)) firstOf.set(root, id);
    units.set(id, firstOf.get(root)!);
  }
  return units;
}

const audit = (
  run: { runId: string; dagId: string },
  e: Omit<AuditInput, "correlationId" | "dagId">,
): AuditInput => ({
  correlationId: run.runId,
  dagId: run.dagId,
  ...e,
});

/**
 * Creates (or resumes) a run to be executed by workers and queues its first tasks.
 *
 * @example
 * ```ts ignore
 * const run = await startRun(store, dag, interval, params, "triggered");
 * ```
 */
export async function startRun(
  store: SqlStateStore,
  dag: ResolvedDag,
  interval: DataInterval,
  params: Record<string, unknown>,
  runType: RunType,
): Promise<RunRecord> {
  assertNoSecretsInParams(dag.id, params);
  const runId = runIdFor(dag.id, interval.start);
  const { run, created } = await store.createRun(
    {
      runId,
      dagId: dag.id,
      logicalDate: interval.start,
      intervalStart: interval.start,
      intervalEnd: interval.end,
      params,
      paramsHash: paramsHash(params),
      runType,
      state: "queued",
      executor: "workers",
    },
    audit({ runId, dagId: dag.id }, {
      operation: "run:create",
      status: "queued",
      detail: { runType, executor: "workers" },
    }),
  );
  const keys = jobKeysFor(dag, interval, run.params);
  const units = claimUnits(dag);
  await store.ensureTaskInstances(dag.order.map((id) => ({
    jobKey: keys.get(id)!,
    runId,
    dagId: dag.id,
    taskId: id,
    mapIndex: -1,
    zone: dag.tasks.get(id)!.zone,
    pool: dag.tasks.get(id)!.pool ?? null,
    unit: units.get(id) ?? null,
    state: "scheduled" as const,
    maxTries: dag.tasks.get(id)!.retries + 1,
  })));
  await store.atomically(async (tx, write) => {
    const rows = (await tx.query<Record<string, unknown>>(
      "SELECT * FROM task_instances WHERE run_id = $1 FOR UPDATE",
      [runId],
    )).map(toTask);
    // Resume: what did not succeed runs again; an enclave unit runs whole, since its members'
    // outputs were never stored.
    const rerunUnits = new Set(
      rows.filter((r) => r.unit && r.state !== "success").map((r) => r.unit!),
    );
    for (const r of rows) {
      const again = r.unit
        ? rerunUnits.has(r.unit)
        : r.state !== "success" && r.state !== "scheduled";
      if (!again || r.state === "scheduled") continue;
      const t = dag.tasks.get(r.taskId);
      await tx.query(
        `UPDATE task_instances SET state = 'scheduled', owner = NULL, lease_until = NULL, error = NULL,
           next_attempt_at = NULL, queued_at = NULL, max_tries = try_number + $2, updated_at = now()
         WHERE job_key = $1`,
        [r.jobKey, (t?.retries ?? 0) + 1],
      );
      await write([
        audit(run, {
          taskId: r.taskId,
          operation: "task:reset",
          status: "scheduled",
          detail: { from: r.state },
        }),
      ]);
    }
    await tx.query(
      `UPDATE dag_runs SET state = 'running', executor = 'workers', owner = NULL, lease_until = NULL,
         started_at = coalesce(started_at, now()), ended_at = NULL, updated_at = now() WHERE run_id = $1`,
      [runId],
    );
    await write([
      audit(run, {
        operation: created ? "run:start" : "run:resume",
        status: "running",
        detail: { executor: "workers" },
      }),
    ]);
  });
  await advanceRun(store, dag, runId);
  return (await store.getRun(runId))!;
}

/**
 * Moves a run forward: queues the tasks whose trigger rules allow them, marks skipped and
 * upstream_failed ones, and ends the run when every task is final. Serialised per run by a lock
 * on the run's row.
 */
export async function advanceRun(
  store: SqlStateStore,
  dag: ResolvedDag,
  runId: string,
): Promise<{ queued: number; state: string }> {
  return await store.atomically(async (tx, write) => {
    const [runRow] = await tx.query<Record<string, unknown>>(
      "SELECT * FROM dag_runs WHERE run_id = $1 FOR UPDATE",
      [runId],
    );
    if (!runRow) return { queued: 0, state: "missing" };
    const run = toRun(runRow);
    if (run.state === "success" || run.state === "failed") return { queued: 0, state: run.state };
    const rows =
      (await tx.query<Record<string, unknown>>("SELECT * FROM task_instances WHERE run_id = $1", [
        runId,
      ])).map(toTask);
    const byTask = new Map(rows.map((r) => [r.taskId, r]));
    const state = (id: string): TaskState => byTask.get(id)?.state ?? "scheduled";
    // Decisions are made in memory and written at the end: one UPDATE per target state and one
    // audit call, however many tasks a finished upstream releases.
    const changes = new Map<TaskState, string[]>();
    const entries: AuditInput[] = [];
    const set = (r: TaskInstanceRecord, to: TaskState) => {
      r.state = to;
      changes.set(to, [...(changes.get(to) ?? []), r.jobKey]);
      entries.push(audit(run, { taskId: r.taskId, operation: `task:${to}`, status: to }));
    };
    let queued = 0;
    let changed = true;
    while (changed) {
      changed = false;
      const units = new Map<string, TaskInstanceRecord[]>();
      for (const id of dag.order) {
        const r = byTask.get(id);
        if (!r || r.state !== "scheduled") continue;
        if (r.unit) {
          units.set(r.unit, [...(units.get(r.unit) ?? []), r]);
          continue;
        }
        const t = dag.tasks.get(id)!;
        const verdict = decideTrigger(t.triggerRule, t.after.map(state));
        if (verdict === "wait") continue;
        set(r, verdict === "run" ? "queued" : verdict === "skip" ? "skipped" : "upstream_failed");
        if (verdict === "run") queued++;
        changed = true;
      }
      for (const [unit, members] of units) {
        const all = rows.filter((r) => r.unit === unit);
        if (members.length !== all.length) continue; // part of the unit is still out
        const inside = new Set(all.map((r) => r.taskId));
        const external = all.flatMap((r) => dag.tasks.get(r.taskId)?.after ?? []).filter((u) =>
          !inside.has(u)
        );
        if (!external.every((u) => isFinal(state(u)))) continue;
        for (const r of all) set(r, "queued");
        queued += all.length;
        changed = true;
      }
    }
    for (const [to, keys] of changes) {
      await tx.query(
        `UPDATE task_instances SET state = $2,
           queued_at = CASE WHEN $2 = 'queued' THEN now() ELSE queued_at END,
           ended_at = CASE WHEN $2 IN ('skipped', 'upstream_failed') THEN now() ELSE ended_at END,
           updated_at = now()
         WHERE job_key = ANY($1::text[])`,
        [keys, to],
      );
    }
    await write(entries);
    if (queued > 0 && store.kind === "postgres") {
      await tx.query("SELECT pg_notify($1, $2)", [QUEUE_CHANNEL, runId]);
    }
    const known = dag.order.filter((id) => byTask.has(id));
    if (known.every((id) => isFinal(state(id)))) {
      const leaves = known.filter((id) => dag.downstream.get(id)!.length === 0);
      const final = runStateFromLeaves(leaves.map(state));
      await tx.query(
        "UPDATE dag_runs SET state = $2, ended_at = now(), updated_at = now() WHERE run_id = $1",
        [runId, final],
      );
      await write([
        audit(run, { operation: "run:end", status: final, detail: { executor: "workers" } }),
      ]);
      return { queued, state: final };
    }
    return { queued, state: run.state };
  });
}

/** Task instances one claim took: a shared task alone, or a whole enclave unit. */
export interface Claim {
  run: RunRecord;
  tasks: TaskInstanceRecord[];
}

/**
 * Claims the next ready task (or enclave unit), honouring pools. Returns `undefined` when
 * nothing is ready.
 */
export async function claimNext(
  store: SqlStateStore,
  owner: string,
  leaseMs: number,
): Promise<Claim | undefined> {
  return await store.atomically(async (tx, write) => {
    const candidates = (await tx.query<Record<string, unknown>>(
      // Tasks of a full pool are left out here (and checked again under the pool's lock below),
      // so that they cannot fill the candidates and hold up everything queued after them.
      `SELECT * FROM task_instances ti
       WHERE (state = 'queued' OR (state = 'up_for_retry' AND next_attempt_at <= now()))
         AND NOT EXISTS (
           SELECT 1 FROM pools p WHERE p.name = ti.pool AND p.slots <= (
             SELECT count(DISTINCT coalesce(r.unit || '@' || r.run_id, r.job_key))
             FROM task_instances r WHERE r.pool = p.name AND r.state = 'running'))
       ORDER BY coalesce(next_attempt_at, queued_at, updated_at), job_key
       LIMIT 16 FOR UPDATE OF ti SKIP LOCKED`,
    )).map(toTask);
    const tried = new Set<string>();
    for (const c of candidates) {
      const unitKey = c.unit ? `${c.runId}/${c.unit}` : c.jobKey;
      if (tried.has(unitKey)) continue;
      tried.add(unitKey);
      let members = [c];
      if (c.unit) {
        members = (await tx.query<Record<string, unknown>>(
          `SELECT * FROM task_instances WHERE run_id = $1 AND unit = $2
             AND (state = 'queued' OR state = 'up_for_retry')
           FOR UPDATE SKIP LOCKED`,
          [c.runId, c.unit],
        )).map(toTask);
        const [{ n }] = await tx.query<{ n: string }>(
          "SELECT count(*)::text AS n FROM task_instances WHERE run_id = $1 AND unit = $2 AND state IN ('queued', 'up_for_retry')",
          [c.runId, c.unit],
        ) as [{ n: string }];
        if (members.length !== Number(n)) continue; // another worker holds part of it
      }
      const pool = members.find((m) => m.pool)?.pool;
      if (pool) {
        const [limit] = await tx.query<{ slots: number }>(
          "SELECT slots FROM pools WHERE name = $1 FOR UPDATE",
          [pool],
        );
        if (limit) {
          const [{ running }] = await tx.query<{ running: string }>(
            `SELECT count(DISTINCT coalesce(unit || '@' || run_id, job_key))::text AS running
             FROM task_instances WHERE pool = $1 AND state = 'running'`,
            [pool],
          ) as [{ running: string }];
          if (Number(running) >= Number(limit.slots)) continue;
        }
      }
      const lease = new Date(Date.now() + leaseMs);
      const claimed = (await tx.query<Record<string, unknown>>(
        `UPDATE task_instances SET state = 'running', owner = $2, lease_until = $3, try_number = try_number + 1,
           started_at = now(), ended_at = NULL, error = NULL, next_attempt_at = NULL, updated_at = now()
         WHERE job_key = ANY($1::text[]) RETURNING *`,
        [members.map((m) => m.jobKey), owner, lease],
      )).map(toTask);
      const [runRow] = await tx.query<Record<string, unknown>>(
        "SELECT * FROM dag_runs WHERE run_id = $1",
        [c.runId],
      );
      const run = toRun(runRow!);
      await write(claimed.map((m) =>
        audit(run, {
          taskId: m.taskId,
          operation: "task:start",
          status: "running",
          detail: { attempt: m.tryNumber, owner: owner.split(":").slice(0, 2).join(":") },
        })
      ));
      return { run, tasks: claimed };
    }
    return undefined;
  });
}

/** Renews the leases of the task instances a worker holds. */
export async function renewLeases(
  store: SqlStateStore,
  owner: string,
  jobKeys: string[],
  leaseMs: number,
): Promise<void> {
  if (jobKeys.length === 0) return;
  await store.client.query(
    "UPDATE task_instances SET lease_until = $3 WHERE job_key = ANY($1::text[]) AND owner = $2 AND state = 'running'",
    [jobKeys, owner, new Date(Date.now() + leaseMs)],
  );
}

/**
 * Takes back running task instances whose worker is gone (lease expired, or a dead process on
 * this host): each is retried by its retry policy, or fails when no attempt is left. Returns the
 * affected run ids.
 */
export async function reapLost(
  store: SqlStateStore,
  dags: (dagId: string) => ResolvedDag | undefined,
): Promise<string[]> {
  const runs = await store.atomically(async (tx, write) => {
    const running = (await tx.query<Record<string, unknown>>(
      "SELECT * FROM task_instances WHERE state = 'running' AND owner IS NOT NULL FOR UPDATE SKIP LOCKED",
    )).map(toTask);
    const lost = running.filter((r) =>
      (r.leaseUntil !== null && r.leaseUntil.getTime() < Date.now()) || ownerIsDead(r.owner)
    );
    const affected = new Set<string>();
    // An enclave unit is retried or failed whole: its members' outputs never left the lost
    // process, so a part of it could not run without the rest.
    const unitRetry = new Map<string, boolean>();
    for (const r of lost) {
      if (!r.unit) continue;
      const key = `${r.runId}/${r.unit}`;
      unitRetry.set(key, (unitRetry.get(key) ?? true) && r.tryNumber < r.maxTries);
    }
    for (const r of lost) {
      const t = dags(r.dagId)?.tasks.get(r.taskId);
      const retry = r.unit ? unitRetry.get(`${r.runId}/${r.unit}`)! : r.tryNumber < r.maxTries;
      const delay = t ? retryDelay(t, r.tryNumber - (r.maxTries - t.retries - 1)) : 0;
      await tx.query(
        `UPDATE task_instances SET state = $2, owner = NULL, lease_until = NULL, ended_at = now(),
           next_attempt_at = $3, error = $4, updated_at = now() WHERE job_key = $1`,
        [
          r.jobKey,
          retry ? "up_for_retry" : "failed",
          retry ? new Date(Date.now() + delay) : null,
          "Worker lost: its lease expired",
        ],
      );
      await write([{
        correlationId: r.runId,
        dagId: r.dagId,
        taskId: r.taskId,
        operation: "task:lease_expired",
        status: retry ? "up_for_retry" : "failed",
        detail: { attempt: r.tryNumber },
      }]);
      affected.add(r.runId);
    }
    if (lost.length > 0 && store.kind === "postgres") {
      await tx.query("SELECT pg_notify($1, $2)", [QUEUE_CHANNEL, "retry"]);
    }
    return [...affected];
  });
  for (const runId of runs) {
    const dagId = runId.slice(0, runId.indexOf("@"));
    const dag = dags(dagId);
    if (dag) await advanceRun(store, dag, runId);
  }
  return runs;
}

/**
 * Executes a claim in this process and records the results. Shared tasks make one attempt (the
 * retry policy lives in the database); an enclave unit runs whole with in-process retries.
 */
export async function executeClaim(
  store: SqlStateStore,
  dag: ResolvedDag,
  claim: Claim,
  options: { owner: string; home: string; signal?: AbortSignal; maxOutputBytes?: number },
): Promise<void> {
  const { run } = claim;
  const ids = new Set(claim.tasks.map((t) => t.taskId));
  const all = await store.listTaskInstances(run.runId);
  const byTask = new Map(all.map((r) => [r.taskId, r]));
  const workspace = new Workspace(options.home, run.runId);
  const seed = new Map<string, unknown>();
  const seedStates = new Map<string, TaskState>();
  for (const id of dag.order) {
    if (ids.has(id)) continue;
    const r = byTask.get(id);
    if (!r) continue;
    if (r.state === "success") {
      seed.set(
        id,
        r.outputKind === "dataset" && isDatasetRef(r.output) ? workspace.open(r.output) : r.output,
      );
    } else if (isFinal(r.state)) seedStates.set(id, r.state);
    else seedStates.set(id, "skipped"); // not needed by this claim: left out
  }
  const single: ResolvedDag = { ...dag, tasks: new Map(dag.tasks) };
  const unit = claim.tasks.some((t) => t.unit);
  if (!unit) {
    for (const ti of claim.tasks) {
      const t = dag.tasks.get(ti.taskId)!;
      // One attempt here; ctx.attempt counts the attempts recorded in the database.
      const attempt = Math.max(1, ti.tryNumber - (ti.maxTries - t.retries - 1));
      single.tasks.set(ti.taskId, {
        ...t,
        retries: 0,
        run: (ctx) => t.run(Object.assign(ctx, { attempt })),
      });
    }
  }
  const counts: AuditInput[] = [];
  let result;
  try {
    result = await executeRun({
      dag: single,
      interval: { start: run.intervalStart, end: run.intervalEnd },
      params: run.params,
      home: options.home,
      seed,
      seedStates,
      only: ids,
      ...(options.signal ? { signal: options.signal } : {}),
      onAudit: (entries) =>
        counts.push(
          ...entries.filter((e) =>
            !e.operation.startsWith("task:") && !e.operation.startsWith("run:")
          ),
        ),
    });
  } catch (error) {
    result = undefined;
    counts.push({
      correlationId: run.runId,
      dagId: run.dagId,
      operation: "worker:error",
      status: "failed",
      detail: { reason: errorMessage(error).slice(0, 200) },
    });
  }
  for (const ti of claim.tasks) {
    const t = dag.tasks.get(ti.taskId)!;
    const summary = result?.tasks.find((s) => s.taskId === ti.taskId);
    let state: TaskState = summary?.state ?? "failed";
    let error = summary?.error ?? (result ? null : "Worker error while executing the claim");
    let outputKind: "json" | "dataset" | "enclave" | null = null;
    let output: unknown = null;
    if (state === "success") {
      const stored = storedOutput(
        t,
        result!.outputs.get(ti.taskId),
        options.maxOutputBytes ?? 1024 * 1024,
      );
      if (stored.ok) {
        outputKind = stored.kind;
        output = stored.value;
      } else {
        state = "failed";
        error = stored.error;
      }
    }
    let nextAttemptAt: Date | null = null;
    if (
      (state === "failed") && !ti.unit && ti.tryNumber < ti.maxTries && !options.signal?.aborted
    ) {
      state = "up_for_retry";
      nextAttemptAt = new Date(
        Date.now() + retryDelay(t, ti.tryNumber - (ti.maxTries - t.retries - 1)),
      );
    }
    if (state === "scheduled" || state === "running" || state === "queued") state = "failed";
    const attempts = Math.max(0, (summary?.attempts ?? 1) - 1);
    await store.updateTaskInstance(ti.jobKey, {
      state,
      tryNumber: ti.tryNumber + attempts,
      owner: null,
      leaseUntil: null,
      endedAt: new Date(),
      nextAttemptAt,
      outputKind,
      output,
      error,
    }, {
      expect: { owner: options.owner, states: ["running"] },
      audit: [
        ...counts.filter((c) => c.taskId === ti.taskId),
        audit(run, {
          taskId: ti.taskId,
          operation: `task:${state}`,
          status: state,
          detail: { attempt: ti.tryNumber + attempts },
        }),
      ],
    });
  }
  const leftover = counts.filter((c) => !c.taskId || !ids.has(c.taskId));
  if (leftover.length) await store.appendAudit(leftover);
  await advanceRun(store, dag, run.runId);
}
