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
 * `catalog_sync.bibframe_records_per_s` (read, map and write BIBFRAME RDF/XML + JSON-LD, against
 * the discovery-JSON path: the same read and map writing `catalog.jsonl`, in the same run),
 * `circulation_sync.records_per_s`, `circulation_sync.peak_rss_mb` (1M circulations; quick 50k),
 * and in full mode the 10M/1M peak RSS ratio of circulation_sync in `extra.rss_ratio_10m_1m`.
 * With a PostgreSQL ILS, `circulation_sync.peak_rss_mb` also reports the DAG's peak and rate with
 * the run state on PostgreSQL instead of the embedded store (`extra.state_on_postgres_*`,
 * sandboxed and not, first round only): what a deployment with `CARREL_DATABASE_URL` holds.
 * The ILS and warehouse are PostgreSQL (`CARREL_BENCH_DATABASE_URL`, else
 * `CARREL_TEST_DATABASE_URL`), else PGlite data directories.
 *
 * The catalog metrics alone: `deno run -A --unstable-worker-options bench/library_bench.ts catalog
 * [--quick]`.
 *
 * The circulation metrics alone, at any size (the 10M memory run with `--big`):
 * `deno run -A --unstable-worker-options bench/library_bench.ts circulation --rows 1000000
 * [--rounds N] [--big]`, or `CARREL_BENCH_CIRCULATIONS=1000000 deno task bench library`.
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
  | { kind: "catalog-dag"; input: string; output: string; home: string; unsandboxed?: boolean }
  | { kind: "catalog-script"; input: string; output: string }
  | { kind: "catalog-bibframe"; input: string; output: string }
  | { kind: "catalog-discovery"; input: string; output: string }
  | {
    kind: "circulation-dag";
    source: string;
    target: string;
    home: string;
    unsandboxed?: boolean;
    /** A PostgreSQL state store (else the embedded one in `home`). */
    stateUrl?: string;
  }
  | { kind: "circulation-script"; source: string; target: string }
  | { kind: "circulation-copy-script"; source: string; target: string };

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

/** The catalog_sync metrics (exported to run them alone). */
export async function catalogBench(quick: boolean, tmp: string): Promise<Metric[]> {
  const { generateFixtures } = await import("../fixtures/main.ts");
  const n = quick ? 10_000 : 100_000;
  await generateFixtures({ out: join(tmp, "fx"), records: n, circulations: 0 });
  const input = join(tmp, "fx", "marc");
  const dag = await runChild({
    kind: "catalog-dag",
    input,
    output: join(tmp, "catalog-dag"),
    home: join(tmp, "home-catalog"),
  });
  const open = await runChild({
    kind: "catalog-dag",
    input,
    output: join(tmp, "catalog-dag-unsandboxed"),
    home: join(tmp, "home-catalog-unsandboxed"),
    unsandboxed: true,
  });
  const script = await runChild({
    kind: "catalog-script",
    input,
    output: join(tmp, "catalog-script"),
  });
  const bibframePath = await runChild({
    kind: "catalog-bibframe",
    input,
    output: join(tmp, "catalog-bibframe"),
  });
  const discoveryPath = await runChild({
    kind: "catalog-discovery",
    input,
    output: join(tmp, "catalog-discovery"),
  });
  const rate = (r: ChildResult) => r.records / (r.ms / 1000);
  const extra = { records: n, dag_s: dag.ms / 1000, script_s: script.ms / 1000 };
  return [
    metric("catalog_sync.bibframe_records_per_s", rate(bibframePath), "records/s", {
      name: "discovery-JSON path (same read and mapping, writing catalog.jsonl)",
      value: rate(discoveryPath),
    }, {
      records: bibframePath.records,
      bibframe_s: bibframePath.ms / 1000,
      discovery_s: discoveryPath.ms / 1000,
      bibframe_peak_rss_mb: bibframePath.hwmMb,
    }),
    metric("catalog_sync.records_per_s", rate(dag), "records/s", {
      name:
        "hand-written streaming script (same codec, sanitizer, gate, checkpoint, writers, BIBFRAME in one pass)",
      value: rate(script),
    }, extra),
    metric("catalog_sync.records_per_s.sandboxed", rate(dag), "records/s", {
      name: "the same DAG with every task in-process (no sandbox)",
      value: rate(open),
    }, {
      records: n,
      sandboxed_s: dag.ms / 1000,
      unsandboxed_s: open.ms / 1000,
      target_within_10_percent: rate(dag) >= 0.9 * rate(open),
    }),
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
  const { loadIlsFixture } = await import("../fixtures/ils.ts");
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
  const { openPglite } = await import("../operators/ils/sql.ts");
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

/** Records per second of a child's work. */
function rate(r: ChildResult): number {
  return r.records / (r.ms / 1000);
}

/** The best (highest-rate) of several results: noise on a shared machine only slows runs down. */
function best(results: ChildResult[]): ChildResult {
  return results.reduce((a, b) => rate(b) > rate(a) ? b : a);
}

/**
 * Runs the DAG and the hand-written COPY script `rounds` times each, alternating, from `source`
 * to fresh targets, and returns every result (the first target of each kind is reused: reruns add
 * no rows but the work done is the same, so each round starts from an empty target instead).
 */
async function circulationRounds(
  ils: Ils,
  rounds: number,
  tmp: string,
  warehouse: "same" | "pglite",
  label: string,
): Promise<{
  dag: ChildResult[];
  copy: ChildResult[];
  script: ChildResult[];
  unsandboxed: ChildResult[];
  /** Sandboxed and unsandboxed, with the run state on PostgreSQL (first round, server ILS). */
  serverState: { sandboxed: ChildResult; unsandboxed: ChildResult } | undefined;
}> {
  const out = {
    dag: [] as ChildResult[],
    copy: [] as ChildResult[],
    script: [] as ChildResult[],
    unsandboxed: [] as ChildResult[],
    serverState: undefined as { sandboxed: ChildResult; unsandboxed: ChildResult } | undefined,
  };
  const targetFor = async (name: string) =>
    warehouse === "pglite"
      ? `pglite:${join(tmp, `wh-${label}-${name}-${crypto.randomUUID().slice(0, 8)}`)}`
      : await ils.target(`${label}${name}`);
  for (let round = 0; round < rounds; round++) {
    out.copy.push(
      await runChild({
        kind: "circulation-copy-script",
        source: ils.source,
        target: await targetFor(`c${round}`),
      }),
    );
    out.dag.push(
      await runChild({
        kind: "circulation-dag",
        source: ils.source,
        target: await targetFor(`d${round}`),
        home: join(tmp, `home-circ-${label}-${round}`),
      }),
    );
    if (warehouse === "same") {
      out.unsandboxed.push(
        await runChild({
          kind: "circulation-dag",
          source: ils.source,
          target: await targetFor(`u${round}`),
          home: join(tmp, `home-circ-${label}-u${round}`),
          unsandboxed: true,
        }),
      );
    }
    if (warehouse === "same" && round === 0) {
      out.script.push(
        await runChild({
          kind: "circulation-script",
          source: ils.source,
          target: await targetFor(`s${round}`),
        }),
      );
    }
    if (warehouse === "same" && round === 0 && ils.backend === "postgres") {
      // What a deployment with CARREL_DATABASE_URL holds: no embedded state store in the process.
      const serverState = async (unsandboxed: boolean, name: string) =>
        await runChild({
          kind: "circulation-dag",
          source: ils.source,
          target: await targetFor(name),
          home: join(tmp, `home-circ-${label}-${name}`),
          unsandboxed,
          stateUrl: await ils.target(`${name}state`),
        });
      out.serverState = {
        sandboxed: await serverState(false, "ps"),
        unsandboxed: await serverState(true, "pu"),
      };
    }
  }
  return out;
}

/**
 * The circulation_sync metrics (exported to run them alone). `rows` overrides the size (quick
 * 50k, full 1M; `CARREL_BENCH_CIRCULATIONS` sets it from the environment); the 10M memory run is
 * part of the full mode only, or of `big: true`.
 */
export async function circulationBench(
  quick: boolean,
  tmp: string,
  options: { rows?: number; rounds?: number; big?: boolean } = {},
): Promise<Metric[]> {
  const fromEnv = Number(Deno.env.get("CARREL_BENCH_CIRCULATIONS") ?? "");
  const n = options.rows ?? (fromEnv > 0 ? fromEnv : quick ? 50_000 : 1_000_000);
  const rounds = options.rounds ?? (quick ? 1 : 2);
  const ils = await makeIls(n, tmp, "m");
  let same: Awaited<ReturnType<typeof circulationRounds>>;
  let embedded: Awaited<ReturnType<typeof circulationRounds>> | undefined;
  try {
    same = await circulationRounds(ils, rounds, tmp, "same", "s");
    if (ils.backend === "postgres") {
      embedded = await circulationRounds(ils, rounds, tmp, "pglite", "p");
    }
  } finally {
    await ils.cleanup();
  }
  const dag = best(same.dag);
  const copy = best(same.copy);
  const script = same.script[0]!;
  const extra: Record<string, unknown> = {
    circulations: n,
    backend: `${ils.backend} to ${ils.backend}`,
    rounds,
    dag_s: same.dag.map((r) => r.ms / 1000),
    copy_script_s: same.copy.map((r) => r.ms / 1000),
    streaming_script_records_per_s: rate(script),
    streaming_script_s: script.ms / 1000,
    target_100k_records_per_s: rate(dag) >= 100_000,
    target_0_67_of_copy_script: rate(dag) / rate(copy) >= 0.67,
  };
  if (options.big ?? !quick) {
    const big = await makeIls(10_000_000, tmp, "x");
    try {
      const r10 = await runChild({
        kind: "circulation-dag",
        source: big.source,
        target: await big.target("dag"),
        home: join(tmp, "home-circ-10m"),
      });
      extra.peak_rss_mb_10m = r10.hwmMb;
      extra.records_per_s_10m = rate(r10);
      extra.rss_ratio_10m_1m = r10.hwmMb / dag.hwmMb;
      extra.rss_within_1_5x = r10.hwmMb / dag.hwmMb <= 1.5;
    } finally {
      await big.cleanup();
    }
  }
  const baseline = "hand-written script: COPY out, the same de-identification and tokenizer, " +
    "COPY into a staging table, one INSERT ... ON CONFLICT DO NOTHING";
  const open = best(same.unsandboxed);
  const metrics = [
    metric("circulation_sync.records_per_s.sandboxed", rate(dag), "records/s", {
      name: "the same DAG with every task in-process (no sandbox)",
      value: rate(open),
    }, {
      circulations: n,
      backend: `${ils.backend} to ${ils.backend}`,
      rounds,
      sandboxed_s: same.dag.map((r) => r.ms / 1000),
      unsandboxed_s: same.unsandboxed.map((r) => r.ms / 1000),
      target_within_10_percent: rate(dag) >= 0.9 * rate(open),
    }),
    metric("circulation_sync.records_per_s", rate(dag), "records/s", {
      name: baseline,
      value: rate(copy),
    }, extra),
    metric("circulation_sync.peak_rss_mb", dag.hwmMb, "MB", {
      name: "hand-written COPY script",
      value: copy.hwmMb,
    }, {
      ...extra,
      streaming_script_peak_rss_mb: script.hwmMb,
      unsandboxed_peak_rss_mb: open.hwmMb,
      ...(same.serverState === undefined ? {} : {
        state_on_postgres_peak_rss_mb: {
          sandboxed: same.serverState.sandboxed.hwmMb,
          unsandboxed: same.serverState.unsandboxed.hwmMb,
        },
        state_on_postgres_records_per_s: {
          sandboxed: rate(same.serverState.sandboxed),
          unsandboxed: rate(same.serverState.unsandboxed),
        },
      }),
    }),
  ];
  if (embedded !== undefined) {
    const eDag = best(embedded.dag);
    const eCopy = best(embedded.copy);
    metrics.push(
      metric("circulation_sync.records_per_s.pglite_warehouse", rate(eDag), "records/s", {
        name: `${baseline} (PostgreSQL ILS, embedded PGlite warehouse: COPY FROM '/dev/blob')`,
        value: rate(eCopy),
      }, {
        circulations: n,
        backend: "postgres to pglite",
        rounds,
        dag_s: embedded.dag.map((r) => r.ms / 1000),
        copy_script_s: embedded.copy.map((r) => r.ms / 1000),
        dag_peak_rss_mb: eDag.hwmMb,
        copy_script_peak_rss_mb: eCopy.hwmMb,
      }),
    );
  }
  return metrics;
}

/** The ids of `pid`'s child processes (none once it has exited). */
function childPids(pid: number): number[] {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim();
    return text === "" ? [] : text.split(/\s+/).map(Number);
  } catch {
    return [];
  }
}

/** `VmRSS` and `VmHWM` of a process, in MB (0 once it has exited). */
function memoryOf(pid: number): { rss: number; hwm: number } {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
    return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

/** What {@linkcode treePeak} measured. */
interface TreePeak {
  /** Highest sum of the resident memory of the process and all its descendants at one moment. */
  treeMb: number;
  /** Highest peak (`VmHWM`) of any single process of the tree. */
  processMb: number;
  /** Processes seen. */
  processes: number;
}

/**
 * Runs `deno <args>` and samples its whole process tree every 25 ms: the sum of the resident
 * memory of every process alive at that moment (a demo step runs in a child while the demo's own
 * process waits: both count), and each process's own peak.
 */
async function treePeak(
  args: string[],
  env: Record<string, string>,
  cwd: string,
): Promise<TreePeak> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let treeMb = 0;
  let processMb = 0;
  const seen = new Set<number>();
  const sample = () => {
    const pending = [child.pid];
    let sum = 0;
    while (pending.length > 0) {
      const pid = pending.pop()!;
      pending.push(...childPids(pid));
      seen.add(pid);
      const { rss, hwm } = memoryOf(pid);
      sum += rss;
      processMb = Math.max(processMb, hwm);
    }
    treeMb = Math.max(treeMb, sum);
  };
  const timer = setInterval(sample, 25);
  const out = await child.output();
  clearInterval(timer);
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr).slice(-1000);
    throw new Error(`deno ${args.join(" ")} failed (exit ${out.code}): ${stderr}`);
  }
  return { treeMb: Math.max(treeMb, processMb), processMb, processes: seen.size };
}

/**
 * The demo metric (exported to run it alone): peak RSS of `deno task demo` (a fresh
 * `CARREL_HOME`), measured from outside as a child process:
 * the highest sum over its whole process tree at one moment (the demo runs each step in a child
 * process), against the floor of one embedded database: a process that opens one PGlite data
 * directory, creates a table and closes it.
 */
export async function demoBench(tmp: string): Promise<Metric[]> {
  const root = new URL("..", import.meta.url).pathname;
  const run = ["run", "--unstable-worker-options", "--allow-all", "--quiet", "--config", CONFIG];
  const env = (home: string) => ({
    ...Deno.env.toObject(),
    CARREL_HOME: home,
    PII_HMAC_KEY: BENCH_KEY,
    CARREL_LOG_FORMAT: "json",
  });
  const demo = await treePeak(
    [...run, join(root, "cli/demo.ts")],
    env(join(tmp, "demo-home")),
    root,
  );
  const prepared = await new Deno.Command(Deno.execPath(), {
    args: [...run, SELF, "child-pglite-floor", "prepare"],
    env: env(join(tmp, "floor-home")),
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!prepared.success) {
    throw new Error(
      `Cannot make the PGlite template: ${new TextDecoder().decode(prepared.stderr)}`,
    );
  }
  const floor = await treePeak(
    [...run, SELF, "child-pglite-floor"],
    env(join(tmp, "floor-home")),
    root,
  );
  return [
    metric("demo.peak_rss_mb", demo.treeMb, "MB", {
      name: "one process opening one embedded PGlite database as Carrel opens it",
      value: floor.treeMb,
    }, {
      target_mb: 600,
      within_target: demo.treeMb <= 600,
      largest_process_mb: demo.processMb,
      processes: demo.processes,
      measured: "sum of VmRSS over the demo's process tree, sampled every 25 ms, and at least " +
        "the largest process's VmHWM",
    }),
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
      ...await demoBench(tmp),
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
  unsandboxed = false,
  stateUrl?: string,
): Promise<number> {
  const { resolveDag, resolveParams, executeRun, intervalAt } = await import("../core/mod.ts");
  const { openPostgresStore } = await import("../core/state/postgres.ts");
  await using store = stateUrl === undefined ? undefined : await openPostgresStore(stateUrl);
  await store?.migrate();
  const dag = resolveDag((await import(file)).default, file);
  // The same DAG with every task in-process: the sandbox's cost is the difference.
  if (unsandboxed) { for (const t of dag.tasks.values()) t.sandbox.mode = "none"; }
  const interval = dag.schedule
    ? intervalAt(dag, new Date(date))
    : { start: new Date(date), end: new Date(date) };
  const result = await executeRun({
    dag,
    interval,
    params: resolveParams(dag, params),
    home,
    ...(store === undefined ? {} : { store }),
  });
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
  const {
    toBibframe,
    bibframeRdfXml,
    bibframeJsonLd,
    JSONLD_CONTEXT,
    RDF_XML_HEADER,
    RDF_XML_FOOTER,
  } = await import("../operators/marc/bibframe.ts");
  const { createGate } = await import("../operators/privacy/gate.ts");
  const { createCheckpoint } = await import("../operators/privacy/checkpoint_checks.ts");
  const gate = createGate({ schema: CatalogRecord, onInvalid: "quarantine" });
  const checkpoint = createCheckpoint({});
  const quarantine: unknown[] = [];
  let position = 0;
  await Deno.mkdir(output, { recursive: true });
  // BIBFRAME in the same pass, as the DAG's bibframe task writes it.
  const rdf = await Deno.open(join(output, "catalog.bibframe.rdf"), { write: true, create: true });
  const ld = await Deno.open(join(output, "catalog.bibframe.jsonld"), {
    write: true,
    create: true,
  });
  const enc = new TextEncoder();
  let rdfBuf = RDF_XML_HEADER;
  let ldBuf = `{"@context":${JSON.stringify(JSONLD_CONTEXT)},"@graph":[\n`;
  const flush = async (force: boolean) => {
    if (force || rdfBuf.length > 1 << 18) {
      await rdf.write(enc.encode(rdfBuf));
      await ld.write(enc.encode(ldBuf));
      rdfBuf = "";
      ldBuf = "";
    }
  };
  let linked = 0;
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
      const record = checked.value as typeof c.record;
      const graph = toBibframe(record.marc, {
        id: record.id,
        ...(record.items ? { items: record.items } : {}),
      });
      rdfBuf += bibframeRdfXml(graph);
      ldBuf += (linked++ > 0 ? ",\n" : "") +
        bibframeJsonLd(graph).map((o) => JSON.stringify(o)).join(",\n");
      await flush(false);
      yield record as never;
    }
  }
  const { written } = await writeCatalogFiles(output, records());
  rdfBuf += RDF_XML_FOOTER;
  ldBuf += "\n]}\n";
  await flush(true);
  rdf.close();
  ld.close();
  await jsonlWrite(join(output, "quarantine.jsonl"), quarantine);
  if (!checkpoint.verdict().passed) throw new Error("checkpoint failed");
  return written;
}

/** Read and map like catalog_sync, then write BIBFRAME (`bibframe`) or discovery JSON only. */
async function catalogPath(input: string, output: string, bibframe: boolean): Promise<number> {
  const { readMarcFiles, toCatalogRecord, writeBibframeFiles, jsonlWrite } = await import(
    "../operators/mod.ts"
  );
  async function* records() {
    for await (const r of readMarcFiles(input)) {
      if (!r.ok) continue;
      const c = toCatalogRecord(r.record);
      if (c.ok) yield c.record;
    }
  }
  if (bibframe) return (await writeBibframeFiles(output, records())).written;
  let written = 0;
  async function* docs() {
    for await (const { marc: _marc, ...doc } of records()) {
      written++;
      yield doc;
    }
  }
  await Deno.mkdir(output, { recursive: true });
  await jsonlWrite(join(output, "catalog.jsonl"), docs());
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
  const { createGate } = await import("../operators/privacy/gate.ts");
  const { createCheckpoint } = await import("../operators/privacy/checkpoint_checks.ts");
  const { activeKey, loadKeyring } = await import("../core/privacy/keyring.ts");
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

/**
 * The fastest way we know to do circulation_sync's work by hand: `COPY (query) TO STDOUT` (or
 * PGlite's `'/dev/blob'`), the same de-identification (only the event fields) and tokenizer on
 * the COPY text itself, `COPY ... FROM STDIN` into a staging table (PGlite: 4 MB blobs) and one
 * `INSERT ... ON CONFLICT (circ_id) DO NOTHING`.
 */
async function circulationCopyScript(source: string, target: string): Promise<number> {
  const { circulationEventsDdl, CIRCULATION_EVENT_COLUMNS, EVERGREEN_CIRCULATION_QUERY } =
    await import("../operators/mod.ts");
  const { activeKey, loadKeyring } = await import("../core/privacy/keyring.ts");
  const { PGlite } = await import("@electric-sql/pglite");
  const tokenizer = activeKey(await loadKeyring()).tokenizer();
  const query = EVERGREEN_CIRCULATION_QUERY.replace("$1", `'${WINDOW.from}'::timestamptz`)
    .replace("$2", `'${WINDOW.to}'::timestamptz`);
  // Query columns: 0 circ_id, 1 patron_id, 11 home_ou, 12 copy_id, 13 bib_id, 14 circ_lib,
  // 15 circ_modifier, 16 xact_start, 17 due_date, 18 checkin_time, 19 stop_fines,
  // 20 renewal_remaining; names, e-mails, barcodes, addresses and birth dates are dropped.
  const transform = (line: string): string => {
    const f = line.split("\t");
    const patron = f[1]!;
    const token = patron === "\\N" ? "\\N" : tokenizer.token(patron.replaceAll("\\\\", "\\"));
    return `${f[0]}\t${token}\t${f[12]}\t${f[13]}\t${f[14]}\t${f[11]}\t${f[15]}\t${f[16]}\t${
      f[17]
    }\t${f[18]}\t${f[19]}\t${f[20]}\t\\N\t\\N\n`;
  };
  const columns = CIRCULATION_EVENT_COLUMNS.join(",");
  const stageSql = "CREATE TEMP TABLE stage ON COMMIT DROP AS " +
    `SELECT ${columns} FROM circulation_events WITH NO DATA`;
  const insertSql = `INSERT INTO circulation_events (${columns}) SELECT ${columns} FROM stage ` +
    "ON CONFLICT (circ_id) DO NOTHING";
  let count = 0;
  // Source: calls `onLines` with complete lines, awaiting it (backpressure).
  const read = async (onLines: (lines: string[]) => Promise<void>) => {
    if (source.startsWith("pglite:")) {
      const db = await PGlite.create(source.slice("pglite:".length));
      const { blob } = (await db.query(`COPY (${query}) TO '/dev/blob'`)) as { blob?: Blob };
      await db.close();
      const text = await blob!.text();
      const lines = text.split("\n");
      lines.pop();
      for (let i = 0; i < lines.length; i += 20_000) await onLines(lines.slice(i, i + 20_000));
      return;
    }
    const sql = postgres(source, { max: 1, onnotice: () => {} });
    const stream = await sql.unsafe(`COPY (${query}) TO STDOUT`).readable();
    const decoder = new TextDecoder();
    let rest = "";
    await new Promise<void>((resolve, reject) => {
      let busy = Promise.resolve();
      stream.on("data", (chunk: Uint8Array) => {
        const text = rest + decoder.decode(chunk, { stream: true });
        const cut = text.lastIndexOf("\n");
        rest = text.slice(cut + 1);
        if (cut < 0) return;
        const lines = text.slice(0, cut).split("\n");
        stream.pause();
        busy = busy.then(() => onLines(lines)).then(() => void stream.resume(), reject);
      });
      stream.on("end", () => {
        // postgres.js may leave its socket paused when the COPY ends during backpressure.
        (stream as unknown as { _read(n: number): void })._read(0);
        busy.then(() => resolve(), reject);
      });
      stream.on("error", reject);
    });
    await sql.end();
  };
  if (target.startsWith("pglite:")) {
    const db = await PGlite.create(target.slice("pglite:".length));
    await db.exec(circulationEventsDdl());
    await db.exec("BEGIN");
    await db.exec(stageSql);
    let parts: string[] = [];
    let bytes = 0;
    const flush = async () => {
      if (parts.length === 0) return;
      await db.query("COPY stage FROM '/dev/blob'", [], { blob: new Blob(parts) });
      parts = [];
      bytes = 0;
    };
    await read(async (lines) => {
      for (const line of lines) {
        const out = transform(line);
        parts.push(out);
        bytes += out.length;
        count++;
      }
      if (bytes >= 4 << 20) await flush();
    });
    await flush();
    await db.query(insertSql);
    await db.exec("COMMIT");
    await db.close();
    return count;
  }
  const sql = postgres(target, { max: 1, onnotice: () => {} });
  await sql.unsafe(circulationEventsDdl()).simple();
  await sql.begin(async (tx) => {
    await tx.unsafe(stageSql);
    const writable = await tx.unsafe(`COPY stage (${columns}) FROM STDIN`).writable();
    await read(async (lines) => {
      let text = "";
      for (const line of lines) text += transform(line);
      count += lines.length;
      if (!writable.write(text)) await new Promise((resolve) => writable.once("drain", resolve));
    });
    writable.end();
    await new Promise((resolve, reject) => {
      writable.once("finish", resolve);
      writable.once("error", reject);
    });
    await tx.unsafe(insertSql);
  });
  await sql.end();
  return count;
}

/**
 * Opens one embedded database as Carrel opens every one (a copy of the template cluster, 16 MB of
 * buffers), creates a table, closes it: the floor of `demo.peak_rss_mb`. With `prepare`, only
 * makes the template when missing (run first, unmeasured: a first open on a machine runs initdb
 * once, which no later process pays).
 */
async function pgliteFloor(prepare: boolean): Promise<void> {
  const { ensurePgliteTemplate, openPgliteDatabase, pgliteTemplateDir } = await import(
    "../core/state/pglite_database.ts"
  );
  const template = pgliteTemplateDir();
  if (prepare) {
    if (template !== undefined) await ensurePgliteTemplate(template);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "carrel-pglite-floor-" });
  try {
    const db = await openPgliteDatabase(join(dir, "data"));
    await db.exec(
      "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)",
    );
    await db.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "child-pglite-floor") {
    await pgliteFloor(Deno.args[1] === "prepare");
    Deno.exit(0);
  }
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
          job.unsandboxed,
        );
        break;
      case "catalog-script":
        records = await catalogScript(job.input, job.output);
        break;
      case "catalog-bibframe":
        records = await catalogPath(job.input, job.output, true);
        break;
      case "catalog-discovery":
        records = await catalogPath(job.input, job.output, false);
        break;
      case "circulation-dag":
        records = await dagChild(
          CIRCULATION_DAG,
          { source: job.source, target: job.target, ...WINDOW },
          "2026-01-05T02:00:00Z",
          job.home,
          "load",
          job.unsandboxed,
          job.stateUrl,
        );
        break;
      case "circulation-script":
        records = await circulationScript(job.source, job.target);
        break;
      case "circulation-copy-script":
        records = await circulationCopyScript(job.source, job.target);
        break;
    }
    const ms = performance.now() - started;
    const hwmMb = vmHwmMb(await Deno.readTextFile("/proc/self/status"));
    console.log(JSON.stringify({ records, ms, hwmMb }));
    Deno.exit(0);
  }
  const quick = Deno.args.includes("--quick");
  // `circulation [--rows N] [--rounds N] [--big]`: the circulation_sync metrics alone.
  const flag = (name: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 ? Number(Deno.args[i + 1]) : undefined;
  };
  /** Runs `bench` with a temporary folder, removed afterwards. */
  const inTmp = async (bench: (tmp: string) => Promise<Metric[]>): Promise<Metric[]> => {
    const tmp = await Deno.makeTempDir({ prefix: "carrel-library-bench-" });
    try {
      return await bench(tmp);
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  };
  let metrics: Metric[];
  if (Deno.args.includes("catalog")) {
    metrics = await inTmp((tmp) => catalogBench(quick, tmp));
  } else if (Deno.args.includes("circulation")) {
    const rows = flag("--rows");
    const rounds = flag("--rounds");
    metrics = await inTmp((tmp) =>
      circulationBench(quick, tmp, {
        ...(rows === undefined ? {} : { rows }),
        ...(rounds === undefined ? {} : { rounds }),
        big: Deno.args.includes("--big"),
      })
    );
  } else {
    metrics = await benchLibrary({ quick });
  }
  console.log(JSON.stringify({ metrics }, null, 2));
}
