/**
 * holds_sync: daily sync of hold queues from Evergreen (`action.hold_request`, PostgreSQL) or
 * Koha (`reserves` and `old_reserves`, MariaDB/MySQL) into a warehouse table `hold_requests`,
 * without patron identities, notes or free text.
 *
 * `extract` reads every open hold and the holds fulfilled or cancelled in the run's interval (or
 * `from`/`to`) in a read-only session, in the enclave (tagged `pii:raw`). Which ILS is `ils`:
 * `auto` (default) picks Koha for `mysql://`/`mariadb://` sources and Evergreen otherwise.
 * `deidentify` keeps the tokenizable patron key, the bibliographic record, the hold level, the
 * pickup library, the state, the request, capture, fulfilment and cancellation times, the wait
 * in days and the queue position in bands (`operators/ils/holds.ts` says how each is derived);
 * Koha holds of a deleted or anonymized patron are set aside in a value-free `skipped` dataset.
 * `tokens` replaces the patron key (`actor.usr.id`, Koha's `borrowernumber`, as decimal text:
 * the same token for the same key whichever ILS) with `patron_token`, `gate` applies the hold
 * request schema, `checkpoint` verifies what leaves the enclave, and `load` upserts on `hold_id`:
 * a hold that changed is updated, a rerun changes nothing.
 *
 *   CARREL_CONN_ILS=postgres://carrel_ro:...@ils/evergreen CARREL_CONN_WAREHOUSE=postgres://... \
 *     deno task carrel dags run holds_sync --date 2026-03-01
 *   CARREL_CONN_KOHA=mariadb://... deno task carrel dags run holds_sync --param source=koha \
 *     --param timezone=America/Chicago --param 'branches={"CPL":4}'
 */
import { z } from "zod";
import { defineDag, FatalTaskError, markPrivacySafe, task } from "carrel";
import {
  BranchIds,
  ConnectionParam,
  deidentifyEvergreenHold,
  deidentifyKohaHold,
  EVERGREEN_HOLDS_QUERY,
  HoldRequest,
  holdRequestsTarget,
  holdRowIls,
  InstantParam,
  isMysqlUrl,
  KOHA_HOLDS_QUERY,
  kohaHoldsParams,
  privacyCheckpoint,
  resolveConnection,
  schemaGate,
  sqlExtract,
  sqlLoad,
  syncInterval,
  TableParam,
  TimeZoneParam,
  tokenize,
  UnmappedBranchError,
  upstreamRecords,
} from "carrel/operators";

const Params = z.object({
  /** The ILS: a connection name, or a URL without password (postgres://, pglite:, mysql://). */
  source: ConnectionParam.default("ils"),
  /** Which ILS the source is: `auto` (by connection kind), `evergreen` or `koha`. */
  ils: z.enum(["auto", "evergreen", "koha"]).default("auto"),
  /** The warehouse, same forms as `source`. */
  target: ConnectionParam.default("warehouse"),
  /** The warehouse table (`schema.table` allowed), created when missing. */
  table: TableParam.default("hold_requests"),
  /** Overrides the start of the data interval (inclusive) for closed holds. */
  from: InstantParam.default(""),
  /** Overrides the end of the data interval (exclusive). */
  to: InstantParam.default(""),
  /** Koha's time zone (Koha stores dates in it); unused for Evergreen. */
  timezone: TimeZoneParam.default("UTC"),
  /** Koha branch codes to the warehouse's integer library ids, e.g. {"CPL": 4}. */
  branches: BranchIds.default({}),
  /** Koha's AnonymousPatron borrowernumber (0: none): its holds are set aside. */
  anonymous_patron: z.number().int().min(0).default(0),
  /** Rows per INSERT. */
  batch_size: z.number().int().min(1).max(4000).default(1000),
}).strict();

type P = z.infer<typeof Params>;

/** Koha or Evergreen, from the param or the source's connection kind. */
function whichIls(params: P): "evergreen" | "koha" {
  if (params.ils !== "auto") return params.ils;
  if (isMysqlUrl(params.source)) return "koha";
  // Unresolvable (a missing variable, or one a sandbox may not read): that error, never a guess.
  return resolveConnection(params.source).kind === "mysql" ? "koha" : "evergreen";
}

export default defineDag<P>({
  id: "holds_sync",
  description: "Daily hold queue sync to the warehouse: tokenized patrons, no notes",
  schedule: "30 2 * * *",
  start: "2026-01-01T00:00:00Z",
  timezone: "UTC",
  catchup: false,
  maxActiveRuns: 1,
  params: Params,
  defaults: { retries: 2, retryDelay: "30s", timeout: "2h" },
  // Every task runs in a Worker with only what it declares below.
  sandbox: "strict",
  tasks: {
    extract: task<P>({
      zone: "enclave",
      outputTags: ["pii:raw"],
      pool: "ils",
      connections: (p) => [String(p.source)],
      description: "Open holds, and holds closed in the interval, read-only",
      run: async (ctx) => {
        const { from, to } = syncInterval(ctx);
        const ils = whichIls(ctx.params);
        const [query, params] = ils === "koha"
          ? [KOHA_HOLDS_QUERY, kohaHoldsParams(from, to)]
          : [EVERGREEN_HOLDS_QUERY, [from, to]];
        const out = await ctx.dataset("holds");
        try {
          await out.writeAll(
            sqlExtract(ctx.params.source, query, params, {
              statementTimeout: "30min",
              signal: ctx.signal,
            }),
          );
        } catch (error) {
          await out.abort();
          throw error;
        }
        const dataset = await out.close();
        ctx.count("extract:rows", dataset.records, {
          ils,
          from: from.toISOString(),
          to: to.toISOString(),
        });
        ctx.log.info("Extracted {count} {ils} holds (open, or closed {from} to {to})", {
          count: dataset.records,
          ils,
          from: from.toISOString(),
          to: to.toISOString(),
        });
        return dataset;
      },
    }),
    deidentify: task<P>({
      after: ["extract"],
      zone: "enclave",
      // No env and no network: which ILS the rows came from is read off the rows themselves.
      description: "Hold requests: state, times, wait days, queue bands; no notes",
      run: async (ctx) => {
        let ils = ctx.params.ils === "auto" ? undefined : ctx.params.ils;
        const options = {
          timeZone: ctx.params.timezone,
          branches: ctx.params.branches,
          anonymousPatron: ctx.params.anonymous_patron,
        };
        const out = await ctx.dataset("requests");
        const skipped = await ctx.dataset("skipped", { valueFree: true });
        const reasons: Record<string, number> = {};
        const states: Record<string, number> = {};
        let position = 0;
        let kept = 0;
        try {
          for await (const row of upstreamRecords(ctx, "extract")) {
            position++;
            ils ??= holdRowIls(row);
            const result = ils === "koha"
              ? deidentifyKohaHold(row, options)
              : { hold: deidentifyEvergreenHold(row) };
            if ("hold" in result) {
              const state = String(result.hold.state);
              states[state] = (states[state] ?? 0) + 1;
              await out.write(result.hold);
              kept++;
            } else {
              reasons[result.reason] = (reasons[result.reason] ?? 0) + 1;
              await skipped.write({ position, reason: result.reason });
            }
          }
        } catch (error) {
          await out.abort();
          await skipped.abort();
          if (error instanceof UnmappedBranchError) {
            throw markPrivacySafe(new FatalTaskError(error.message));
          }
          throw error;
        }
        await skipped.close();
        ctx.count("deidentify:records", kept, {
          read: position,
          skipped: position - kept,
          reasons,
          states,
          dropped: "notes,notification_contacts,requestor,staff",
        });
        return await out.close();
      },
    }),
    tokens: tokenize({
      after: ["deidentify"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
      onNull: "fail",
    }),
    gate: schemaGate({ after: ["tokens"], schema: HoldRequest }),
    checkpoint: privacyCheckpoint({
      after: ["gate"],
      tokenized: ["patron_token"],
      schema: HoldRequest,
    }),
    load: task<P>({
      after: ["checkpoint"],
      connections: (p) => [String(p.target)],
      description: "Upsert into the hold requests table on hold_id",
      run: async (ctx) => {
        const target = holdRequestsTarget(ctx.params.table);
        const result = await sqlLoad(
          ctx.params.target,
          target,
          upstreamRecords(ctx, "checkpoint"),
          { batchSize: ctx.params.batch_size, signal: ctx.signal },
        );
        const updated = result.updated ?? 0;
        ctx.count("load:inserted", result.inserted, { updated, unchanged: result.skipped });
        ctx.log.info(
          "Loaded hold requests: {inserted} new, {updated} changed, {unchanged} unchanged",
          {
            inserted: result.inserted,
            updated,
            unchanged: result.skipped,
          },
        );
        const { from, to } = syncInterval(ctx);
        return {
          table: target.table,
          from: from.toISOString(),
          to: to.toISOString(),
          rows: result.inserted + updated + result.skipped,
          inserted: result.inserted,
          updated,
          unchanged: result.skipped,
        };
      },
    }),
  },
});
