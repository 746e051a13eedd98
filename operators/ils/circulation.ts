/**
 * Circulation events for a warehouse: what `dags/circulation_sync.ts` (and DAGs copied from it)
 * needs around `sqlExtract`, `tokenize` and `sqlLoad`.
 *
 * - {@linkcode EVERGREEN_CIRCULATION_QUERY}: circulations with their patron, card, copy, call
 *   number and mailing address from an Evergreen database, for `[from, to)` by `xact_start`.
 * - {@linkcode deidentifyCirculation}: drops names, e-mails, card and item barcodes, addresses and
 *   birth dates; optionally generalizes the birth year to a 10-year band and the postal code to its
 *   first 3 characters; keeps the raw patron key for `tokenize` to replace.
 * - {@linkcode CirculationEvent}: the zod schema of what leaves the enclave.
 * - {@linkcode CIRCULATION_EVENTS_TARGET}: the `circulation_events` table (created when missing)
 *   with `circ_id` as its natural key, for an idempotent `sqlLoad`.
 *
 * @module
 */
import { z } from "zod";
import { quoteIdentifier, quoteMysqlIdentifier, type SqlLoadTarget } from "./sql_common.ts";

/**
 * One circulation (checkout) from an Evergreen-shaped database, as raw as the ILS holds it: enclave
 * data. Ids come as text so the type does not depend on the driver, and so do the times: ISO 8601
 * instants in UTC with milliseconds (`2026-01-05T14:03:00.000Z`, what `Date.prototype.toJSON`
 * writes), made by the server, so no `Date` is built, copied and formatted again per row.
 */
export const EVERGREEN_CIRCULATION_QUERY = `
SELECT c.id::text AS circ_id,
       u.id::text AS patron_id,
       u.first_given_name,
       u.family_name,
       u.email,
       card.barcode AS card_barcode,
       cp.barcode AS item_barcode,
       u.dob::text AS dob,
       addr.street1,
       addr.city,
       addr.post_code,
       u.home_ou,
       c.target_copy::text AS copy_id,
       cn.record::text AS bib_id,
       c.circ_lib,
       cp.circ_modifier,
       to_char(c.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS xact_start,
       to_char(c.due_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS due_date,
       to_char(c.checkin_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS checkin_time,
       c.stop_fines,
       c.renewal_remaining
  FROM action.circulation c
  JOIN actor.usr u ON u.id = c.usr
  LEFT JOIN actor.card card ON card.id = u.card
  LEFT JOIN asset.copy cp ON cp.id = c.target_copy
  LEFT JOIN asset.call_number cn ON cn.id = cp.call_number
  LEFT JOIN actor.usr_address addr ON addr.id = u.mailing_address
 WHERE c.xact_start >= $1 AND c.xact_start < $2`;

/** How {@linkcode deidentifyCirculation} generalizes quasi-identifiers. Both default to off. */
export interface DeidentifyOptions {
  /** Keep the birth year as a 10-year band (`"1980-1989"`) in `birth_year_band`. */
  birthYearBand?: boolean;
  /** Keep the first 3 characters of the postal code in `postal_prefix`. */
  postalPrefix?: boolean;
}

/** The fewest patrons a group of events may hold when a band is published (default `k`). */
export const DEFAULT_EVENT_K = 10;

/**
 * The quasi-identifier check for circulation events when the params publish a birth year band
 * or a postal prefix: every group of events sharing home library, band and prefix must hold
 * `k_anonymity` (default {@linkcode DEFAULT_EVENT_K}) different patrons, or the checkpoint fails
 * (the only patron born in the 1930s at a branch would otherwise be singled out by the band).
 * `undefined` (no check) when neither is published: the events then carry no demographic column.
 *
 * @example Usage
 * ```ts
 * import { generalizedEventClasses } from "./circulation.ts";
 * console.log(generalizedEventClasses({ birth_year_band: true, k_anonymity: 5 })?.k); // 5
 * console.log(generalizedEventClasses({ birth_year_band: false })); // undefined
 * ```
 */
export function generalizedEventClasses(
  params: Record<string, unknown>,
): { columns: string[]; k: number; individual: string } | undefined {
  if (params.birth_year_band !== true && params.postal_prefix !== true) return undefined;
  const k = typeof params.k_anonymity === "number" ? params.k_anonymity : DEFAULT_EVENT_K;
  return {
    columns: ["home_ou", "birth_year_band", "postal_prefix"],
    k,
    individual: "patron_token",
  };
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** The number of two ASCII digits at `i`, or -1. */
function twoDigits(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48;
  const b = s.charCodeAt(i + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1;
}

/**
 * True when `s` is already what `toISOString` writes for the instant it names
 * (`YYYY-MM-DDTHH:MM:SS.sssZ`, every field in range), so it needs no parsing and formatting.
 */
function isCanonicalInstant(s: string): boolean {
  if (
    s.length !== 24 || s[4] !== "-" || s[7] !== "-" || s[10] !== "T" || s[13] !== ":" ||
    s[16] !== ":" || s[19] !== "." || s[23] !== "Z"
  ) return false;
  const century = twoDigits(s, 0);
  const yy = twoDigits(s, 2);
  const month = twoDigits(s, 5);
  const day = twoDigits(s, 8);
  const ms = twoDigits(s, 20);
  const ms3 = s.charCodeAt(22) - 48;
  if (century < 0 || yy < 0 || ms < 0 || ms3 < 0 || ms3 > 9) return false;
  if (month < 1 || month > 12 || day < 1) return false;
  const year = century * 100 + yy;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!;
  const hour = twoDigits(s, 11);
  const minute = twoDigits(s, 14);
  const second = twoDigits(s, 17);
  return day <= days && hour >= 0 && hour <= 23 && minute >= 0 && minute <= 59 &&
    second >= 0 && second <= 59;
}

/** An ISO instant from a `Date` or a parsable text, or `null`. */
export function iso(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "string" && isCanonicalInstant(value)) return value;
  const d = new Date(String(value));
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

function int(value: unknown): number | null {
  if (value === null || value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isInteger(n) ? n : null;
}

function text(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** The birth year's 10-year band, `"1980-1989"`, or `null`. */
export function birthYearBand(dob: unknown): string | null {
  const year = dob instanceof Date ? dob.getUTCFullYear() : /^(\d{4})/.exec(String(dob ?? ""))?.[1];
  const y = Number(year);
  if (!Number.isInteger(y) || y < 1800 || y > 2200) return null;
  const start = y - (y % 10);
  return `${start}-${start + 9}`;
}

/** The first 3 characters of a postal code (spaces removed, uppercased), or `null`. */
export function postalPrefix(postCode: unknown): string | null {
  const compact = String(postCode ?? "").replace(/\s+/g, "").toUpperCase();
  return compact.length >= 3 ? compact.slice(0, 3) : null;
}

/**
 * Turns a raw circulation row into an event: only the fields of {@linkcode CirculationEvent}
 * (with `patron_id` still raw, for `tokenize` to replace), timestamps as ISO strings. Names,
 * e-mails, barcodes, addresses and the birth date are not copied; the birth year band and postal
 * prefix are filled only when asked for.
 *
 * @example Usage
 * ```ts
 * import { deidentifyCirculation } from "./circulation.ts";
 * const event = deidentifyCirculation({
 *   circ_id: "7", patron_id: "42", email: "x@example.invalid", dob: "1984-05-01",
 *   post_code: "K1A 0B1", copy_id: "9", circ_lib: 4, xact_start: new Date(0),
 * }, { birthYearBand: true });
 * // { circ_id: "7", patron_id: "42", birth_year_band: "1980-1989", postal_prefix: null, ... }
 * ```
 */
export function deidentifyCirculation(
  row: Record<string, unknown>,
  options: DeidentifyOptions = {},
): Record<string, unknown> {
  return {
    circ_id: text(row.circ_id),
    patron_id: text(row.patron_id),
    copy_id: text(row.copy_id),
    bib_id: text(row.bib_id),
    circ_lib: int(row.circ_lib),
    home_ou: int(row.home_ou),
    circ_modifier: text(row.circ_modifier),
    xact_start: iso(row.xact_start),
    due_date: iso(row.due_date),
    checkin_time: iso(row.checkin_time),
    stop_fines: text(row.stop_fines),
    renewal_remaining: int(row.renewal_remaining),
    birth_year_band: options.birthYearBand ? birthYearBand(row.dob) : null,
    postal_prefix: options.postalPrefix ? postalPrefix(row.post_code) : null,
  };
}

/** A zod string that must parse as an instant (what `iso` writes). */
export const isoTimestamp = z.string().refine(
  (v) => isCanonicalInstant(v) || !Number.isNaN(Date.parse(v)),
  {
    error: "expected an ISO timestamp",
  },
);

/** A circulation event as it may leave the enclave: tokenized patron, no direct identifiers. */
export const CirculationEvent = z.object({
  circ_id: z.string().regex(/^\d+$/),
  patron_token: z.string().regex(/^[0-9a-f]{64}$/),
  copy_id: z.string().regex(/^\d+$/),
  bib_id: z.string().regex(/^\d+$/).nullable(),
  circ_lib: z.number().int(),
  home_ou: z.number().int().nullable(),
  circ_modifier: z.string().nullable(),
  xact_start: isoTimestamp,
  due_date: isoTimestamp.nullable(),
  checkin_time: isoTimestamp.nullable(),
  stop_fines: z.string().nullable(),
  renewal_remaining: z.number().int().nullable(),
  birth_year_band: z.string().regex(/^\d{4}-\d{4}$/).nullable(),
  postal_prefix: z.string().max(3).nullable(),
});

/** The TypeScript type of {@linkcode CirculationEvent}. */
export type CirculationEventValue = z.infer<typeof CirculationEvent>;

/** The warehouse columns, in the order `sqlLoad` inserts them. */
export const CIRCULATION_EVENT_COLUMNS: readonly string[] = Object.keys(CirculationEvent.shape);

/**
 * DDL of a circulation events table (idempotent) on PostgreSQL, or on MariaDB/MySQL with
 * `dialect: "mysql"` (times as `DATETIME(3)` in UTC). `circ_id` is the natural key.
 *
 * @example Usage
 * ```ts
 * import { circulationEventsDdl } from "./circulation.ts";
 * console.log(circulationEventsDdl("koha_circulation_events").includes("koha_circulation_events")); // true
 * ```
 */
export function circulationEventsDdl(
  table = "circulation_events",
  dialect: "postgres" | "mysql" = "postgres",
): string {
  const name = quoteIdentifier(table);
  const index = table.replaceAll(".", "_");
  if (dialect === "mysql") {
    const my = quoteMysqlIdentifier(table);
    return `
CREATE TABLE IF NOT EXISTS ${my} (
  circ_id BIGINT NOT NULL PRIMARY KEY,
  patron_token CHAR(64) NOT NULL,
  copy_id BIGINT NOT NULL,
  bib_id BIGINT,
  circ_lib INT NOT NULL,
  home_ou INT,
  circ_modifier VARCHAR(255),
  xact_start DATETIME(3) NOT NULL,
  due_date DATETIME(3),
  checkin_time DATETIME(3),
  stop_fines VARCHAR(64),
  renewal_remaining INT,
  birth_year_band VARCHAR(9),
  postal_prefix VARCHAR(3),
  loaded_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  KEY \`${index}_xact_start_idx\` (xact_start),
  KEY \`${index}_patron_token_idx\` (patron_token)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;
  }
  return `
CREATE TABLE IF NOT EXISTS ${name} (
  circ_id bigint PRIMARY KEY,
  patron_token char(64) NOT NULL,
  copy_id bigint NOT NULL,
  bib_id bigint,
  circ_lib integer NOT NULL,
  home_ou integer,
  circ_modifier text,
  xact_start timestamptz NOT NULL,
  due_date timestamptz,
  checkin_time timestamptz,
  stop_fines text,
  renewal_remaining integer,
  birth_year_band text,
  postal_prefix text,
  loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS "${index}_xact_start_idx" ON ${name} (xact_start);
CREATE INDEX IF NOT EXISTS "${index}_patron_token_idx" ON ${name} (patron_token);
`;
}

/** DDL of `circulation_events` on PostgreSQL (idempotent). `circ_id` is the natural key. */
export const CIRCULATION_EVENTS_DDL: string = circulationEventsDdl();

/**
 * The `sqlLoad` target for circulation events in `table` (default `circulation_events`, created
 * when missing on PostgreSQL, PGlite, MariaDB or MySQL): idempotent on `circ_id`.
 *
 * @example Usage
 * ```ts
 * import { circulationEventsTarget } from "./circulation.ts";
 * console.log(circulationEventsTarget("koha_circulation_events").key); // ["circ_id"]
 * ```
 */
export function circulationEventsTarget(table = "circulation_events"): SqlLoadTarget {
  return {
    table,
    columns: CIRCULATION_EVENT_COLUMNS,
    key: ["circ_id"],
    createSql: {
      postgres: circulationEventsDdl(table, "postgres"),
      mysql: circulationEventsDdl(table, "mysql"),
    },
  };
}

/** The `sqlLoad` target for circulation events: idempotent on `circ_id`. */
export const CIRCULATION_EVENTS_TARGET: SqlLoadTarget = circulationEventsTarget();
