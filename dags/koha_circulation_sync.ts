/**
 * koha_circulation_sync: daily, incremental sync of Koha checkouts from its MariaDB/MySQL
 * database into the same `circulation_events` warehouse table as `circulation_sync` (Evergreen),
 * without patron identities.
 *
 * `extract` reads `issues` and `old_issues` joined to `borrowers`, `items` and `biblio` for the
 * run's interval by `issuedate` (or `from`/`to`), in a read-only, read-committed session with a
 * statement time limit, streaming, in the enclave (its output is tagged `pii:raw`). It reads the
 * patron key, birth date and postal code (for the optional bands), branch codes and the item type,
 * never names, card numbers, barcodes, addresses or notes. `deidentify` turns each checkout into a
 * circulation event: Koha's wall-clock times (in `timezone`, Koha's own setting) become instants,
 * branch codes become library ids through `branches`, and checkouts without a patron (deleted,
 * or anonymized to `anonymous_patron`) or without an item (deleted) are set aside in a
 * value-free `skipped` dataset with their reason and counted. `tokens` replaces the patron key
 * with `patron_token`, `gate` applies the circulation event schema, `checkpoint` verifies what
 * leaves the enclave, and `load` inserts into `table` idempotently on `circ_id`.
 *
 * The patron key is `borrowers.borrowernumber`, as decimal text: under the same key version its
 * token equals the token `circulation_sync` gives Evergreen's `actor.usr.id` of the same number,
 * so a consortium whose systems share patron numbers joins them in the warehouse. Koha's
 * `issue_id`s and Evergreen's circulation ids are separate sequences: when both systems load one
 * warehouse, give each its own `table`.
 *
 *   CARREL_CONN_KOHA=mariadb://carrel_ro:...@koha-db/koha_library \
 *   CARREL_CONN_WAREHOUSE=postgres://... \
 *     deno task carrel dags run koha_circulation_sync --date 2026-03-01 \
 *       --param timezone=America/Chicago --param 'branches={"CPL":4,"FFL":5}'
 */
import { z } from "zod";
import { defineDag, FatalTaskError, markPrivacySafe, task } from "carrel";
import {
  BranchIds,
  CirculationEvent,
  circulationEventsTarget,
  ConnectionParam,
  DEFAULT_EVENT_K,
  deidentifyKohaCirculation,
  generalizedEventClasses,
  InstantParam,
  KOHA_CIRCULATION_QUERY,
  kohaCirculationParams,
  privacyCheckpoint,
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
  /** Koha's database: a connection name, or a mysql:// / mariadb:// URL without password. */
  source: ConnectionParam.default("koha"),
  /** The warehouse: a connection name, a postgres:// or mysql:// URL without password, or pglite:<path>. */
  target: ConnectionParam.default("warehouse"),
  /** The warehouse table (`schema.table` allowed), created when missing. */
  table: TableParam.default("circulation_events"),
  /** Overrides the start of the data interval (inclusive), e.g. for a first full load. */
  from: InstantParam.default(""),
  /** Overrides the end of the data interval (exclusive). */
  to: InstantParam.default(""),
  /** Koha's time zone (its `timezone` setting): Koha stores wall-clock times in it. */
  timezone: TimeZoneParam.default("UTC"),
  /** Koha branch codes to the warehouse's integer library ids, e.g. {"CPL": 4}. */
  branches: BranchIds.default({}),
  /** Koha's AnonymousPatron borrowernumber (0: none): its checkouts are set aside. */
  anonymous_patron: z.number().int().min(0).default(0),
  /** Keep the birth year as a 10-year band. */
  birth_year_band: z.boolean().default(false),
  /** Keep the first 3 characters of the postal code. */
  postal_prefix: z.boolean().default(false),
  /**
   * With a band or prefix on: the fewest different patrons a group of events sharing home
   * library, band and prefix may hold; a smaller group fails the checkpoint, nothing is loaded.
   */
  k_anonymity: z.number().int().min(2).default(DEFAULT_EVENT_K),
  /** Rows per INSERT. */
  batch_size: z.number().int().min(1).max(4000).default(1000),
}).strict();

type P = z.infer<typeof Params>;

export default defineDag<P>({
  id: "koha_circulation_sync",
  description:
    "Daily Koha checkout sync to the warehouse: tokenized patrons, no direct identifiers",
  schedule: "15 2 * * *",
  start: "2026-01-01T00:00:00Z",
  timezone: "UTC",
  catchup: false,
  maxActiveRuns: 1,
  params: Params,
  defaults: { retries: 2, retryDelay: "30s", timeout: "2h" },
  // Every task runs in a Worker with only what it declares below.
  sandbox: "strict",
  // Koha's database holds patrons: no shared task may open it.
  connections: { koha: "enclave", warehouse: "shared" },
  tasks: {
    extract: task<P>({
      zone: "enclave",
      outputTags: ["pii:raw"],
      pool: "koha",
      connections: (p) => [String(p.source)],
      description: "Koha checkouts of the interval, read-only, streamed",
      run: async (ctx) => {
        const { from, to } = syncInterval(ctx);
        const out = await ctx.dataset("checkouts");
        try {
          await out.writeAll(
            sqlExtract(
              ctx.params.source,
              KOHA_CIRCULATION_QUERY,
              kohaCirculationParams(from, to, ctx.params.timezone),
              { statementTimeout: "30min", signal: ctx.signal },
            ),
          );
        } catch (error) {
          await out.abort();
          throw error;
        }
        const dataset = await out.close();
        ctx.count("extract:rows", dataset.records, {
          from: from.toISOString(),
          to: to.toISOString(),
        });
        ctx.log.info("Extracted {count} Koha checkouts from {from} to {to}", {
          count: dataset.records,
          from: from.toISOString(),
          to: to.toISOString(),
        });
        return dataset;
      },
    }),
    deidentify: task<P>({
      after: ["extract"],
      zone: "enclave",
      description: "Circulation events: wall times to instants, branch codes to library ids",
      run: async (ctx) => {
        const options = {
          timeZone: ctx.params.timezone,
          branches: ctx.params.branches,
          anonymousPatron: ctx.params.anonymous_patron,
          birthYearBand: ctx.params.birth_year_band,
          postalPrefix: ctx.params.postal_prefix,
        };
        const out = await ctx.dataset("events");
        const skipped = await ctx.dataset("skipped", { valueFree: true });
        const reasons: Record<string, number> = {};
        let position = 0;
        let events = 0;
        try {
          for await (const row of upstreamRecords(ctx, "extract")) {
            position++;
            const result = deidentifyKohaCirculation(row, options);
            if ("event" in result) {
              await out.write(result.event);
              events++;
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
        const set = position - events;
        ctx.count("deidentify:records", events, {
          read: position,
          skipped: set,
          reasons,
          dropped: "dob,post_code,branch_codes",
          birthYearBand: options.birthYearBand,
          postalPrefix: options.postalPrefix,
        });
        if (set > 0) {
          ctx.log.info("Set aside {count} Koha checkouts: {reasons}", {
            count: set,
            reasons: JSON.stringify(reasons),
          });
        }
        return await out.close();
      },
    }),
    tokens: tokenize({
      after: ["deidentify"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
      onNull: "fail",
    }),
    gate: schemaGate({ after: ["tokens"], schema: CirculationEvent }),
    checkpoint: privacyCheckpoint({
      after: ["gate"],
      tokenized: ["patron_token"],
      // A published band or prefix makes home library x band x prefix a quasi-identifier.
      quasiIdentifiers: generalizedEventClasses,
      schema: CirculationEvent,
    }),
    load: task<P>({
      after: ["checkpoint"],
      connections: (p) => [String(p.target)],
      description: "Insert into the circulation events table, idempotent on circ_id",
      run: async (ctx) => {
        const target = circulationEventsTarget(ctx.params.table);
        const result = await sqlLoad(
          ctx.params.target,
          target,
          upstreamRecords(ctx, "checkpoint"),
          { batchSize: ctx.params.batch_size, signal: ctx.signal },
        );
        ctx.count("load:inserted", result.inserted, { skipped: result.skipped });
        ctx.log.info("Loaded {inserted} Koha circulation events ({skipped} already present)", {
          inserted: result.inserted,
          skipped: result.skipped,
        });
        const { from, to } = syncInterval(ctx);
        return {
          table: target.table,
          from: from.toISOString(),
          to: to.toISOString(),
          rows: result.inserted + result.skipped,
          inserted: result.inserted,
          skipped: result.skipped,
        };
      },
    }),
  },
});
