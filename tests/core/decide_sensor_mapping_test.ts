/**
 * The decider alone on sensors and mapping: a reschedule outcome (state, try not counted, slot
 * released, the first poke kept, the wake-up time, workers' ready time), the timeout from the
 * first poke (fail for good, or skip with softFail), a due reschedule started again, and an
 * expansion whose count differs from the instances an earlier one made.
 */
import assert from "node:assert/strict";
import { defineDag, resolveDag, task } from "../../core/dag.ts";
import type { AttemptOutcome } from "../../core/run/attempt.ts";
import { decide, decideExpansion, type DecideInput, type TaskView } from "../../core/run/decide.ts";
import { instanceRecord, planRun } from "../../core/run/plan.ts";

const T0 = new Date("2026-03-01T00:00:00Z");
const at = (ms: number) => new Date(T0.getTime() + ms);
const interval = { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") };

const dag = resolveDag(defineDag({
  id: "d",
  tasks: {
    wait: task({ pool: "ils", retries: 2, run: () => true }),
    after: task({ after: ["wait"], run: () => 1 }),
  },
}));

function view(set: Partial<TaskView> = {}): Map<string, TaskView> {
  const plan = planRun(dag, interval, {}, { runType: "manual", executor: "workers" });
  return new Map(plan.tasks.map((t) => [t.taskId, {
    ...instanceRecord(t),
    updatedAt: T0,
    ...(t.taskId === "wait"
      ? { state: "running" as const, tryNumber: 1, maxTries: 3, startedAt: T0, ...set }
      : {}),
  }]));
}

function input(tasks: Map<string, TaskView>, more: Partial<DecideInput> = {}): DecideInput {
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
    now: at(10),
    mode: "local",
    owner: "host:1:me",
    leaseMs: 30_000,
    persist: true,
    maxOutputBytes: 1024,
    since: T0,
    random: () => 0.5,
    ...more,
  };
}

const notYet = (endedMs: number, softFail = false): AttemptOutcome => ({
  kind: "reschedule",
  delayMs: 1_000,
  timeoutMs: 5_000,
  softFail,
  startedAt: at(endedMs - 5),
  endedAt: at(endedMs),
  counts: [],
});

Deno.test("decide: a poke that found nothing is up for reschedule, not a try", () => {
  const d = decide(input(view(), { outcomes: new Map([["wait", notYet(10)]]) }));
  const t = d.transitions.find((x) => x.taskId === "wait")!;
  assert.equal(t.to, "up_for_reschedule");
  assert.equal(t.patch!.tryNumber, 0, "the next start counts the same try again");
  assert.equal(t.patch!.owner, null);
  assert.equal(t.patch!.leaseToken, null);
  assert.deepEqual(t.patch!.nextAttemptAt, at(1_010));
  assert.deepEqual(t.patch!.output, { sensor: { since: T0.toISOString(), pokes: 1 } });
  assert.deepEqual(t.audit.map((a) => [a.operation, a.status, a.detail]), [
    ["task:reschedule", "up_for_reschedule", { poke: 1, delayMs: 1_000 }],
  ]);
  assert.deepEqual(d.wakeAt, at(1_010));
  assert.deepEqual(d.start, []);
  assert.equal(d.run, null, "the run goes on");
});

Deno.test("decide: workers make a rescheduled sensor claimable at its time; its pool slot frees", () => {
  const d = decide(input(view({ leaseToken: "tok" }), {
    mode: "workers",
    outcomes: new Map([["wait", notYet(10)]]),
  }));
  const t = d.transitions.find((x) => x.taskId === "wait")!;
  assert.deepEqual(t.patch!.readyAt, at(1_010));
  assert.equal(t.token, "tok");
});

Deno.test("decide: a due reschedule starts again with the same try number", () => {
  const tasks = view({
    state: "up_for_reschedule",
    tryNumber: 0,
    nextAttemptAt: at(5),
    output: { sensor: { since: T0.toISOString(), pokes: 1 } },
    owner: null,
  });
  const d = decide(input(tasks));
  assert.deepEqual(d.start, ["wait"]);
  const t = d.transitions.find((x) => x.taskId === "wait")!;
  assert.equal(t.patch!.tryNumber, 1);
  const early = decide(input(tasks, { now: at(1) }));
  assert.deepEqual(early.start, []);
  assert.deepEqual(early.wakeAt, at(5));
});

Deno.test("decide: a sensor times out from its first poke: failed for good, or skipped", () => {
  const kept = { output: { sensor: { since: T0.toISOString(), pokes: 4 } } };
  const hard = decide(input(view(kept), { outcomes: new Map([["wait", notYet(5_000)]]) }));
  const h = hard.transitions.find((x) => x.taskId === "wait")!;
  assert.equal(h.to, "failed", "not retried, whatever its retries");
  assert.equal(h.patch!.error, 'Sensor "wait" timed out after 5.0s (5 pokes)');
  assert.equal(hard.transitions.find((x) => x.taskId === "after")!.to, "upstream_failed");
  const soft = decide(input(view(kept), { outcomes: new Map([["wait", notYet(5_000, true)]]) }));
  assert.equal(soft.transitions.find((x) => x.taskId === "wait")!.to, "skipped");
  assert.equal(soft.transitions.find((x) => x.taskId === "after")!.to, "skipped");
  // Before the deadline, the last poke is set at the deadline itself.
  const last = decide(input(view(kept), { outcomes: new Map([["wait", notYet(4_500)]]) }));
  assert.deepEqual(
    last.transitions.find((x) => x.taskId === "wait")!.patch!.nextAttemptAt,
    at(5_000),
  );
});

Deno.test("decideExpansion: instances to create, or an error when the count changed", () => {
  const mapped = resolveDag(defineDag({
    id: "m",
    tasks: { load: task({ expand: () => [1, 2, 3], run: (ctx) => ctx.item }) },
  }));
  const ended = (n: number): AttemptOutcome => ({
    kind: "success",
    value: { mapped: n },
    startedAt: T0,
    endedAt: at(1),
    counts: [],
  });
  assert.equal(decideExpansion(mapped, new Set(), "load", ended(3)).create, 3);
  const grown = decideExpansion(mapped, new Set(["load[0]", "load[1]"]), "load", ended(3));
  assert.equal(grown.create, 3);
  const shrunk = decideExpansion(mapped, new Set(["load[0]", "load[1]"]), "load", ended(1));
  assert.equal(shrunk.create, 0);
  assert.equal(shrunk.outcome.kind, "failed");
  assert.match(
    (shrunk.outcome as { message: string }).message,
    /it yields 1 items where an earlier attempt yielded 2/,
  );
  assert.equal(decideExpansion(mapped, new Set(), "other", ended(3)).create, 0);
});
