/**
 * Params the incremental sync DAGs share (`koha_circulation_sync`, `holds_sync`, and DAGs copied
 * from them): connections without passwords, optional interval overrides, Koha's time zone, a
 * warehouse table name, and the interval a run syncs.
 *
 * @module
 */
import { z } from "zod";
import { isCredentialFree } from "../../core/privacy/secrets.ts";
import { checkTimeZone } from "./koha.ts";

/** A connection name or a URL without a password (passwords belong in `CARREL_CONN_<NAME>`). */
export const ConnectionParam = z.string().min(1).refine(isCredentialFree, {
  error: "holds a password: put the URL in CARREL_CONN_<NAME> and pass the name",
});

/** An ISO date overriding one end of the run's interval, or `""` for the run's own. */
export const InstantParam = z.string().refine((v) => v === "" || !Number.isNaN(Date.parse(v)), {
  error: "expected an ISO date or empty",
});

/** An IANA time zone name. */
export const TimeZoneParam = z.string().refine((v) => {
  try {
    checkTimeZone(v);
    return true;
  } catch {
    return false;
  }
}, { error: "expected an IANA time zone name" });

/** A warehouse table, `table` or `schema.table`. */
export const TableParam = z.string().regex(
  /^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$/,
  {
    error: "expected a table name (letters, digits, _ and $, optionally schema.table)",
  },
);

/**
 * The interval a run syncs: its data interval, or the `from`/`to` params when given.
 *
 * @example Usage
 * ```ts
 * import { syncInterval } from "./sync_params.ts";
 * const { from } = syncInterval({
 *   params: { from: "2026-01-01", to: "" },
 *   dataInterval: { start: new Date("2026-03-01"), end: new Date("2026-03-02") },
 * });
 * console.log(from.toISOString()); // "2026-01-01T00:00:00.000Z"
 * ```
 */
export function syncInterval(
  ctx: { params: { from: string; to: string }; dataInterval: { start: Date; end: Date } },
): { from: Date; to: Date } {
  const from = ctx.params.from ? new Date(ctx.params.from) : ctx.dataInterval.start;
  const to = ctx.params.to ? new Date(ctx.params.to) : ctx.dataInterval.end;
  return { from, to };
}
