/**
 * `ui.grid_ms`: server-side milliseconds for the console's grid page of a 50-task DAG over its
 * latest 100 runs (the HTML a browser receives, through the whole Hono application: session,
 * CSRF token, security headers, the history queries and rendering), with 10,000 runs in the
 * embedded PGlite store (quick: 1,000). Baseline: the same cells read by one bare SQL query on
 * the same store, in the same run (the fastest form we know: one row per run with its cells as
 * JSON; a row-per-cell query is reported in `extra`). Both are medians of warm repetitions; the DAG file is loaded
 * once, as the console caches it.
 *
 * Run directly: `deno run --allow-all bench/ui_bench.ts [--quick]`.
 *
 * @module
 */
import { join } from "node:path";
import { seedRunHistory } from "../fixtures/run_history.ts";
import { openPgliteStore } from "../core/state/pglite.ts";
import { createConsole } from "../ui/server.ts";
import { type BenchOptions, median, type Metric, metric, timeMedian } from "./metric.ts";

const MOD = new URL("../core/mod.ts", import.meta.url).href;
const TASKS = 50;
const RUNS = 100;

function dagFile(): string {
  const ids = Array.from({ length: TASKS }, (_, i) => `t${String(i).padStart(2, "0")}`);
  const tasks = ids.map((id, i) =>
    `    ${id}: task({ ${i > 0 ? `after: ["${ids[i - 1]}"], ` : ""}run: () => ${i} }),`
  );
  return `import { defineDag, task } from ${JSON.stringify(MOD)};
export default defineDag({
  id: "grid50",
  schedule: "0 * * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
${tasks.join("\n")}
  },
});
`;
}

/** Measures `ui.grid_ms`. */
export async function benchUi(opts: BenchOptions): Promise<Metric[]> {
  const dir = await Deno.makeTempDir({ prefix: "carrel-bench-ui-" });
  const total = opts.quick ? 1_000 : 10_000;
  const rounds = opts.quick ? 15 : 40;
  try {
    await Deno.mkdir(join(dir, "dags"));
    await Deno.writeTextFile(join(dir, "dags", "grid50.ts"), dagFile());
    await using store = await openPgliteStore(join(dir, "state"));
    await store.migrate();
    const tasks = Array.from({ length: TASKS }, (_, i) => `t${String(i).padStart(2, "0")}`);
    await seedRunHistory(store.client, {
      dagId: "grid50",
      tasks,
      runs: RUNS,
      start: new Date("2026-01-01T00:00:00Z"),
    });
    await seedRunHistory(store.client, {
      dagId: "filler",
      tasks: ["extract", "gate", "load"],
      runs: total - RUNS,
      start: new Date("2024-01-01T00:00:00Z"),
      stepMs: 600_000,
    });
    const { app } = createConsole({
      store,
      home: dir,
      dagsDir: join(dir, "dags"),
      auth: {},
      host: "127.0.0.1",
      dagsTtlMs: 3_600_000,
    });
    const url = `http://127.0.0.1/dags/grid50?limit=${RUNS}`;
    const page = async () => {
      const res = await app.request(url, { headers: { host: "127.0.0.1" } });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`The grid page answered ${res.status}`);
      return text;
    };
    const cells = (await page()).match(/<td class="cell /g)?.length ?? 0;
    if (cells !== TASKS * RUNS) {
      throw new Error(`The grid page shows ${cells} cells, expected ${TASKS * RUNS}`);
    }
    // The baseline: the fastest one-statement read of the same cells we know (one row per run,
    // its cells aggregated), decoded into the same tuples, with no application around it.
    const bare = async () => {
      const rows = await store.client.query<{ run_id: string; cells: string }>(
        `SELECT t.run_id, json_agg(json_build_array(t.task_id, t.state, t.try_number))::text AS cells
         FROM task_instances t
         JOIN (SELECT run_id FROM dag_runs WHERE dag_id = $1 ORDER BY logical_date DESC LIMIT $2) r
           ON r.run_id = t.run_id
         GROUP BY t.run_id`,
        ["grid50", RUNS],
      );
      return rows.flatMap((r) => JSON.parse(r.cells) as unknown[]);
    };
    // And a plain row-per-cell read, reported alongside.
    const rowPerCell = () =>
      store.client.query(
        `SELECT t.run_id, t.task_id, t.state FROM task_instances t
         JOIN (SELECT run_id FROM dag_runs WHERE dag_id = $1 ORDER BY logical_date DESC LIMIT $2) r
           ON r.run_id = t.run_id`,
        ["grid50", RUNS],
      );
    if ((await bare()).length !== TASKS * RUNS) throw new Error("The bare query missed cells");
    // Alternate so that both see the same machine load.
    const pageTimes: number[] = [];
    const bareTimes: number[] = [];
    const rowTimes: number[] = [];
    for (let i = 0; i < rounds; i++) {
      pageTimes.push((await timeMedian(1, page)).ms);
      bareTimes.push((await timeMedian(1, bare)).ms);
      rowTimes.push((await timeMedian(1, rowPerCell)).ms);
    }
    return [
      metric("ui.grid_ms", median(pageTimes), "ms", {
        name: "the same cells by one bare SQL query (one row per run)",
        value: median(bareTimes),
      }, {
        tasks: TASKS,
        runs: RUNS,
        storeRuns: total,
        rounds,
        target_ms: 200,
        row_per_cell_query_ms: Math.round(median(rowTimes) * 10) / 10,
      }),
    ];
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const metrics = await benchUi({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(metrics, null, 2));
}
