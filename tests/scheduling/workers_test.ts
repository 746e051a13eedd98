/**
 * Workers on PostgreSQL (multi-process): 1,000 task instances executed exactly once by three
 * workers, a worker killed with SIGKILL mid-task and its task retried elsewhere, pool limits
 * across workers, enclave units claimed whole by one worker with nothing of them stored, and
 * `dags trigger --workers` drained by `worker --exit-when-idle`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { DataInterval } from "../../core/dag.ts";
import { claimNext, claimUnits, reapLost, startRun } from "../../core/distributed.ts";
import { runIdFor } from "../../core/job_key.ts";
import { loadDags } from "../../core/loader.ts";
import { openPostgresStore } from "../../core/state/postgres.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import { runWorker } from "../../core/worker.ts";
import {
  cli,
  CORE_MOD,
  notePostgresSkipped,
  spawnCli,
  TEST_DATABASE_URL,
  testStore,
  waitFor,
} from "../test_utils.ts";

notePostgresSkipped();

const pg = { ignore: !TEST_DATABASE_URL, sanitizeResources: false, sanitizeOps: false };
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

/** A PostgreSQL store on a fresh database, its URL, a DAGs folder and a home. */
async function world() {
  const store = await testStore("postgres", "workers");
  const [{ db }] = await store.client.query<{ db: string }>(
    "SELECT current_database() AS db",
  ) as [{ db: string }];
  const u = new URL(TEST_DATABASE_URL!);
  u.pathname = `/${db}`;
  const url = u.toString();
  const dags = join(store.home, "dags");
  const home = join(store.home, "home");
  await Deno.mkdir(dags, { recursive: true });
  await Deno.mkdir(home, { recursive: true });
  const extra: SqlStateStore[] = [];
  const children: Deno.ChildProcess[] = [];
  return {
    store,
    url,
    dags,
    home,
    dir: store.home,
    env: { CARREL_DATABASE_URL: url, CARREL_DAGS_DIR: dags, CARREL_HOME: home },
    write: (name: string, source: string) => Deno.writeTextFile(join(dags, `${name}.ts`), source),
    /** Another store (its own connections) on the same database. */
    connect(): SqlStateStore {
      const s = openPostgresStore(url);
      extra.push(s);
      return s;
    },
    spawn(args: string[]): Deno.ChildProcess {
      const child = spawnCli(args, { cwd: store.home, env: this.env });
      children.push(child);
      return child;
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
        await c.output().catch(() => {});
      }
      for (const s of extra) await s.close().catch(() => {});
      await store.close();
    },
  };
}

/** Starts `n` in-process workers, each with its own store connections. */
function startWorkers(
  w: Awaited<ReturnType<typeof world>>,
  n: number,
  options: { concurrency?: number; leaseMs?: number } = {},
) {
  const stop = new AbortController();
  const claims = Array.from({ length: n }, () => 0);
  const done = Promise.all(Array.from({ length: n }, (_, i) =>
    runWorker({
      store: w.connect(),
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

// ---------------------------------------------------------------------------------------------

Deno.test({
  name:
    "workers: 3 workers execute 1,000 task instances exactly once and every run succeeds [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
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
    const workers = startWorkers(w, 3, { concurrency: 4 });
    try {
      await waitFor(allFinal(w.store, 10), 120_000, "10 runs to finish");
    } finally {
      await workers.stop();
    }
    assert.deepEqual(await runStates(w.store), { success: 10 });
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
    // Every claim was one task; the workers' claims add up to 1,000.
    assert.equal(workers.claims.reduce((a, b) => a + b, 0), 1000);
    // The audit trail has exactly one start per task instance.
    const [starts] = await w.store.client.query<{ n: number; d: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT (correlation_id, task_id))::int AS d
       FROM audit_log WHERE operation = 'task:start'`,
    );
    assert.equal(Number(starts!.n), 1000);
    assert.equal(Number(starts!.d), 1000);
  },
});

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
      const out = await survivor.output();
      console.error(new TextDecoder().decode(out.stderr).slice(-4000));
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
    const [lost] = await w.store.client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_log WHERE correlation_id = $1 AND task_id = 'slow'
         AND operation = 'task:lease_expired' AND status = 'up_for_retry'`,
      [run.runId],
    );
    assert.equal(Number(lost!.n), 1);
  },
});

Deno.test({
  name:
    "workers: an expired lease of a worker on another host is taken back by the reaper [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
    await w.write(
      "lease",
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "lease",
  schedule: null,
  tasks: {
    once: task({ run: () => 1 }),
    twice: task({ retries: 1, retryDelay: 0, run: () => 2 }),
  },
});
`,
    );
    const dag = await w.dag("lease");
    const run = await startRun(w.store, dag, dayInterval(0), {}, "triggered");
    // A worker elsewhere (not this host, so only its lease tells) claims both and vanishes.
    const ghost = "elsewhere.example:4242:deadbeef";
    const c1 = await claimNext(w.store, ghost, 200);
    const c2 = await claimNext(w.store, ghost, 200);
    assert.ok(c1 && c2);
    assert.equal(await claimNext(w.store, ghost, 200), undefined);
    // Before the lease ends, nothing is reaped.
    assert.deepEqual(await reapLost(w.store, () => dag), []);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await reapLost(w.store, () => dag), [run.runId]);
    const tis = new Map((await w.store.listTaskInstances(run.runId)).map((t) => [t.taskId, t]));
    assert.equal(tis.get("once")!.state, "failed", "no attempt left");
    assert.equal(tis.get("twice")!.state, "up_for_retry");
    assert.equal(tis.get("twice")!.owner, null);
    // A live worker finishes the retry; the run ends failed (one leaf failed).
    const workers = startWorkers(w, 1);
    try {
      await waitFor(allFinal(w.store, 1), 30_000, "the run to end");
    } finally {
      await workers.stop();
    }
    const after = new Map((await w.store.listTaskInstances(run.runId)).map((t) => [t.taskId, t]));
    assert.equal(after.get("twice")!.state, "success");
    assert.equal(after.get("twice")!.tryNumber, 2);
    assert.equal((await w.store.getRun(run.runId))!.state, "failed");
  },
});

Deno.test({
  name: "workers: a pool of 2 slots holds across 3 workers with concurrency 4 [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
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
    // Watch the store as well: never more than 2 pool tasks running.
    let dbMax = 0;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const [{ n }] = await w.store.client.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM task_instances WHERE pool = 'ils' AND state = 'running'",
        ) as [{ n: number }];
        dbMax = Math.max(dbMax, Number(n));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const workers = startWorkers(w, 3, { concurrency: 4 });
    try {
      await waitFor(allFinal(w.store, 1), 60_000, "the pooled run to finish");
    } finally {
      await workers.stop();
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
    "workers: an enclave chain is one claim unit run by one worker; no enclave output is stored [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
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
    const workers = [0, 1, 2].map(() => w.spawn(["worker", "--concurrency", "2"]));
    await waitFor(allFinal(w.store, 6), 90_000, "6 runs to finish");
    for (const c of workers) c.kill("SIGTERM");
    await Promise.all(workers.map((c) => c.status));
    assert.deepEqual(await runStates(w.store), { success: 6 });

    const unitIds = [...units].filter(([, u]) => u === "extract").map(([id]) => id);
    assert.ok(unitIds.includes("cp"), "the checkpoint belongs to the enclave unit");
    const owners = new Set<string>();
    for (const run of runs) {
      const starts = await w.store.client.query<
        { task_id: string; owner: string; seq: number }
      >(
        `SELECT task_id, detail->>'owner' AS owner, seq FROM audit_log
         WHERE correlation_id = $1 AND operation = 'task:start' ORDER BY seq`,
        [run.runId],
      );
      const unit = starts.filter((s) => unitIds.includes(s.task_id));
      assert.deepEqual(unit.map((s) => s.task_id).sort(), [...unitIds].sort(), "one start each");
      assert.equal(new Set(unit.map((s) => s.owner)).size, 1, `unit split across workers`);
      // Claimed together: consecutive audit entries of one claim.
      const seqs = unit.map((s) => Number(s.seq));
      assert.equal(Math.max(...seqs) - Math.min(...seqs), unit.length - 1);
      owners.add(unit[0]!.owner);
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
    assert.ok(owners.size >= 1);
  },
});

Deno.test({
  name:
    "workers: `dags trigger --workers` then `worker --exit-when-idle` completes the run [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
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
    const run = (args: string[]) => cli(args, { cwd: w.dir, env: w.env });
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
    const tis = await w.store.listTaskInstances(queued.runId);
    assert.deepEqual(
      tis.map((x) => [x.taskId, x.state]).sort(),
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
    const d = (await w.store.listTaskInstances(queued.runId)).find((x) => x.taskId === "d")!;
    assert.equal(d.output, 13);
    assert.equal((await lines(marker)).length, 4);

    // Triggering the same date again creates nothing and a drain executes nothing.
    const again = await run([
      "dags",
      "trigger",
      "trig",
      "--date",
      "2026-04-01T00:00:00Z",
      "--workers",
      "--json",
    ]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).created, false);
    const idle = await run(["worker", "--exit-when-idle", "--json"]);
    assert.equal(idle.code, 0, idle.stderr);
    assert.equal((await lines(marker)).length, 4);
    // Without PostgreSQL, workers refuse to start (usage error).
    const noPg = await cli(["worker", "--exit-when-idle"], {
      cwd: w.dir,
      env: { CARREL_HOME: join(w.dir, "pglite-home"), CARREL_DAGS_DIR: w.dags },
    });
    assert.equal(noPg.code, 2, noPg.stderr);
    const badLease = await run(["worker", "--lease", "0", "--exit-when-idle"]);
    assert.equal(badLease.code, 2);
  },
});

Deno.test({
  name:
    "workers: a worker takes the next ready task when one finishes, without waiting for its poll [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
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
      store: w.connect(),
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
  name: "workers: tasks outside a full pool are not held up behind the pool's queue [postgres]",
  ...pg,
  fn: async () => {
    await using w = await world();
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
    const busy = await startRun(w.store, await w.dag("busy_pool"), dayInterval(0), {}, "triggered");
    // Queued after every pool task: the oldest 16 ready tasks are all waiting for the pool.
    const free = await startRun(w.store, await w.dag("free_lane"), dayInterval(0), {}, "triggered");
    const workers = startWorkers(w, 2, { concurrency: 2 });
    try {
      await waitFor(allFinal(w.store, 2), 60_000, "both runs to finish");
    } finally {
      await workers.stop();
    }
    const [freeTi] = await w.store.listTaskInstances(free.runId);
    const before = (await w.store.listTaskInstances(busy.runId)).filter((t) =>
      t.startedAt! < freeTi!.startedAt!
    );
    // With one pool slot, the free task should not wait for the pool's queue to drain.
    assert.ok(
      before.length <= 4,
      `${before.length} pool tasks started before the free task`,
    );
  },
});
