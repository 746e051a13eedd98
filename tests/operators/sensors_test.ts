/**
 * Sensors on the local executor (PGlite, and PostgreSQL when configured): `poke` mode holds its
 * slot while it waits, `reschedule` mode frees it (state `up_for_reschedule`, pokes not counted as
 * tries), timeouts fail or (softFail) skip, waiting is cancellable, and `sqlSensor` waits for a
 * truthy row. Tests create what a sensor waits for after awaiting its first poke, never sleeping.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { defineDag, resolveDag, type TaskSpec } from "../../core/dag.ts";
import { task } from "../../core/dag.ts";
import { executeRun } from "../../core/run/local.ts";
import { openPglite } from "../../operators/ils/sql.ts";
import { fileSensor, matchFiles } from "../../operators/sensors/file_sensor.ts";
import { type PokeEvent, sensorPokes } from "../../operators/sensors/sensor.ts";
import { sqlSensor } from "../../operators/sensors/sql_sensor.ts";
import { sharedStoreSuite, type SuiteStore } from "../shared_store_suite.ts";
import {
  BACKENDS,
  notePostgresSkipped,
  TEST_DATABASE_URL,
  waitFor,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

type Store = SuiteStore;

const interval = {
  start: new Date("2026-04-01T00:00:00Z"),
  end: new Date("2026-04-02T00:00:00Z"),
};

/** Resolves at the `n`th check of sensor `taskId` in DAG `dagId` (with its event). */
export function nthPoke(dagId: string, taskId: string, n = 1): Promise<PokeEvent> {
  return new Promise((resolve) => {
    let seen = 0;
    const on = (e: Event) => {
      const d = (e as CustomEvent<PokeEvent>).detail;
      if (d.dagId !== dagId || d.taskId !== taskId || ++seen < n) return;
      sensorPokes.removeEventListener("poke", on);
      resolve(d);
    };
    sensorPokes.addEventListener("poke", on);
  });
}

/** A DAG: a sensor, an unrelated task competing for the one slot, and a task after the sensor. */
function slotDag(id: string, wait: TaskSpec, log: string[], otherDone?: () => void) {
  return resolveDag(defineDag({
    id,
    schedule: null,
    maxActiveTasks: 1,
    tasks: {
      wait,
      other: task({
        run: () => {
          log.push("other");
          otherDone?.();
        },
      }),
      load: task({
        after: ["wait"],
        run: (ctx) => {
          log.push("load");
          return (ctx.inputs.wait as { files: string[] }).files.length;
        },
      }),
    },
  }));
}

for (const backend of BACKENDS) {
  const test = sharedStoreSuite("sensors (local)", "sensors", backend);

  test("poke mode holds its slot while it waits", async (store) => {
    await using dir = await withTmpDir();
    const log: string[] = [];
    const dag = slotDag(
      `poke_${backend}`,
      fileSensor({ path: join(dir.path, "drop", "*.mrc"), pokeInterval: "20ms", timeout: "1m" }),
      log,
    );
    const second = nthPoke(dag.id, "wait", 2);
    const running = executeRun({ dag, interval, params: {}, store, home: store.home });
    assert.equal((await second).met, false);
    // Two checks later the only slot is still the sensor's: the other task has not started.
    assert.equal(log.length, 0, "nothing else ran");
    const rows = await store.listTaskInstances(`${dag.id}@2026-04-01T00:00:00Z`);
    assert.equal(rows.find((r) => r.taskId === "wait")!.state, "running");
    await Deno.mkdir(join(dir.path, "drop"));
    await Deno.writeTextFile(join(dir.path, "drop", "vendor.mrc"), "00000");
    const result = await running;
    assert.equal(result.state, "success");
    assert.deepEqual([...log].sort(), ["load", "other"]);
    assert.equal(result.tasks.find((t) => t.taskId === "wait")!.attempts, 1);
    assert.equal(result.outputs.get("load"), 1);
  });

  test("reschedule mode frees its slot between checks (up_for_reschedule)", async (store) => {
    await using dir = await withTmpDir();
    const log: string[] = [];
    let otherDone!: () => void;
    const other = new Promise<void>((r) => otherDone = r);
    const dag = slotDag(
      `reschedule_${backend}`,
      fileSensor({
        path: join(dir.path, "*.mrc"),
        mode: "reschedule",
        pokeInterval: "30ms",
        timeout: "1m",
      }),
      log,
      otherDone,
    );
    const runId = `${dag.id}@2026-04-01T00:00:00Z`;
    const first = nthPoke(dag.id, "wait");
    const running = executeRun({ dag, interval, params: {}, store, home: store.home });
    assert.equal((await first).met, false);
    // The other task gets the one slot while the sensor waits (it never would in poke mode).
    await other;
    await waitFor(
      async () =>
        (await store.listTaskInstances(runId)).some((r) =>
          r.taskId === "wait" && r.state === "up_for_reschedule"
        ),
      20_000,
      "the sensor to be up for reschedule",
    );
    await Deno.writeTextFile(join(dir.path, "a.mrc"), "00000");
    const result = await running;
    assert.equal(result.state, "success");
    const wait = result.tasks.find((t) => t.taskId === "wait")!;
    assert.equal(wait.attempts, 1, "pokes are not tries");
    const ops: string[] = [];
    for await (const e of store.iterateAudit({ correlationId: runId })) {
      if (e.taskId === "wait") ops.push(e.operation);
    }
    assert.ok(ops.filter((o) => o === "task:reschedule").length >= 1, ops.join());
    assert.equal(ops.at(-1), "task:success");
  });

  test("timeouts: softFail skips the sensor and its dependants; else it fails", async (store) => {
    await using dir = await withTmpDir();
    for (const mode of ["poke", "reschedule"] as const) {
      const soft = resolveDag(defineDag({
        id: `soft_${mode}_${backend}`,
        schedule: null,
        tasks: {
          wait: fileSensor({
            path: join(dir.path, "never.mrc"),
            mode,
            pokeInterval: "20ms",
            timeout: "80ms",
            softFail: true,
          }),
          load: task({ after: ["wait"], run: () => 1 }),
        },
      }));
      const r1 = await executeRun({ dag: soft, interval, params: {}, store, home: store.home });
      assert.equal(r1.state, "success", mode);
      assert.equal(r1.tasks.find((t) => t.taskId === "wait")!.state, "skipped");
      assert.equal(r1.tasks.find((t) => t.taskId === "load")!.state, "skipped");
    }
    const hard = resolveDag(defineDag({
      id: `hard_${backend}`,
      schedule: null,
      tasks: {
        wait: fileSensor({
          path: join(dir.path, "never.mrc"),
          mode: "reschedule",
          pokeInterval: "20ms",
          timeout: "80ms",
          retries: 3,
        }),
      },
    }));
    const r2 = await executeRun({ dag: hard, interval, params: {}, store, home: store.home });
    assert.equal(r2.state, "failed");
    const wait = r2.tasks.find((t) => t.taskId === "wait")!;
    assert.match(wait.error!, /^Sensor "wait" timed out after 80ms \(\d+ pokes?\)$/);
    assert.equal(wait.attempts, 1, "a timed-out sensor is not retried");
  });

  test("waiting is cancellable", async (store) => {
    await using dir = await withTmpDir();
    const dag = resolveDag(defineDag({
      id: `cancel_${backend}`,
      schedule: null,
      tasks: {
        wait: fileSensor({ path: join(dir.path, "x.mrc"), pokeInterval: "1h", timeout: "2h" }),
      },
    }));
    const stop = new AbortController();
    const first = nthPoke(dag.id, "wait");
    const running = executeRun({
      dag,
      interval,
      params: {},
      store,
      home: store.home,
      signal: stop.signal,
    });
    await first;
    stop.abort();
    const result = await running;
    assert.equal(result.state, "failed");
    assert.match(result.tasks[0]!.error!, /Cancelled/);
  });

  test("sqlSensor waits for a truthy first cell", async (store) => {
    await using dir = await withTmpDir();
    const db = await openPglite(join(dir.path, "ils"));
    try {
      await db.exec("CREATE TABLE export_log (day date, done boolean)");
      const dag = resolveDag(defineDag({
        id: `sql_${backend}`,
        schedule: null,
        tasks: {
          exported: sqlSensor({
            connection: { sql: db, name: "ils" },
            query: "SELECT count(*) FROM export_log WHERE day = $1 AND done",
            params: (ctx) => [ctx.logicalDate.toISOString().slice(0, 10)],
            mode: "reschedule",
            pokeInterval: "20ms",
            timeout: "1m",
          }),
        },
      }));
      const first = nthPoke(dag.id, "exported");
      const running = executeRun({ dag, interval, params: {}, store, home: store.home });
      assert.equal((await first).met, false);
      await db.query("INSERT INTO export_log VALUES ('2026-04-01', true)");
      const result = await running;
      assert.equal(result.state, "success");
      assert.equal(result.outputs.get("exported"), true);
    } finally {
      await db.close();
    }
  });

  if (backend === "postgres") {
    test("sqlSensor resolves a named connection (CARREL_CONN_<NAME>)", async (store) => {
      const dag = resolveDag(defineDag({
        id: "sql_named",
        schedule: null,
        tasks: {
          ready: sqlSensor({
            connection: "sensor_test_db",
            query: "SELECT 1",
            pokeInterval: "20ms",
            timeout: "30s",
          }),
        },
      }));
      Deno.env.set("CARREL_CONN_SENSOR_TEST_DB", TEST_DATABASE_URL!);
      try {
        const result = await executeRun({ dag, interval, params: {}, store, home: store.home });
        assert.equal(result.state, "success");
      } finally {
        Deno.env.delete("CARREL_CONN_SENSOR_TEST_DB");
      }
    });
  }

  test("matchFiles: globs with *, ?, classes and **", async () => {
    await using dir = await withTmpDir();
    await Deno.mkdir(join(dir.path, "a", "b"), { recursive: true });
    for (const f of ["x1.mrc", "x2.mrc", "y.txt", "a/z.mrc", "a/b/w.mrc"]) {
      await Deno.writeTextFile(join(dir.path, f), "");
    }
    const rel = (xs: string[]) => xs.map((x) => x.slice(dir.path.length + 1));
    assert.deepEqual(rel(await matchFiles(join(dir.path, "*.mrc"))), ["x1.mrc", "x2.mrc"]);
    assert.deepEqual(rel(await matchFiles(join(dir.path, "x?.mrc"))), ["x1.mrc", "x2.mrc"]);
    assert.deepEqual(rel(await matchFiles(join(dir.path, "x[2].mrc"))), ["x2.mrc"]);
    assert.deepEqual(rel(await matchFiles(join(dir.path, "**", "*.mrc"))), [
      "a/b/w.mrc",
      "a/z.mrc",
      "x1.mrc",
      "x2.mrc",
    ]);
    assert.deepEqual(rel(await matchFiles(join(dir.path, "y.txt"))), ["y.txt"]);
    assert.deepEqual(await matchFiles(join(dir.path, "missing", "*.mrc")), []);
  }, true);
}
