/**
 * Dynamic task mapping: what a mapped task costs per instance, against writing the same tasks
 * out by hand.
 *
 * - `mapping.ms_per_instance.pglite`: one root task listing n items (1,000; quick: 200) and one
 *   mapped no-op task over them, run with `executeRun` on a fresh PGlite store (a copy of a
 *   migrated template), wall time divided by n. Baseline: the same root and n no-op tasks
 *   declared statically (a fan-out DAG, `maxActiveTasks` 16 both), measured the same way in the
 *   same run: what a DAG author would write without mapping.
 *
 * Run directly: `deno run --allow-all bench/mapping_bench.ts [--quick]`.
 *
 * @module
 */
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineDag, resolveDag, type ResolvedDag, task } from "../core/dag.ts";
import { executeRun } from "../core/run/local.ts";
import { openPgliteStore } from "../core/state/pglite.ts";
import { type BenchOptions, median, type Metric, metric, roundSignificant } from "./metric.ts";

const INTERVAL = {
  start: new Date("2026-01-01T00:00:00Z"),
  end: new Date("2026-01-02T00:00:00Z"),
};

function mappedDag(n: number): ResolvedDag {
  return resolveDag(defineDag({
    id: "bench_mapped",
    schedule: null,
    maxActiveTasks: 16,
    tasks: {
      list: task({ run: () => Array.from({ length: n }, (_, i) => i) }),
      each: task({ expand: "list", run: () => null }),
    },
  }));
}

function staticDag(n: number): ResolvedDag {
  const width = String(n - 1).length;
  const tasks: Record<string, ReturnType<typeof task>> = {
    list: task({ run: () => Array.from({ length: n }, (_, i) => i) }),
  };
  for (let i = 0; i < n; i++) {
    tasks[`each_${String(i).padStart(width, "0")}`] = task({ after: ["list"], run: () => null });
  }
  return resolveDag(defineDag({ id: "bench_static", schedule: null, maxActiveTasks: 16, tasks }));
}

/** Wall milliseconds of one run on a fresh copy of the template store. */
async function timeRun(dag: ResolvedDag, template: string, expected: number): Promise<number> {
  const home = await mkdtemp(join(tmpdir(), "carrel-bench-map-"));
  try {
    await cp(template, join(home, "state"), { recursive: true });
    const store = await openPgliteStore(join(home, "state"));
    try {
      await store.migrate();
      const start = performance.now();
      const result = await executeRun({ dag, interval: INTERVAL, params: {}, store, home });
      const ms = performance.now() - start;
      const ok = result.tasks.filter((t) => t.state === "success").length;
      if (result.state !== "success" || ok !== expected) {
        throw new Error(`Mapping bench run of "${dag.id}" ended ${result.state} (${ok} succeeded)`);
      }
      return ms;
    } finally {
      await store.close();
    }
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/**
 * Measures the cost of a mapped task per instance against the same tasks declared statically.
 *
 * @example
 * ```ts ignore
 * import { benchMapping } from "./mapping_bench.ts";
 * for (const m of await benchMapping({ quick: true })) console.log(m.name, m.value, m.ratio);
 * ```
 */
export async function benchMapping(opts: BenchOptions): Promise<Metric[]> {
  const n = opts.quick ? 200 : 1000;
  const rounds = opts.quick ? 1 : 3;
  const dir = await mkdtemp(join(tmpdir(), "carrel-bench-map-template-"));
  try {
    const template = join(dir, "state");
    const store = await openPgliteStore(template);
    await store.migrate();
    await store.close();
    // Warm both code paths (and PGlite's WebAssembly) before timing.
    await timeRun(mappedDag(20), template, 22);
    await timeRun(staticDag(20), template, 21);
    const mapped: number[] = [];
    const plain: number[] = [];
    for (let r = 0; r < rounds; r++) {
      mapped.push(await timeRun(mappedDag(n), template, n + 2));
      plain.push(await timeRun(staticDag(n), template, n + 1));
    }
    return [
      metric(
        "mapping.ms_per_instance.pglite",
        median(mapped) / n,
        "ms",
        { name: `${n} tasks declared statically`, value: median(plain) / n },
        {
          instances: n,
          rounds_s: mapped.map((t) => roundSignificant(t / 1000)),
          baseline_rounds_s: plain.map((t) => roundSignificant(t / 1000)),
        },
      ),
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  for (const m of await benchMapping({ quick })) console.log(JSON.stringify(m));
}
