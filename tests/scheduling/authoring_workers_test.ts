/**
 * Authoring features that touch execution, on the local executor and on workers (PGlite, and
 * PostgreSQL with CARREL_TEST_DATABASE_URL): Airflow's later trigger rules and old names, and
 * `priorityWeight` (the local executor starts, and workers claim, the highest priority first),
 * task groups run by workers, and the DAG and Carrel versions a run records, whoever creates it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { defineDag, resolveDag, task } from "../../core/dag.ts";
import { loadDags } from "../../core/loader.ts";
import { executeRun } from "../../core/run/local.ts";
import { historyOf } from "../../core/state/history.ts";
import { compareVersions, recordedVersion, resumeVerdict } from "../../core/dag_version.ts";
import { CARREL_VERSION } from "../../core/version.ts";
import { runWorker, startRun } from "../../core/run/worker.ts";
import {
  BACKENDS,
  CORE_MOD,
  notePostgresSkipped,
  testStore,
  waitFor,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

const opts = { sanitizeResources: false, sanitizeOps: false };
const interval = {
  start: new Date("2026-03-01T00:00:00Z"),
  end: new Date("2026-03-02T00:00:00Z"),
};

/** Upstreams ok/skip/fail and one downstream task per rule over a chosen set of them. */
function rulesSource(marker: string): string {
  return `import { defineDag, SkipTask, task } from ${JSON.stringify(CORE_MOD)};
const mark = (id) => Deno.writeTextFile(${JSON.stringify(marker)}, id + "\\n", { append: true });
const down = (after, triggerRule) => task({ after, triggerRule, run: async (ctx) => { await mark(ctx.taskId); return 1; } });
export default defineDag({
  id: "rules",
  schedule: null,
  tasks: {
    ok: task({ run: () => 1 }),
    skip: task({ run: () => { throw new SkipTask("planned"); } }),
    fail: task({ run: () => { throw new Error("planned failure"); } }),
    skip2: task({ run: () => { throw new SkipTask("planned"); } }),
    all_skipped_run: down(["skip", "skip2"], "all_skipped"),
    all_skipped_skip: down(["skip", "ok"], "all_skipped"),
    one_done_run: down(["fail", "skip"], "one_done"),
    one_done_skip: down(["skip", "skip2"], "one_done"),
    none_skipped_run: down(["ok", "fail"], "none_skipped"),
    none_skipped_skip: down(["ok", "skip"], "none_skipped"),
    min_one_run: down(["ok", "fail"], "all_done_min_one_success"),
    min_one_skip: down(["ok", "skip"], "all_done_min_one_success"),
    min_one_uf: down(["fail"], "all_done_min_one_success"),
    alias_nfos: down(["skip", "skip2"], "none_failed_or_skipped"),
    alias_dummy: down(["fail", "skip"], "dummy"),
  },
});
`;
}

const EXPECTED_RULES: Record<string, string> = {
  all_skipped_run: "success",
  all_skipped_skip: "skipped",
  one_done_run: "success",
  one_done_skip: "skipped",
  none_skipped_run: "success",
  none_skipped_skip: "skipped",
  min_one_run: "success",
  min_one_skip: "skipped",
  min_one_uf: "upstream_failed",
  alias_nfos: "skipped",
  alias_dummy: "success",
};

/** Independent tasks whose weights differ (absolute), and a chain whose head outranks a lone task. */
function prioritySource(marker: string): string {
  return `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const mark = (id) => Deno.writeTextFile(${JSON.stringify(marker)}, id + "\\n", { append: true });
const t = (priorityWeight, extra = {}) => task({ priorityWeight, weightRule: "absolute", ...extra, run: async (ctx) => { await mark(ctx.taskId); return 1; } });
export default defineDag({
  id: "prio",
  schedule: null,
  maxActiveTasks: 1,
  tasks: {
    low: t(1),
    high: t(10),
    mid: t(5),
    negative: t(-3),
    // Downstream rule (the default): head's own 1 + tail's 20 = 21 outranks high's 10.
    head: task({ run: async (ctx) => { await mark(ctx.taskId); return 1; } }),
    tail: t(20, { after: ["head"] }),
  },
});
`;
}

async function lines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

async function loadOne(dir: string, id: string) {
  const loaded = await loadDags(dir, { fresh: true });
  assert.deepEqual(loaded.errors, []);
  return loaded.dags.get(id)!;
}

Deno.test("local: priorityWeight orders ready tasks (highest first, then the DAG's order); weight rules as Airflow", async () => {
  await using dir = await withTmpDir();
  const order: string[] = [];
  const t = (id: string, extra: Record<string, unknown> = {}) =>
    task({
      ...extra,
      run: () => {
        order.push(id);
        return 1;
      },
    });
  const dag = resolveDag(defineDag({
    id: "prio_local",
    maxActiveTasks: 1,
    tasks: {
      low: t("low", { priorityWeight: 1, weightRule: "absolute" }),
      high: t("high", { priorityWeight: 10, weightRule: "absolute" }),
      mid: t("mid", { priorityWeight: 5, weightRule: "absolute" }),
      same_a: t("same_a", { priorityWeight: 5, weightRule: "absolute" }),
      head: t("head"),
      tail: t("tail", {
        after: ["head"],
        priorityWeight: 20,
        weightRule: "absolute",
      }),
      up: t("up", { after: ["low"], weightRule: "upstream" }),
    },
  }));
  assert.equal(
    dag.tasks.get("head")!.priority,
    21,
    "downstream: own 1 + tail's 20",
  );
  assert.equal(dag.tasks.get("up")!.priority, 2, "upstream: own 1 + low's 1");
  assert.equal(dag.tasks.get("tail")!.priority, 20);
  const result = await executeRun({
    dag,
    interval,
    params: {},
    home: dir.path,
  });
  assert.equal(result.state, "success");
  // head (21) first, then tail (20, ready now), high, mid and same_a (5, in the DAG's order),
  // up (2, not ready until low ran), low.
  assert.deepEqual(order, [
    "head",
    "tail",
    "high",
    "mid",
    "same_a",
    "low",
    "up",
  ]);
});

Deno.test("dag: priorityWeight must be an integer; weightRule one of Airflow's; both take DAG defaults", () => {
  const defaulted = resolveDag(defineDag({
    id: "d",
    defaults: { priorityWeight: 3, weightRule: "absolute" },
    tasks: {
      a: task({ run: () => 1 }),
      b: task({ after: ["a"], priorityWeight: 7, run: () => 1 }),
    },
  }));
  assert.equal(defaulted.tasks.get("a")!.priority, 3, "absolute: b's weight not added");
  assert.equal(defaulted.tasks.get("b")!.priority, 7);
  assert.throws(
    () =>
      resolveDag(defineDag({
        id: "x",
        tasks: { t: task({ priorityWeight: 1.5, run: () => 1 }) },
      })),
    /tasks\.t\.priorityWeight: expected an integer/,
  );
  assert.throws(
    () =>
      resolveDag(defineDag({
        id: "x",
        // deno-lint-ignore no-explicit-any
        tasks: { t: task({ weightRule: "sideways" as any, run: () => 1 }) },
      })),
    /tasks\.t\.weightRule: expected "downstream", "upstream" or "absolute"/,
  );
});

Deno.test("local: Airflow's later trigger rules and old names decide a real run", async () => {
  await using dir = await withTmpDir();
  const marker = join(dir.path, "marks.txt");
  await Deno.mkdir(join(dir.path, "dags"));
  await Deno.writeTextFile(
    join(dir.path, "dags", "rules.ts"),
    rulesSource(marker),
  );
  const dag = await loadOne(join(dir.path, "dags"), "rules");
  const result = await executeRun({
    dag,
    interval,
    params: {},
    home: join(dir.path, "home"),
  });
  const states = Object.fromEntries(
    result.tasks.map((t) => [t.taskId, t.state]),
  );
  for (const [id, want] of Object.entries(EXPECTED_RULES)) {
    assert.equal(states[id], want, id);
  }
  const ran = (await lines(marker)).sort();
  assert.deepEqual(
    ran,
    Object.keys(EXPECTED_RULES).filter((id) => EXPECTED_RULES[id] === "success")
      .sort(),
  );
});

/** A migrated store with a DAGs folder holding `source` as `<id>.ts`, and the DAG loaded. */
async function workerWorld(
  backend: "pglite" | "postgres",
  id: string,
  source: (marker: string) => string,
) {
  const store = await testStore(backend, id);
  const dags = join(store.home, "dags");
  const home = join(store.home, "home");
  await Deno.mkdir(dags);
  await Deno.mkdir(home);
  const marker = join(store.home, "marks.txt");
  await Deno.writeTextFile(join(dags, `${id}.ts`), source(marker));
  const dag = await loadOne(dags, id);
  return {
    store,
    dag,
    marker,
    /** Runs one in-process worker until the run is final; its final state. */
    async drain(runId: string, concurrency: number): Promise<string> {
      const stop = new AbortController();
      const worker = runWorker({
        store,
        dagsDir: dags,
        home,
        concurrency,
        leaseMs: 30_000,
        pollMs: 50,
        signal: stop.signal,
      });
      let state = "";
      try {
        await waitFor(
          async () => {
            state = (await store.getRun(runId))?.state ?? "";
            return state === "success" || state === "failed";
          },
          60_000,
          "the run to end",
        );
      } finally {
        stop.abort();
        await worker;
      }
      return state;
    },
    [Symbol.asyncDispose]: () => store.close(),
  };
}

for (const backend of BACKENDS) {
  Deno.test({
    name: `workers: Airflow's later trigger rules and old names decide a real run [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await workerWorld(backend, "rules", rulesSource);
      const run = await startRun(w.store, w.dag, interval, {}, "triggered");
      assert.equal(
        await w.drain(run.runId, 2),
        "failed",
        "min_one_uf, a leaf, is upstream_failed",
      );
      const states = Object.fromEntries(
        (await w.store.listTaskInstances(run.runId)).map((
          t,
        ) => [t.taskId, t.state]),
      );
      for (const [id, want] of Object.entries(EXPECTED_RULES)) {
        assert.equal(states[id], want, id);
      }
      assert.deepEqual(
        (await lines(w.marker)).sort(),
        Object.keys(EXPECTED_RULES).filter((id) => EXPECTED_RULES[id] === "success").sort(),
      );
    },
  });

  Deno.test({
    name:
      `workers: claims take the highest priority first, across runs, persisted on the task instance [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await workerWorld(backend, "prio", prioritySource);
      const first = await startRun(w.store, w.dag, interval, {}, "triggered");
      const rows = await w.store.client.query<
        { task_id: string; priority_weight: number }
      >(
        "SELECT task_id, priority_weight FROM task_instances WHERE run_id = $1 ORDER BY task_id",
        [first.runId],
      );
      assert.deepEqual(
        Object.fromEntries(
          rows.map((r) => [r.task_id, Number(r.priority_weight)]),
        ),
        { head: 21, high: 10, low: 1, mid: 5, negative: -3, tail: 20 },
      );
      // A second, newer run: its higher-priority tasks come before the first run's lower ones.
      const second = await startRun(
        w.store,
        w.dag,
        {
          start: interval.end,
          end: new Date(interval.end.getTime() + 86_400_000),
        },
        {},
        "triggered",
      );
      const claimed: string[] = [];
      for (;;) {
        const c = await w.store.claimTask("test-claimer:1:aa", 60_000);
        if (c === undefined) break;
        if (c === "contended") throw new Error("no other claimer runs here");
        claimed.push(
          ...c.tasks.map((t) => `${t.taskId}@${t.runId === first.runId ? 1 : 2}`),
        );
      }
      assert.ok(second.runId !== first.runId);
      // `tail` is not ready (its upstream has not run): the ready ones, highest first, the
      // older run first among equals.
      assert.deepEqual(claimed, [
        "head@1",
        "head@2",
        "high@1",
        "high@2",
        "mid@1",
        "mid@2",
        "low@1",
        "low@2",
        "negative@1",
        "negative@2",
      ]);
    },
  });

  Deno.test({
    name: `workers: one worker runs ready tasks by priority [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await workerWorld(backend, "prio", prioritySource);
      const run = await startRun(w.store, w.dag, interval, {}, "triggered");
      assert.equal(await w.drain(run.runId, 1), "success");
      assert.deepEqual(await lines(w.marker), [
        "head",
        "tail",
        "high",
        "mid",
        "low",
        "negative",
      ]);
    },
  });
}

/** A group of two chained tasks, a task after the whole group. */
function groupSource(marker: string): string {
  return `import { defineDag, group, task } from ${JSON.stringify(CORE_MOD)};
const mark = (id) => Deno.writeTextFile(${JSON.stringify(marker)}, id + "\\n", { append: true });
const t = (after = []) => task({ after, run: async (ctx) => { await mark(ctx.taskId); return ctx.taskId; } });
export default defineDag({
  id: "grouped",
  schedule: null,
  tasks: {
    start: t(),
    ...group("extract", { patrons: t(), items: t(["patrons"]) }, { after: ["start"] }),
    load: t(["extract"]),
  },
});
`;
}

for (const backend of BACKENDS) {
  Deno.test({
    name: `workers: a DAG with a task group runs its namespaced tasks in order [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await workerWorld(backend, "grouped", groupSource);
      const run = await startRun(w.store, w.dag, interval, {}, "triggered");
      assert.equal(await w.drain(run.runId, 2), "success");
      assert.deepEqual(await lines(w.marker), [
        "start",
        "extract.patrons",
        "extract.items",
        "load",
      ]);
      const tis = await w.store.listTaskInstances(run.runId);
      assert.deepEqual(tis.map((t) => t.taskId).sort(), [
        "extract.items",
        "extract.patrons",
        "load",
        "start",
      ]);
    },
  });
}

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `versions: local and worker runs record the DAG version (file and local modules), task definitions and Carrel's version [${backend}]`,
    ...opts,
    fn: async () => {
      await using store = await testStore(backend, "versions");
      const dags = join(store.home, "dags");
      const home = join(store.home, "home");
      await Deno.mkdir(dags);
      await Deno.mkdir(home);
      await Deno.writeTextFile(
        join(dags, "_shared.ts"),
        "export const N = 1;\n",
      );
      const source = (n: number) =>
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
import { N } from "./_shared.ts";
export default defineDag({
  id: "ver",
  schedule: null,
  tasks: { a: task({ run: () => N }), b: task({ after: ["a"], run: () => ${n} }) },
});
`;
      await Deno.writeTextFile(join(dags, "ver.ts"), source(1));
      const dag = await loadOne(dags, "ver");
      assert.deepEqual(Object.keys(dag.modules!).sort(), [
        "_shared.ts",
        "ver.ts",
      ]);
      const local = await executeRun({
        dag,
        interval,
        params: {},
        store,
        home,
      });
      const workerRun = await startRun(
        store,
        dag,
        {
          start: new Date("2026-03-02T00:00:00Z"),
          end: new Date("2026-03-03T00:00:00Z"),
        },
        {},
        "triggered",
      );
      for (const runId of [local.runId, workerRun.runId]) {
        const v = recordedVersion(await historyOf(store).runAudit(runId));
        assert.equal(v.dagVersion, dag.version);
        assert.equal(v.carrelVersion, CARREL_VERSION);
        assert.deepEqual(Object.keys(v.tasks), ["a", "b"]);
        assert.deepEqual(v.modules, dag.modules);
        assert.equal(compareVersions(v, dag).changed, false);
      }
      // b's body changes: the DAG and task b changed; a did not.
      await Deno.writeTextFile(join(dags, "ver.ts"), source(2));
      const changed = await loadOne(dags, "ver");
      const v = recordedVersion(
        await historyOf(store).runAudit(workerRun.runId),
      );
      const change = compareVersions(v, changed);
      assert.equal(change.changed, true);
      assert.deepEqual(change.tasks, ["b"]);
      assert.deepEqual(change.modules, ["ver.ts"]);
      // Resuming: b has not run in the worker run (allowed with the flag); in the local run it
      // succeeded (refused, naming it).
      const states = async (runId: string) =>
        new Map(
          (await store.listTaskInstances(runId)).map((
            t,
          ) => [t.taskId, t.state as string]),
        );
      assert.match(
        resumeVerdict(
          workerRun.runId,
          v,
          changed,
          await states(workerRun.runId),
          false,
        ).error!,
        /pass --allow-changed/,
      );
      assert.equal(
        resumeVerdict(
          workerRun.runId,
          v,
          changed,
          await states(workerRun.runId),
          true,
        ).error,
        undefined,
      );
      const localV = recordedVersion(
        await historyOf(store).runAudit(local.runId),
      );
      assert.match(
        resumeVerdict(
          local.runId,
          localV,
          changed,
          await states(local.runId),
          true,
        ).error!,
        /task "b" changed under a succeeded job key/,
      );
      // A change in a local module alone changes the DAG version, not the tasks.
      await Deno.writeTextFile(join(dags, "ver.ts"), source(1));
      await Deno.writeTextFile(
        join(dags, "_shared.ts"),
        "export const N = 2;\n",
      );
      const moduleOnly = compareVersions(v, await loadOne(dags, "ver"));
      assert.equal(moduleOnly.changed, true);
      assert.deepEqual(moduleOnly.tasks, []);
      assert.deepEqual(moduleOnly.modules, ["_shared.ts"]);
    },
  });
}
