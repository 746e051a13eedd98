/**
 * ILS breadth benchmarks: `koha_circulation_sync` (a generated Koha on MariaDB into PostgreSQL)
 * and `holds_sync` (a generated Evergreen's hold requests into a warehouse), each against a
 * hand-written script doing the same data work with the same drivers by the fastest path we know:
 * one streaming read (MariaDB `queryStream`, or a postgres.js cursor), the same de-identification
 * functions, HMAC tokens from `node:crypto`, and `COPY ... FROM STDIN` into a temporary table
 * followed by one idempotent `INSERT ... SELECT ... ON CONFLICT`. The script runs no schema gate
 * and no privacy checkpoint and keeps nothing on disk: the ratio is what Carrel's guarantees
 * (datasets, gate, checkpoint, audit, resumable state) cost. Both run in the same process kind
 * (a subprocess each), in the same run, on the same data.
 *
 * Metrics: `koha_circulation_sync.records_per_s` (200k checkouts; quick 20k) needs MariaDB
 * (`CARREL_BENCH_MYSQL_URL`, else `CARREL_TEST_MYSQL_URL`) and PostgreSQL
 * (`CARREL_BENCH_DATABASE_URL`, else `CARREL_TEST_DATABASE_URL`); `holds_sync.records_per_s`
 * (100k holds; quick 10k) runs on PostgreSQL when set, else on PGlite data directories.
 *
 * @module
 */
import { join } from "node:path";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import postgres from "postgres";
import { type Metric, metric } from "./metric.ts";
import type { BenchOptions } from "./metric.ts";

const SELF = new URL(import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const KOHA_DAG = new URL("../dags/koha_circulation_sync.ts", import.meta.url).pathname;
const HOLDS_DAG = new URL("../dags/holds_sync.ts", import.meta.url).pathname;
const BENCH_KEY = "carrel-bench-key-for-synthetic-data-only-0123456789";
const WINDOW = { from: "2026-01-01T00:00:00Z", to: "2026-01-15T00:00:00Z" };
const ZONE = "America/Chicago";
const BRANCHES = { CPL: 1, FFL: 2, MPL: 3, SPL: 4 };

type Job = { kind: "koha-dag" | "koha-script" | "holds-dag" | "holds-script"; home: string };

interface ChildResult {
  records: number;
  ms: number;
}

/** Runs one measurement in a subprocess; connections come through `CARREL_CONN_*`. */
async function child(job: Job, conns: Record<string, string>): Promise<ChildResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-worker-options",
      "--allow-all",
      "--quiet",
      "--config",
      CONFIG,
      SELF,
      "child",
      JSON.stringify(job),
    ],
    env: {
      PII_HMAC_KEY: Deno.env.get("PII_HMAC_KEY") ?? BENCH_KEY,
      CARREL_LOG_FORMAT: "json",
      ...conns,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0) {
    const stderr = new TextDecoder().decode(out.stderr).slice(-2000);
    throw new Error(`Benchmark child ${job.kind} failed (exit ${out.code}): ${stderr}`);
  }
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!) as ChildResult;
}

const rate = (r: ChildResult) => r.records / (r.ms / 1000);

function postgresDatabases(admin: string) {
  const sql = postgres(admin, { max: 1, onnotice: () => {} });
  const created: string[] = [];
  return {
    async create(label: string): Promise<string> {
      const name = `carrel_bench_${label}_${crypto.randomUUID().slice(0, 8)}`;
      await sql.unsafe(`CREATE DATABASE ${name}`);
      created.push(name);
      const url = new URL(admin);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async cleanup() {
      for (const name of created) {
        await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      }
      await sql.end();
    },
  };
}

async function kohaBench(
  quick: boolean,
  tmp: string,
  mysqlUrl: string,
  pgUrl: string,
): Promise<Metric[]> {
  const n = quick ? 20_000 : 200_000;
  const { connectKoha, loadKohaFixture } = await import("../fixtures/koha.ts");
  const mariadb = (await import("mariadb")).default;
  const { mysqlOptions } = await import("../operators/ils/sql_mysql.ts");
  const name = `carrel_bench_koha_${crypto.randomUUID().slice(0, 8)}`;
  const admin = await mariadb.createConnection(mysqlOptions(mysqlUrl, "the bench server"));
  await admin.query(`CREATE DATABASE \`${name}\``);
  const url = new URL(mysqlUrl.replace(/^(mysql|mariadb):/i, "http:"));
  url.pathname = `/${name}`;
  const koha = url.toString().replace(/^http:/, "mysql:");
  const pg = postgresDatabases(pgUrl);
  try {
    const conn = await connectKoha(koha);
    await loadKohaFixture(conn, {
      patrons: Math.max(100, n / 20),
      items: Math.max(300, n / 4),
      checkouts: n,
      start: WINDOW.from,
      end: WINDOW.to,
      timeZone: ZONE,
    });
    await conn.end();
    const dag = await child({ kind: "koha-dag", home: join(tmp, "home-koha") }, {
      CARREL_CONN_KOHA: koha,
      CARREL_CONN_WAREHOUSE: await pg.create("koha_dag"),
    });
    const script = await child({ kind: "koha-script", home: "" }, {
      CARREL_CONN_KOHA: koha,
      CARREL_CONN_WAREHOUSE: await pg.create("koha_script"),
    });
    return [
      metric("koha_circulation_sync.records_per_s", rate(dag), "records/s", {
        name: "hand-written script (mariadb queryStream, HMAC, COPY + INSERT ON CONFLICT)",
        value: rate(script),
      }, { checkouts: n, loaded: dag.records, dag_s: dag.ms / 1000, script_s: script.ms / 1000 }),
    ];
  } finally {
    await pg.cleanup();
    await admin.query(`DROP DATABASE IF EXISTS \`${name}\``).catch(() => {});
    await admin.end();
  }
}

async function holdsBench(quick: boolean, tmp: string, pgUrl: string | undefined) {
  const n = quick ? 10_000 : 100_000;
  const { loadIlsFixture } = await import("../fixtures/ils.ts");
  const fixture = {
    patrons: Math.max(100, n / 10),
    copies: Math.max(300, n / 2),
    circulations: 0,
    holds: n,
    start: WINDOW.from,
    end: WINDOW.to,
  };
  let source: string;
  let targets: [string, string];
  let cleanup = () => Promise.resolve();
  if (pgUrl) {
    const pg = postgresDatabases(pgUrl);
    cleanup = () => pg.cleanup();
    source = await pg.create("holds_ils");
    const sql = postgres(source, { max: 1, onnotice: () => {} });
    await loadIlsFixture(sql, fixture);
    await sql.end();
    targets = [await pg.create("holds_dag"), await pg.create("holds_script")];
  } else {
    const { openPglite } = await import("../operators/ils/sql.ts");
    const dir = join(tmp, "holds-ils");
    const db = await openPglite(dir);
    await loadIlsFixture(db, fixture);
    await db.close();
    source = `pglite:${dir}`;
    targets = [`pglite:${join(tmp, "holds-wh-dag")}`, `pglite:${join(tmp, "holds-wh-script")}`];
  }
  try {
    const dag = await child({ kind: "holds-dag", home: join(tmp, "home-holds") }, {
      CARREL_CONN_ILS: source,
      CARREL_CONN_WAREHOUSE: targets[0],
    });
    const script = await child({ kind: "holds-script", home: "" }, {
      CARREL_CONN_ILS: source,
      CARREL_CONN_WAREHOUSE: targets[1],
    });
    return [
      metric("holds_sync.records_per_s", rate(dag), "records/s", {
        name: "hand-written script (cursor, HMAC, COPY + INSERT ON CONFLICT DO UPDATE)",
        value: rate(script),
      }, {
        holds: n,
        backend: pgUrl ? "postgres" : "pglite",
        dag_s: dag.ms / 1000,
        script_s: script.ms / 1000,
      }),
    ];
  } finally {
    await cleanup();
  }
}

/**
 * Runs the ILS breadth benchmarks; a metric whose servers are missing is skipped, and says why.
 *
 * @example
 * ```ts ignore
 * import { benchIls } from "./ils_bench.ts";
 * console.log(await benchIls({ quick: true }));
 * ```
 */
export async function benchIls(opts: BenchOptions): Promise<Metric[]> {
  const mysqlUrl = Deno.env.get("CARREL_BENCH_MYSQL_URL") || Deno.env.get("CARREL_TEST_MYSQL_URL");
  const pgUrl = Deno.env.get("CARREL_BENCH_DATABASE_URL") ||
    Deno.env.get("CARREL_TEST_DATABASE_URL") || undefined;
  const tmp = await Deno.makeTempDir({ prefix: "carrel-ils-bench-" });
  const metrics: Metric[] = [];
  const attempt = async (name: string, run: () => Promise<Metric[]>) => {
    try {
      metrics.push(...await run());
    } catch (error) {
      if (!opts.onError) throw error;
      opts.onError({ name, message: error instanceof Error ? error.message : String(error) });
    }
  };
  try {
    if (!mysqlUrl || !pgUrl) {
      opts.onSkip?.({
        name: "koha_circulation_sync.records_per_s",
        reason: !mysqlUrl
          ? "CARREL_BENCH_MYSQL_URL (or CARREL_TEST_MYSQL_URL) is not set"
          : "CARREL_BENCH_DATABASE_URL (or CARREL_TEST_DATABASE_URL) is not set",
      });
    } else {
      await attempt(
        "koha_circulation_sync.records_per_s",
        () => kohaBench(opts.quick, tmp, mysqlUrl, pgUrl),
      );
    }
    await attempt("holds_sync.records_per_s", () => holdsBench(opts.quick, tmp, pgUrl));
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return metrics;
}

// ---------------------------------------------------------------------------------------------
// Child processes

async function dagChild(file: string, params: Record<string, unknown>, home: string) {
  const { resolveDag, resolveParams, executeRun } = await import("../core/mod.ts");
  const dag = resolveDag((await import(file)).default, file);
  const interval = { start: new Date(WINDOW.from), end: new Date(WINDOW.to) };
  const result = await executeRun({ dag, interval, params: resolveParams(dag, params), home });
  if (result.state !== "success") {
    const failed = result.tasks.filter((t) => t.state !== "success").map((t) =>
      `${t.taskId}: ${t.state} ${t.error ?? ""}`
    );
    throw new Error(`The DAG run failed: ${failed.join("; ")}`);
  }
  return (result.outputs.get("load") as { rows: number }).rows;
}

function tsv(value: unknown): string {
  if (value === null || value === undefined) return "\\N";
  return String(value).replace(
    /[\\\t\n\r]/g,
    (c) => c === "\\" ? "\\\\" : c === "\t" ? "\\t" : c === "\n" ? "\\n" : "\\r",
  );
}

/** COPY rows into a temporary copy of `table`, then one idempotent INSERT ... SELECT. */
async function copyLoad(
  url: string,
  ddl: string,
  table: string,
  columns: readonly string[],
  conflict: string,
  rows: AsyncIterable<Record<string, unknown>>,
): Promise<number> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  let n = 0;
  try {
    await sql.unsafe(ddl).simple();
    await sql.begin(async (tx) => {
      await tx.unsafe(`CREATE TEMP TABLE stage (LIKE ${table} INCLUDING DEFAULTS) ON COMMIT DROP`);
      const stream = await tx.unsafe(`COPY stage (${columns.join(",")}) FROM STDIN`).writable();
      let chunk = "";
      for await (const row of rows) {
        chunk += columns.map((c) => tsv(row[c])).join("\t") + "\n";
        n++;
        if (chunk.length > 1 << 16) {
          if (!stream.write(chunk)) await once(stream, "drain");
          chunk = "";
        }
      }
      stream.end(chunk);
      await once(stream, "finish");
      await tx.unsafe(
        `INSERT INTO ${table} (${columns.join(",")}) SELECT ${
          columns.join(",")
        } FROM stage ${conflict}`,
      );
    });
  } finally {
    await sql.end();
  }
  return n;
}

async function kohaScript(): Promise<number> {
  const mariadb = (await import("mariadb")).default;
  const { mysqlOptions } = await import("../operators/ils/sql_mysql.ts");
  const {
    KOHA_CIRCULATION_QUERY,
    kohaCirculationParams,
    deidentifyKohaCirculation,
    circulationEventsDdl,
    CIRCULATION_EVENT_COLUMNS,
  } = await import("../operators/mod.ts");
  const key = Deno.env.get("PII_HMAC_KEY")!;
  const conn = await mariadb.createConnection(
    mysqlOptions(Deno.env.get("CARREL_CONN_KOHA")!, "koha"),
  );
  async function* events() {
    const stream = conn.queryStream(
      KOHA_CIRCULATION_QUERY,
      kohaCirculationParams(new Date(WINDOW.from), new Date(WINDOW.to), ZONE),
    );
    for await (const row of stream) {
      const result = deidentifyKohaCirculation(row as Record<string, unknown>, {
        timeZone: ZONE,
        branches: BRANCHES,
      });
      if (!("event" in result)) continue;
      const { patron_id, ...event } = result.event;
      yield {
        ...event,
        patron_token: createHmac("sha256", key).update(String(patron_id)).digest("hex"),
      };
    }
  }
  try {
    return await copyLoad(
      Deno.env.get("CARREL_CONN_WAREHOUSE")!,
      circulationEventsDdl(),
      "circulation_events",
      CIRCULATION_EVENT_COLUMNS,
      "ON CONFLICT (circ_id) DO NOTHING",
      events(),
    );
  } finally {
    await conn.end();
  }
}

async function holdsScript(): Promise<number> {
  const {
    EVERGREEN_HOLDS_QUERY,
    deidentifyEvergreenHold,
    holdRequestsDdl,
    HOLD_REQUEST_COLUMNS,
    sqlExtract,
    sqlLoad,
    holdRequestsTarget,
  } = await import("../operators/mod.ts");
  const key = Deno.env.get("PII_HMAC_KEY")!;
  const source = Deno.env.get("CARREL_CONN_ILS")!;
  const target = Deno.env.get("CARREL_CONN_WAREHOUSE")!;
  const params = [new Date(WINDOW.from), new Date(WINDOW.to)];
  function tokenized(row: Record<string, unknown>) {
    const { patron_id, ...hold } = deidentifyEvergreenHold(row);
    return {
      ...hold,
      patron_token: createHmac("sha256", key).update(String(patron_id)).digest("hex"),
    };
  }
  if (source.startsWith("pglite:")) {
    // No COPY from a script into PGlite: the fastest path there is the same batched upsert.
    const embedded = async function* () {
      for await (const row of sqlExtract(source, EVERGREEN_HOLDS_QUERY, params)) {
        yield tokenized(row);
      }
    };
    const r = await sqlLoad(target, holdRequestsTarget(), embedded());
    return r.inserted + (r.updated ?? 0) + r.skipped;
  }
  const sql = postgres(source, { max: 1, onnotice: () => {} });
  async function* holds() {
    await using _ = { [Symbol.asyncDispose]: () => sql.end() };
    for await (const batch of sql.unsafe(EVERGREEN_HOLDS_QUERY, params).cursor(1000)) {
      for (const row of batch) yield tokenized(row);
    }
  }
  const others = HOLD_REQUEST_COLUMNS.filter((c) => c !== "hold_id");
  return await copyLoad(
    target,
    holdRequestsDdl(),
    "hold_requests",
    HOLD_REQUEST_COLUMNS,
    `ON CONFLICT (hold_id) DO UPDATE SET ${
      others.map((c) => `${c} = EXCLUDED.${c}`).join(", ")
    } WHERE (${others.map((c) => `hold_requests.${c}`).join(", ")}) IS DISTINCT FROM (${
      others.map((c) => `EXCLUDED.${c}`).join(", ")
    })`,
    holds(),
  );
}

if (import.meta.main) {
  if (Deno.args[0] === "child") {
    const job = JSON.parse(Deno.args[1]!) as Job;
    const started = performance.now();
    let records: number;
    switch (job.kind) {
      case "koha-dag":
        records = await dagChild(KOHA_DAG, {
          source: "koha",
          target: "warehouse",
          timezone: ZONE,
          branches: BRANCHES,
        }, job.home);
        break;
      case "koha-script":
        records = await kohaScript();
        break;
      case "holds-dag":
        records = await dagChild(HOLDS_DAG, { source: "ils", target: "warehouse" }, job.home);
        break;
      case "holds-script":
        records = await holdsScript();
        break;
    }
    console.log(JSON.stringify({ records, ms: performance.now() - started }));
    Deno.exit(0);
  }
  const metrics = await benchIls({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify({ metrics }, null, 2));
}
