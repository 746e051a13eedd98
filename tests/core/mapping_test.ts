/**
 * Dynamic task mapping on the local executor (PGlite, and PostgreSQL when configured): zero, one
 * and 1,000 items, each instance with its own job key, state and audit entries, results collected
 * in order downstream, resume re-running only the failed indexes, `maxActiveTasks` across
 * instances, the item limit, and items (sentinel values) never reaching the store or the trail.
 */
import assert from "node:assert/strict";
import { defineDag, resolveDag, type ResolvedDag, task } from "../../core/dag.ts";
import { group } from "../../core/group.ts";
import { jobKey, runIdFor } from "../../core/job_key.ts";
import type { RunResult } from "../../core/run/events.ts";
import { executeRun } from "../../core/run/local.ts";
import { clearTask } from "../../core/actions.ts";
import { expandedDag, mappedInstances, parseInstanceId } from "../../core/run/mapping.ts";
import { sharedStoreSuite, type SuiteStore } from "../shared_store_suite.ts";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";

notePostgresSkipped();

type Store = SuiteStore;

const interval = {
  start: new Date("2026-02-01T00:00:00Z"),
  end: new Date("2026-02-02T00:00:00Z"),
};
const SENTINEL = "ZZSENTINEL-patron";

/** A DAG mapping over `n` items; instances whose index is in `failing` throw. */
function mappedDag(id: string, n: number, state: {
  failing: Set<number>;
  ran: number[];
  active?: number;
  max?: number;
}, extra: { maxActiveTasks?: number; mapLimit?: number } = {}): ResolvedDag {
  return resolveDag(defineDag({
    id,
    schedule: null,
    maxActiveTasks: extra.maxActiveTasks ?? 8,
    tasks: {
      list: task({
        run: () => Array.from({ length: n }, (_, i) => `${SENTINEL}-${i}`),
      }),
      load: task({
        expand: "list",
        ...(extra.mapLimit ? { mapLimit: extra.mapLimit } : {}),
        run: async (ctx) => {
          state.ran.push(ctx.mapIndex!);
          state.active = (state.active ?? 0) + 1;
          state.max = Math.max(state.max ?? 0, state.active);
          await Promise.resolve();
          state.active--;
          if (state.failing.has(ctx.mapIndex!)) throw new Error(`index ${ctx.mapIndex} failed`);
          return { index: ctx.mapIndex, size: String(ctx.item).length };
        },
      }),
      report: task({
        after: ["load"],
        run: (ctx) => (ctx.inputs.load as { index: number }[]).map((r) => r.index),
      }),
    },
  }));
}

function taskOf(result: RunResult, id: string) {
  const t = result.tasks.find((t) => t.taskId === id);
  assert.ok(t, `no task ${id} in ${result.tasks.map((t) => t.taskId).slice(0, 8)}`);
  return t;
}

async function auditText(store: Store, runId: string): Promise<string> {
  const out: string[] = [];
  for await (const e of store.iterateAudit({ correlationId: runId })) out.push(JSON.stringify(e));
  return out.join("\n");
}

async function instancesText(store: Store, runId: string): Promise<string> {
  return JSON.stringify(await store.listTaskInstances(runId));
}

for (const backend of BACKENDS) {
  const test = sharedStoreSuite("mapping (local)", "mapping", backend);
  const run = (store: Store, dag: ResolvedDag) =>
    executeRun({ dag, interval, params: {}, store, home: store.home });

  test("zero items skip the mapped task and its dependants", async (store) => {
    const state = { failing: new Set<number>(), ran: [] as number[] };
    const dag = mappedDag("map_zero", 0, state);
    const result = await run(store, dag);
    assert.equal(result.state, "success");
    assert.equal(taskOf(result, "load").state, "skipped");
    assert.equal(taskOf(result, "report").state, "skipped");
    assert.deepEqual(state.ran, []);
    const rows = await store.listTaskInstances(result.runId);
    assert.equal(rows.filter((r) => r.mapIndex >= 0).length, 0);
  });

  test("one item: one instance with its own job key, results collected", async (store) => {
    const state = { failing: new Set<number>(), ran: [] as number[] };
    const dag = mappedDag("map_one", 1, state);
    const result = await run(store, dag);
    assert.equal(result.state, "success");
    const inst = taskOf(result, "load[0]");
    assert.equal(inst.state, "success");
    assert.equal(
      inst.jobKey,
      jobKey({ dag: "map_one", task: "load", interval, params: {}, mapIndex: 0 }),
    );
    assert.notEqual(inst.jobKey, taskOf(result, "load").jobKey);
    assert.deepEqual(result.outputs.get("report"), [0]);
    const rows = await store.listTaskInstances(result.runId);
    const row = rows.find((r) => r.taskId === "load[0]")!;
    assert.equal(row.mapIndex, 0);
    const audit = await auditText(store, result.runId);
    assert.match(audit, /"taskId":"load\[0\]","operation":"task:success"/);
    assert.match(audit, /"operation":"mapped","status":"counted","recordCount":1/);
  });

  test("1,000 items: failed indexes fail the run; resume re-runs only them", async (store) => {
    const failing = new Set([3, 500, 999]);
    const state = { failing, ran: [] as number[] };
    const dag = mappedDag("map_thousand", 1000, state);
    const first = await run(store, dag);
    assert.equal(first.state, "failed");
    assert.equal(state.ran.length, 1000);
    assert.deepEqual(new Set(state.ran).size, 1000);
    for (const i of failing) assert.equal(taskOf(first, `load[${i}]`).state, "failed");
    assert.equal(taskOf(first, "load[4]").state, "success");
    assert.equal(taskOf(first, "report").state, "upstream_failed");
    const keys = new Set(first.tasks.map((t) => t.jobKey));
    assert.equal(keys.size, first.tasks.length, "every instance has its own job key");

    // Resume: only the failed indexes run again; the downstream task gets all results in order.
    failing.clear();
    state.ran.length = 0;
    const second = await run(store, dag);
    assert.equal(second.state, "success");
    assert.deepEqual(state.ran.sort((a, b) => a - b), [3, 500, 999]);
    assert.deepEqual(second.outputs.get("report"), Array.from({ length: 1000 }, (_, i) => i));
    assert.equal(taskOf(second, "load[500]").attempts, 2);
    assert.equal(taskOf(second, "load[4]").attempts, 1);

    // Items are opaque: none of their values reach the store or the audit trail.
    assert.ok(
      !(await instancesText(store, second.runId)).includes(`${SENTINEL}-`) ||
        // the upstream "list" output is the one place they are (it is the task's own output)
        (await store.listTaskInstances(second.runId)).filter((r) =>
            JSON.stringify(r.output).includes(SENTINEL)
          ).map((r) => r.taskId).join() === "list",
    );
    assert.ok(!(await auditText(store, second.runId)).includes(SENTINEL));
  });

  test("tasks clear: one instance alone, or a task with all its instances", async (store) => {
    const state = { failing: new Set<number>(), ran: [] as number[] };
    const dag = mappedDag("map_clear", 3, state);
    const first = await run(store, dag);
    assert.equal(first.state, "success");
    state.ran.length = 0;
    assert.deepEqual(
      await clearTask(store, dag, first.runId, "load[1]", { downstream: true, by: "test" }),
      ["load[1]", "report"],
    );
    assert.equal((await run(store, dag)).state, "success");
    assert.deepEqual(state.ran, [1]);
    state.ran.length = 0;
    assert.deepEqual(
      await clearTask(store, dag, first.runId, "load", { by: "test" }),
      ["load", "load[0]", "load[1]", "load[2]"],
    );
    assert.equal((await run(store, dag)).state, "success");
    assert.deepEqual(state.ran.sort(), [0, 1, 2]);
  });

  test("maxActiveTasks holds across instances", async (store) => {
    const state = { failing: new Set<number>(), ran: [] as number[], active: 0, max: 0 };
    const dag = resolveDag(defineDag({
      id: "map_slots",
      schedule: null,
      maxActiveTasks: 3,
      tasks: {
        load: task({
          expand: () => Array.from({ length: 12 }, (_, i) => i),
          run: async () => {
            state.active++;
            state.max = Math.max(state.max, state.active);
            await new Promise((r) => setTimeout(r, 5));
            state.active--;
          },
        }),
      },
    }));
    const result = await run(store, dag);
    assert.equal(result.state, "success");
    assert.equal(state.max, 3);
  });

  test("more items than mapLimit is a clear error", async (store) => {
    const state = { failing: new Set<number>(), ran: [] as number[] };
    const dag = mappedDag("map_limit", 12, state, { mapLimit: 10 });
    const result = await run(store, dag);
    assert.equal(result.state, "failed");
    assert.equal(
      taskOf(result, "load").error,
      'Cannot expand task "load": more than 10 items (its mapLimit); raise mapLimit or split the work',
    );
    assert.deepEqual(state.ran, []);
  }, true);
}

Deno.test("mapping: the expanded shape puts instances between the task and its dependants", () => {
  const dag = mappedDag("shape", 2, { failing: new Set(), ran: [] });
  const none = expandedDag(dag, new Set());
  assert.deepEqual(none.tasks.get("report")!.after, ["load"]);
  const two = expandedDag(dag, new Set(["load[0]", "load[1]"]));
  assert.deepEqual(two.order, ["list", "load", "load[0]", "load[1]", "report"]);
  assert.deepEqual(two.tasks.get("report")!.after, ["load[0]", "load[1]"]);
  assert.deepEqual(two.tasks.get("load[1]")!.after, ["load", "list"]);
  assert.equal(expandedDag(dag, new Set(["load[0]", "load[1]"])), two, "cached");
  assert.equal(runIdFor("shape", interval.start), "shape@2026-02-01T00:00:00Z");
});

Deno.test("mapping: in memory (dags test) runs instances too", async () => {
  const dag = mappedDag("memory", 3, { failing: new Set(), ran: [] });
  const result = await executeRun({ dag, interval, params: {}, home: await Deno.makeTempDir() });
  assert.equal(result.state, "success");
  assert.deepEqual(result.outputs.get("report"), [0, 1, 2]);
});

Deno.test("mapping: a mapped task inside a task group expands under its dotted id, with its priority", async () => {
  const dag = resolveDag(defineDag({
    id: "grouped_map",
    schedule: null,
    tasks: {
      ...group("fetch", {
        load: task({ expand: () => ["a", "b"], priorityWeight: 7, run: (ctx) => ctx.mapIndex }),
      }),
      report: task({ after: ["fetch"], run: (ctx) => ctx.inputs["fetch.load"] }),
    },
  }));
  assert.deepEqual(parseInstanceId("fetch.load[1]"), { task: "fetch.load", index: 1 });
  const rows = mappedInstances(dag, "fetch.load", 2, { runId: "r", interval, params: {} });
  assert.deepEqual(rows.map((r) => [r.taskId, r.priorityWeight]), [
    ["fetch.load[0]", dag.tasks.get("fetch.load")!.priority],
    ["fetch.load[1]", dag.tasks.get("fetch.load")!.priority],
  ]);
  const result = await executeRun({ dag, interval, params: {}, home: await Deno.makeTempDir() });
  assert.equal(result.state, "success");
  assert.deepEqual(result.outputs.get("report"), [0, 1]);
});
