/**
 * The decider's incremental path: a driver that keeps its view in a `RunView` and passes each
 * decision's `waiting` on gets, step by step, the same decisions as one that hands a plain `Map`
 * and lets every decision look at every task. Pure: no store, no clock, no randomness.
 */
import assert from "node:assert/strict";
import { type DagConfig, defineDag, resolveDag, type ResolvedDag, task } from "../../core/dag.ts";
import type { AttemptOutcome } from "../../core/run/attempt.ts";
import {
  decide,
  type DecideInput,
  type Decision,
  RunView,
  type TaskView,
} from "../../core/run/decide.ts";
import { instanceRecord, planRun } from "../../core/run/plan.ts";

const T0 = new Date("2026-03-01T00:00:00Z");
const interval = { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") };

function dagOf(tasks: DagConfig["tasks"], extra: Partial<DagConfig> = {}): ResolvedDag {
  return resolveDag(defineDag({ id: "d", tasks, ...extra }));
}

function records(dag: ResolvedDag): [string, TaskView][] {
  const plan = planRun(dag, interval, {}, { runType: "manual", executor: "local" });
  return plan.tasks.map((t) => [t.taskId, { ...instanceRecord(t), updatedAt: T0 }]);
}

function base(dag: ResolvedDag, tasks: ReadonlyMap<string, TaskView>, now: Date): DecideInput {
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
    now,
    mode: "local",
    owner: "host:1:me",
    leaseMs: 30_000,
    persist: true,
    maxOutputBytes: 1024,
    since: T0,
    random: () => 0.5,
  };
}

/** What a step decided, as data to compare. */
const trace = (d: Decision) => ({
  moves: d.transitions.map((t) => `${t.taskId}:${t.from}->${t.to}`),
  start: d.start,
  end: d.run?.final ?? null,
  wakeAt: d.wakeAt?.getTime() ?? null,
});

/**
 * Drives a run to its end as the local driver does, ending one started attempt per step (the
 * oldest first): `outcome` says how each attempt ends. With `incremental`, the view is a
 * `RunView` and `waiting` is passed on; without, a plain `Map` and no hint.
 */
function simulate(
  dag: ResolvedDag,
  outcome: (id: string, attempt: number) => "ok" | "fail",
  incremental: boolean,
): ReturnType<typeof trace>[] {
  const view: Map<string, TaskView> = incremental
    ? new RunView(records(dag))
    : new Map(records(dag));
  const steps: ReturnType<typeof trace>[] = [];
  let clock = T0.getTime();
  let d = decide({
    ...base(dag, view, new Date(clock)),
    open: { resume: "retry_failed", created: true, token: "tok" },
  });
  const running: string[] = [];
  const tries = new Map<string, number>();
  for (let step = 0; step < 10_000; step++) {
    steps.push(trace(d));
    for (const t of d.transitions) view.set(t.taskId, t.next);
    running.push(...d.start);
    if (d.run?.final) return steps;
    clock += 1000;
    const outcomes = new Map<string, AttemptOutcome>();
    const id = running.shift();
    if (id !== undefined) {
      const n = (tries.get(id) ?? 0) + 1;
      tries.set(id, n);
      const times = { startedAt: new Date(clock - 500), endedAt: new Date(clock), counts: [] };
      outcomes.set(
        id,
        outcome(id, n) === "ok"
          ? { kind: "success", value: n, ...times }
          : { kind: "failed", message: "boom", permanent: false, cancelled: false, ...times },
      );
    } else if (d.wakeAt) clock = d.wakeAt.getTime();
    d = decide({
      ...base(dag, view, new Date(clock)),
      outcomes,
      ...(incremental ? { waiting: d.waiting } : {}),
    });
  }
  throw new Error("The simulated run did not end");
}

Deno.test("decide (incremental): a fan-out with few slots, priorities, retries and joins decides as a full look does", () => {
  const children = Array.from({ length: 30 }, (_, i) => `c${String(i).padStart(2, "0")}`);
  const tasks: DagConfig["tasks"] = { root: task({ run: () => 1 }) };
  for (const [i, id] of children.entries()) {
    tasks[id] = task({
      after: ["root"],
      run: () => 1,
      retries: i % 7 === 3 ? 1 : 0,
      retryDelay: "2s",
      retryBackoff: "fixed",
      ...(i % 5 === 0 ? { priorityWeight: 10 } : {}),
    });
  }
  tasks.any = task({ after: ["c01", "c02", "c03"], triggerRule: "one_success", run: () => 1 });
  tasks.all = task({ after: ["c04", "c05", "any"], run: () => 1 });
  tasks.failed_join = task({ after: ["c06", "c11"], triggerRule: "one_failed", run: () => 1 });
  tasks.tail = task({ after: ["all", "failed_join"], triggerRule: "all_done", run: () => 1 });
  const dag = dagOf(tasks, { maxActiveTasks: 3 });
  // c03 and c10 fail once and retry; c11 fails for good; c06's failure reaches one_failed.
  const outcome = (id: string, n: number) =>
    (id === "c03" || id === "c10" || id === "c17") && n === 1
      ? "fail"
      : id === "c11" || id === "c06"
      ? "fail"
      : "ok";
  const full = simulate(dag, outcome, false);
  const incremental = simulate(dag, outcome, true);
  assert.deepEqual(incremental, full);
  // The leaves (tail, and children without a join) decide the run; the failures stayed inside.
  assert.equal(full.at(-1)!.end, "success");
  const moves = full.flatMap((s) => s.moves);
  assert.ok(moves.includes("c11:running->failed"));
  assert.ok(moves.includes("c03:running->up_for_retry"));
  assert.ok(moves.includes("failed_join:running->success"));
  // Slots were full for most of the run: the hint was in use.
  assert.ok(full.length > children.length);
});

Deno.test("decide (incremental): a long chain and a wide fan-out end as with a full look", () => {
  const chain: DagConfig["tasks"] = {};
  for (let i = 0; i < 40; i++) {
    chain[`t${i}`] = task({ after: i === 0 ? [] : [`t${i - 1}`], run: () => 1 });
  }
  const wide: DagConfig["tasks"] = { root: task({ run: () => 1 }) };
  for (let i = 0; i < 40; i++) wide[`w${i}`] = task({ after: ["root"], run: () => 1 });
  for (const [tasks, slots] of [[chain, 16], [wide, 4]] as const) {
    const dag = dagOf(tasks, { maxActiveTasks: slots });
    const full = simulate(dag, () => "ok", false);
    assert.deepEqual(simulate(dag, () => "ok", true), full);
    assert.equal(full.at(-1)!.end, "success");
  }
});

Deno.test("decide (incremental): a RunView counts only the DAG's tasks, as the decider does", () => {
  const dag = dagOf({ a: task({ run: () => 1 }) });
  const gone: TaskView = { ...records(dag)[0]![1], taskId: "gone", state: "running" };
  const view = new RunView([...records(dag), ["gone", gone]]);
  assert.deepEqual(view.summary(dag), { unfinished: 1, active: [] });
  view.set("a", { ...view.get("a")!, state: "running" });
  assert.deepEqual(view.summary(dag), { unfinished: 1, active: ["a"] });
  const ended = decide({
    ...base(dag, view, T0),
    outcomes: new Map([["a", {
      kind: "success",
      value: 1,
      startedAt: T0,
      endedAt: T0,
      counts: [],
    }]]),
    waiting: [],
  });
  // The record of a task no longer in the DAG (running) does not keep the run open.
  assert.equal(ended.run?.final, "success");
  view.delete("gone");
  view.set("a", ended.transitions[0]!.next);
  assert.deepEqual(view.summary(dag), { unfinished: 0, active: [] });
});

Deno.test("decide (workers): a task's end in a long chain looks at what it changes, not at every task", () => {
  /** A view that counts the task instances a decision reads. */
  class CountingView extends RunView {
    reads = 0;
    override get(id: string): TaskView | undefined {
      this.reads++;
      return super.get(id);
    }
  }
  const n = 3000;
  const tasks: DagConfig["tasks"] = {};
  for (let i = 0; i < n; i++) {
    tasks[`t${i}`] = task({ after: i === 0 ? [] : [`t${i - 1}`], run: () => 1 });
  }
  const dag = dagOf(tasks);
  const view = new CountingView(records(dag));
  const mid = n / 2;
  for (let i = 0; i < mid; i++) {
    view.set(`t${i}`, { ...view.get(`t${i}`)!, state: "success", tryNumber: 1 });
  }
  view.set(`t${mid}`, { ...view.get(`t${mid}`)!, state: "running", tryNumber: 1 });
  view.reads = 0;
  const d = decide({
    ...base(dag, view, T0),
    mode: "workers",
    slots: 1,
    outcomes: new Map([[`t${mid}`, {
      kind: "success",
      value: 1,
      startedAt: T0,
      endedAt: T0,
      counts: [],
    }]]),
  });
  // The end is recorded and the next task handed to the same worker.
  assert.deepEqual(trace(d).moves, [`t${mid}:running->success`, `t${mid + 1}:scheduled->running`]);
  assert.deepEqual(d.start, [`t${mid + 1}`]);
  assert.ok(view.reads < 50, `${view.reads} task instances read for one task's end`);
});
