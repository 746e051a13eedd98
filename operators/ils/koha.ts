/**
 * Koha, read from its MariaDB/MySQL database: what `dags/koha_circulation_sync.ts` and the Koha
 * side of `dags/holds_sync.ts` need around `sqlExtract`, `tokenize` and `sqlLoad`.
 *
 * - {@linkcode KOHA_CIRCULATION_QUERY}: checkouts (`issues` and `old_issues`) joined to
 *   `borrowers`, `items` and `biblio`, for `[from, to)` by `issuedate`. It reads only the columns
 *   the warehouse needs: the patron key, the birth date and postal code (for the optional bands),
 *   branch codes, the item type; never names, card numbers, barcodes, addresses or notes.
 * - {@linkcode deidentifyKohaCirculation}: a Koha checkout as the same `CirculationEvent` as
 *   Evergreen's (`operators/ils/circulation.ts`), or the reason it cannot be one.
 * - The patron key is `borrowers.borrowernumber` (as decimal text): the token of a patron key is
 *   the same whichever ILS it came from, so Evergreen's `actor.usr.id` 42 and Koha's
 *   `borrowernumber` 42 get the same token under the same key version.
 * - Koha keeps `DATETIME`/`DATE` columns in the library's wall-clock time (its `timezone`
 *   setting): {@linkcode kohaWallTime} and {@linkcode kohaInstant} convert at the boundary.
 * - Koha names libraries by branch code (`CPL`) where the warehouse schema has integer library
 *   ids (Evergreen's org units): {@linkcode BranchIds} maps one to the other, and an unmapped code
 *   fails the task naming the code (branch codes are not patron data).
 *
 * @module
 */
import { z } from "zod";
import { fromWall, toWall } from "../../core/schedule.ts";
import { birthYearBand, type DeidentifyOptions, postalPrefix } from "./circulation.ts";

/**
 * Checkouts of `[?, ?)` by `issuedate` from `issues` (still out) and `old_issues` (returned),
 * with their patron's birth date, postal code and home branch, their item's type and
 * bibliographic record. Parameters (wall-clock text in Koha's time zone, see
 * {@linkcode kohaWallTime}): `[from, to, from, to]`. Enclave data.
 */
export const KOHA_CIRCULATION_QUERY = `
SELECT CAST(i.issue_id AS CHAR) AS circ_id,
       CAST(i.borrowernumber AS CHAR) AS patron_id,
       b.dateofbirth AS dob,
       b.zipcode AS post_code,
       b.branchcode AS home_branch,
       CAST(i.itemnumber AS CHAR) AS copy_id,
       CAST(COALESCE(bib.biblionumber, it.biblionumber) AS CHAR) AS bib_id,
       i.branchcode AS circ_branch,
       it.itype AS circ_modifier,
       i.issuedate,
       i.date_due,
       i.returndate,
       it.itemlost
  FROM (SELECT issue_id, borrowernumber, itemnumber, branchcode, issuedate, date_due, returndate
          FROM issues WHERE issuedate >= ? AND issuedate < ?
        UNION ALL
        SELECT issue_id, borrowernumber, itemnumber, branchcode, issuedate, date_due, returndate
          FROM old_issues WHERE issuedate >= ? AND issuedate < ?) AS i
  LEFT JOIN borrowers b ON b.borrowernumber = i.borrowernumber
  LEFT JOIN items it ON it.itemnumber = i.itemnumber
  LEFT JOIN biblio bib ON bib.biblionumber = it.biblionumber`;

/** The params of {@linkcode KOHA_CIRCULATION_QUERY} for `[from, to)` in Koha's time zone. */
export function kohaCirculationParams(from: Date, to: Date, timeZone: string): string[] {
  const lo = kohaWallTime(from, timeZone);
  const hi = kohaWallTime(to, timeZone);
  return [lo, hi, lo, hi];
}

/** Checks an IANA time zone name, or throws naming it (time zone names are not patron data). */
export function checkTimeZone(timeZone: string): string {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone });
    return timeZone;
  } catch {
    throw new Error(`Unknown time zone "${timeZone}": expected an IANA name such as "UTC"`);
  }
}

/**
 * The wall-clock text (`2026-03-01 04:00:00`) of an instant in Koha's time zone, for `DATETIME`
 * parameters.
 *
 * @example Usage
 * ```ts
 * import { kohaWallTime } from "./koha.ts";
 * console.log(kohaWallTime(new Date("2026-03-01T10:00:00Z"), "America/Chicago")); // "2026-03-01 04:00:00"
 * ```
 */
export function kohaWallTime(instant: Date, timeZone: string): string {
  return toWall(instant, timeZone).toISOString().slice(0, 19).replace("T", " ");
}

const WALL = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?)?$/;

/**
 * The ISO instant of a Koha `DATETIME` or `DATE` text read in Koha's time zone (a date alone is
 * its midnight), or `null` for `NULL`, an empty value or Koha's zero date.
 *
 * @example Usage
 * ```ts
 * import { kohaInstant } from "./koha.ts";
 * console.log(kohaInstant("2026-03-01 04:00:00", "America/Chicago")); // "2026-03-01T10:00:00.000Z"
 * ```
 */
export function kohaInstant(value: unknown, timeZone: string): string | null {
  if (value === null || value === undefined || value === "") return null;
  if (value instanceof Date) return value.toISOString();
  const m = WALL.exec(String(value));
  if (!m || m[1] === "0000") return null;
  const wall = new Date(Date.UTC(
    Number(m[1]),
    Number(m[2]) - 1,
    Number(m[3]),
    Number(m[4] ?? 0),
    Number(m[5] ?? 0),
    Number(m[6] ?? 0),
    Number((m[7] ?? "0").padEnd(3, "0").slice(0, 3)),
  ));
  if (Number.isNaN(wall.getTime())) return null;
  return fromWall(wall, timeZone).toISOString();
}

/** The ISO instant of a `TIMESTAMP` text read in a UTC session (`sqlExtract`'s MariaDB path). */
export function utcInstant(value: unknown): string | null {
  return kohaInstant(value, "UTC");
}

/**
 * Koha branch codes mapped to the integer library ids of the warehouse schema, e.g.
 * `{ "CPL": 4, "FFL": 5 }`: a DAG param, given on the command line as JSON
 * (`--param 'branches={"CPL":4}'`).
 */
export const BranchIds = z.record(
  z.string().regex(/^[A-Za-z0-9_-]{1,10}$/),
  z.number().int().min(0),
);

/** The TypeScript type of {@linkcode BranchIds}. */
export type BranchIdsValue = z.infer<typeof BranchIds>;

/** Raised when a branch code has no library id: a configuration error, safe to show. */
export class UnmappedBranchError extends Error {
  /** The code without an id. */
  readonly code: string;

  /**
   * Creates the error for `code`.
   *
   * @example Usage
   * ```ts
   * import { UnmappedBranchError } from "./koha.ts";
   * console.log(new UnmappedBranchError("CPL", "circulation").message);
   * ```
   */
  constructor(code: string, what: string) {
    super(
      `Koha branch code "${code}" (${what}) has no library id: add it to the "branches" param, e.g. --param 'branches={"${code}":1}'`,
    );
    this.name = "UnmappedBranchError";
    this.code = code;
  }
}

/**
 * The library id of a branch code, `null` for no code, or {@linkcode UnmappedBranchError}.
 *
 * @example Usage
 * ```ts
 * import { branchId } from "./koha.ts";
 * console.log(branchId({ CPL: 4 }, "CPL", "checkout library")); // 4
 * ```
 */
export function branchId(
  branches: Readonly<Record<string, number>>,
  code: unknown,
  what: string,
): number | null {
  if (code === null || code === undefined || code === "") return null;
  const text = String(code);
  const id = Object.hasOwn(branches, text) ? branches[text] : undefined;
  if (id === undefined) {
    throw new UnmappedBranchError(/^[A-Za-z0-9_-]{1,10}$/.test(text) ? text : "?", what);
  }
  return id;
}

/** How {@linkcode deidentifyKohaCirculation} reads a Koha row. */
export interface KohaOptions extends DeidentifyOptions {
  /** Koha's time zone (its `timezone` setting; default `"UTC"`). */
  timeZone?: string;
  /** Branch code to library id. */
  branches: Readonly<Record<string, number>>;
  /**
   * Koha's `AnonymousPatron` borrowernumber, whose checkouts were anonymized (default: none).
   * They have no patron to tokenize and are set aside.
   */
  anonymousPatron?: number;
}

/** A Koha row turned into an event, or set aside with a value-free reason. */
export type KohaResult =
  | { event: Record<string, unknown> }
  | { reason: "patron deleted or anonymized" | "item deleted" | "no checkout library" };

/** A decimal id as text (`"42"`), or `null` for anything else. */
export function digits(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  const text = String(value);
  return /^\d+$/.test(text) ? text : null;
}

/**
 * The patron key of a Koha row (`borrowernumber` as text), or `null` when the patron was deleted
 * (`NULL`) or the row was anonymized to `anonymousPatron`.
 */
export function kohaPatronKey(value: unknown, anonymousPatron: number | undefined): string | null {
  const key = digits(value);
  if (key === null) return null;
  return anonymousPatron !== undefined && anonymousPatron > 0 && key === String(anonymousPatron)
    ? null
    : key;
}

/**
 * A Koha checkout (a row of {@linkcode KOHA_CIRCULATION_QUERY}) as a circulation event with the
 * raw `patron_id` still in it (for `tokenize`), or the reason it cannot be one: its patron was
 * deleted or anonymized (`borrowernumber` NULL or the anonymous patron), its item was deleted, or
 * it has no checkout library. `stop_fines` is `CHECKIN` once returned and `LOST` for a lost item
 * still out; `renewal_remaining` is unknown to Koha's tables (it depends on circulation rules).
 *
 * @example Usage
 * ```ts
 * import { deidentifyKohaCirculation } from "./koha.ts";
 * const result = deidentifyKohaCirculation({
 *   circ_id: "7", patron_id: "42", copy_id: "9", bib_id: "3", circ_branch: "CPL",
 *   home_branch: "CPL", circ_modifier: "BK", issuedate: "2026-03-01 10:00:00",
 * }, { branches: { CPL: 4 } });
 * // { event: { circ_id: "7", patron_id: "42", circ_lib: 4, xact_start: "2026-03-01T10:00:00.000Z", ... } }
 * ```
 */
export function deidentifyKohaCirculation(
  row: Record<string, unknown>,
  options: KohaOptions,
): KohaResult {
  const zone = options.timeZone ?? "UTC";
  const patron = kohaPatronKey(row.patron_id, options.anonymousPatron);
  if (patron === null) return { reason: "patron deleted or anonymized" };
  const copy = digits(row.copy_id);
  if (copy === null) return { reason: "item deleted" };
  const circLib = branchId(options.branches, row.circ_branch, "checkout library");
  if (circLib === null) return { reason: "no checkout library" };
  const returned = kohaInstant(row.returndate, zone);
  const lost = row.itemlost !== null && row.itemlost !== undefined && Number(row.itemlost) > 0;
  return {
    event: {
      circ_id: digits(row.circ_id),
      patron_id: patron,
      copy_id: copy,
      bib_id: digits(row.bib_id),
      circ_lib: circLib,
      home_ou: branchId(options.branches, row.home_branch, "patron home library"),
      circ_modifier: row.circ_modifier === null || row.circ_modifier === undefined
        ? null
        : String(row.circ_modifier),
      xact_start: kohaInstant(row.issuedate, zone),
      due_date: kohaInstant(row.date_due, zone),
      checkin_time: returned,
      stop_fines: returned !== null ? "CHECKIN" : lost ? "LOST" : null,
      renewal_remaining: null,
      birth_year_band: options.birthYearBand ? birthYearBand(row.dob) : null,
      postal_prefix: options.postalPrefix ? postalPrefix(row.post_code) : null,
    },
  };
}
