/**
 * Workers, on the embedded PGlite (in-process workers sharing the store) and on PostgreSQL (also
 * worker processes): 1,000 task instances executed exactly once, a worker killed with SIGKILL
 * mid-task and its task retried elsewhere, lost leases taken back, pool limits across workers,
 * enclave units claimed whole by one worker with nothing of them stored, and `dags trigger
 * --workers` drained by `worker --exit-when-idle`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { DataInterval } from "../../core/dag.ts";
import { runIdFor } from "../../core/job_key.ts";
import { loadDags } from "../../core/loader.ts";
import { claimUnits } from "../../core/run/plan.ts";
import { reapLost, runWorker, startRun } from "../../core/run/worker.ts";
import { openPostgresStore } from "../../core/state/postgres.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import type { Claim } from "../../core/state/store.ts";
import {
  BACKENDS,
  cli,
  CORE_MOD,
  notePostgresSkipped,
  seedHome,
  spawnCli,
  TEST_DATABASE_URL,
  testStore,
  waitFor,
} from "../test_utils.ts";

notePostgresSkipped();

const pg = { ignore: !TEST_DATABASE_URL, sanitizeResources: false, sanitizeOps: false };
const opts = { sanitizeResources: false, sanitizeOps: false };
type Backend = "pglite" | "postgres";
const DAY = 86_400_000;
const BASE = new Date("2026-03-01T00:00:00Z");
const dayInterval = (i: number): DataInterval => ({
  start: new Date(BASE.getTime() + i * DAY),
  end: new Date(BASE.getTime() + (i + 1) * DAY),
});

async function lines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

function duplicates(xs: string[]): string[] {
  const seen = new Set<string>();
  return xs.filter((x) => seen.has(x) || !seen.add(x));
}

/**
 * A store on a fresh database (PostgreSQL) or data folder (PGlite), its URL, a DAGs folder and a
 * home. On PGlite every in-process worker shares the one store (the embedded store serves one
 * process); on PostgreSQL each gets its own connections.
 */
async function world(backend: Backend = "postgres") {
  const store = await testStore(backend, "workers");
  let url = "";
  if (backend === "postgres") {
    const [{ db }] = await store.client.query<{ db: string }>(
      "SELECT current_database() AS db",
    ) as [{ db: string }];
    const u = new URL(TEST_DATABASE_URL!);
    u.pathname = `/${db}`;
    url = u.toString();
  }
  const dags = join(store.home, "dags");
  const home = join(store.home, "home");
  await Deno.mkdir(dags, { recursive: true });
  await Deno.mkdir(home, { recursive: true });
  const extra: SqlStateStore[] = [];
  const children: Worker[] = [];
  return {
    backend,
    store,
    url,
    dags,
    home,
    dir: store.home,
    env: { CARREL_DATABASE_URL: url, CARREL_DAGS_DIR: dags, CARREL_HOME: home },
    write: (name: string, source: string) => Deno.writeTextFile(join(dags, `${name}.ts`), source),
    /** A store for another worker: its own connections on PostgreSQL, the same one on PGlite. */
    async connect(): Promise<SqlStateStore> {
      if (backend === "pglite") return store;
      const s = await openPostgresStore(url);
      extra.push(s);
      return s;
    },
    /** A CLI process whose output is drained as it comes (a full pipe would block it). */
    spawn(args: string[]): Worker {
      const child = spawnCli(args, { cwd: store.home, env: this.env });
      const tail: string[] = [];
      const drain = async (stream: ReadableStream<Uint8Array>, keep: boolean) => {
        for await (const text of stream.pipeThrough(new TextDecoderStream())) {
          if (!keep) continue;
          tail.push(text);
          while (tail.length > 1 && tail.join("").length > 200_000) tail.shift();
        }
      };
      const drained = Promise.all([drain(child.stdout, false), drain(child.stderr, true)]);
      const worker = Object.assign(child, {
        stderr_: async () => {
          await drained.catch(() => {});
          return tail.join("");
        },
      });
      children.push(worker);
      return worker;
    },
    async dag(id: string) {
      const loaded = await loadDags(dags, { fresh: true });
      assert.deepEqual(loaded.errors, []);
      return loaded.dags.get(id)!;
    },
    async [Symbol.asyncDispose]() {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* already gone */ }
        await c.status;
      }
      for (const s of extra) await s.close().catch(() => {});
      await store.close();
    },
  };
}

/** A worker process, its stderr drained (the tail kept). */
type Worker = Deno.ChildProcess & { stderr_: () => Promise<string> };

/** Starts `n` in-process workers (each with its own connections on PostgreSQL). */
function startWorkers(
  w: Awaited<ReturnType<typeof world>>,
  n: number,
  options: { concurrency?: number; leaseMs?: number } = {},
) {
  const stop = new AbortController();
  const claims = Array.from({ length: n }, () => 0);
  const done = Promise.all(Array.from({ length: n }, async (_, i) =>
    runWorker({
      store: await w.connect(),
      dagsDir: w.dags,
      home: w.home,
      concurrency: options.concurrency ?? 1,
      leaseMs: options.leaseMs ?? 30_000,
      pollMs: 100,
      signal: stop.signal,
      onClaimDone: () => claims[i]!++,
    })));
  return {
    claims,
    async stop() {
      stop.abort();
      return await done;
    },
  };
}

async function runStates(store: SqlStateStore): Promise<Record<string, number>> {
  const rows = await store.client.query<{ state: string; n: number }>(
    "SELECT state, count(*)::int AS n FROM dag_runs GROUP BY state",
  );
  return Object.fromEntries(rows.map((r) => [r.state, Number(r.n)]));
}

const allFinal = (store: SqlStateStore, runs: number) => async () => {
  const s = await runStates(store);
  return (s.success ?? 0) + (s.failed ?? 0) === runs;
};

/** Runs `n` in-process workers until `runs` runs have ended; their claims per worker. */
async function drain(
  w: Awaited<ReturnType<typeof world>>,
  n: number,
  runs: number,
  options: { concurrency?: number; timeoutMs?: number } = {},
): Promise<number[]> {
  const workers = startWorkers(w, n, options);
  try {
    await waitFor(allFinal(w.store, runs), options.timeoutMs ?? 90_000, `${runs} runs to end`);
  } finally {
    await workers.stop();
  }
  return workers.claims;
}

/** Asserts that `runs` runs succeeded, naming the task instances that did not. */
async function assertSucceeded(store: SqlStateStore, runs: number): Promise<void> {
  const states = await runStates(store);
  if (states.success === runs && Object.keys(states).length === 1) return;
  const bad = await store.client.query(
    `SELECT run_id, task_id, state, try_number, error FROM task_instances
     WHERE state <> 'success' ORDER BY run_id, task_id LIMIT 20`,
  );
  assert.fail(`runs ${JSON.stringify(states)}: ${JSON.stringify(bad, null, 1)}`);
}

/** The audit operations of one task of a run, in chain order. */
async function operations(store: SqlStateStore, runId: string, taskId: string) {
  const rows = await store.client.query<{ operation: string; status: string }>(
    `SELECT operation, status FROM audit_log WHERE correlation_id = $1 AND task_id = $2
     ORDER BY seq`,
    [runId, taskId],
  );
  return rows.map((r) => `${r.operation}:${r.status}`);
}

// ---------------------------------------------------------------------------------------------

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `workers: 3 workers execute 1,000 task instances exactly once and every run succeeds [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const marker = join(w.dir, "executed.txt");
      // root -> 98 middle tasks -> sink: 100 task instances per run, 10 runs.
      const middle = Array.from({ length: 98 }, (_, i) => `m${String(i).padStart(2, "0")}`);
      const body = `async (ctx) => {
      await Deno.writeTextFile(${
        JSON.stringify(marker)
      }, ctx.runId + "/" + ctx.taskId + "/" + ctx.jobKey + "\\n", { append: true });
      return 1;
    }`;
      await w.write(
        "wide",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "wide",
  schedule: null,
  maxActiveTasks: 64,
  tasks: {
    root: task({ run: ${body} }),
    ${middle.map((m) => `${m}: task({ after: ["root"], run: ${body} }),`).join("\n    ")}
    sink: task({ after: ${JSON.stringify(middle)}, run: ${body} }),
  },
});
`,
      );
      const dag = await w.dag("wide");
      assert.equal(dag.order.length, 100);
      for (let i = 0; i < 10; i++) await startRun(w.store, dag, dayInterval(i), {}, "triggered");
      const claims = await drain(w, 3, 10, { concurrency: 4, timeoutMs: 240_000 });
      await assertSucceeded(w.store, 10);
      const executed = await lines(marker);
      assert.deepEqual(duplicates(executed), [], "a task instance was executed twice");
      assert.equal(executed.length, 1000);
      assert.equal(new Set(executed.map((l) => l.split("/")[2])).size, 1000, "1,000 job keys");
      const [ti] = await w.store.client.query<{ n: number; tries: number; ok: number }>(
        `SELECT count(*)::int AS n, max(try_number)::int AS tries,
         count(*) FILTER (WHERE state = 'success')::int AS ok FROM task_instances`,
      );
      assert.deepEqual({ n: Number(ti!.n), tries: Number(ti!.tries), ok: Number(ti!.ok) }, {
        n: 1000,
        tries: 1,
        ok: 1000,
      });
      // Every claim (or handoff) was one task; the workers' add up to 1,000.
      assert.equal(claims.reduce((a, b) => a + b, 0), 1000);
      // The audit trail has exactly one start and one success per task instance.
      for (const op of ["task:start", "task:success"]) {
        const [row] = await w.store.client.query<{ n: number; d: number }>(
          `SELECT count(*)::int AS n, count(DISTINCT (correlation_id, task_id))::int AS d
         FROM audit_log WHERE operation = $1`,
          [op],
        );
        assert.equal(Number(row!.n), 1000, op);
        assert.equal(Number(row!.d), 1000, op);
      }
      // Nothing is left leased, queued or counted as unfinished.
      const [left] = await w.store.client.query<
        { leased: number; ready: number; unfinished: number }
      >(
        `SELECT (SELECT count(*) FROM task_instances WHERE lease_token IS NOT NULL)::int AS leased,
           (SELECT count(*) FROM task_instances WHERE ready_at IS NOT NULL)::int AS ready,
           (SELECT sum(unfinished) FROM dag_runs)::int AS unfinished`,
      );
      assert.deepEqual(
        {
          leased: Number(left!.leased),
          ready: Number(left!.ready),
          unfinished: Number(left!.unfinished),
        },
        { leased: 0, ready: 0, unfinished: 0 },
      );
    },
  });

  Deno.test({
    name:
      `workers: a lease that expires (a worker elsewhere gone) is taken back; the lost attempt counts [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write(
        "lease",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "lease",
  schedule: null,
  tasks: {
    once: task({ run: () => 1 }),
    twice: task({ retries: 1, retryDelay: 0, run: (ctx) => ctx.attempt }),
  },
});
`,
      );
      const dag = await w.dag("lease");
      const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
      // A worker elsewhere (not this host, so only its lease tells) claims both and vanishes.
      const ghost = "elsewhere.example:4242:deadbeef";
      const c1 = await w.store.claimTask(ghost, 300);
      const c2 = await w.store.claimTask(ghost, 300);
      assert.ok(c1 && c1 !== "contended" && c2 && c2 !== "contended");
      assert.equal(await w.store.claimTask(ghost, 300), undefined);
      // Before the lease ends, nothing is reaped.
      assert.deepEqual(await reapLost(w.store, () => dag), []);
      const reaped = new Set<string>();
      await waitFor(async () => {
        for (const id of await reapLost(w.store, () => dag)) reaped.add(id);
        return (await w.store.leasedTasks()).length === 0;
      });
      assert.deepEqual([...reaped], [run.runId]);
      const tis = new Map((await w.store.listTaskInstances(run.runId)).map((t) => [t.taskId, t]));
      assert.equal(tis.get("once")!.state, "failed", "no attempt left");
      assert.match(tis.get("once")!.error ?? "", /^Lost: the process running attempt 1/);
      assert.equal(tis.get("twice")!.state, "up_for_retry");
      assert.equal(tis.get("twice")!.owner, null);
      assert.equal(tis.get("twice")!.leaseToken, null);
      assert.deepEqual(await operations(w.store, run.runId, "twice"), [
        "task:queued:queued",
        "task:lost:up_for_retry",
      ]);
      // A live worker finishes the retry (attempt 2 of 2); the run ends failed (a leaf failed).
      await drain(w, 1, 1);
      const after = new Map((await w.store.listTaskInstances(run.runId)).map((t) => [t.taskId, t]));
      assert.equal(after.get("twice")!.state, "success");
      assert.equal(after.get("twice")!.tryNumber, 2);
      assert.equal(after.get("twice")!.output, 2, "ctx.attempt is 2: the lost attempt counted");
      assert.equal((await w.store.getRun(run.runId))!.state, "failed");
    },
  });

  Deno.test({
    name:
      `workers: a late completion by a worker whose task was taken over is refused; its effects are recorded once [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write(
        "late",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "late",
  schedule: null,
  tasks: { work: task({ retries: 1, retryDelay: 0, run: () => "on time" }), after: task({ after: ["work"], run: () => 1 }) },
});
`,
      );
      const dag = await w.dag("late");
      const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
      // The first worker claims, then stalls past its lease; the reaper takes the task back and
      // a second worker claims it.
      const first = await w.store.claimTask("elsewhere.example:1:first", 100) as Claim;
      assert.ok(first?.tasks);
      await waitFor(async () => (await reapLost(w.store, () => dag)).length > 0);
      const second = await w.store.claimTask("elsewhere.example:2:second", 30_000) as Claim;
      assert.equal(second.tasks[0]!.jobKey, first.tasks[0]!.jobKey);
      assert.equal(second.tasks[0]!.tryNumber, 2);
      const [ti] = first.tasks;
      const success = (token: string, output: string) => ({
        runId: run.runId,
        guard: { task: { jobKey: ti!.jobKey, token } },
        tasks: [{
          jobKey: ti!.jobKey,
          from: "running" as const,
          token,
          patch: {
            state: "success" as const,
            output,
            outputKind: "json" as const,
            leaseToken: null,
          },
        }],
        finished: 1,
        audit: [{
          correlationId: run.runId,
          dagId: "late",
          taskId: "work",
          operation: "task:success",
          status: "success",
        }],
      });
      // The first worker's completion comes late: refused, nothing written.
      const head = await w.store.auditHead();
      assert.deepEqual(await w.store.applyBatch(success(first.token, "late")), {
        applied: false,
        reason: "fenced",
      });
      assert.deepEqual(await w.store.auditHead(), head, "a refused batch appends nothing");
      assert.equal(await w.store.confirmClaim(ti!.jobKey, first.token, []), false);
      assert.deepEqual([
        ...await w.store.renewTaskLeases(first.tasks[0]!.owner!, [first.token], 1000),
      ], []);
      // The second's is recorded.
      assert.equal((await w.store.applyBatch(success(second.token, "on time"))).applied, true);
      const after = await w.store.getTaskInstance(ti!.jobKey);
      assert.equal(after!.state, "success");
      assert.equal(after!.output, "on time");
      assert.equal(after!.tryNumber, 2);
      assert.deepEqual(
        (await operations(w.store, run.runId, "work")).filter((o) => o.startsWith("task:success")),
        ["task:success:success"],
      );
    },
  });

  Deno.test({
    name: `workers: a pool of 2 slots holds across 3 workers with concurrency 4 [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.store.setPool("ils", 2);
      const key = `__carrel_pool_${crypto.randomUUID().slice(0, 8)}`;
      const g = globalThis as unknown as Record<string, { active: number; max: number }>;
      g[key] = { active: 0, max: 0 };
      const ids = Array.from({ length: 10 }, (_, i) => `ils${i}`);
      await w.write(
        "pooled",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const body = async () => {
  const g = globalThis[${JSON.stringify(key)}];
  g.active++;
  g.max = Math.max(g.max, g.active);
  await new Promise((r) => setTimeout(r, 150));
  g.active--;
};
export default defineDag({
  id: "pooled",
  schedule: null,
  maxActiveTasks: 16,
  tasks: {
    ${ids.map((id) => `${id}: task({ pool: "ils", run: body }),`).join("\n    ")}
    free: task({ run: () => 0 }),
  },
});
`,
      );
      const dag = await w.dag("pooled");
      const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
      // Watch the store as well: never more than 2 pool slots held.
      let dbMax = 0;
      let watching = true;
      const watcher = (async () => {
        while (watching) {
          const [{ n }] = await w.store.client.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pool_slots WHERE pool = 'ils' AND holder IS NOT NULL",
          ) as [{ n: number }];
          dbMax = Math.max(dbMax, Number(n));
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      try {
        await drain(w, 3, 1, { concurrency: 4 });
      } finally {
        watching = false;
        await watcher;
      }
      assert.equal((await w.store.getRun(run.runId))!.state, "success");
      const stats = g[key]!;
      delete g[key];
      assert.ok(stats.max <= 2, `pool exceeded: ${stats.max} at once`);
      assert.equal(stats.max, 2, "the pool's two slots were used at once (not serialised)");
      assert.ok(dbMax <= 2, `pool exceeded in the store: ${dbMax}`);
      const pools = await w.store.listPools();
      assert.deepEqual(pools, [{ name: "ils", slots: 2, running: 0 }]);
    },
  });

  Deno.test({
    name:
      `workers: an enclave chain is one claim unit run by one worker; no enclave output is stored [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const sentinel = `PATRON-${crypto.randomUUID()}`;
      await w.write(
        "enclaved",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "enclaved",
  schedule: null,
  tasks: {
    extract: task({ zone: "enclave", run: () => [{ patron_id: ${
          JSON.stringify(sentinel)
        }, item: "b1" }, { patron_id: "p2", item: "b2" }] }),
    clean: task({ zone: "enclave", after: ["extract"], run: (ctx) =>
      ctx.inputs.extract.map((r) => ({ ...r, item: r.item.toUpperCase() })) }),
    cp: {
      operator: "privacyCheckpoint",
      checkpoint: true,
      zone: "inherit",
      after: ["clean"],
      run: (ctx) => ({ count: ctx.inputs.clean.length }),
    },
    load: task({ after: ["cp"], run: (ctx) => ctx.inputs.cp.count }),
    side: task({ run: () => "side" }),
  },
});
`,
      );
      const dag = await w.dag("enclaved");
      const units = claimUnits(dag);
      assert.equal(units.get("extract"), "extract");
      assert.equal(units.get("clean"), "extract");
      assert.equal(units.get("load"), null);
      assert.equal(units.get("side"), null);
      const runs = [];
      for (let i = 0; i < 6; i++) {
        runs.push(await startRun(w.store, dag, dayInterval(i), {}, "triggered"));
      }
      if (backend === "postgres") {
        // Worker processes.
        const workers = [0, 1, 2].map(() => w.spawn(["worker", "--concurrency", "2"]));
        await waitFor(allFinal(w.store, 6), 90_000, "6 runs to finish");
        for (const c of workers) c.kill("SIGTERM");
        await Promise.all(workers.map((c) => c.status));
      } else {
        await drain(w, 3, 6, { concurrency: 2 });
      }
      await assertSucceeded(w.store, 6);

      const unitIds = [...units].filter(([, u]) => u === "extract").map(([id]) => id);
      assert.ok(unitIds.includes("cp"), "the checkpoint belongs to the enclave unit");
      for (const run of runs) {
        const entries = await w.store.client.query<
          { task_id: string | null; operation: string; owner: string | null }
        >(
          `SELECT task_id, operation, detail->>'owner' AS owner FROM audit_log
         WHERE correlation_id = $1 ORDER BY seq`,
          [run.runId],
        );
        const starts = entries.filter((e) => e.operation === "task:start");
        const unit = starts.filter((s) => unitIds.includes(s.task_id!));
        assert.deepEqual(unit.map((s) => s.task_id).sort(), [...unitIds].sort(), "one start each");
        assert.equal(new Set(unit.map((s) => s.owner)).size, 1, "unit split across workers");
        assert.ok(unit[0]!.owner, "the worker names itself");
        // Recorded together: the unit's starts and successes are one block of the run's trail.
        const at = entries.map((e, i) =>
          unitIds.includes(e.task_id ?? "") && /^task:(start|success)$/.test(e.operation) ? i : -1
        ).filter((i) => i >= 0);
        assert.equal(at.length, unitIds.length * 2);
        assert.equal(at[at.length - 1]! - at[0]!, at.length - 1, "the unit's record is one block");
        const tis = await w.store.client.query<
          { task_id: string; output: unknown; output_kind: string | null; unit: string | null }
        >("SELECT task_id, output, output_kind, unit FROM task_instances WHERE run_id = $1", [
          run.runId,
        ]);
        const by = new Map(tis.map((t) => [t.task_id, t]));
        for (const id of ["extract", "clean"]) {
          assert.equal(by.get(id)!.output, null, `${id} output stored`);
          assert.equal(by.get(id)!.output_kind, "enclave");
          assert.equal(by.get(id)!.unit, "extract");
        }
        assert.deepEqual(by.get("cp")!.output, { count: 2 });
        assert.deepEqual(by.get("load")!.output, 2);
      }
      // The sentinel is nowhere in the database.
      for (const table of ["task_instances", "dag_runs", "audit_log"]) {
        const [{ n }] = await w.store.client.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM ${table} t WHERE t::text LIKE $1`,
          [`%${sentinel}%`],
        ) as [{ n: number }];
        assert.equal(Number(n), 0, `the enclave value is in ${table}`);
      }
    },
  });

  Deno.test({
    name:
      `workers: \`dags trigger --workers\` then \`worker --exit-when-idle\` completes the run [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const marker = join(w.dir, "executed.txt");
      await w.write(
        "trig",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const mark = (ctx) => Deno.writeTextFile(${
          JSON.stringify(marker)
        }, ctx.taskId + "\\n", { append: true });
export default defineDag({
  id: "trig",
  schedule: null,
  params: { n: 1 },
  tasks: {
    a: task({ run: async (ctx) => { await mark(ctx); return ctx.params.n; } }),
    b: task({ after: ["a"], run: async (ctx) => { await mark(ctx); return ctx.inputs.a + 1; } }),
    c: task({ after: ["a"], run: async (ctx) => { await mark(ctx); return ctx.inputs.a + 2; } }),
    d: task({ after: ["b", "c"], run: async (ctx) => { await mark(ctx); return ctx.inputs.b + ctx.inputs.c; } }),
  },
});
`,
      );
      // The embedded store is this test's own PGlite folder only on PostgreSQL; on PGlite the
      // CLI uses its home's store, one process at a time.
      const env = backend === "postgres" ? w.env : { CARREL_DAGS_DIR: w.dags, CARREL_HOME: w.home };
      if (backend === "pglite") await seedHome(w.home);
      const run = (args: string[]) => cli(args, { cwd: w.dir, env });
      const t = await run([
        "dags",
        "trigger",
        "trig",
        "--date",
        "2026-04-01T00:00:00Z",
        "--param",
        "n=5",
        "--workers",
        "--json",
      ]);
      assert.equal(t.code, 0, t.stderr);
      const queued = JSON.parse(t.stdout);
      assert.equal(queued.runId, runIdFor("trig", new Date("2026-04-01T00:00:00Z")));
      assert.equal(queued.executor, "workers");
      assert.equal(queued.created, true);
      assert.equal(queued.state, "running");
      assert.deepEqual(await lines(marker), [], "trigger executes nothing itself");
      const shown = JSON.parse((await run(["runs", "show", queued.runId, "--json"])).stdout);
      assert.deepEqual(
        shown.tasks.map((x: { taskId: string; state: string }) => [x.taskId, x.state]).sort(),
        [["a", "queued"], ["b", "scheduled"], ["c", "scheduled"], ["d", "scheduled"]],
      );

      const worker = await run(["worker", "--exit-when-idle", "--json"]);
      assert.equal(worker.code, 0, worker.stderr);
      assert.deepEqual(JSON.parse(worker.stdout), { executed: 4 });
      const show = await run(["runs", "show", queued.runId, "--json"]);
      assert.equal(show.code, 0, show.stderr);
      const doc = JSON.parse(show.stdout);
      assert.equal(doc.state, "success");
      assert.deepEqual(
        doc.tasks.map((x: { taskId: string; state: string }) => [x.taskId, x.state]).sort(),
        [["a", "success"], ["b", "success"], ["c", "success"], ["d", "success"]],
      );
      assert.equal(doc.tasks.find((x: { taskId: string }) => x.taskId === "d").output, 13);
      assert.equal((await lines(marker)).length, 4);

      // Triggering the same date again creates nothing and a drain executes nothing.
      const again = await run([
        "dags",
        "trigger",
        "trig",
        "--date",
        "2026-04-01T00:00:00Z",
        "--param",
        "n=5",
        "--workers",
        "--json",
      ]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(JSON.parse(again.stdout).created, false);
      const idle = await run(["worker", "--exit-when-idle", "--json"]);
      assert.equal(idle.code, 0, idle.stderr);
      assert.equal((await lines(marker)).length, 4);
      const badLease = await run(["worker", "--lease", "0", "--exit-when-idle"]);
      assert.equal(badLease.code, 2);
    },
  });

  Deno.test({
    name:
      `workers: \`runs resume\` of a worker run queues its failed task for workers again, running nothing itself [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const marker = join(w.dir, "executed.txt");
      const ok = join(w.dir, "ok");
      await w.write(
        "again",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const mark = (ctx) => Deno.writeTextFile(${
          JSON.stringify(marker)
        }, ctx.taskId + "\\n", { append: true });
const exists = (p) => Deno.stat(p).then(() => true, () => false);
export default defineDag({
  id: "again",
  schedule: null,
  tasks: {
    a: task({ run: async (ctx) => { await mark(ctx); return 1; } }),
    flaky: task({ after: ["a"], retries: 0, run: async (ctx) => {
      await mark(ctx);
      if (!(await exists(${JSON.stringify(ok)}))) throw new Error("marker file absent");
      return ctx.inputs.a + 1;
    } }),
    down: task({ after: ["flaky"], run: async (ctx) => { await mark(ctx); return ctx.inputs.flaky + 1; } }),
  },
});
`,
      );
      const env = backend === "postgres" ? w.env : { CARREL_DAGS_DIR: w.dags, CARREL_HOME: w.home };
      if (backend === "pglite") await seedHome(w.home);
      const run = (args: string[]) => cli(args, { cwd: w.dir, env });
      const states = (doc: { tasks: { taskId: string; state: string }[] }) =>
        Object.fromEntries(doc.tasks.map((x) => [x.taskId, x.state]));
      const t = await run([
        "dags",
        "trigger",
        "again",
        "--date",
        "2026-04-01T00:00:00Z",
        "--workers",
        "--json",
      ]);
      assert.equal(t.code, 0, t.stderr);
      const { runId } = JSON.parse(t.stdout);
      const drained = await run(["worker", "--exit-when-idle", "--json"]);
      assert.equal(drained.code, 0, drained.stderr);
      const failed = JSON.parse((await run(["runs", "show", runId, "--json"])).stdout);
      assert.equal(failed.state, "failed");
      assert.deepEqual(states(failed), { a: "success", flaky: "failed", down: "upstream_failed" });
      assert.deepEqual(await lines(marker), ["a", "flaky"]);

      await Deno.writeTextFile(ok, "");
      const resumed = await run(["runs", "resume", runId, "--json"]);
      assert.equal(resumed.code, 0, resumed.stderr);
      const doc = JSON.parse(resumed.stdout);
      assert.equal(doc.runId, runId);
      assert.equal(doc.executor, "workers");
      assert.equal(doc.state, "running");
      assert.deepEqual(states(doc), { a: "success", flaky: "queued", down: "scheduled" });
      assert.deepEqual(await lines(marker), ["a", "flaky"], "resume executes nothing itself");
      const text = await run(["runs", "resume", runId]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /Queued for workers/);
      assert.match(text.stdout, /deno task carrel worker/);

      const worker = await run(["worker", "--exit-when-idle", "--json"]);
      assert.equal(worker.code, 0, worker.stderr);
      assert.deepEqual(JSON.parse(worker.stdout), { executed: 2 });
      const done = JSON.parse((await run(["runs", "show", runId, "--json"])).stdout);
      assert.equal(done.state, "success");
      assert.deepEqual(states(done), { a: "success", flaky: "success", down: "success" });
      assert.equal(done.tasks.find((x: { taskId: string }) => x.taskId === "down").output, 3);
      assert.deepEqual(await lines(marker), ["a", "flaky", "flaky", "down"]);
    },
  });

  Deno.test({
    name:
      `workers: a worker takes the next ready task when one finishes, without waiting for its poll [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write(
        "independent",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "independent",
  schedule: null,
  tasks: { ${Array.from({ length: 6 }, (_, i) => `t${i}: task({ run: () => ${i} }),`).join(" ")} },
});
`,
      );
      const dag = await w.dag("independent");
      // Everything is queued up front: finishing a task queues nothing, so no notification comes.
      const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
      const stop = new AbortController();
      let claims = 0;
      const worker = runWorker({
        store: await w.connect(),
        dagsDir: w.dags,
        home: w.home,
        concurrency: 1,
        pollMs: 600_000, // a poll would outlast the test
        signal: stop.signal,
        onClaimDone: () => claims++,
      });
      try {
        await waitFor(
          async () => (await w.store.getRun(run.runId))?.state === "success",
          30_000,
          "six tasks drained by one worker",
        );
      } finally {
        stop.abort();
        await worker;
      }
      assert.equal(claims, 6);
    },
  });

  Deno.test({
    name:
      `workers: a run whose last worker stopped after its last task's end is ended by the reaper [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write(
        "pair",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "pair",
  schedule: null,
  tasks: { a: task({ run: () => 1 }), b: task({ after: ["a"], triggerRule: "all_failed", run: () => 2 }) },
});
`,
      );
      const dag = await w.dag("pair");
      const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
      // The state a worker leaves when it dies between its last task's end (committed) and the
      // run's end: every task final, the run still open.
      const strand = (ago: string) =>
        w.store.client.exec(
          `UPDATE task_instances SET state = CASE task_id WHEN 'a' THEN 'success' ELSE 'skipped' END,
             lease_token = NULL, ready_at = NULL;
           UPDATE dag_runs SET state = 'running', unfinished = 0,
             updated_at = now() - interval '${ago}';`,
        );
      await strand("0 seconds");
      // Its writer may still be about to end it: left alone for a while.
      assert.deepEqual(await reapLost(w.store, () => dag), []);
      assert.equal((await w.store.getRun(run.runId))?.state, "running");
      await strand("1 minute");
      assert.deepEqual(await reapLost(w.store, () => dag), [run.runId]);
      // Ended by the decider's rule (a skipped leaf does not fail a run), once.
      assert.equal((await w.store.getRun(run.runId))?.state, "success");
      assert.deepEqual(await reapLost(w.store, () => dag), []);
    },
  });

  Deno.test({
    name:
      `workers: a stop that comes while the worker is claiming ends it, without waiting for its poll [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const stop = new AbortController();
      const store = await w.connect();
      let claims = 0;
      // The stop lands while the claim is in flight: its abort event fires before the loop sleeps.
      const claiming = Object.assign(Object.create(store), {
        claimTask: async (owner: string, leaseMs: number) => {
          const claim = await store.claimTask(owner, leaseMs);
          if (++claims === 1) stop.abort();
          return claim;
        },
      }) as SqlStateStore;
      const worker = runWorker({
        store: claiming,
        dagsDir: w.dags,
        home: w.home,
        pollMs: 600_000, // a poll would outlast the test
        signal: stop.signal,
      });
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      const stuck = new Promise<"stuck">((resolve) => {
        watchdog = setTimeout(() => resolve("stuck"), 30_000);
      });
      try {
        assert.equal(await Promise.race([worker, stuck]), 0, "the worker ends when stopped");
      } finally {
        clearTimeout(watchdog);
      }
      assert.equal(claims, 1);
    },
  });

  Deno.test({
    name: `workers: tasks outside a full pool are not held up behind the pool's queue [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.store.setPool("ils", 1);
      const pooled = Array.from({ length: 40 }, (_, i) => `p${String(i).padStart(2, "0")}`);
      await w.write(
        "busy_pool",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "busy_pool",
  schedule: null,
  maxActiveTasks: 64,
  tasks: {
    ${
          pooled.map((id) =>
            `${id}: task({ pool: "ils", run: () => new Promise((r) => setTimeout(r, 50)) }),`
          ).join("\n    ")
        }
  },
});
`,
      );
      await w.write(
        "free_lane",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({ id: "free_lane", schedule: null, tasks: { free: task({ run: () => 1 }) } });
`,
      );
      const busy = await startRun(
        w.store,
        await w.dag("busy_pool"),
        dayInterval(0),
        {},
        "triggered",
      );
      // Queued after every pool task: the oldest ready tasks are all waiting for the pool.
      const free = await startRun(
        w.store,
        await w.dag("free_lane"),
        dayInterval(0),
        {},
        "triggered",
      );
      await drain(w, 2, 2, { concurrency: 2 });
      const [freeTi] = await w.store.listTaskInstances(free.runId);
      const before = (await w.store.listTaskInstances(busy.runId)).filter((t) =>
        t.startedAt! < freeTi!.startedAt!
      );
      // With one pool slot, the free task does not wait for the pool's queue to drain.
      assert.ok(before.length <= 4, `${before.length} pool tasks started before the free task`);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Worker processes (PostgreSQL)

Deno.test({
  name:
    "workers: a worker killed with SIGKILL mid-task loses nothing; another worker retries the task [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
    const holding = join(w.dir, "holding.txt");
    const marker = join(w.dir, "executed.txt");
    await w.write(
      "killme",
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const mark = (ctx) => Deno.writeTextFile(${
        JSON.stringify(marker)
      }, ctx.taskId + "/" + ctx.attempt + "/" + Deno.pid + "\\n", { append: true });
export default defineDag({
  id: "killme",
  schedule: null,
  tasks: {
    first: task({ run: async (ctx) => { await mark(ctx); return 1; } }),
    slow: task({ after: ["first"], retries: 1, retryDelay: "100ms", retryBackoff: "fixed", run: async (ctx) => {
      await mark(ctx);
      if (ctx.attempt === 1) {
        await Deno.writeTextFile(${JSON.stringify(holding)}, String(Deno.pid));
        await new Promise((r) => setTimeout(r, 60_000));
      }
      return ctx.inputs.first + 1;
    } }),
    last: task({ after: ["slow"], run: async (ctx) => { await mark(ctx); return ctx.inputs.slow; } }),
  },
});
`,
    );
    const dag = await w.dag("killme");
    const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
    const a = w.spawn(["worker", "--lease", "1"]);
    const b = w.spawn(["worker", "--lease", "1"]);
    await waitFor(async () => (await lines(holding)).length > 0, 60_000, "the slow task to start");
    const pid = Number((await Deno.readTextFile(holding)).trim());
    const victim = [a, b].find((c) => c.pid === pid);
    const survivor = [a, b].find((c) => c.pid !== pid)!;
    assert.ok(victim, `pid ${pid} is not one of the workers (${a.pid}, ${b.pid})`);
    const [held] = await w.store.client.query<{ owner: string; state: string }>(
      "SELECT owner, state FROM task_instances WHERE run_id = $1 AND task_id = 'slow'",
      [run.runId],
    );
    assert.equal(held!.state, "running");
    assert.equal(held!.owner.split(":")[1], String(pid));
    victim.kill("SIGKILL");
    const status = await victim.status;
    assert.equal(status.success, false);

    try {
      await waitFor(
        async () => (await w.store.getRun(run.runId))?.state === "success",
        60_000,
        "the run to finish on the surviving worker",
      );
    } catch (error) {
      survivor.kill("SIGKILL");
      console.error((await survivor.stderr_()).slice(-4000));
      console.error(JSON.stringify(await w.store.listTaskInstances(run.runId), null, 1));
      throw error;
    }
    const slow = (await w.store.listTaskInstances(run.runId)).find((t) => t.taskId === "slow")!;
    assert.equal(slow.state, "success");
    assert.equal(slow.tryNumber, 2);
    const executed = await lines(marker);
    assert.deepEqual(executed.filter((l) => l.startsWith("slow/")).map((l) => l.split("/")[1]), [
      "1",
      "2",
    ]);
    assert.equal(executed.filter((l) => l.startsWith("first/")).length, 1);
    assert.equal(executed.filter((l) => l.startsWith("last/")).length, 1);
    // The retry ran on the survivor.
    const second = executed.find((l) => l.startsWith("slow/2/"))!;
    assert.equal(second.split("/")[2], String(survivor.pid));
    // The audit trail says why.
    const ops = await operations(w.store, run.runId, "slow");
    assert.equal(ops.filter((o) => o === "task:lost:up_for_retry").length, 1, ops.join(", "));
  },
});

Deno.test({
  name:
    "workers: SIGSTOP past the lease, another worker takes over, SIGCONT: the late completion is refused, the effects recorded once [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
    const started = join(w.dir, "started.txt");
    const release = join(w.dir, "release");
    const late = join(w.dir, "late.txt");
    await w.write(
      "stalled",
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const exists = (p) => Deno.stat(p).then(() => true, () => false);
export default defineDag({
  id: "stalled",
  schedule: null,
  tasks: {
    effect: task({ retries: 1, retryDelay: 0, run: async (ctx) => {
      await Deno.writeTextFile(${
        JSON.stringify(started)
      }, Deno.pid + "/" + ctx.attempt + "\\n", { append: true });
      if (ctx.attempt === 1) {
        // A body that ignores its signal: it finishes when released, whatever happened meanwhile.
        while (!(await exists(${
        JSON.stringify(release)
      }))) await new Promise((r) => setTimeout(r, 20));
        await Deno.writeTextFile(${JSON.stringify(late)}, String(Deno.pid));
        return "late";
      }
      return "on time";
    } }),
  },
});
`,
    );
    const dag = await w.dag("stalled");
    const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
    const first = w.spawn(["worker", "--lease", "1"]);
    await waitFor(async () => (await lines(started)).length === 1, 60_000, "attempt 1 to start");
    assert.equal((await lines(started))[0], `${first.pid}/1`);
    first.kill("SIGSTOP");
    let stoppedUntil = true;
    try {
      // Past its lease, the second worker's reaper takes the task back and runs attempt 2.
      const second = w.spawn(["worker", "--lease", "1"]);
      await waitFor(
        async () => (await w.store.getRun(run.runId))?.state === "success",
        60_000,
        "the second worker to finish the task",
      );
      second.kill("SIGTERM");
      await second.status;
      await Deno.writeTextFile(release, "");
      first.kill("SIGCONT");
      stoppedUntil = false;
      // The first finishes its attempt late, and is then stopped; it writes nothing.
      await waitFor(async () => (await lines(late)).length === 1, 30_000, "the late body to end");
      first.kill("SIGTERM");
      const stderr = await first.stderr_();
      assert.match(stderr, /lease lost/i, stderr.slice(-2000));
    } finally {
      if (stoppedUntil) first.kill("SIGCONT");
    }
    const [ti] = await w.store.listTaskInstances(run.runId);
    assert.equal(ti!.state, "success");
    assert.equal(ti!.output, "on time");
    assert.equal(ti!.tryNumber, 2);
    assert.equal(ti!.leaseToken, null);
    // Attempt 1's start is in the trail if its worker recorded it before it was stopped (50 ms
    // in); its loss is, either way, with its number, its worker and when it started.
    const ops = (await operations(w.store, run.runId, "effect")).filter((o, i, all) =>
      !(o === "task:start:running" && all[i + 1] === "task:lost:up_for_retry")
    );
    assert.deepEqual(ops, [
      "task:queued:queued",
      "task:lost:up_for_retry",
      "task:start:running",
      "task:success:success",
    ]);
    const [lost] = await w.store.client.query<{ detail: Record<string, unknown> }>(
      "SELECT detail FROM audit_log WHERE correlation_id = $1 AND operation = 'task:lost'",
      [run.runId],
    );
    assert.equal(lost!.detail.attempt, 1);
    assert.equal(lost!.detail.owner, `${Deno.hostname()}:${first.pid}`);
    assert.ok(typeof lost!.detail.startedAt === "string");
    assert.equal((await w.store.getRun(run.runId))!.state, "success");
  },
});

Deno.test({
  name:
    "workers: 4 worker processes, one killed with SIGKILL midway: every task instance succeeds exactly once [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
    const marker = join(w.dir, "executed.txt");
    const perRun = 20;
    const runs = 20;
    await w.write(
      "many",
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const body = async (ctx) => {
  await new Promise((r) => setTimeout(r, 5));
  await Deno.writeTextFile(${JSON.stringify(marker)}, ctx.jobKey + "\\n", { append: true });
  return 1;
};
export default defineDag({
  id: "many",
  schedule: null,
  tasks: { ${
        Array.from({ length: perRun }, (_, i) =>
          `n${i}: task({ retries: 1, retryDelay: 0, run: body }),`)
          .join(" ")
      } },
});
`,
    );
    const dag = await w.dag("many");
    for (let i = 0; i < runs; i++) await startRun(w.store, dag, dayInterval(i), {}, "triggered");
    const workers = [0, 1, 2, 3].map(() => w.spawn(["worker", "--lease", "1"]));
    const total = runs * perRun;
    await waitFor(async () => (await lines(marker)).length >= total / 2, 120_000, "half done");
    workers[0]!.kill("SIGKILL");
    await workers[0]!.status;
    await waitFor(allFinal(w.store, runs), 120_000, "every run to end");
    for (const c of workers.slice(1)) c.kill("SIGTERM");
    await Promise.all(workers.slice(1).map((c) => c.status));
    assert.deepEqual(await runStates(w.store), { success: runs });
    const [row] = await w.store.client.query<{ n: number; ok: number; successes: number }>(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE state = 'success')::int AS ok,
         (SELECT count(*) FROM audit_log WHERE operation = 'task:success')::int AS successes
       FROM task_instances`,
    );
    assert.deepEqual(
      { n: Number(row!.n), ok: Number(row!.ok), successes: Number(row!.successes) },
      { n: total, ok: total, successes: total },
    );
    // Executed twice only when the first attempt was lost with the killed worker.
    const executed = await lines(marker);
    const twice = new Set(duplicates(executed));
    const lost = new Set(
      (await w.store.client.query<{ job_key: string }>(
        `SELECT t.job_key FROM task_instances t JOIN audit_log a
           ON a.correlation_id = t.run_id AND a.task_id = t.task_id AND a.operation = 'task:lost'`,
      )).map((r) => r.job_key),
    );
    for (const key of twice) assert.ok(lost.has(key), `${key} ran twice without a lost attempt`);
    assert.equal(new Set(executed).size, total);
  },
});

Deno.test({
  name:
    "workers: a claim passes over the tasks of a run another transaction is writing, unless every ready task's run is [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
    await w.write(
      "spread",
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "spread",
  schedule: null,
  tasks: { a: task({ run: () => 1 }), b: task({ run: () => 2 }) },
});
`,
    );
    const dag = await w.dag("spread");
    const older = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
    const newer = await startRun(w.store, dag, dayInterval(1), {}, "triggered");
    const writer = await w.connect();
    const claimer = await w.connect();
    const runOf = (c: Claim | "contended" | undefined) => {
      assert.ok(c && c !== "contended", "a claim");
      return c.run.runId;
    };
    // Another worker records a task's end in the older run: its run row is locked meanwhile.
    const locked = (runIds: string[], then: () => Promise<void>) =>
      writer.client.transaction(async (tx) => {
        await tx.query("UPDATE dag_runs SET updated_at = now() WHERE run_id = ANY($1::text[])", [
          runIds,
        ]);
        await then();
      });
    await locked([older.runId], async () => {
      assert.equal(runOf(await claimer.claimTask("w:1:spread", 30_000)), newer.runId);
    });
    // Nothing else locked: the oldest again.
    assert.equal(runOf(await claimer.claimTask("w:1:spread", 30_000)), older.runId);
    // Every ready task's run is being written: a claim still takes the oldest, it never waits.
    await locked([older.runId, newer.runId], async () => {
      assert.equal(runOf(await claimer.claimTask("w:1:spread", 30_000)), older.runId);
    });
    assert.equal(runOf(await claimer.claimTask("w:1:spread", 30_000)), newer.runId);
    assert.equal(await claimer.claimTask("w:1:spread", 30_000), undefined);
  },
});
