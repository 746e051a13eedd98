/**
 * The decider alone: pure unit tests, no store, no clock, no randomness (decisions are data).
 * Trigger rules and skip propagation, attempt numbering, retry delays, output storage, resume
 * (lost attempts, kept retries, resets, recomputation), run ends, cancellation, worker queueing,
 * handoffs and enclave units, and the batch a decision is written as.
 */
import assert from "node:assert/strict";
import { type DagConfig, defineDag, resolveDag, type ResolvedDag, task } from "../../core/dag.ts";
import type { AttemptOutcome } from "../../core/run/attempt.ts";
import {
  attemptOf,
  decide,
  type DecideInput,
  decideTrigger,
  type Decision,
  retryDelay,
  storedOutput,
  type TaskView,
  toBatch,
} from "../../core/run/decide.ts";
import { instanceRecord, planRun } from "../../core/run/plan.ts";
import type { TaskState } from "../../core/state/store.ts";

const T0 = new Date("2026-03-01T00:00:00Z");
const at = (ms: number) => new Date(T0.getTime() + ms);
const interval = { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") };
const OWNER = "host:1:me";

function dagOf(tasks: DagConfig["tasks"], extra: Partial<DagConfig> = {}): ResolvedDag {
  return resolveDag(defineDag({ id: "d", tasks, ...extra }));
}

/** The task instances of a fresh run, with some states (and fields) set. */
function tasksOf(
  dag: ResolvedDag,
  set: Record<string, Partial<TaskView>> = {},
): Map<string, TaskView> {
  const plan = planRun(dag, interval, {}, { runType: "manual", executor: "local" });
  return new Map(plan.tasks.map((t) => [t.taskId, {
    ...instanceRecord(t),
    updatedAt: T0,
    ...set[t.taskId],
  }]));
}

function input(
  dag: ResolvedDag,
  tasks: Map<string, TaskView>,
  more: Partial<DecideInput> = {},
): DecideInput {
  return {
    dag,
    run: {
      runId: "d@2026-01-01T00:00:00Z",
      dagId: "d",
      logicalDate: interval.start,
      state: "running",
      startedAt: T0,
      keyVersion: null,
    },
    tasks,
    now: T0,
    mode: "local",
    owner: OWNER,
    leaseMs: 30_000,
    persist: true,
    maxOutputBytes: 1024,
    since: T0,
    random: () => 0.5,
    ...more,
  };
}

const ok = (value: unknown, ms = 10): AttemptOutcome => ({
  kind: "success",
  value,
  ...(Array.isArray(value) ? { records: value.length } : {}),
  startedAt: T0,
  endedAt: at(ms),
  counts: [],
});
const failed = (
  message: string,
  more: Partial<{ permanent: boolean; cancelled: boolean }> = {},
): AttemptOutcome => ({
  kind: "failed",
  message,
  permanent: more.permanent ?? false,
  cancelled: more.cancelled ?? false,
  startedAt: T0,
  endedAt: at(10),
  counts: [],
});

/** `task:from->to` for each transition. */
const moves = (d: Decision) => d.transitions.map((t) => `${t.taskId}:${t.from}->${t.to}`);
const ops = (d: Decision) => [
  ...d.transitions.flatMap((t) =>
    t.audit.map((a) => `${a.operation}${a.taskId ? `:${a.taskId}` : ""}`)
  ),
  ...(d.run?.audit.map((a) => a.operation) ?? []),
];

/** Applies a decision to the view, as a driver does once it is recorded. */
function apply(tasks: Map<string, TaskView>, d: Decision): Map<string, TaskView> {
  const next = new Map(tasks);
  for (const t of d.transitions) next.set(t.taskId, t.next);
  return next;
}

// ---------------------------------------------------------------------------------------------

Deno.test("decide: opening a fresh local run claims it and starts the roots, up to maxActiveTasks", () => {
  const dag = dagOf({
    a: task({ run: () => 1 }),
    b: task({ run: () => 1 }),
    c: task({ run: () => 1 }),
    d: task({ after: ["a"], run: () => 1 }),
  }, { maxActiveTasks: 2 });
  const d = decide(input(dag, tasksOf(dag), {
    run: { ...input(dag, tasksOf(dag)).run, state: "queued", startedAt: null },
    open: { resume: "retry_failed", created: true, token: "tok" },
  }));
  assert.deepEqual(d.start, ["a", "b"]);
  assert.deepEqual(moves(d), ["a:scheduled->running", "b:scheduled->running"]);
  assert.equal(d.run?.patch.state, "running");
  assert.equal(d.run?.patch.owner, OWNER);
  assert.equal(d.run?.patch.leaseToken, "tok");
  assert.equal(d.run?.leaseMs, 30_000);
  assert.deepEqual(ops(d), ["task:start:a", "task:start:b", "run:start"]);
  const a = d.transitions[0]!;
  assert.equal(a.patch?.tryNumber, 1);
  assert.deepEqual(a.events, [{
    type: "task:start",
    runId: "d@2026-01-01T00:00:00Z",
    taskId: "a",
    attempt: 1,
    maxAttempts: 1,
  }]);
});

Deno.test("decide: a success is recorded with its output and starts the next task in the same decision", () => {
  const dag = dagOf({ a: task({ run: () => 1 }), b: task({ after: ["a"], run: () => 1 }) });
  const tasks = tasksOf(dag, { a: { state: "running", tryNumber: 1 } });
  const d = decide(input(dag, tasks, { outcomes: new Map([["a", ok({ rows: 3 })]]) }));
  assert.deepEqual(moves(d), ["a:running->success", "b:scheduled->running"]);
  assert.deepEqual(d.start, ["b"]);
  const a = d.transitions[0]!;
  assert.equal(a.patch?.outputKind, "json");
  assert.deepEqual(a.patch?.output, { rows: 3 });
  assert.deepEqual(a.events[0], {
    type: "task:success",
    runId: "d@2026-01-01T00:00:00Z",
    taskId: "a",
    attempt: 1,
    durationMs: 10,
  });
  // One batch: both rows, their audit entries, one task finished.
  const batch = toBatch("r", [d], { version: 4, runToken: "tok" });
  assert.deepEqual(batch.tasks.map((w) => [w.from, w.patch.state]), [["running", "success"], [
    "scheduled",
    "running",
  ]]);
  assert.equal(batch.finished, 1);
  assert.deepEqual(batch.guard, { version: 4, runToken: "tok" });
});

Deno.test("decide: counts from ctx.count become audit entries and the event's counts", () => {
  const dag = dagOf({ gate: task({ run: () => 1 }) });
  const tasks = tasksOf(dag, { gate: { state: "running", tryNumber: 1 } });
  const outcome: AttemptOutcome = {
    ...ok([1, 2]),
    counts: [{ operation: "quarantined", records: 3 }, { operation: "quarantined", records: 2 }, {
      operation: "published",
      records: 2,
      keyVersion: "k1",
    }],
  };
  const d = decide(input(dag, tasks, { outcomes: new Map([["gate", outcome]]) }));
  const t = d.transitions[0]!;
  assert.deepEqual(t.audit.map((a) => [a.operation, a.status, a.recordCount]), [
    ["quarantined", "counted", 3],
    ["quarantined", "counted", 2],
    ["published", "counted", 2],
    ["task:success", "success", 2],
  ]);
  assert.equal(t.audit[2]!.keyVersion, "k1");
  assert.deepEqual(t.events[0], {
    type: "task:success",
    runId: "d@2026-01-01T00:00:00Z",
    taskId: "gate",
    attempt: 1,
    durationMs: 10,
    records: 2,
    counts: { quarantined: 5, published: 2 },
  });
});

Deno.test("decide: a failure with retries left waits its delay, then runs as the next attempt", () => {
  const dag = dagOf({
    flaky: task({ retries: 2, retryDelay: "10s", retryBackoff: "fixed", run: () => 1 }),
  });
  let tasks = tasksOf(dag, { flaky: { state: "running", tryNumber: 1 } });
  const d1 = decide(input(dag, tasks, { outcomes: new Map([["flaky", failed("boom")]]) }));
  assert.deepEqual(moves(d1), ["flaky:running->up_for_retry"]);
  assert.deepEqual(d1.transitions[0]!.patch?.nextAttemptAt, at(10 + 10_000));
  assert.equal(d1.transitions[0]!.patch?.error, "boom");
  assert.deepEqual(d1.wakeAt, at(10 + 10_000));
  assert.deepEqual(d1.start, []);
  assert.equal(d1.run, null, "the run goes on");
  tasks = apply(tasks, d1);
  // Not due yet: nothing happens.
  assert.deepEqual(moves(decide(input(dag, tasks, { now: at(5_000) }))), []);
  const d2 = decide(input(dag, tasks, { now: at(10_010) }));
  assert.deepEqual(moves(d2), ["flaky:up_for_retry->running"]);
  assert.equal(d2.transitions[0]!.patch?.tryNumber, 2);
  assert.deepEqual(d2.transitions[0]!.events[0], {
    type: "task:start",
    runId: "d@2026-01-01T00:00:00Z",
    taskId: "flaky",
    attempt: 2,
    maxAttempts: 3,
  });
});

Deno.test("decide: a permanent error fails at once; downstream tasks become upstream_failed; the run ends failed", () => {
  const dag = dagOf({
    a: task({ retries: 3, run: () => 1 }),
    b: task({ after: ["a"], run: () => 1 }),
    c: task({ after: ["b"], run: () => 1 }),
    always: task({ after: ["b"], triggerRule: "all_done", run: () => 1 }),
  });
  const tasks = tasksOf(dag, { a: { state: "running", tryNumber: 1 } });
  const d = decide(input(dag, tasks, {
    outcomes: new Map([["a", failed("bad config", { permanent: true })]]),
  }));
  assert.deepEqual(moves(d), [
    "a:running->failed",
    "b:scheduled->upstream_failed",
    "c:scheduled->upstream_failed",
    "always:scheduled->running",
  ]);
  assert.equal(d.run, null, "always is still running");
  const done = decide(input(dag, apply(tasks, d), { outcomes: new Map([["always", ok(1)]]) }));
  assert.equal(done.run?.final, "failed");
  assert.deepEqual(ops(done), ["task:success:always", "run:end"]);
});

Deno.test("decide: an output too large for the store fails the task, pointing to datasets", () => {
  const dag = dagOf({ big: task({ retries: 2, run: () => 1 }) });
  const tasks = tasksOf(dag, { big: { state: "running", tryNumber: 1 } });
  const d = decide(input(dag, tasks, { outcomes: new Map([["big", ok("x".repeat(2000))]]) }));
  assert.deepEqual(moves(d), ["big:running->failed"]);
  assert.match(
    d.transitions[0]!.patch?.error ?? "",
    /exceeds the 1\.0 KiB limit; return a dataset/,
  );
  // In memory (nothing persisted), any output goes.
  const mem = decide(input(dag, tasks, {
    persist: false,
    outcomes: new Map([["big", ok("x".repeat(2000))]]),
  }));
  assert.deepEqual(moves(mem), ["big:running->success"]);
});

Deno.test("decide: trigger rules, pure (Airflow's table)", () => {
  const cases: [Parameters<typeof decideTrigger>[0], TaskState[], string][] = [
    ["all_success", ["success", "skipped"], "skip"],
    ["all_success", ["success", "running"], "wait"],
    ["all_success", ["failed", "running"], "upstream_failed"],
    ["all_failed", ["success", "failed"], "skip"],
    ["all_failed", ["failed", "upstream_failed"], "run"],
    ["one_failed", ["success", "running"], "wait"],
    ["one_failed", ["success", "success"], "skip"],
    ["one_success", ["failed", "running"], "wait"],
    ["one_success", ["success", "running"], "run"],
    ["one_success", ["skipped", "skipped"], "skip"],
    ["none_failed", ["success", "skipped"], "run"],
    ["none_failed_min_one_success", ["skipped", "skipped"], "skip"],
    ["all_done", ["failed", "skipped"], "run"],
    ["always", ["running"], "run"],
    // Airflow's later rules: waiting, and what they do not wait for.
    ["all_skipped", ["skipped", "running"], "wait"],
    ["all_skipped", ["success", "running"], "skip"],
    ["all_skipped", ["upstream_failed", "skipped"], "skip"],
    ["all_skipped", ["skipped", "skipped"], "run"],
    ["one_done", ["failed", "running"], "run"],
    ["one_done", ["skipped", "running"], "wait"],
    // `one_done` counts a failure, not an upstream failure, as done by running (Airflow's table).
    ["one_done", ["upstream_failed", "skipped"], "skip"],
    ["none_skipped", ["skipped", "running"], "skip"],
    ["none_skipped", ["success", "running"], "wait"],
    ["none_skipped", ["upstream_failed", "success"], "run"],
    ["all_done_min_one_success", ["skipped", "running"], "skip"],
    ["all_done_min_one_success", ["success", "running"], "wait"],
    ["all_done_min_one_success", ["failed", "upstream_failed"], "upstream_failed"],
    ["all_done_min_one_success", ["failed", "success"], "run"],
    ["none_failed_or_skipped", ["skipped", "skipped"], "skip"],
    ["dummy", ["running"], "run"],
  ];
  for (const [rule, ups, want] of cases) {
    assert.equal(decideTrigger(rule, ups), want, `${rule} ${ups}`);
  }
});

Deno.test("decide: retry delays are exponential with jitter in [d/2, d], capped; or fixed", () => {
  const t = { retryDelayMs: 1000, retryBackoff: "exponential" as const, maxRetryDelayMs: 5000 };
  assert.equal(retryDelay(t, 1, () => 0), 500);
  assert.equal(retryDelay(t, 1, () => 1), 1000);
  assert.equal(retryDelay(t, 3, () => 1), 4000);
  assert.equal(retryDelay(t, 10, () => 1), 5000);
  assert.equal(retryDelay({ ...t, retryBackoff: "fixed" }, 7, () => 0), 1000);
  assert.deepEqual(storedOutput({ id: "x", outputZone: "enclave" }, [{ p: 1 }], 10), {
    ok: true,
    kind: "enclave",
    value: null,
  });
});

// ---------------------------------------------------------------------------------------------
// Resume

Deno.test("decide: a resumed run keeps a scheduled retry's try number, budget and time", () => {
  const dag = dagOf({
    flaky: task({ retries: 2, retryDelay: "60s", retryBackoff: "fixed", run: () => 1 }),
  });
  // Attempt 1 failed before the crash; the retry is due at T0 + 60s.
  const tasks = tasksOf(dag, {
    flaky: {
      state: "up_for_retry",
      tryNumber: 1,
      maxTries: 3,
      nextAttemptAt: at(60_000),
      error: "boom",
    },
  });
  const d = decide(input(dag, tasks, {
    open: { resume: "retry_failed", created: false, takeover: "owner process gone", token: "tok" },
  }));
  assert.deepEqual(moves(d), [], "nothing reset, nothing started early");
  assert.deepEqual(d.wakeAt, at(60_000));
  assert.deepEqual(ops(d), ["run:takeover"]);
  const due = decide(input(dag, tasks, { now: at(60_000) }));
  assert.deepEqual(moves(due), ["flaky:up_for_retry->running"]);
  assert.deepEqual(
    (due.transitions[0]!.events[0] as { attempt: number }).attempt,
    2,
    "attempt 2 of 3",
  );
});

Deno.test("decide: an attempt lost with its process counts; with no budget left it fails", () => {
  const dag = dagOf({
    work: task({ retries: 1, retryDelay: "1s", retryBackoff: "fixed", run: () => 1 }),
    last: task({ retries: 0, run: () => 1 }),
  });
  const tasks = tasksOf(dag, {
    work: { state: "running", tryNumber: 1, maxTries: 2, owner: "host:9:dead" },
    last: { state: "running", tryNumber: 1, maxTries: 1, owner: "host:9:dead" },
  });
  // Continued (the scheduler): what fails stays failed.
  const d = decide(input(dag, tasks, {
    open: { resume: "continue", created: false, takeover: "owner process gone", token: "tok" },
    lost: new Map([["work", "owner process gone"], ["last", "owner process gone"]]),
  }));
  assert.deepEqual(moves(d), ["work:running->up_for_retry", "last:running->failed"]);
  assert.deepEqual(ops(d), ["task:lost:work", "task:lost:last", "run:takeover"]);
  assert.match(
    d.transitions[1]!.patch?.error ?? "",
    /^Lost: the process running attempt 1 is gone/,
  );
  assert.deepEqual(d.transitions[0]!.patch?.nextAttemptAt, at(1000));
  // Asked by a person (`runs resume`): the failed one runs again with a fresh budget.
  const asked = decide(input(dag, tasks, {
    open: { resume: "retry_failed", created: false, takeover: "owner process gone", token: "tok" },
    lost: new Map([["work", "owner process gone"], ["last", "owner process gone"]]),
  }));
  assert.deepEqual(moves(asked), [
    "work:running->up_for_retry",
    "last:running->failed",
    "last:failed->scheduled",
    "last:scheduled->running",
  ]);
  const reset = asked.transitions[2]!;
  assert.equal(reset.patch?.maxTries, 2, "a fresh budget: try 2 is attempt 1 of 1");
  assert.equal(attemptOf(dag.tasks.get("last")!, { tryNumber: 2, maxTries: 2 }), 1);
});

Deno.test("decide: resuming resets failed tasks with a fresh budget, and recomputes enclave inputs", () => {
  const dag = resolveDag(defineDag({
    id: "d",
    tasks: {
      extract: task({ zone: "enclave", run: () => [] }),
      cp: { after: ["extract"], zone: "inherit", checkpoint: true, run: () => 1 },
      load: task({ after: ["cp"], retries: 2, run: () => 1 }),
    },
  } as DagConfig));
  const tasks = tasksOf(dag, {
    extract: { state: "success", tryNumber: 1, outputKind: "enclave" },
    cp: { state: "failed", tryNumber: 3, maxTries: 1, error: "refused" },
    load: { state: "upstream_failed" },
  });
  const d = decide(input(dag, tasks, {
    open: { resume: "retry_failed", created: false, available: new Set(), token: "tok" },
  }));
  assert.deepEqual(moves(d), [
    "cp:failed->scheduled",
    "load:upstream_failed->scheduled",
    "extract:scheduled->running",
  ]);
  assert.equal(d.transitions[0]!.patch?.maxTries, 4);
  assert.equal(d.transitions[1]!.patch?.maxTries, 3);
  // The recomputation keeps the recorded success: nothing stored changes, the audit says so.
  const recompute = d.transitions[2]!;
  assert.equal(recompute.patch, null);
  assert.deepEqual(recompute.audit.map((a) => a.operation), ["task:recompute"]);
  const done = decide(input(dag, apply(tasks, d), { outcomes: new Map([["extract", ok([1])]]) }));
  assert.equal(done.transitions[0]!.patch, null);
  assert.deepEqual(ops(done), ["task:recomputed:extract", "task:start:cp"]);
  // With its output readable (a dataset on disk), nothing is recomputed.
  const kept = decide(input(dag, tasks, {
    open: { resume: "retry_failed", created: false, available: new Set(["extract"]), token: "t" },
  }));
  assert.ok(!moves(kept).some((m) => m.startsWith("extract")));
});

Deno.test("decide: a run whose tasks all succeeded before ends at once on resume", () => {
  const dag = dagOf({ a: task({ run: () => 1 }) });
  const d = decide(input(dag, tasksOf(dag, { a: { state: "success", tryNumber: 1 } }), {
    run: { ...input(dag, new Map()).run, state: "success" },
    open: { resume: "retry_failed", created: false, token: "tok" },
  }));
  assert.deepEqual(moves(d), []);
  assert.equal(d.run?.final, "success");
  assert.deepEqual(ops(d), ["run:resume", "run:end"]);
  assert.equal(d.run?.patch.owner, null);
  assert.equal(d.run?.patch.leaseToken, null);
});

Deno.test("decide: cancellation fails what runs and waits, without retries, and ends the run failed", () => {
  const dag = dagOf({
    slow: task({ retries: 3, run: () => 1 }),
    waiting: task({ retries: 3, run: () => 1 }),
    later: task({ after: ["slow"], run: () => 1 }),
  });
  const tasks = tasksOf(dag, {
    slow: { state: "running", tryNumber: 1 },
    waiting: { state: "up_for_retry", tryNumber: 1, nextAttemptAt: at(60_000) },
  });
  const d = decide(input(dag, tasks, {
    cancelled: true,
    outcomes: new Map([[
      "slow",
      failed("Cancelled: the run was interrupted", { cancelled: true }),
    ]]),
  }));
  assert.deepEqual(moves(d), ["slow:running->failed", "waiting:up_for_retry->failed"]);
  assert.equal(d.run?.final, "failed");
  assert.deepEqual(ops(d), ["task:failed:slow", "task:cancelled:waiting", "run:cancelled"]);
  assert.deepEqual(d.start, []);
});

// ---------------------------------------------------------------------------------------------
// Workers

Deno.test("decide: workers queue what becomes ready, or take it themselves (a handoff)", () => {
  const dag = dagOf({
    a: task({ run: () => 1 }),
    b: task({ after: ["a"], run: () => 1 }),
    c: task({ after: ["a"], run: () => 1 }),
    join: task({ after: ["b", "c"], run: () => 1 }),
  });
  const tasks = tasksOf(dag, { a: { state: "running", tryNumber: 1, leaseToken: "claim" } });
  const w = (slots: number) =>
    decide(input(dag, tasks, { mode: "workers", slots, outcomes: new Map([["a", ok(1)]]) }));
  const queued = w(0);
  assert.deepEqual(moves(queued), [
    "a:running->success",
    "b:scheduled->queued",
    "c:scheduled->queued",
  ]);
  assert.equal(queued.transitions[0]!.token, "claim", "the end is written under the claim's lease");
  assert.equal(queued.transitions[1]!.readyNow, true);
  assert.equal(queued.guarded, false, "single-upstream decisions need no run-wide guard");
  assert.equal(queued.run, null);
  const handoff = w(1);
  assert.deepEqual(moves(handoff), [
    "a:running->success",
    "b:scheduled->running",
    "c:scheduled->queued",
  ]);
  assert.deepEqual(handoff.start, ["b"]);
  const b = handoff.transitions[1]!;
  assert.equal(b.patch?.owner, OWNER);
  assert.ok(b.patch?.leaseToken?.startsWith(`${OWNER}#`));
  assert.equal(b.leaseMs, 30_000);
  assert.deepEqual(ops(handoff), ["task:success:a", "task:start:b", "task:queued:c"]);
  // A join's decision reads its other upstream: guarded by the run's version.
  const later = apply(tasks, queued);
  later.set("b", { ...later.get("b")!, state: "running", tryNumber: 1, leaseToken: "x" });
  const joinWait = decide(input(dag, later, {
    mode: "workers",
    outcomes: new Map([["b", ok(1)]]),
  }));
  assert.deepEqual(moves(joinWait), ["b:running->success"]);
  assert.equal(joinWait.guarded, true);
});

Deno.test("decide: workers retry through the store: up_for_retry is claimable at its time", () => {
  const dag = dagOf({
    a: task({ retries: 1, retryDelay: "5s", retryBackoff: "fixed", run: () => 1 }),
  });
  const tasks = tasksOf(dag, { a: { state: "running", tryNumber: 1, leaseToken: "claim" } });
  const d = decide(input(dag, tasks, { mode: "workers", outcomes: new Map([["a", failed("x")]]) }));
  assert.deepEqual(moves(d), ["a:running->up_for_retry"]);
  assert.deepEqual(d.transitions[0]!.patch?.readyAt, at(5010));
  assert.equal(d.transitions[0]!.patch?.leaseToken, null);
  assert.equal(d.wakeAt, null, "no worker waits for it");
});

Deno.test("decide: an enclave unit is queued whole (its first member claimable) and lost whole", () => {
  const dag = resolveDag(defineDag({
    id: "d",
    tasks: {
      src: task({ run: () => 1 }),
      extract: task({ zone: "enclave", after: ["src"], run: () => [] }),
      clean: task({ zone: "enclave", after: ["extract"], run: () => [] }),
      cp: { after: ["clean"], zone: "inherit", checkpoint: true, run: () => 1 },
    },
  } as DagConfig));
  const plan = planRun(dag, interval, {}, { runType: "manual", executor: "workers" });
  const tasks = tasksOf(dag, { src: { state: "running", tryNumber: 1, leaseToken: "c" } });
  for (const t of plan.tasks) {
    tasks.set(t.taskId, { ...tasks.get(t.taskId)!, unit: t.unit ?? null });
  }
  const d = decide(
    input(dag, tasks, { mode: "workers", slots: 1, outcomes: new Map([["src", ok(1)]]) }),
  );
  assert.deepEqual(moves(d), [
    "src:running->success",
    "extract:scheduled->queued",
    "clean:scheduled->queued",
    "cp:scheduled->queued",
  ]);
  assert.deepEqual(d.transitions.filter((t) => t.readyNow).map((t) => t.taskId), ["extract"]);
  assert.deepEqual(d.start, [], "a unit is never handed off");
  assert.equal(d.guarded, true);
  // Its worker is lost: the first member's attempt counts; the unit goes back whole.
  const held = apply(tasks, d);
  held.set("extract", { ...held.get("extract")!, state: "running", tryNumber: 1, leaseToken: "u" });
  for (const m of ["clean", "cp"]) held.set(m, { ...held.get(m)!, leaseToken: "u" });
  const lost = decide(
    input(dag, held, { mode: "workers", lost: new Map([["extract", "lease expired"]]) }),
  );
  assert.deepEqual(moves(lost), [
    "extract:running->failed",
    "clean:queued->failed",
    "cp:queued->failed",
  ]);
  assert.ok(lost.transitions.every((t) => t.token === "u"));
  assert.equal(lost.run?.final, "failed");
  held.set("extract", { ...held.get("extract")!, maxTries: 2 });
  const retried = decide(
    input(dag, held, { mode: "workers", lost: new Map([["extract", "lease expired"]]) }),
  );
  assert.deepEqual(moves(retried), [
    "extract:running->up_for_retry",
    "clean:queued->queued",
    "cp:queued->queued",
  ]);
  assert.equal(retried.transitions[1]!.patch?.leaseToken, null);
});

Deno.test("decide: a scope (a worker's unit) changes only its tasks and never ends the run", () => {
  const dag = dagOf({
    a: task({ run: () => 1 }),
    b: task({ after: ["a"], run: () => 1 }),
    other: task({ run: () => 1 }),
  });
  const tasks = tasksOf(dag, { a: { state: "running", tryNumber: 1 } });
  const d = decide(input(dag, tasks, {
    scope: new Set(["a", "b"]),
    outcomes: new Map([["a", ok(1)]]),
  }));
  assert.deepEqual(moves(d), ["a:running->success", "b:scheduled->running"]);
  const end = decide(input(dag, apply(tasks, d), {
    scope: new Set(["a", "b"]),
    outcomes: new Map([["b", ok(1)]]),
  }));
  assert.deepEqual(moves(end), ["b:running->success"]);
  assert.equal(end.run, null);
});

Deno.test("toBatch: transitions of one task instance fold into one compare-and-set write", () => {
  const dag = dagOf({
    a: task({ retries: 2, retryDelay: 0, retryBackoff: "fixed", run: () => 1 }),
  });
  const tasks = tasksOf(dag, { a: { state: "running", tryNumber: 1 } });
  // It fails and, due at once, starts again: one write from `running` to `running`.
  const d = decide(input(dag, tasks, { now: at(10), outcomes: new Map([["a", failed("x")]]) }));
  assert.deepEqual(moves(d), ["a:running->up_for_retry", "a:up_for_retry->running"]);
  const batch = toBatch("r", [d], {});
  assert.equal(batch.tasks.length, 1);
  assert.equal(batch.tasks[0]!.from, "running");
  assert.equal(batch.tasks[0]!.patch.state, "running");
  assert.equal(batch.tasks[0]!.patch.tryNumber, 2);
  assert.equal(batch.finished, 0);
  assert.deepEqual(batch.audit.map((a) => a.operation), ["task:retry", "task:start"]);
});

Deno.test("decide: a first decision in a scope (a worker's unit) starts its ready tasks", () => {
  const dag = dagOf({
    a: task({ run: () => 1 }),
    b: task({ after: ["a"], run: () => 1 }),
    c: task({ run: () => 1 }),
  });
  const d = decide(input(dag, tasksOf(dag), { scope: new Set(["a", "b"]) }));
  assert.deepEqual(d.start, ["a"]);
});
