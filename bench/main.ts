/**
 * `deno task bench [--quick] [--json] [module...]`: runs the benchmark modules one after another
 * and reports every metric with the baseline measured in the same run (CONTRACT.md section 3).
 *
 * - `--quick`: smaller inputs; the whole suite runs in well under 5 minutes on 2 cores.
 * - `--json`: prints exactly one JSON document on stdout:
 *   `{ metrics, skipped, errors, machine }`. Progress goes to stderr.
 * - `module...`: any of `executor`, `dags_list`, `tokenize`, `privacy`, `workers`, `library`,
 *   `ils`, `ui`, `audit` (default: all).
 *
 * A module that throws becomes an entry in `errors` (and the exit code is 1); the other modules
 * still run. Usage errors exit with 2.
 *
 * @module
 */
import { cpus, totalmem } from "node:os";
import { benchDagsList } from "./dags_list_bench.ts";
import { benchExecutor } from "./executor_bench.ts";
import { type BenchOptions, type Metric, roundSignificant, type Skipped } from "./metric.ts";
import { benchPrivacy } from "./privacy_bench.ts";
import { benchTokenize } from "./tokenize_bench.ts";
import { benchWorkers } from "./workers_bench.ts";
import { benchLibrary } from "./library_bench.ts";
import { benchIls } from "./ils_bench.ts";
import { benchUi } from "./ui_bench.ts";
import { benchAudit } from "./audit_bench.ts";
import { benchMapping } from "./mapping_bench.ts";

/** A benchmark module. */
interface Module {
  name: string;
  aliases: string[];
  run: (opts: BenchOptions) => Promise<Metric[]>;
}

/** The modules, in the order they run. */
const MODULES: Module[] = [
  { name: "executor", aliases: [], run: benchExecutor },
  { name: "dags_list", aliases: ["dags-list", "dags"], run: benchDagsList },
  { name: "tokenize", aliases: [], run: (opts) => benchTokenize({ quick: opts.quick }) },
  { name: "privacy", aliases: [], run: (opts) => benchPrivacy({ quick: opts.quick }) },
  { name: "workers", aliases: [], run: benchWorkers },
  { name: "library", aliases: ["catalog_sync", "circulation_sync"], run: benchLibrary },
  { name: "ils", aliases: ["koha_circulation_sync", "holds_sync"], run: benchIls },
  { name: "ui", aliases: ["console"], run: benchUi },
  { name: "audit", aliases: [], run: benchAudit },
  { name: "mapping", aliases: [], run: benchMapping },
];

/** A module that failed. */
export interface BenchError {
  module: string;
  /** The metric that failed, when the rest of its module could still be measured. */
  metric?: string;
  message: string;
}

/** What `--json` prints. */
export interface BenchReport {
  metrics: Metric[];
  skipped: Skipped[];
  errors: BenchError[];
  machine: Record<string, unknown>;
}

const USAGE = `Usage: deno task bench [--quick] [--json] [module...]

Runs Carrel's benchmarks; each metric is reported with a baseline measured in the same run.

Options:
  --quick     smaller inputs (the whole suite in well under 5 minutes)
  --json      print exactly one JSON document on stdout: { metrics, skipped, errors, machine }
  -h, --help  show this help

Modules (default: all, in this order): ${MODULES.map((m) => m.name).join(", ")}

Environment:
  CARREL_BENCH_DATABASE_URL  PostgreSQL server for the .postgres metrics (else
                             CARREL_TEST_DATABASE_URL; without either they are skipped).
                             Databases named carrel_bench_* are created and dropped there.
  CARREL_BENCH_MYSQL_URL     MariaDB server for koha_circulation_sync (else
                             CARREL_TEST_MYSQL_URL; without either it is skipped).
`;

/** Parsed command line. */
interface Args {
  quick: boolean;
  json: boolean;
  help: boolean;
  modules: Module[];
}

function parseArgs(args: string[]): Args | string {
  const result: Args = { quick: false, json: false, help: false, modules: [] };
  for (const arg of args) {
    if (arg === "--quick") result.quick = true;
    else if (arg === "--json") result.json = true;
    else if (arg === "--help" || arg === "-h") result.help = true;
    else if (arg.startsWith("-")) return `Unknown option "${arg}"`;
    else {
      const mod = MODULES.find((m) => m.name === arg || m.aliases.includes(arg));
      if (!mod) {
        return `Unknown benchmark module "${arg}": expected ${
          MODULES.map((m) => m.name).join(", ")
        }`;
      }
      if (!result.modules.includes(mod)) result.modules.push(mod);
    }
  }
  if (result.modules.length === 0) result.modules = [...MODULES];
  else result.modules.sort((a, b) => MODULES.indexOf(a) - MODULES.indexOf(b));
  return result;
}

function loadavg(): number[] | null {
  try {
    return Deno.loadavg().map((x) => Math.round(x * 100) / 100);
  } catch {
    return null;
  }
}

function machine(
  quick: boolean,
  modules: Module[],
  durationS: number,
  loadBefore: number[] | null,
): Record<string, unknown> {
  const cpuList = cpus();
  return {
    cpus: navigator.hardwareConcurrency,
    cpu_model: cpuList[0]?.model ?? null,
    memory_gb: Math.round(totalmem() / 2 ** 30 * 10) / 10,
    os: Deno.build.os,
    arch: Deno.build.arch,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    date: new Date().toISOString(),
    quick,
    modules: modules.map((m) => m.name),
    duration_s: Math.round(durationS * 10) / 10,
    // Other processes compete for the CPUs when these are high: figures are then noisier.
    loadavg_before: loadBefore,
    loadavg_after: loadavg(),
  };
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Writes a line to stderr. */
function note(line: string): void {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
  } catch {
    // stderr closed: progress is optional.
  }
}

/** A number for people: 4 significant digits, exponent notation from a million. */
function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const r = roundSignificant(x);
  return Math.abs(r) >= 1e6 ? r.toExponential(3) : String(r);
}

function table(report: BenchReport): string {
  const header = ["METRIC", "VALUE", "UNIT", "BASELINE", "BASELINE VALUE", "RATIO"];
  const rows = report.metrics.map((m) => [
    m.name,
    formatNumber(m.value),
    m.unit,
    m.baseline.name,
    formatNumber(m.baseline.value),
    formatNumber(m.ratio),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const numeric = new Set([1, 4, 5]);
  const line = (cells: string[]) =>
    cells.map((c, i) => numeric.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)).join("  ")
      .trimEnd();
  const out = [line(header), ...rows.map(line)];
  if (report.skipped.length > 0) {
    out.push("", "Skipped:");
    for (const s of report.skipped) out.push(`  ${s.name}: ${s.reason}`);
  }
  if (report.errors.length > 0) {
    out.push("", "Errors:");
    for (const e of report.errors) out.push(`  ${e.metric ?? e.module}: ${e.message}`);
  }
  const m = report.machine;
  out.push(
    "",
    `${m.cpus} CPUs (${m.cpu_model}), Deno ${m.deno}, ${m.date}, ${
      m.quick ? "quick" : "full"
    } run in ${m.duration_s} s, load average ${JSON.stringify(m.loadavg_before)} before`,
  );
  return out.join("\n");
}

/** Runs the selected modules; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if (typeof parsed === "string") {
    note(`Error: ${parsed}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.help) {
    console.log(USAGE);
    return 0;
  }
  const report: BenchReport = { metrics: [], skipped: [], errors: [], machine: {} };
  // Keeps stdout for the report alone: anything a module prints goes to stderr.
  const saved = { log: console.log, info: console.info, debug: console.debug };
  console.log = console.info = console.debug = console.error;
  const t0 = performance.now();
  const loadBefore = loadavg();
  try {
    for (const mod of parsed.modules) {
      const start = performance.now();
      note(`bench: ${mod.name}${parsed.quick ? " (quick)" : ""}...`);
      try {
        const metrics = await mod.run({
          quick: parsed.quick,
          onSkip: (s) => report.skipped.push(s),
          onError: (e) => {
            report.errors.push({ module: mod.name, metric: e.name, message: e.message });
            note(`bench: ${e.name} failed: ${e.message}`);
          },
        });
        report.metrics.push(...metrics);
        note(
          `bench: ${mod.name} done in ${((performance.now() - start) / 1000).toFixed(1)} s, ${
            metrics.map((m) => `${m.name}=${formatNumber(m.value)} ${m.unit}`).join(", ")
          }`,
        );
      } catch (error) {
        report.errors.push({ module: mod.name, message: errorText(error) });
        note(`bench: ${mod.name} failed: ${errorText(error)}`);
      }
    }
  } finally {
    Object.assign(console, saved);
  }
  report.machine = machine(
    parsed.quick,
    parsed.modules,
    (performance.now() - t0) / 1000,
    loadBefore,
  );
  if (parsed.json) console.log(JSON.stringify(report, null, 2));
  else console.log(table(report));
  return report.errors.length > 0 ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
