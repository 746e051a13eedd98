/**
 * Executor overhead: what `executeRun` costs per task instance on top of the work itself.
 *
 * - `executor.overhead_ms_per_task.pglite` / `.postgres` / `.memory`: a no-op DAG of 1,000 tasks
 *   (quick: 200) run as a chain with `executeRun` against a fresh store (PGlite in a temporary
 *   folder; a fresh PostgreSQL database; no store at all), wall time divided by the number of
 *   task instances, the median of 5 rounds (quick: 1) after full-size warm-up runs (whose
 *   figures, a process's first runs, are in the PGlite metric's `warm_up_ms_per_task`). The
 *   `.fanout` variants run one root with n-1 children and `maxActiveTasks: 16`. Baseline: a
 *   bare in-process topological loop (Kahn's algorithm) over the same graph, awaiting the same
 *   no-op functions, measured in the same run.
 * - `executor.windmill40_s`: 40 sequential tasks each computing fib(10) recursively, total wall
 *   seconds on PGlite. Baseline: the same 40 fib(10) calls in a plain loop.
 *
 * PostgreSQL figures need `CARREL_BENCH_DATABASE_URL` (or `CARREL_TEST_DATABASE_URL`); each
 * measurement creates and drops a database named `carrel_bench_<pid>_<n>` on that server.
 *
 * Run directly: `deno run --allow-all bench/executor_bench.ts [--quick]`.
 *
 * @module
 */
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import postgres from "postgres";
import { type Dag, defineDag, resolveDag, type ResolvedDag, task } from "../core/dag.ts";
import { executeRun } from "../core/run/local.ts";
import { openPgliteStore } from "../core/state/pglite.ts";
import { openPostgresStore } from "../core/state/postgres.ts";
import type { StateStore } from "../core/state/store.ts";
import { type BenchOptions, median, type Metric, metric, roundSignificant } from "./metric.ts";

/** The baseline of every overhead metric. */
const BARE = "bare topological loop";
/** The data interval of every benchmark run. */
const INTERVAL = {
  start: new Date("2026-01-01T00:00:00Z"),
  end: new Date("2026-01-02T00:00:00Z"),
};

type Shape = "chain" | "fanout";
type Fn = (ctx: unknown) => unknown;

/** The no-op every overhead task runs. */
const noop: Fn = () => null;

/** fib(n), recursively: the windmill benchmark's unit of work. */
function fib(n: number): number {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/** Task ids in declaration order: `t0000`, `t0001`, ... */
function ids(n: number): string[] {
  const width = String(n - 1).length;
  return Array.from({ length: n }, (_, i) => `t${String(i).padStart(width, "0")}`);
}

/** A graph as plain data: each task's upstream ids and its function. */
interface Graph {
  tasks: { id: string; after: string[]; run: Fn }[];
}

function chainGraph(n: number, run: Fn): Graph {
  const names = ids(n);
  return { tasks: names.map((id, i) => ({ id, after: i === 0 ? [] : [names[i - 1]!], run })) };
}

function fanoutGraph(n: number, run: Fn): Graph {
  const names = ids(n);
  return { tasks: names.map((id, i) => ({ id, after: i === 0 ? [] : [names[0]!], run })) };
}

function toDag(id: string, graph: Graph, maxActiveTasks: number): ResolvedDag {
  const dag: Dag = defineDag({
    id,
    schedule: null,
    maxActiveTasks,
    tasks: Object.fromEntries(
      graph.tasks.map((t) => [t.id, task({ after: t.after, run: t.run })]),
    ),
  });
  return resolveDag(dag);
}

/**
 * The baseline: Kahn's algorithm over `graph` (in-degrees, a ready queue), awaiting each task's
 * function in turn. Returns the number of tasks run.
 */
async function bareTopologicalLoop(graph: Graph, ctx: unknown): Promise<number> {
  const indegree = new Map<string, number>();
  const downstream = new Map<string, string[]>();
  const byId = new Map<string, Fn>();
  for (const t of graph.tasks) {
    indegree.set(t.id, t.after.length);
    byId.set(t.id, t.run);
    if (!downstream.has(t.id)) downstream.set(t.id, []);
    for (const up of t.after) {
      const list = downstream.get(up);
      if (list) list.push(t.id);
      else downstream.set(up, [t.id]);
    }
  }
  const ready: string[] = [];
  for (const [id, d] of indegree) if (d === 0) ready.push(id);
  let done = 0;
  for (let i = 0; i < ready.length; i++) {
    const id = ready[i]!;
    await byId.get(id)!(ctx);
    done++;
    for (const d of downstream.get(id)!) {
      const left = indegree.get(d)! - 1;
      indegree.set(d, left);
      if (left === 0) ready.push(d);
    }
  }
  if (done !== graph.tasks.length) throw new Error("Bare loop did not run every task");
  return done;
}

/**
 * Milliseconds per task of the bare loop: each round repeats the loop until at least
 * `roundMs` have passed; the median over `rounds` rounds.
 */
async function bareMsPerTask(graph: Graph, rounds: number, roundMs: number): Promise<number> {
  const ctx = { dagId: "bench", signal: new AbortController().signal };
  // Warm-up, so that the optimizing compiler has run before timing.
  const warmEnd = performance.now() + Math.max(100, roundMs);
  while (performance.now() < warmEnd) await bareTopologicalLoop(graph, ctx);
  const perTask: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let tasks = 0;
    const start = performance.now();
    let now = start;
    do {
      tasks += await bareTopologicalLoop(graph, ctx);
      now = performance.now();
    } while (now - start < roundMs);
    perTask.push((now - start) / tasks);
  }
  return median(perTask);
}

/** A fresh store and how to get rid of it. */
interface FreshStore {
  store: StateStore | undefined;
  home: string;
  dispose(): Promise<void>;
}

type Backend = "pglite" | "postgres" | "memory";

/**
 * Makes fresh stores. A new PGlite data folder costs seconds (initdb), so the first one is
 * created and migrated once as a template, closed, and each fresh PGlite store is a copy of it:
 * an empty, migrated database, as a first run would find it. Each PostgreSQL store is a new
 * database, dropped afterwards.
 */
class StoreFactory implements AsyncDisposable {
  #template: Promise<string> | undefined;
  #databases = 0;

  constructor(readonly url: string | undefined) {}

  #pgliteTemplate(): Promise<string> {
    this.#template ??= (async () => {
      const dir = await mkdtemp(join(tmpdir(), "carrel-bench-template-"));
      const store = await openPgliteStore(join(dir, "state"));
      try {
        await store.migrate();
      } finally {
        await store.close();
      }
      return join(dir, "state");
    })();
    return this.#template;
  }

  async fresh(backend: Backend): Promise<FreshStore> {
    const home = await mkdtemp(join(tmpdir(), "carrel-bench-exec-"));
    const removeHome = () => rm(home, { recursive: true, force: true });
    if (backend === "memory") return { store: undefined, home, dispose: removeHome };
    if (backend === "pglite") {
      let store: StateStore;
      try {
        await cp(await this.#pgliteTemplate(), join(home, "state"), { recursive: true });
        store = await openPgliteStore(join(home, "state"));
        await store.migrate();
      } catch (error) {
        await removeHome();
        throw error;
      }
      return {
        store,
        home,
        dispose: async () => {
          await store.close();
          await removeHome();
        },
      };
    }
    return await this.#postgres(home, removeHome);
  }

  async #postgres(home: string, removeHome: () => Promise<void>): Promise<FreshStore> {
    const name = `carrel_bench_${Deno.pid}_${++this.#databases}`;
    const admin = postgres(this.url!, { max: 1, onnotice: () => {}, connect_timeout: 10 });
    try {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name}`);
      await admin.unsafe(`CREATE DATABASE ${name}`);
    } catch (error) {
      await admin.end();
      await removeHome();
      throw error;
    }
    const target = new URL(this.url!);
    target.pathname = `/${name}`;
    const store = await openPostgresStore(target.href);
    const dispose = async () => {
      await store.close().catch(() => {});
      try {
        await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await admin.end();
        await removeHome();
      }
    };
    try {
      await store.migrate();
    } catch (error) {
      await dispose();
      throw error;
    }
    return { store, home, dispose };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const template = await this.#template?.catch(() => undefined);
    if (template) await rm(dirname(template), { recursive: true, force: true });
  }
}

/** Wall milliseconds of one `executeRun` of `dag` against a fresh store (opening excluded). */
async function timeExecuteRun(
  dag: ResolvedDag,
  backend: Backend,
  stores: StoreFactory,
): Promise<number> {
  const fresh = await stores.fresh(backend);
  try {
    const start = performance.now();
    const result = await executeRun({
      dag,
      interval: INTERVAL,
      params: {},
      home: fresh.home,
      ...(fresh.store ? { store: fresh.store } : {}),
    });
    const ms = performance.now() - start;
    const bad = result.tasks.filter((t) => t.state !== "success");
    if (result.state !== "success" || bad.length > 0) {
      throw new Error(
        `Executor bench run of "${dag.id}" on ${backend} ended ${result.state} with ${bad.length} tasks not successful`,
      );
    }
    return ms;
  } finally {
    await fresh.dispose();
  }
}

/** The PostgreSQL URL for the bench, if any. */
export function benchDatabaseUrl(): string | undefined {
  return Deno.env.get("CARREL_BENCH_DATABASE_URL") || Deno.env.get("CARREL_TEST_DATABASE_URL") ||
    undefined;
}

/**
 * Measures executor overhead per task (memory, PGlite, PostgreSQL; chain and fan-out) and the
 * windmill 40-task fib(10) chain.
 *
 * @example
 * ```ts ignore
 * import { benchExecutor } from "./executor_bench.ts";
 * for (const m of await benchExecutor({ quick: true })) console.log(m.name, m.value, m.ratio);
 * ```
 */
export async function benchExecutor(opts: BenchOptions): Promise<Metric[]> {
  const n = opts.quick ? 200 : 1000;
  const rounds = opts.quick ? 1 : 5;
  const memoryRounds = opts.quick ? 5 : 9;
  const maxActiveTasks = 16;
  const url = benchDatabaseUrl();
  await using stores = new StoreFactory(url);

  const graphs: Record<Shape, Graph> = { chain: chainGraph(n, noop), fanout: fanoutGraph(n, noop) };
  const dags: Record<Shape, ResolvedDag> = {
    chain: toDag("bench_chain", graphs.chain, maxActiveTasks),
    fanout: toDag("bench_fanout", graphs.fanout, maxActiveTasks),
  };
  const bare: Record<Shape, number> = {
    chain: await bareMsPerTask(graphs.chain, opts.quick ? 3 : 5, opts.quick ? 50 : 200),
    fanout: await bareMsPerTask(graphs.fanout, opts.quick ? 3 : 5, opts.quick ? 50 : 200),
  };

  // Warm the executor's code paths and PGlite's WebAssembly before any timed run. V8 compiles
  // PGlite's large module function by function and optimizes each one only once it has run for
  // a while: a first 1,000-task chain runs 30 to 50% slower than the ones after it, and a short
  // warm-up left the first timed rounds still on the way (measured: each of 7 rounds faster than
  // the one before until the fourth). So the warm-up is full-size chains, and their figure
  // (what a process's first run costs) is reported beside the steady one.
  await timeExecuteRun(toDag("bench_warm", chainGraph(20, noop), maxActiveTasks), "memory", stores);
  const warm = toDag("bench_warm", chainGraph(n, noop), maxActiveTasks);
  const firstRunMs: number[] = [];
  for (let r = 0; r < (opts.quick ? 1 : 2); r++) {
    firstRunMs.push(await timeExecuteRun(warm, "pglite", stores) / n);
  }

  const metrics: Metric[] = [];
  const backends: Backend[] = ["memory", "pglite", "postgres"];
  for (const backend of backends) {
    if (backend === "postgres" && !url) {
      const reason = "CARREL_BENCH_DATABASE_URL (or CARREL_TEST_DATABASE_URL) is not set";
      opts.onSkip?.({ name: "executor.overhead_ms_per_task.postgres", reason });
      opts.onSkip?.({ name: "executor.overhead_ms_per_task.postgres.fanout", reason });
      continue;
    }
    const name = `executor.overhead_ms_per_task.${backend}`;
    const perTask = {} as Record<Shape, { ms: number; rounds: number[] }>;
    try {
      for (const shape of ["chain", "fanout"] as const) {
        const times: number[] = [];
        const count = backend === "memory" ? memoryRounds : rounds;
        for (let r = 0; r < count; r++) {
          times.push(await timeExecuteRun(dags[shape], backend, stores));
        }
        perTask[shape] = {
          ms: median(times) / n,
          rounds: times.map((t) => roundSignificant(t / 1000)),
        };
      }
    } catch (error) {
      // A PostgreSQL failure (server down, no CREATEDB right) must not cost the other figures.
      if (backend !== "postgres" || !opts.onError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      opts.onError({ name, message: `PostgreSQL: ${message}` });
      continue;
    }
    const store = backend === "memory" ? "none (in-process, nothing persisted)" : backend;
    metrics.push(
      metric(name, perTask.chain.ms, "ms", { name: BARE, value: bare.chain }, {
        shape: "chain",
        tasks: n,
        store,
        rounds_wall_s: perTask.chain.rounds,
        fanout_ms_per_task: roundSignificant(perTask.fanout.ms),
        fanout_baseline_ms_per_task: roundSignificant(bare.fanout),
        ...(backend === "pglite"
          ? { warm_up_ms_per_task: firstRunMs.map((ms) => roundSignificant(ms)) }
          : {}),
        quick: opts.quick,
      }),
      metric(`${name}.fanout`, perTask.fanout.ms, "ms", { name: BARE, value: bare.fanout }, {
        shape: "fanout",
        tasks: n,
        children: n - 1,
        maxActiveTasks,
        store,
        rounds_wall_s: perTask.fanout.rounds,
        quick: opts.quick,
      }),
    );
  }

  const unsandboxed = metrics.find((m) => m.name === "executor.overhead_ms_per_task.pglite");
  const memory = metrics.find((m) => m.name === "executor.overhead_ms_per_task.memory");
  if (unsandboxed && memory) {
    metrics.push(
      await sandboxedOverhead(n, rounds, unsandboxed.value, memory.value, bare.chain, stores),
    );
  }
  metrics.push(await windmill40(opts.quick, stores));
  return metrics;
}

/**
 * `executor.overhead_ms_per_task.sandboxed`: the same no-op chain on PGlite with every task in a
 * strict sandbox (pooled Workers: one per permission set per run, its start-up and the DAG
 * file's import included in the wall time), against the unsandboxed PGlite chain of this run.
 * The DAG is a file (a Worker imports it to find the task bodies), loaded as the CLI loads it.
 * `extra` also has the same chain without a store, where the sandbox's own cost stands out.
 */
async function sandboxedOverhead(
  n: number,
  rounds: number,
  unsandboxedMs: number,
  memoryMs: number,
  bareMs: number,
  stores: StoreFactory,
): Promise<Metric> {
  const { loadDagFile } = await import("../core/loader.ts");
  const { sandboxStats } = await import("../core/sandbox/pool.ts");
  const dir = await mkdtemp(join(tmpdir(), "carrel-bench-sandbox-"));
  try {
    const load = async (id: string, tasks: number) => {
      const file = join(dir, `${id}.ts`);
      await Deno.writeTextFile(
        file,
        `import { defineDag, task } from "carrel";
const ids = Array.from({ length: ${tasks} }, (_, i) => "t" + String(i).padStart(5, "0"));
const noop = () => null;
export default defineDag({
  id: "${id}",
  schedule: null,
  sandbox: "strict",
  tasks: Object.fromEntries(ids.map((id, i) => [id, task({ after: i ? [ids[i - 1]!] : [], run: noop })])),
});
`,
      );
      const loaded = await loadDagFile(file);
      if ("error" in loaded) throw new Error(loaded.error.message);
      return loaded.dag;
    };
    // Warmed up as the unsandboxed chain was (full size), so that both are steady figures.
    const warmUpMs = await timeExecuteRun(await load("bench_sandbox_warm", n), "pglite", stores) /
      n;
    const dag = await load("bench_sandboxed", n);
    const startedBefore = sandboxStats.started;
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) times.push(await timeExecuteRun(dag, "pglite", stores));
    const ms = median(times) / n;
    const workersPerRun = (sandboxStats.started - startedBefore) / rounds;
    // Without a store, the sandbox's own cost stands out from the store's.
    const memoryTimes: number[] = [];
    for (let r = 0; r < rounds; r++) memoryTimes.push(await timeExecuteRun(dag, "memory", stores));
    const memorySandboxed = median(memoryTimes) / n;
    return metric(
      "executor.overhead_ms_per_task.sandboxed",
      ms,
      "ms",
      {
        name: "the same chain unsandboxed (executor.overhead_ms_per_task.pglite)",
        value: unsandboxedMs,
      },
      {
        shape: "chain",
        tasks: n,
        store: "pglite",
        sandbox: "strict, pooled Workers",
        workers_started_per_run: workersPerRun,
        sandbox_cost_ms_per_task: roundSignificant(ms - unsandboxedMs),
        memory_sandboxed_ms_per_task: roundSignificant(memorySandboxed),
        memory_unsandboxed_ms_per_task: roundSignificant(memoryMs),
        memory_sandbox_cost_ms_per_task: roundSignificant(memorySandboxed - memoryMs),
        bare_loop_ms_per_task: roundSignificant(bareMs),
        target_2ms: ms <= 2,
        warm_up_ms_per_task: roundSignificant(warmUpMs),
        rounds_wall_s: times.map((t) => roundSignificant(t / 1000)),
      },
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** 40 sequential fib(10) tasks on PGlite, total wall seconds, against a plain loop. */
async function windmill40(quick: boolean, stores: StoreFactory): Promise<Metric> {
  const tasks = 40;
  const work: Fn = () => fib(10);
  const graph = chainGraph(tasks, work);
  const dag = toDag("bench_windmill40", graph, 16);
  const rounds = quick ? 3 : 5;
  const walls: number[] = [];
  for (let r = 0; r < rounds; r++) walls.push(await timeExecuteRun(dag, "pglite", stores));

  // Baseline: the same 40 calls in a plain loop, repeated for a stable figure.
  let sink = 0;
  const loop = () => {
    for (let i = 0; i < tasks; i++) sink += fib(10);
  };
  for (let i = 0; i < 100; i++) loop(); // warm-up
  const loopTimes: number[] = [];
  for (let r = 0; r < 5; r++) {
    let reps = 0;
    const start = performance.now();
    let now = start;
    do {
      loop();
      reps++;
      now = performance.now();
    } while (now - start < 50);
    loopTimes.push((now - start) / reps);
  }
  if (sink === -1) console.error(sink); // keeps the results alive
  return metric(
    "executor.windmill40_s",
    median(walls) / 1000,
    "s",
    { name: "40 fib(10) calls in a plain loop", value: median(loopTimes) / 1000 },
    {
      tasks,
      work: "fib(10), recursive",
      store: "pglite",
      rounds_wall_s: walls.map((w) => roundSignificant(w / 1000)),
      quick,
    },
  );
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const metrics = await benchExecutor({
    quick,
    onSkip: (s) => console.error(`skipped ${s.name}: ${s.reason}`),
  });
  console.log(JSON.stringify(metrics, null, 2));
}
