/**
 * patron_activity: monthly checkout counts per branch, age band and format from an
 * Evergreen-shaped ILS, safe to publish: no count below 10, and no withheld count that the totals
 * give away.
 *
 * `extract` counts the month's circulations in the ILS itself (a read-only `GROUP BY`; birth dates
 * never leave the database, only the age band at checkout does), in the enclave: small groups
 * single patrons out ("the only patron aged 65+ at branch 7 who borrowed a CD"). `protect`
 * (`smallCells`, k = 10) withholds every count from 1 to 9 and, by complementary suppression, as
 * many others as it takes so that no withheld count can be recomputed from the published counts
 * and the row, column and other totals (`(all)` rows). `checkpoint` verifies the table
 * independently before it leaves the enclave, and `publish` writes
 * `patron_activity_<month>.csv` and `.jsonl` into `output`: one row per non-empty group, `count`
 * empty/`null` where withheld, `suppressed` true there.
 *
 * `source` is a connection name resolved through `CARREL_CONN_<NAME>`, a `postgres://` URL
 * without a password, or a `pglite:` path (the demo's generated ILS: no server needed).
 *
 *   deno task carrel dags run patron_activity --date 2026-01-01 \
 *     --param source=pglite:.carrel/demo/fixtures/ils --param output=out/activity
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import { defineDag, task } from "carrel";
import {
  isCredentialFree,
  jsonlWrite,
  privacyCheckpoint,
  smallCells,
  sqlExtract,
  upstreamRecords,
} from "carrel/operators";

/** The smallest count published: a reviewed constant, not a run-time param. */
const K = 10;
const TABLE = { by: ["month"], dimensions: ["branch", "age_band", "format"], k: K };

/** Circulations of [$1, $2) counted per month, branch, age band at checkout and format. */
const ACTIVITY_QUERY = `
SELECT to_char(date_trunc('month', c.xact_start AT TIME ZONE 'UTC'), 'YYYY-MM') AS month,
       c.circ_lib::text AS branch,
       CASE
         WHEN u.dob IS NULL THEN 'unknown'
         WHEN date_part('year', age(c.xact_start::date, u.dob)) < 13 THEN '0-12'
         WHEN date_part('year', age(c.xact_start::date, u.dob)) < 18 THEN '13-17'
         WHEN date_part('year', age(c.xact_start::date, u.dob)) < 25 THEN '18-24'
         WHEN date_part('year', age(c.xact_start::date, u.dob)) < 45 THEN '25-44'
         WHEN date_part('year', age(c.xact_start::date, u.dob)) < 65 THEN '45-64'
         ELSE '65+'
       END AS age_band,
       coalesce(cp.circ_modifier, 'unknown') AS format,
       count(*)::int AS count
  FROM action.circulation c
  JOIN actor.usr u ON u.id = c.usr
  LEFT JOIN asset.copy cp ON cp.id = c.target_copy
 WHERE c.xact_start >= $1 AND c.xact_start < $2
 GROUP BY 1, 2, 3, 4
 ORDER BY 1, 2, 3, 4`;

const Params = z.object({
  /** The ILS: a connection name, a postgres:// URL without password, or pglite:<path>. */
  source: z.string().min(1).refine(isCredentialFree, {
    error: "holds a password: put the URL in CARREL_CONN_<NAME> and pass the name",
  }).default("ils"),
  /** The folder the month's CSV and JSON Lines files are written to. */
  output: z.string().default(""),
}).strict();

type P = z.infer<typeof Params>;

function csvField(value: unknown): string {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export default defineDag<P>({
  id: "patron_activity",
  description:
    `Monthly checkouts per branch, age band and format, small cells protected (k = ${K})`,
  schedule: "@monthly",
  start: "2026-01-01T00:00:00Z",
  timezone: "UTC",
  catchup: false,
  params: Params,
  defaults: { retries: 1, retryDelay: "30s", timeout: "1h" },
  // Every task runs in a Worker with only what it declares below.
  sandbox: "strict",
  tasks: {
    extract: task<P>({
      zone: "enclave",
      pool: "ils",
      connections: (p) => [String(p.source)],
      description: "Count the month's circulations per group, in a read-only transaction",
      run: async (ctx) => {
        const rows: Record<string, unknown>[] = [];
        const { start, end } = ctx.dataInterval;
        for await (
          const row of sqlExtract(ctx.params.source, ACTIVITY_QUERY, [start, end], {
            statementTimeout: "30min",
            signal: ctx.signal,
          })
        ) rows.push(row);
        const events = rows.reduce((sum, r) => sum + Number(r.count), 0);
        ctx.count("extract:rows", events, { groups: rows.length });
        return rows;
      },
    }),
    protect: smallCells({ after: ["extract"], ...TABLE, sum: "count" }),
    checkpoint: privacyCheckpoint({ after: ["protect"], smallCells: TABLE }),
    publish: task<P>({
      after: ["checkpoint"],
      writes: (p) => [String(p.output)],
      description: "Write patron_activity_<month>.csv and .jsonl",
      run: async (ctx) => {
        const output = ctx.params.output;
        if (output === "") throw new Error("patron_activity needs --param output=<folder>");
        const rows: Record<string, unknown>[] = [];
        for await (const row of upstreamRecords(ctx, "checkpoint")) rows.push(row);
        const month = ctx.dataInterval.start.toISOString().slice(0, 7);
        const columns = [...TABLE.by, ...TABLE.dimensions, "count", "suppressed"];
        const csv = join(output, `patron_activity_${month}.csv`);
        const jsonl = join(output, `patron_activity_${month}.jsonl`);
        await jsonlWrite(jsonl, rows);
        const lines = [columns.join(",")];
        for (const row of rows) lines.push(columns.map((c) => csvField(row[c])).join(","));
        await Deno.writeTextFile(csv, lines.join("\n") + "\n");
        const suppressed = rows.filter((r) => r.suppressed === true).length;
        ctx.count("publish:rows", rows.length, { suppressed });
        ctx.log.info("Wrote {rows} rows ({suppressed} withheld) to {csv}", {
          rows: rows.length,
          suppressed,
          csv,
        });
        return { month, rows: rows.length, suppressed, k: K, files: { csv, jsonl } };
      },
    }),
  },
});
