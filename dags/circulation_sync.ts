/**
 * circulation_sync: daily, incremental sync of circulations (checkouts) from an Evergreen-shaped
 * ILS database into a warehouse table `circulation_events`, without patron identities.
 *
 * `extract` reads the run's interval by `xact_start` (or `from`/`to`) in a read-only transaction
 * through a cursor, in the enclave (its output is tagged `pii:raw`). `deidentify` keeps only the
 * event fields (names, e-mails, card and item barcodes, addresses and birth dates are dropped;
 * birth year band and postal prefix only when the params ask), `tokens` replaces the patron key
 * (`actor.usr.id` as text) with `patron_token`, `gate` applies the circulation event schema,
 * `checkpoint` verifies what leaves the enclave, and `load` inserts into `circulation_events`
 * (created when missing) idempotently on `circ_id`: rerunning an interval adds no rows.
 *
 * `source` and `target` are connection names resolved through `CARREL_CONN_<NAME>` (put
 * credentials there), `postgres://` URLs without a password, or `pglite:` paths of embedded
 * databases.
 *
 *   CARREL_CONN_ILS=postgres://carrel:...@ils/evergreen CARREL_CONN_WAREHOUSE=postgres://... \
 *     deno task carrel dags run circulation_sync --date 2026-03-01
 */
import { z } from "zod";
import { defineDag, task } from "carrel";
import {
  CIRCULATION_EVENTS_TARGET,
  CirculationEvent,
  DEFAULT_EVENT_K,
  deidentifyCirculation,
  EVERGREEN_CIRCULATION_QUERY,
  generalizedEventClasses,
  isCredentialFree,
  privacyCheckpoint,
  schemaGate,
  sqlExtractBatches,
  sqlLoad,
  tokenize,
  upstreamRecords,
} from "carrel/operators";

// A string format, not a refinement: its name is what Carrel shows when a value does not fit
// (refinement messages are withheld, they could quote the value), so it says why and where.
const connection = z.string().min(1).pipe(z.stringFormat(
  "a connection name, or a URL without a password; this one holds a credential: put the URL in CARREL_CONN_<NAME> and pass the name",
  isCredentialFree,
));
const instant = z.string().refine((v) => v === "" || !Number.isNaN(Date.parse(v)), {
  error: "expected an ISO date or empty",
});

const Params = z.object({
  /** The ILS: a connection name, a postgres:// URL without password, or pglite:<path>. */
  source: connection.default("ils"),
  /** The warehouse, same forms as `source`. */
  target: connection.default("warehouse"),
  /** Overrides the start of the data interval (inclusive), e.g. for a first full load. */
  from: instant.default(""),
  /** Overrides the end of the data interval (exclusive). */
  to: instant.default(""),
  /** Keep the birth year as a 10-year band. */
  birth_year_band: z.boolean().default(false),
  /** Keep the first 3 characters of the postal code. */
  postal_prefix: z.boolean().default(false),
  /**
   * With a band or prefix on: the fewest different patrons a group of events sharing home
   * library, band and prefix may hold; a smaller group fails the checkpoint, nothing is loaded.
   */
  k_anonymity: z.number().int().min(2).default(DEFAULT_EVENT_K),
  /** Rows per cursor fetch and per INSERT. */
  batch_size: z.number().int().min(1).max(4000).default(1000),
}).strict();

type P = z.infer<typeof Params>;

function interval(ctx: { params: P; dataInterval: { start: Date; end: Date } }) {
  const from = ctx.params.from ? new Date(ctx.params.from) : ctx.dataInterval.start;
  const to = ctx.params.to ? new Date(ctx.params.to) : ctx.dataInterval.end;
  return { from, to };
}

export default defineDag<P>({
  id: "circulation_sync",
  description: "Daily circulation sync to the warehouse: tokenized patrons, no direct identifiers",
  schedule: "0 2 * * *",
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
      // Hands its rows to deidentify, tokens and gate in memory (one fused pass, no dataset).
      stream: true,
      connections: (p) => [String(p.source)],
      description: "Circulations of the interval, read-only, through a cursor",
      run: async (ctx) => {
        const { from, to } = interval(ctx);
        // Re-runnable: a fresh dataset each attempt, read in one read-only transaction.
        const out = await ctx.dataset("circulations");
        try {
          const rows = sqlExtractBatches(
            ctx.params.source,
            EVERGREEN_CIRCULATION_QUERY,
            [from, to],
            {
              batchSize: ctx.params.batch_size,
              statementTimeout: "30min",
              signal: ctx.signal,
            },
          );
          for await (const batch of rows) await out.writeBatch(batch);
        } catch (error) {
          await out.abort();
          throw error;
        }
        const dataset = await out.close();
        ctx.count("extract:rows", dataset.records, {
          from: from.toISOString(),
          to: to.toISOString(),
        });
        ctx.log.info("Extracted {count} circulations from {from} to {to}", {
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
      stream: true,
      description: "Drop names, e-mails, barcodes, addresses, birth dates; generalize on request",
      run: async (ctx) => {
        const options = {
          birthYearBand: ctx.params.birth_year_band,
          postalPrefix: ctx.params.postal_prefix,
        };
        const out = await ctx.dataset("events");
        let n = 0;
        try {
          for await (const rows of upstreamRecords(ctx, "extract").batches()) {
            await out.writeBatch(rows.map((row) => deidentifyCirculation(row, options)));
            n += rows.length;
          }
        } catch (error) {
          await out.abort();
          throw error;
        }
        ctx.count("deidentify:records", n, {
          dropped: "names,emails,card_barcode,item_barcode,address,dob",
          birthYearBand: options.birthYearBand,
          postalPrefix: options.postalPrefix,
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
      description: "Insert into circulation_events, idempotent on circ_id",
      // Loads what the checkpoint publishes as it is published (one fused pass, no file).
      stream: true,
      run: async (ctx) => {
        const result = await sqlLoad(
          ctx.params.target,
          CIRCULATION_EVENTS_TARGET,
          upstreamRecords(ctx, "checkpoint"),
          { batchSize: ctx.params.batch_size, signal: ctx.signal },
        );
        ctx.count("load:inserted", result.inserted, { skipped: result.skipped });
        ctx.log.info("Loaded {inserted} circulation events ({skipped} already present)", {
          inserted: result.inserted,
          skipped: result.skipped,
        });
        const { from, to } = interval(ctx);
        return {
          table: CIRCULATION_EVENTS_TARGET.table,
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
