/**
 * The scheduler on PGlite and PostgreSQL: catchup runs created and executed once, paused DAGs,
 * `maxActiveRuns`, broken DAG files, triggered runs, and two schedulers on one database (no
 * duplicate runs; the advisory lock makes one a standby).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runIdFor } from "../../core/job_key.ts";
import { loadDags } from "../../core/loader.ts";
import { paramsHash } from "../../core/run/plan.ts";
import { acquireLeadership, runScheduler, schedulerPass } from "../../core/scheduler.ts";
import { openPostgresStore } from "../../core/state/postgres.ts";
import { openPgliteStore } from "../../core/state/pglite.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import {
  BACKENDS,
  cli,
  CORE_MOD,
  notePostgresSkipped,
  seedHome,
  TEST_DATABASE_URL,
  testStore,
  waitFor,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

const DAY = 86_400_000;
/** Midnight UTC today, minus `days`. */
const midnight = (days = 0) => new Date(Math.floor(Date.now() / DAY) * DAY - days * DAY);

/**
 * A DAG file: `tasks` tasks in a chain (`t0 -> t1 -> ...`), each appending `runId/taskId` to
 * the marker file; `extra` goes into the config.
 */
function dagSource(
  id: string,
  marker: string,
  options: { tasks?: number; extra?: string; body?: string } = {},
): string {
  const n = options.tasks ?? 2;
  const tasks = Array.from(
    { length: n },
    (_, i) =>
      `t${i}: task({ ${i > 0 ? `after: ["t${i - 1}"], ` : ""}run: async (ctx) => {
      ${options.body ?? ""}
      await Deno.writeTextFile(${
        JSON.stringify(marker)
      }, ctx.runId + "/" + ctx.taskId + "\\n", { append: true });
      return ${i};
    } }),`,
  ).join("\n    ");
  return `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: ${JSON.stringify(id)},
  schedule: "0 0 * * *",
  start: ${JSON.stringify(midnight(3).toISOString())},
  catchup: true,
  ${options.extra ?? ""}
  tasks: {
    ${tasks}
  },
});
`;
}

async function markers(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

function duplicates(lines: string[]): string[] {
  const seen = new Set<string>();
  return lines.filter((l) => seen.has(l) || !seen.add(l));
}

async function runsPerDate(store: SqlStateStore, dagId: string) {
  return await store.client.query<{ logical_date: Date | string; n: number }>(
    `SELECT logical_date, count(*)::int AS n FROM dag_runs WHERE dag_id = $1
     GROUP BY logical_date ORDER BY logical_date`,
    [dagId],
  );
}

async function world(backend: "pglite" | "postgres") {
  const store = await testStore(backend, "sched");
  const dags = join(store.home, "dags");
  await Deno.mkdir(dags, { recursive: true });
  const marker = join(store.home, "marker.txt");
  return {
    store,
    dags,
    marker,
    home: join(store.home, "home"),
    write: (name: string, source: string) => Deno.writeTextFile(join(dags, name), source),
    async [Symbol.asyncDispose]() {
      await store.close();
    },
  };
}

const pgOnly = { ignore: !TEST_DATABASE_URL, sanitizeResources: false, sanitizeOps: false };

for (const backend of BACKENDS) {
  const opts = { sanitizeResources: false, sanitizeOps: false };

  Deno.test({
    name:
      `scheduler: --once on a catchup DAG creates and runs every due run; a second pass adds nothing [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      // Four days since start, `end` at today's midnight: exactly three intervals are due.
      await w.write(
        "catch.ts",
        dagSource("catch", w.marker, {
          extra: `end: ${JSON.stringify(midnight(0).toISOString())}, maxActiveRuns: 2,`,
        }),
      );
      const reports = await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      const created = reports.flatMap((r) => r.created);
      assert.equal(created.length, 3);
      assert.deepEqual(reports.flatMap((r) => r.errors), []);
      const results = reports.flatMap((r) => r.results);
      assert.equal(results.length, 3);
      assert.ok(results.every((r) => r.state === "success"), JSON.stringify(results));

      const runs = await w.store.listRuns({ dagId: "catch" });
      assert.equal(runs.length, 3);
      assert.ok(runs.every((r) => r.state === "success" && r.runType === "scheduled"));
      assert.deepEqual(
        runs.map((r) => r.logicalDate.toISOString()).sort(),
        [midnight(3), midnight(2), midnight(1)].map((d) => d.toISOString()),
      );
      const first = await markers(w.marker);
      assert.equal(first.length, 6, first.join(","));
      assert.deepEqual(duplicates(first), []);

      const again = await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.deepEqual(again.flatMap((r) => r.created), []);
      assert.deepEqual(again.flatMap((r) => r.started), []);
      assert.equal((await w.store.listRuns({ dagId: "catch" })).length, 3);
      assert.equal((await markers(w.marker)).length, 6, "no task executed again");
    },
  });

  Deno.test({
    name: `scheduler: a paused DAG gets no runs; unpaused, it catches up [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write("paused.ts", dagSource("paused_dag", w.marker, { tasks: 1 }));
      await w.write("active.ts", dagSource("active_dag", w.marker, { tasks: 1 }));
      await w.store.setPaused("paused_dag", true);
      const reports = await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.equal((await w.store.listRuns({ dagId: "paused_dag" })).length, 0);
      assert.ok(reports.flatMap((r) => r.created).every((id) => id.startsWith("active_dag@")));
      assert.ok((await w.store.listRuns({ dagId: "active_dag" })).length >= 3);
      assert.ok((await markers(w.marker)).every((l) => l.startsWith("active_dag@")));

      await w.store.setPaused("paused_dag", false);
      await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      const runs = await w.store.listRuns({ dagId: "paused_dag" });
      assert.ok(runs.length >= 3);
      assert.ok(runs.every((r) => r.state === "success"));
    },
  });

  Deno.test({
    name: `scheduler: maxActiveRuns bounds the runs started and running at once [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      // Tasks wait on a gate held in globalThis (DAG files are imported into this process).
      const gateKey = `__carrel_gate_${crypto.randomUUID().slice(0, 8)}`;
      const g = globalThis as unknown as Record<
        string,
        { open: Promise<void>; active: number; max: number }
      >;
      let release!: () => void;
      g[gateKey] = { open: new Promise<void>((r) => release = r), active: 0, max: 0 };
      await w.write(
        "limited.ts",
        dagSource("limited", w.marker, {
          tasks: 1,
          extra: "maxActiveRuns: 2,",
          body: `const g = globalThis[${JSON.stringify(gateKey)}];
      g.active++; g.max = Math.max(g.max, g.active);
      await g.open;
      g.active--;`,
        }),
      );
      const loaded = await loadDags(w.dags, { fresh: true });
      assert.deepEqual(loaded.errors, []);
      const running = new Map();
      const pass1 = await schedulerPass(loaded, {
        store: w.store,
        home: w.home,
        mode: "local",
        running,
      });
      assert.ok(pass1.created.length >= 3, `created ${pass1.created.length}`);
      assert.equal(pass1.started.length, 2);
      // Oldest first.
      assert.deepEqual(pass1.started, [
        runIdFor("limited", midnight(3)),
        runIdFor("limited", midnight(2)),
      ]);
      await waitFor(
        async () =>
          (await w.store.listRuns({ dagId: "limited", states: ["running"] })).length === 2,
        20_000,
        "two running runs",
      );
      // Two runs are running: a further pass starts nothing (in this process or from the count).
      const pass2 = await schedulerPass(loaded, {
        store: w.store,
        home: w.home,
        mode: "local",
        running,
      });
      assert.deepEqual(pass2.started, []);
      const pass3 = await schedulerPass(loaded, {
        store: w.store,
        home: w.home,
        mode: "local",
        running: new Map(),
      });
      assert.deepEqual(pass3.started, [], "the running count in the store is honoured");
      // A run is marked running before its task starts: wait until both tasks are inside the gate.
      await waitFor(() => g[gateKey]!.active === 2, 20_000, "both tasks inside the gate");
      release();
      await Promise.all(running.values());
      // The rest runs within the limit too.
      await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      const runs = await w.store.listRuns({ dagId: "limited" });
      assert.ok(runs.length >= 3 && runs.every((r) => r.state === "success"));
      assert.equal(g[gateKey]!.max, 2);
      delete g[gateKey];
    },
  });

  Deno.test({
    name: `scheduler: a DAG file that fails to load does not stop the other DAGs [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write("a_broken.ts", "export default {{ not typescript");
      await w.write(
        "b_invalid.ts",
        `import { defineDag, task } from ${
          JSON.stringify(CORE_MOD)
        };\nexport default defineDag({ id: "Bad Id", tasks: { t: task({ run: () => 1 }) } });\n`,
      );
      await w.write("c_good.ts", dagSource("good", w.marker, { tasks: 1 }));
      const loaded = await loadDags(w.dags, { fresh: true });
      assert.equal(loaded.errors.length, 2);
      const reports = await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.ok(reports.flatMap((r) => r.created).length >= 3);
      const runs = await w.store.listRuns({ dagId: "good" });
      assert.ok(runs.length >= 3 && runs.every((r) => r.state === "success"));
    },
  });

  Deno.test({
    name: `scheduler: a triggered run (queued, local) is executed by the next pass [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write(
        "manual.ts",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "manual",
  schedule: null,
  params: { n: 1 },
  tasks: { only: task({ run: async (ctx) => {
    await Deno.writeTextFile(${
          JSON.stringify(w.marker)
        }, ctx.runId + "/" + ctx.params.n + "\\n", { append: true });
  } }) },
});
`,
      );
      const date = new Date("2026-04-01T12:00:00Z");
      const runId = runIdFor("manual", date);
      const params = { n: 7 };
      const { created } = await w.store.createRun({
        runId,
        dagId: "manual",
        logicalDate: date,
        intervalStart: date,
        intervalEnd: date,
        params,
        paramsHash: paramsHash(params),
        runType: "triggered",
        state: "queued",
        executor: "local",
      });
      assert.ok(created);
      const reports = await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.deepEqual(reports.flatMap((r) => r.started), [runId]);
      const run = await w.store.getRun(runId);
      assert.equal(run?.state, "success");
      assert.equal(run?.runType, "triggered");
      assert.deepEqual(await markers(w.marker), [`${runId}/7`]);
      // Done: the next pass leaves it alone.
      const again = await runScheduler({
        store: w.store,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.deepEqual(again.flatMap((r) => r.started), []);
      assert.equal((await markers(w.marker)).length, 1);
    },
  });
}

Deno.test({
  name:
    "scheduler: `dags trigger` then `scheduler --once` via the CLI runs the queued run [pglite]",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using dir = await withTmpDir();
    const home = join(dir.path, "home");
    await seedHome(home);
    const dags = join(dir.path, "dags");
    await Deno.mkdir(dags);
    const marker = join(dir.path, "marker.txt");
    await Deno.writeTextFile(
      join(dags, "trig.ts"),
      dagSource("trig", marker, { tasks: 2 }).replace("catchup: true", "catchup: false")
        .replace('schedule: "0 0 * * *"', "schedule: null").replace(/start: "[^"]*",/, ""),
    );
    const env = { CARREL_HOME: home, CARREL_DAGS_DIR: dags };
    const t = await cli(["dags", "trigger", "trig", "--date", "2026-04-02T00:00:00Z", "--json"], {
      cwd: dir.path,
      env,
    });
    assert.equal(t.code, 0, t.stderr);
    const queued = JSON.parse(t.stdout);
    assert.equal(queued.state, "queued");
    assert.equal(queued.created, true);
    assert.deepEqual(await markers(marker), []);
    const s = await cli(["scheduler", "--once", "--json"], { cwd: dir.path, env });
    assert.equal(s.code, 0, s.stderr);
    const out = JSON.parse(s.stdout);
    assert.deepEqual(out.started, [queued.runId]);
    assert.equal(out.runs[0].state, "success");
    assert.deepEqual((await markers(marker)).sort(), [
      `${queued.runId}/t0`,
      `${queued.runId}/t1`,
    ]);
  },
});

// ---------------------------------------------------------------------------------------------
// Two schedulers on one PostgreSQL database

Deno.test({
  name: "scheduler: two schedulers at once on one database create each run once [postgres]",
  ...pgOnly,
  fn: async () => {
    await using w = await world("postgres");
    await w.write(
      "twice.ts",
      dagSource("twice", w.marker, { tasks: 3, extra: "maxActiveRuns: 3," }),
    );
    const db = (await w.store.client.query<{ db: string }>("SELECT current_database() AS db"))[0]!
      .db;
    const u = new URL(TEST_DATABASE_URL!);
    u.pathname = `/${db}`;
    const other = await openPostgresStore(u.toString());
    try {
      const [a, b] = await Promise.all([
        runScheduler({ store: w.store, dagsDir: w.dags, home: w.home, mode: "local", once: true }),
        runScheduler({ store: other, dagsDir: w.dags, home: w.home, mode: "local", once: true }),
      ]);
      const created = [...a, ...b].flatMap((r) => r.created);
      assert.equal(new Set(created).size, created.length, "a run was created twice");
      const perDate = await runsPerDate(w.store, "twice");
      assert.ok(perDate.length >= 3, JSON.stringify(perDate));
      assert.ok(perDate.every((r) => Number(r.n) === 1), JSON.stringify(perDate));
      // Whatever ran, ran once.
      const lines = await markers(w.marker);
      assert.deepEqual(duplicates(lines), []);
      // Another pass finishes anything a standby left; still one run per date, every task once.
      await runScheduler({
        store: other,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      const runs = await w.store.listRuns({ dagId: "twice" });
      assert.ok(runs.every((r) => r.state === "success"), JSON.stringify(runs.map((r) => r.state)));
      const all = await markers(w.marker);
      assert.equal(all.length, runs.length * 3);
      assert.deepEqual(duplicates(all), []);

      // Passes without the lock, concurrently: the unique (dag_id, logical_date) still holds.
      await w.write(
        "race.ts",
        dagSource("race", w.marker, { tasks: 1 }).replace(
          /start: "[^"]*"/,
          () => `start: ${JSON.stringify(midnight(20).toISOString())}`,
        ),
      );
      const loaded = await loadDags(w.dags, { fresh: true });
      await Promise.all([
        schedulerPass(loaded, { store: w.store, home: w.home, mode: "workers" }),
        schedulerPass(loaded, { store: other, home: w.home, mode: "workers" }),
        schedulerPass(loaded, { store: other, home: w.home, mode: "workers" }),
      ]);
      const race = await runsPerDate(w.store, "race");
      assert.ok(race.length >= 20, `${race.length} dates`);
      assert.ok(race.every((r) => Number(r.n) === 1), JSON.stringify(race));
      // And the constraint itself refuses a second run for a date under another id.
      const [first] = await w.store.listRuns({ dagId: "race", limit: 1 });
      await assert.rejects(
        w.store.client.query(
          `INSERT INTO dag_runs (run_id, dag_id, logical_date, interval_start, interval_end, params,
             params_hash, run_type, state) VALUES ($1, $2, $3, $3, $3, '{}', 'x', 'scheduled', 'queued')`,
          ["race@duplicate", "race", first!.logicalDate],
        ),
        /duplicate key|unique/i,
      );
    } finally {
      await other.close();
    }
  },
});

Deno.test({
  name:
    "scheduler: two `scheduler --once` CLI processes on one database: one run per date [postgres]",
  ...pgOnly,
  fn: async () => {
    await using w = await world("postgres");
    await w.write("cli_twice.ts", dagSource("cli_twice", w.marker, { tasks: 2 }));
    const db = (await w.store.client.query<{ db: string }>("SELECT current_database() AS db"))[0]!
      .db;
    const u = new URL(TEST_DATABASE_URL!);
    u.pathname = `/${db}`;
    const env = {
      CARREL_DATABASE_URL: u.toString(),
      CARREL_DAGS_DIR: w.dags,
      CARREL_HOME: w.home,
    };
    const [a, b] = await Promise.all([
      cli(["scheduler", "--once", "--json"], { cwd: w.store.home, env }),
      cli(["scheduler", "--once", "--json"], { cwd: w.store.home, env }),
    ]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const perDate = await runsPerDate(w.store, "cli_twice");
    assert.ok(perDate.length >= 3);
    assert.ok(perDate.every((r) => Number(r.n) === 1), JSON.stringify(perDate));
    const created = [JSON.parse(a.stdout), JSON.parse(b.stdout)].flatMap((o) => o.created);
    assert.equal(created.length, perDate.length, "each run created by exactly one scheduler");
    const lines = await markers(w.marker);
    assert.deepEqual(duplicates(lines), []);
    assert.equal(lines.length, perDate.length * 2);
  },
});

Deno.test({
  name: "scheduler: the advisory lock makes a second scheduler a standby until released [postgres]",
  ...pgOnly,
  fn: async () => {
    await using w = await world("postgres");
    const db = (await w.store.client.query<{ db: string }>("SELECT current_database() AS db"))[0]!
      .db;
    const u = new URL(TEST_DATABASE_URL!);
    u.pathname = `/${db}`;
    const other = await openPostgresStore(u.toString());
    try {
      const first = await acquireLeadership(w.store);
      const second = await acquireLeadership(other);
      assert.equal(await first.held(), true);
      assert.equal(await second.held(), false, "the second scheduler must stand by");
      assert.equal(await first.held(), true, "still held by the first");
      assert.equal(await second.held(), false);
      await first.release();
      assert.equal(await second.held(), true, "the standby takes over after release");
      // And the former leader is now the standby.
      const third = await acquireLeadership(w.store);
      assert.equal(await third.held(), false);
      await third.release();
      await second.release();

      // A standby scheduler creates nothing while the leader holds the lock.
      await w.write("standby.ts", dagSource("standby", w.marker, { tasks: 1 }));
      const leader = await acquireLeadership(w.store);
      assert.equal(await leader.held(), true);
      const reports = await runScheduler({
        store: other,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.deepEqual(reports, []);
      assert.equal((await w.store.listRuns({ dagId: "standby" })).length, 0);
      await leader.release();
      const after = await runScheduler({
        store: other,
        dagsDir: w.dags,
        home: w.home,
        mode: "local",
        once: true,
      });
      assert.ok(after.flatMap((r) => r.created).length >= 3);
    } finally {
      await other.close();
    }
  },
});

Deno.test("scheduler: on the embedded store a second scheduler is a standby until released [pglite]", async () => {
  const home = await Deno.makeTempDir({ prefix: "carrel-leader-" });
  const store = await openPgliteStore(join(home, "state"));
  try {
    const first = await acquireLeadership(store);
    const second = await acquireLeadership(store);
    assert.equal(await first.held(), true);
    assert.equal(await second.held(), false, "the second scheduler must stand by");
    assert.equal(await first.held(), true, "still held by the first");
    await first.release();
    assert.equal(await second.held(), true, "the standby takes over after release");
    const third = await acquireLeadership(store);
    assert.equal(await third.held(), false);
    await third.release();
    await second.release();
  } finally {
    await store.close();
    await Deno.remove(home, { recursive: true });
  }
});
