/**
 * Library pipeline benchmarks: `catalog_sync` on generated MARC records and `circulation_sync` on
 * a generated Evergreen-shaped ILS, each against a hand-written script doing the same steps with
 * the same libraries in one streaming loop (the baseline), measured in the same run.
 *
 * Every measurement runs in its own subprocess (this file, `child` mode) so its peak RSS (VmHWM of
 * `/proc/self/status`, also sampled from the parent) is its own. Throughput counts the work only
 * (the DAG's `executeRun`, or the script's loop), not Deno's start-up.
 *
 * Metrics: `catalog_sync.records_per_s`, `catalog_sync.peak_rss_mb` (100k records; quick 10k),
 * `circulation_sync.records_per_s`, `circulation_sync.peak_rss_mb` (1M circulations; quick 50k),
 * and in full mode the 10M/1M peak RSS ratio of circulation_sync in `extra.rss_ratio_10m_1m`.
 * The ILS and warehouse are PostgreSQL (`CARREL_BENCH_DATABASE_URL`, else
 * `CARREL_TEST_DATABASE_URL`), else PGlite data directories.
 *
 * @module
 */
import { join } from "node:path";
import postgres from "postgres";
import { type Metric, metric } from "./metric.ts";
import type { BenchOptions } from "./metric.ts";

const SELF = new URL(import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const CATALOG_DAG = new URL("../dags/catalog_sync.ts", import.meta.url).pathname;
const CIRCULATION_DAG = new URL("../dags/circulation_sync.ts", import.meta.url).pathname;
const BENCH_KEY = "carrel-bench-key-for-synthetic-data-only-0123456789";
const WINDOW = { from: "2026-01-01T00:00:00Z", to: "2026-01-08T00:00:00Z" };

type ChildJob =
  | { kind: "catalog-dag"; input: string; output: string; home: string }
  | { kind: "catalog-script"; input: string; output: string }
  | { kind: "circulation-dag"; source: string; target: string; home: string }
  | { kind: "circulation-script"; source: string; target: string };

interface ChildResult {
  records: number;
  ms: number;
  hwmMb: number;
}

function vmHwmMb(status: string): number {
  const m = /VmHWM:\s+(\d+)\s+kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

async function runChild(job: ChildJob): Promise<ChildResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", "--config", CONFIG, SELF, "child", JSON.stringify(job)],
    env: { PII_HMAC_KEY: Deno.env.get("PII_HMAC_KEY") ?? BENCH_KEY, CARREL_LOG_FORMAT: "json" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let sampled = 0;
  const timer = setInterval(async () => {
    try {
      sampled = Math.max(sampled, vmHwmMb(await Deno.readTextFile(`/proc/${child.pid}/status`)));
    } catch { /* exited */ }
  }, 100);
  const out = await child.output();
  clearInterval(timer);
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n");
  if (out.code !== 0) {
    const stderr = new TextDecoder().decode(out.stderr).slice(-2000);
    throw new Error(`Benchmark child ${job.kind} failed (exit ${out.code}): ${stderr}`);
  }
  const result = JSON.parse(stdout[stdout.length - 1]!) as ChildResult;
  const hwm = Math.max(result.hwmMb, Number.isFinite(sampled) ? sampled : 0);
  return { ...result, hwmMb: hwm };
}

async function catalogBench(quick: boolean, tmp: string): Promise<Metric[]> {
  const { generateFixtures } = await import("../scripts/fixtures.ts");
  const n = quick ? 10_000 : 100_000;
  await generateFixtures({ out: join(tmp, "fx"), records: n, circulations: 0 });
  const input = join(tmp, "fx", "marc");
  const dag = await runChild({
    kind: "catalog-dag",
    input,
    output: join(tmp, "catalog-dag"),
    home: join(tmp, "home-catalog"),
  });
  const script = await runChild({
    kind: "catalog-script",
    input,
    output: join(tmp, "catalog-script"),
  });
  const rate = (r: ChildResult) => r.records / (r.ms / 1000);
  const extra = { records: n, dag_s: dag.ms / 1000, script_s: script.ms / 1000 };
  return [
    metric("catalog_sync.records_per_s", rate(dag), "records/s", {
      name: "hand-written streaming script (same codec, sanitizer, gate, checkpoint, writers)",
      value: rate(script),
    }, extra),
    metric("catalog_sync.peak_rss_mb", dag.hwmMb, "MB", {
      name: "hand-written streaming script",
      value: script.hwmMb,
    }, extra),
  ];
}

interface Ils {
  source: string;
  target(label: string): Promise<string>;
  cleanup(): Promise<void>;
  backend: string;
}

async function makeIls(circulations: number, tmp: string, label: string): Promise<Ils> {
  const { loadIlsFixture } = await import("../operators/ils_fixtures.ts");
  const admin = Deno.env.get("CARREL_BENCH_DATABASE_URL") ??
    Deno.env.get("CARREL_TEST_DATABASE_URL");
  const fixture = {
    patrons: Math.max(50, Math.ceil(circulations / 20)),
    copies: Math.max(100, Math.ceil(circulations / 5)),
    circulations,
    start: WINDOW.from,
    end: WINDOW.to,
  };
  if (admin) {
    const created: string[] = [];
    const adminSql = postgres(admin, { max: 1, onnotice: () => {} });
    const make = async (suffix: string) => {
      const name = `carrel_bench_${label}_${suffix}_${crypto.randomUUID().slice(0, 8)}`;
      await adminSql.unsafe(`CREATE DATABASE ${name}`);
      created.push(name);
      const url = new URL(admin);
      url.pathname = `/${name}`;
      return url.toString();
    };
    const source = await make("ils");
    const sql = postgres(source, { max: 1, onnotice: () => {} });
    await loadIlsFixture(sql, fixture);
    await sql.end();
    return {
      source,
      backend: "postgres",
      target: (l) => make(l),
      cleanup: async () => {
        for (const name of created) {
          await adminSql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
        }
        await adminSql.end();
      },
    };
  }
  const { openPglite } = await import("../operators/sql.ts");
  const dir = join(tmp, `ils-${label}`);
  const db = await openPglite(dir);
  await loadIlsFixture(db, fixture);
  await db.close();
  return {
    source: `pglite:${dir}`,
    backend: "pglite",
    target: (l) => Promise.resolve(`pglite:${join(tmp, `wh-${label}-${l}`)}`),
    cleanup: () => Promise.resolve(),
  };
}

async function circulationBench(quick: boolean, tmp: string): Promise<Metric[]> {
  const n = quick ? 50_000 : 1_000_000;
  const ils = await makeIls(n, tmp, "m");
  let dag: ChildResult;
  let script: ChildResult;
  try {
    dag = await runChild({
      kind: "circulation-dag",
      source: ils.source,
      target: await ils.target("dag"),
      home: join(tmp, "home-circ"),
    });
    script = await runChild({
      kind: "circulation-script",
      source: ils.source,
      target: await ils.target("script"),
    });
  } finally {
    await ils.cleanup();
  }
  const extra: Record<string, unknown> = {
    circulations: n,
    backend: ils.backend,
    dag_s: dag.ms / 1000,
    script_s: script.ms / 1000,
  };
  if (!quick) {
    const big = await makeIls(10_000_000, tmp, "x");
    try {
      const r10 = await runChild({
        kind: "circulation-dag",
        source: big.source,
        target: await big.target("dag"),
        home: join(tmp, "home-circ-10m"),
      });
      extra.peak_rss_mb_10m = r10.hwmMb;
      extra.records_per_s_10m = r10.records / (r10.ms / 1000);
      extra.rss_ratio_10m_1m = r10.hwmMb / dag.hwmMb;
      extra.rss_within_1_5x = r10.hwmMb / dag.hwmMb <= 1.5;
    } finally {
      await big.cleanup();
    }
  }
  const rate = (r: ChildResult) => r.records / (r.ms / 1000);
  return [
    metric("circulation_sync.records_per_s", rate(dag), "records/s", {
      name: "hand-written streaming script (same extract, tokenizer, gate, checkpoint, load)",
      value: rate(script),
    }, extra),
    metric("circulation_sync.peak_rss_mb", dag.hwmMb, "MB", {
      name: "hand-written streaming script",
      value: script.hwmMb,
    }, extra),
  ];
}

/**
 * Runs the library benchmarks.
 *
 * @example
 * ```ts ignore
 * import { benchLibrary } from "./library_bench.ts";
 * console.log(await benchLibrary({ quick: true }));
 * ```
 */
export async function benchLibrary(opts: BenchOptions | { quick: boolean }): Promise<Metric[]> {
  const tmp = await Deno.makeTempDir({ prefix: "carrel-library-bench-" });
  try {
    return [
      ...await catalogBench(opts.quick, tmp),
      ...await circulationBench(opts.quick, tmp),
    ];
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes

async function dagChild(
  file: string,
  params: Record<string, string>,
  date: string,
  home: string,
  countTask: string,
): Promise<number> {
  const { resolveDag, resolveParams, executeRun, intervalAt } = await import("../core/mod.ts");
  const dag = resolveDag((await import(file)).default, file);
  const interval = dag.schedule
    ? intervalAt(dag, new Date(date))
    : { start: new Date(date), end: new Date(date) };
  const result = await executeRun({ dag, interval, params: resolveParams(dag, params), home });
  if (result.state !== "success") {
    const failed = result.tasks.filter((t) => t.state !== "success").map((t) =>
      `${t.taskId}: ${t.state} ${t.error ?? ""}`
    );
    throw new Error(`The DAG run failed: ${failed.join("; ")}`);
  }
  const out = result.outputs.get(countTask) as Record<string, number>;
  return out.written ?? out.rows ?? 0;
}

async function catalogScript(input: string, output: string): Promise<number> {
  const { readMarcFiles, toCatalogRecord, CatalogRecord, writeCatalogFiles, jsonlWrite } =
    await import("../operators/mod.ts");
  const { createGate } = await import("../operators/gate.ts");
  const { createCheckpoint } = await import("../operators/checkpoint_checks.ts");
  const gate = createGate({ schema: CatalogRecord, onInvalid: "quarantine" });
  const checkpoint = createCheckpoint({});
  const quarantine: unknown[] = [];
  let position = 0;
  async function* records() {
    for await (const r of readMarcFiles(input)) {
      if (!r.ok) {
        quarantine.push({ file: r.file, position: r.position.index, reason: r.reason });
        continue;
      }
      const c = toCatalogRecord(r.record);
      if (!c.ok) continue;
      const checked = gate.check(c.record, ++position);
      if (!checked.ok) continue;
      checkpoint.check(checked.value, position);
      yield checked.value as never;
    }
  }
  const { written } = await writeCatalogFiles(output, records());
  await jsonlWrite(join(output, "quarantine.jsonl"), quarantine);
  if (!checkpoint.verdict().passed) throw new Error("checkpoint failed");
  return written;
}

async function circulationScript(source: string, target: string): Promise<number> {
  const {
    sqlExtract,
    sqlLoad,
    deidentifyCirculation,
    CirculationEvent,
    CIRCULATION_EVENTS_TARGET,
    EVERGREEN_CIRCULATION_QUERY,
  } = await import("../operators/mod.ts");
  const { createGate } = await import("../operators/gate.ts");
  const { createCheckpoint } = await import("../operators/checkpoint_checks.ts");
  const { activeKey, loadKeyring } = await import("../operators/keyring.ts");
  const tokenizer = activeKey(await loadKeyring()).tokenizer();
  const gate = createGate({ schema: CirculationEvent, onInvalid: "fail" });
  const checkpoint = createCheckpoint({ tokenized: ["patron_token"], schema: CirculationEvent });
  let position = 0;
  async function* events() {
    for await (
      const row of sqlExtract(source, EVERGREEN_CIRCULATION_QUERY, [
        new Date(WINDOW.from),
        new Date(WINDOW.to),
      ])
    ) {
      const { patron_id, ...event } = deidentifyCirculation(row);
      const tokenized = { ...event, patron_token: tokenizer.token(String(patron_id)) };
      const checked = gate.check(tokenized, ++position);
      if (!checked.ok) throw new Error(`record ${position} failed the gate`);
      const verdict = checkpoint.check(checked.value, position);
      if (!verdict.ok) throw new Error(`record ${position} failed the checkpoint`);
      yield checked.value as Record<string, unknown>;
    }
  }
  const { inserted, skipped } = await sqlLoad(target, CIRCULATION_EVENTS_TARGET, events());
  return inserted + skipped;
}

if (import.meta.main) {
  if (Deno.args[0] === "child") {
    const job = JSON.parse(Deno.args[1]!) as ChildJob;
    const started = performance.now();
    let records: number;
    switch (job.kind) {
      case "catalog-dag":
        records = await dagChild(
          CATALOG_DAG,
          { input: job.input, output: job.output },
          "2026-01-05T00:00:00Z",
          job.home,
          "publish",
        );
        break;
      case "catalog-script":
        records = await catalogScript(job.input, job.output);
        break;
      case "circulation-dag":
        records = await dagChild(
          CIRCULATION_DAG,
          { source: job.source, target: job.target, ...WINDOW },
          "2026-01-05T02:00:00Z",
          job.home,
          "load",
        );
        break;
      case "circulation-script":
        records = await circulationScript(job.source, job.target);
        break;
    }
    const ms = performance.now() - started;
    const hwmMb = vmHwmMb(await Deno.readTextFile("/proc/self/status"));
    console.log(JSON.stringify({ records, ms, hwmMb }));
    Deno.exit(0);
  }
  const quick = Deno.args.includes("--quick");
  const metrics = await benchLibrary({ quick });
  console.log(JSON.stringify({ metrics }, null, 2));
}
