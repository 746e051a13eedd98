/**
 * Audit trail benchmarks on PostgreSQL:
 *
 * - `audit.appends_per_s.1`, `audit.appends_per_s.8`: audited transitions per second with 1 and 8
 *   runs appending at once, each append its own transaction (as a task transition is), through
 *   the store (`appendAudit`: per-run hash chains, a run's head row locked per append). Baseline:
 *   the same workload, same payloads, same connection pool, on the single global chain Carrel
 *   had before (migration 003's `carrel_audit_append`, every append locking one head row),
 *   installed in a schema of its own in the same database and measured in the same run.
 *
 * Needs `CARREL_BENCH_DATABASE_URL` (or `CARREL_TEST_DATABASE_URL`); without one it reports the
 * metrics as skipped. Runnable alone: `deno run --allow-all bench/audit_bench.ts [--quick]`.
 *
 * @module
 */
import type { AuditEntry, AuditInput } from "../core/audit.ts";
import { type AppendRow, collectAppended, logAudit } from "../core/state/audit_log.ts";
import { openPostgresStore } from "../core/state/postgres.ts";
import { LEGACY_AUDIT_SQL, legacyAuditPayload } from "../fixtures/legacy_audit.ts";
import type { SqlStateStore } from "../core/state/sql_store.ts";
import { type BenchOptions, median, type Metric, metric } from "./metric.ts";
import { freshDatabase, serverUrl } from "./workers_bench.ts";

const NAMES = ["audit.appends_per_s.1", "audit.appends_per_s.8"] as const;

type Append = (inputs: AuditInput[]) => Promise<void>;

let runSerial = 0;

/**
 * `writers` runs append `perWriter` transitions each, one transaction per append, all at once;
 * appends per second from the first start to the last commit.
 */
async function throughput(append: Append, writers: number, perWriter: number): Promise<number> {
  const runs = Array.from({ length: writers }, () => {
    const day = new Date(Date.UTC(2026, 0, 1) + runSerial++ * 86_400_000).toISOString();
    return `bench_audit@${day.replace(".000Z", "Z")}`;
  });
  const start = performance.now();
  await Promise.all(runs.map(async (runId) => {
    for (let i = 0; i < perWriter; i++) {
      await append([{
        correlationId: runId,
        dagId: "bench_audit",
        taskId: `t${i >> 1}`,
        operation: i % 2 ? "task:success" : "task:start",
        status: i % 2 ? "success" : "running",
        detail: { attempt: 1 },
      }]);
    }
  }));
  return (writers * perWriter) / ((performance.now() - start) / 1000);
}

/**
 * Runs the audit benchmarks; `[]` (and `onSkip` per metric) without a PostgreSQL server.
 *
 * @example
 * ```ts ignore
 * const metrics = await benchAudit({ quick: true });
 * ```
 */
export async function benchAudit(opts: BenchOptions): Promise<Metric[]> {
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
  // Short rounds, alternating with the baseline, medians: robust to a busy machine.
  const total = opts.quick ? 600 : 2000;
  const rounds = opts.quick ? 3 : 7;
  await using db = await freshDatabase(base, "audit");
  const store: SqlStateStore = await openPostgresStore(db.url, { max: 10 });
  try {
    await store.migrate();
    await store.client.exec(LEGACY_AUDIT_SQL);
    const ours: Append = (inputs) => store.appendAudit(inputs);
    // What the store did per append before: payload, one call, entries to the log.
    const legacy: Append = async (inputs) => {
      const { json, drafts } = legacyAuditPayload(inputs);
      const appended: AuditEntry[] = [];
      await store.client.transaction(async (tx) => {
        const rows = await tx.query<AppendRow>(
          `SELECT out_seq::text AS seq, out_hash AS hash, out_prev AS prev
           FROM legacy.carrel_audit_append($1::text::jsonb)`,
          [json],
        );
        collectAppended(drafts, rows, appended);
      });
      logAudit(appended);
    };
    // Warm-up: connections, plans, the JIT.
    await throughput(ours, 8, 20);
    await throughput(legacy, 8, 20);
    const metrics: Metric[] = [];
    for (const writers of [1, 8]) {
      const perWriter = Math.ceil(total / writers);
      const a: number[] = [];
      const b: number[] = [];
      for (let r = 0; r < rounds; r++) {
        b.push(await throughput(legacy, writers, perWriter));
        a.push(await throughput(ours, writers, perWriter));
      }
      metrics.push(metric(
        `audit.appends_per_s.${writers}`,
        median(a),
        "appends/s",
        {
          name: `one global hash chain (the design before), ${writers} run${
            writers > 1 ? "s" : ""
          } at once`,
          value: median(b),
        },
        { writers, appendsPerWriter: perWriter, rounds, quick: opts.quick },
      ));
    }
    return metrics;
  } finally {
    await store.close();
  }
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const skipped: { name: string; reason: string }[] = [];
  const metrics = await benchAudit({ quick, onSkip: (s) => skipped.push(s) });
  console.log(JSON.stringify({ metrics, skipped }, null, 2));
}
