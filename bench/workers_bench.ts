/**
 * Worker benchmarks on PostgreSQL, each against graphile-worker measured on the same server in
 * the same run (its own fresh database):
 *
 * - `workers.claims_per_s.1`, `workers.claims_per_s.4`: no-op task instances completed per second
 *   by 1 and by 4 in-process workers (`runWorker`, each with its own store connections), from the
 *   first task start to the last task end. Baseline: graphile-worker jobs/s for the same number of
 *   no-op jobs with concurrency 1 and 4.
 * - `workers.handoff_latency_ms`: median time from the end of an upstream task's function to the
 *   start of its downstream's, over a chain run by one worker (`performance.now()` in the task
 *   bodies: measured exactly as the baseline is). Baseline: graphile-worker, a job that enqueues
 *   the next one; from the end of one job's function to the start of the next.
 * - These three alternate Carrel and graphile-worker rounds (3 each; quick: 1) and report each
 *   side's median, every round's figure in `extra`.
 * - `workers.exactly_once_10k`: seconds for 4 worker processes to complete 10,000 no-op task
 *   instances (quick: 2,000) while one of them is killed with SIGKILL halfway; fails unless every
 *   instance succeeded exactly once (one success each in the store and in the audit trail).
 *   Baseline: graphile-worker completing the same number of no-op jobs with concurrency 4.
 *
 * Needs `CARREL_BENCH_DATABASE_URL` (or `CARREL_TEST_DATABASE_URL`); without one it measures
 * nothing and reports the metrics as skipped. Runnable alone:
 * `deno run --allow-all bench/workers_bench.ts [--quick]` prints the metrics as JSON.
 *
 * @module
 */
import { join } from "node:path";
import postgres from "postgres";
// The baseline only: graphile-worker, mapped in deno.json.
import * as graphile from "graphile-worker";

import type { DataInterval, ResolvedDag } from "../core/dag.ts";
import { loadDags } from "../core/loader.ts";
import { openPostgresStore } from "../core/state/postgres.ts";
import type { SqlStateStore } from "../core/state/sql_store.ts";
import { runWorker, startRun } from "../core/run/worker.ts";
import { type BenchOptions, median, type Metric, metric, roundSignificant } from "./metric.ts";

const { Logger, makeWorkerUtils, run: runGraphile, runMigrations } = graphile;

const NAMES = [
  "workers.claims_per_s.1",
  "workers.claims_per_s.4",
  "workers.handoff_latency_ms",
  "workers.exactly_once_10k",
] as const;

const CORE_MOD = new URL("../core/mod.ts", import.meta.url).href;
const DAY = 86_400_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sizes of one benchmark run. */
interface Sizes {
  /** No-op task instances (and graphile-worker jobs) per throughput measurement. */
  tasks: number;
  /** Task instances per DAG run in the throughput measurement. */
  perRun: number;
  /** Length of the chain for the handoff latency. */
  chain: number;
  /** Task instances for the exactly-once measurement (100 per run). */
  exactlyOnce: number;
  /** Alternating rounds of each throughput and handoff measurement (each side's median). */
  rounds: number;
}

function sizes(quick: boolean): Sizes {
  return quick
    ? { tasks: 300, perRun: 20, chain: 15, exactlyOnce: 2_000, rounds: 1 }
    : { tasks: 2000, perRun: 20, chain: 40, exactlyOnce: 10_000, rounds: 3 };
}

/** The server URL, or undefined. */
export function serverUrl(): string | undefined {
  return Deno.env.get("CARREL_BENCH_DATABASE_URL") ?? Deno.env.get("CARREL_TEST_DATABASE_URL");
}

/** A fresh database on the server, dropped on dispose. */
export async function freshDatabase(base: string, label: string) {
  const name = `carrel_bench_${label}_${crypto.randomUUID().slice(0, 8)}`;
  const admin = postgres(base, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async [Symbol.asyncDispose]() {
      const sql = postgres(base, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await sql.end();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Carrel

const TIMES_KEY = "__carrel_workers_bench_times";
type Times = Map<string, { start: number; end: number }>;
const times = (): Times => {
  const g = globalThis as unknown as Record<string, Times>;
  return g[TIMES_KEY] ??= new Map();
};

function dagFiles(s: Sizes): Record<string, string> {
  const noop = Array.from({ length: s.perRun }, (_, i) => `n${i}: task({ run: () => null }),`);
  const chain = Array.from(
    { length: s.chain },
    (_, i) =>
      `c${i}: task({ ${i > 0 ? `after: ["c${i - 1}"], ` : ""}run: (ctx) => {
      const t = globalThis[${JSON.stringify(TIMES_KEY)}] ??= new Map();
      const start = performance.now();
      t.set(ctx.runId + "/" + ctx.taskId, { start, end: performance.now() });
      return null;
    } }),`,
  );
  const head = `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};\n`;
  return {
    "bench_noop.ts": `${head}export default defineDag({
  id: "bench_noop",
  schedule: null,
  maxActiveTasks: 64,
  tasks: {
    ${noop.join("\n    ")}
  },
});
`,
    "bench_chain.ts": `${head}export default defineDag({
  id: "bench_chain",
  schedule: null,
  tasks: {
    ${chain.join("\n    ")}
  },
});
`,
    "bench_once.ts": `${head}export default defineDag({
  id: "bench_once",
  schedule: null,
  maxActiveTasks: 64,
  tasks: {
    ${
      Array.from(
        { length: ONCE_PER_RUN },
        (_, i) => `o${i}: task({ retries: 2, retryDelay: 0, run: () => null }),`,
      ).join("\n    ")
    }
  },
});
`,
  };
}

/** Task instances per run of the exactly-once measurement. */
const ONCE_PER_RUN = 100;

let round = 0;
const nextInterval = (): DataInterval => {
  const start = new Date(Date.UTC(2026, 0, 1) + round++ * DAY);
  return { start, end: new Date(start.getTime() + DAY) };
};

/** Queues `runs` runs of `dag`, runs `workers` workers until every one ends; their run ids. */
async function drain(
  ctx: { url: string; store: SqlStateStore; dagsDir: string; home: string },
  dag: ResolvedDag,
  runs: number,
  workers: number,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < runs; i++) {
    ids.push((await startRun(ctx.store, dag, nextInterval(), {}, "triggered")).runId);
  }
  const stop = new AbortController();
  const stores = await Promise.all(
    Array.from({ length: workers }, () => openPostgresStore(ctx.url)),
  );
  const done = Promise.all(stores.map((store) =>
    runWorker({
      store,
      dagsDir: ctx.dagsDir,
      home: ctx.home,
      concurrency: 1,
      pollMs: 200,
      signal: stop.signal,
    })
  ));
  try {
    const deadline = Date.now() + 600_000;
    while (Date.now() < deadline) {
      const [row] = await ctx.store.client.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM dag_runs WHERE run_id = ANY($1::text[]) AND state IN ('success', 'failed')",
        [ids],
      );
      if (Number(row?.n) === ids.length) break;
      await sleep(25);
    }
  } finally {
    stop.abort();
    await done;
    for (const s of stores) await s.close();
  }
  const [bad] = await ctx.store.client.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM dag_runs WHERE run_id = ANY($1::text[]) AND state <> 'success'",
    [ids],
  );
  if (Number(bad?.n) > 0) throw new Error(`${bad!.n} benchmark runs did not succeed`);
  return ids;
}

async function carrelThroughput(
  ctx: { url: string; store: SqlStateStore; dagsDir: string; home: string },
  dag: ResolvedDag,
  s: Sizes,
  workers: number,
): Promise<{ perSecond: number; seconds: number }> {
  const ids = await drain(ctx, dag, Math.ceil(s.tasks / s.perRun), workers);
  const [span] = await ctx.store.client.query<{ n: number; ms: number }>(
    `SELECT count(*)::int AS n,
       (extract(epoch FROM max(ended_at) - min(started_at)) * 1000)::float8 AS ms
     FROM task_instances WHERE run_id = ANY($1::text[])`,
    [ids],
  );
  const seconds = Number(span!.ms) / 1000;
  return { perSecond: Number(span!.n) / seconds, seconds };
}

async function carrelHandoff(
  ctx: { url: string; store: SqlStateStore; dagsDir: string; home: string },
  dag: ResolvedDag,
): Promise<{ columnsMs: number; bodyMs: number }> {
  const [runId] = await drain(ctx, dag, 1, 1);
  const rows = await ctx.store.client.query<{ task_id: string; started_at: Date; ended_at: Date }>(
    "SELECT task_id, started_at, ended_at FROM task_instances WHERE run_id = $1",
    [runId],
  );
  const by = new Map(rows.map((r) => [r.task_id, r]));
  const gaps: number[] = [];
  const bodyGaps: number[] = [];
  for (let i = 1; i < dag.order.length; i++) {
    const up = by.get(`c${i - 1}`)!, down = by.get(`c${i}`)!;
    gaps.push(new Date(down.started_at).getTime() - new Date(up.ended_at).getTime());
    const a = times().get(`${runId}/c${i - 1}`), b = times().get(`${runId}/c${i}`);
    if (a && b) bodyGaps.push(b.start - a.end);
  }
  return { columnsMs: median(gaps), bodyMs: median(bodyGaps) };
}

/**
 * 4 worker processes (the CLI) drain `n` task instances; one is killed with SIGKILL once half of
 * them have succeeded. Throws unless every instance succeeded exactly once.
 */
async function carrelExactlyOnce(
  ctx: { url: string; store: SqlStateStore; dagsDir: string; home: string },
  dag: ResolvedDag,
  n: number,
): Promise<{ seconds: number; lost: number; retried: number }> {
  const ids: string[] = [];
  for (let i = 0; i < Math.ceil(n / ONCE_PER_RUN); i++) {
    ids.push((await startRun(ctx.store, dag, nextInterval(), {}, "triggered")).runId);
  }
  const main = new URL("../cli/main.ts", import.meta.url).pathname;
  const config = new URL("../deno.json", import.meta.url).pathname;
  const start = performance.now();
  const workers = Array.from({ length: 4 }, () =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--unstable-worker-options",
        "--allow-all",
        "--quiet",
        "--config",
        config,
        main,
        "worker",
        "--json",
      ],
      env: { CARREL_DATABASE_URL: ctx.url, CARREL_DAGS_DIR: ctx.dagsDir, CARREL_HOME: ctx.home },
      stdout: "null",
      stderr: "null",
    }).spawn());
  const successes = async () => {
    const [row] = await ctx.store.client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM task_instances
       WHERE run_id = ANY($1::text[]) AND state = 'success'`,
      [ids],
    );
    return Number(row?.n ?? 0);
  };
  let killed = false;
  try {
    const deadline = Date.now() + 1_200_000;
    while (Date.now() < deadline) {
      const done = await successes();
      if (!killed && done >= n / 2) {
        workers[0]!.kill("SIGKILL");
        await workers[0]!.status;
        killed = true;
      }
      if (done >= ids.length * ONCE_PER_RUN) break;
      await sleep(50);
    }
  } finally {
    for (const w of workers.slice(killed ? 1 : 0)) {
      try {
        w.kill("SIGTERM");
      } catch { /* gone */ }
    }
    await Promise.all(workers.map((w) => w.status));
  }
  const seconds = (performance.now() - start) / 1000;
  const [check] = await ctx.store.client.query<
    { n: number; ok: number; audited: number; distinct: number; lost: number; tries: number }
  >(
    `SELECT count(*)::int AS n, count(*) FILTER (WHERE state = 'success')::int AS ok,
       (SELECT count(*) FROM audit_log a WHERE a.correlation_id = ANY($1::text[])
          AND a.operation = 'task:success')::int AS audited,
       (SELECT count(DISTINCT (a.correlation_id, a.task_id)) FROM audit_log a
          WHERE a.correlation_id = ANY($1::text[]) AND a.operation = 'task:success')::int AS distinct,
       (SELECT count(*) FROM audit_log a WHERE a.correlation_id = ANY($1::text[])
          AND a.operation = 'task:lost')::int AS lost,
       count(*) FILTER (WHERE try_number > 1)::int AS tries
     FROM task_instances WHERE run_id = ANY($1::text[])`,
    [ids],
  );
  const total = ids.length * ONCE_PER_RUN;
  const c = check!;
  if (
    !killed || Number(c.n) !== total || Number(c.ok) !== total || Number(c.audited) !== total ||
    Number(c.distinct) !== total
  ) {
    throw new Error(
      `Exactly-once violated: ${c.ok}/${total} succeeded, ${c.audited} success entries for ${c.distinct} instances (a worker ${
        killed ? "was" : "was not"
      } killed)`,
    );
  }
  return { seconds, lost: Number(c.lost), retried: Number(c.tries) };
}

// ---------------------------------------------------------------------------------------------
// graphile-worker

const silent = new Logger(() => () => {});

async function graphileThroughput(url: string, n: number, concurrency: number): Promise<number> {
  const utils = await makeWorkerUtils({ connectionString: url, logger: silent });
  try {
    await utils.withPgClient((c) =>
      c.query(
        "SELECT graphile_worker.add_job('noop', json_build_object('i', g)) FROM generate_series(1, $1::int) g",
        [n],
      )
    );
  } finally {
    await utils.release();
  }
  let done = 0, first = 0, last = 0;
  let resolve!: () => void;
  const all = new Promise<void>((r) => resolve = r);
  const runner = await runGraphile({
    connectionString: url,
    concurrency,
    noHandleSignals: true,
    pollInterval: 200,
    logger: silent,
    taskList: {
      noop: () => {
        const now = performance.now();
        if (!first) first = now;
        last = now;
        if (++done === n) resolve();
        return Promise.resolve();
      },
    },
  });
  try {
    await all;
  } finally {
    await runner.stop();
  }
  // Each job's function is near-instant: the last start is its end.
  return n / ((last - first) / 1000);
}

async function graphileHandoff(url: string, n: number): Promise<number> {
  const marks: { start: number; end: number }[] = [];
  let resolve!: () => void;
  const all = new Promise<void>((r) => resolve = r);
  const runner = await runGraphile({
    connectionString: url,
    concurrency: 1,
    noHandleSignals: true,
    pollInterval: 200,
    logger: silent,
    taskList: {
      chain: async (payload, helpers) => {
        const start = performance.now();
        const { i } = payload as { i: number };
        if (i + 1 < n) await helpers.addJob("chain", { i: i + 1 });
        marks[i] = { start, end: performance.now() };
        if (i + 1 === n) resolve();
      },
    },
  });
  try {
    const utils = await makeWorkerUtils({ connectionString: url, logger: silent });
    await utils.addJob("chain", { i: 0 });
    await utils.release();
    await all;
  } finally {
    await runner.stop();
  }
  const gaps: number[] = [];
  for (let i = 1; i < n; i++) gaps.push(marks[i]!.start - marks[i - 1]!.end);
  return median(gaps);
}

// ---------------------------------------------------------------------------------------------

/**
 * Runs the worker benchmarks; `[]` (and `onSkip` per metric) without a PostgreSQL server.
 *
 * @example
 * ```ts ignore
 * const metrics = await benchWorkers({ quick: true });
 * ```
 */
export async function benchWorkers(opts: BenchOptions): Promise<Metric[]> {
  const base = serverUrl();
  if (!base) {
    for (const name of NAMES) {
      opts.onSkip?.({
        name,
        reason: "CARREL_BENCH_DATABASE_URL (or CARREL_TEST_DATABASE_URL) is not set",
      });
    }
    return [];
  }
  const s = sizes(opts.quick);
  const tmp = await Deno.makeTempDir({ prefix: "carrel-workers-bench-" });
  await using carrelDb = await freshDatabase(base, "carrel");
  await using graphileDb = await freshDatabase(base, "graphile");
  const store = await openPostgresStore(carrelDb.url);
  try {
    await store.migrate();
    const dagsDir = join(tmp, "dags");
    await Deno.mkdir(dagsDir, { recursive: true });
    for (const [name, source] of Object.entries(dagFiles(s))) {
      await Deno.writeTextFile(join(dagsDir, name), source);
    }
    const loaded = await loadDags(dagsDir, { fresh: true });
    if (loaded.errors.length) throw new Error(loaded.errors.map((e) => e.message).join("; "));
    const ctx = { url: carrelDb.url, store, dagsDir, home: join(tmp, "home") };
    const noop = loaded.dags.get("bench_noop")!;
    const chain = loaded.dags.get("bench_chain")!;
    const once = loaded.dags.get("bench_once")!;

    await runMigrations({ connectionString: graphileDb.url, logger: silent });

    // Warm-up: imports, connections, plans.
    await drain(ctx, noop, 1, 1);
    await graphileThroughput(graphileDb.url, 20, 1);

    // Carrel and graphile-worker take turns, `s.rounds` times each, and each side reports its
    // median: a machine whose speed drifts within minutes (seen: graphile-worker alone from 868 to
    // 2,707 jobs/s in consecutive runs) then moves both sides, not whichever ran in a slow moment.
    const claims = async (workers: number) => {
      const ours: number[] = [], theirs: number[] = [], seconds: number[] = [];
      for (let r = 0; r < s.rounds; r++) {
        const o = await carrelThroughput(ctx, noop, s, workers);
        ours.push(o.perSecond);
        seconds.push(o.seconds);
        theirs.push(await graphileThroughput(graphileDb.url, s.tasks, workers));
      }
      return { ours, theirs, seconds };
    };
    const claims1 = await claims(1);
    const claims4 = await claims(4);
    const handoffs: { columnsMs: number; bodyMs: number }[] = [];
    const theirHandoffs: number[] = [];
    for (let r = 0; r < s.rounds; r++) {
      handoffs.push(await carrelHandoff(ctx, chain));
      theirHandoffs.push(await graphileHandoff(graphileDb.url, s.chain));
    }
    const exactly = await carrelExactlyOnce(ctx, once, s.exactlyOnce);
    const theirExactly = s.exactlyOnce / await graphileThroughput(graphileDb.url, s.exactlyOnce, 4);

    const common = { tasks: s.tasks, tasksPerRun: s.perRun, rounds: s.rounds, quick: opts.quick };
    const each = (values: number[]) => values.map((v) => roundSignificant(v));
    const claimsExtra = (c: Awaited<ReturnType<typeof claims>>, workers: number) => ({
      ...common,
      workers,
      seconds: each(c.seconds),
      carrel_per_round: each(c.ours),
      graphile_per_round: each(c.theirs),
    });
    return [
      metric("workers.claims_per_s.1", median(claims1.ours), "tasks/s", {
        name: "graphile-worker@0.16 jobs/s, concurrency 1 (median of alternating rounds)",
        value: median(claims1.theirs),
      }, claimsExtra(claims1, 1)),
      metric("workers.claims_per_s.4", median(claims4.ours), "tasks/s", {
        name: "graphile-worker@0.16 jobs/s, concurrency 4 (median of alternating rounds)",
        value: median(claims4.theirs),
      }, claimsExtra(claims4, 4)),
      metric("workers.handoff_latency_ms", median(handoffs.map((h) => h.bodyMs)), "ms", {
        name:
          "graphile-worker@0.16, job enqueuing the next: end to next start (median of alternating rounds)",
        value: median(theirHandoffs),
      }, {
        chain: s.chain,
        rounds: s.rounds,
        carrel_per_round: each(handoffs.map((h) => h.bodyMs)),
        graphile_per_round: each(theirHandoffs),
        // The same gap as the store records it (ended_at to the next started_at).
        recordedGapMs: Math.round(median(handoffs.map((h) => h.columnsMs)) * 100) / 100,
        quick: opts.quick,
      }),
      metric("workers.exactly_once_10k", exactly.seconds, "s", {
        name: "graphile-worker@0.16, the same number of no-op jobs, concurrency 4 (no kill)",
        value: theirExactly,
      }, {
        tasks: s.exactlyOnce,
        workers: 4,
        killed: 1,
        lostAttempts: exactly.lost,
        retriedInstances: exactly.retried,
        exactlyOnce: true,
        quick: opts.quick,
      }),
    ];
  } finally {
    await store.close();
    times().clear();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const skipped: { name: string; reason: string }[] = [];
  const metrics = await benchWorkers({ quick, onSkip: (s) => skipped.push(s) });
  console.log(JSON.stringify({ metrics, skipped }, null, 2));
}
