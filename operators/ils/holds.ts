/**
 * Hold queues for a warehouse: what `dags/holds_sync.ts` needs around `sqlExtract`, `tokenize`
 * and `sqlLoad`, for Evergreen (`action.hold_request`) and Koha (`reserves`, `old_reserves`).
 *
 * One row per hold request, mirrored as it changes ({@linkcode HOLD_REQUESTS_TARGET} loads with
 * `onConflict: "update"`): the tokenized patron, the bibliographic record, the hold level, the
 * pickup library, the state, the request, capture, fulfilment and cancellation times, the days
 * the patron waited, and the queue position in bands. No notes, no free text (Evergreen's
 * `cancel_note`, Koha's `reservenotes` and `cancellation_reason` are never read), no notification
 * phone numbers or e-mail flags, no requestor or staff ids.
 *
 * States ({@linkcode HOLD_STATES}):
 *
 * | state | Evergreen | Koha |
 * | --- | --- | --- |
 * | `pending` | not captured, not frozen | `reserves.found` NULL |
 * | `suspended` | `frozen` | `reserves.suspend` = 1 |
 * | `in_transit` | captured, not yet on the hold shelf | `found` = `T` (in transit) or `P` (in processing) |
 * | `waiting` | captured and on the hold shelf (`shelf_time`) | `found` = `W` |
 * | `fulfilled` | `fulfillment_time` | `old_reserves.found` = `F` |
 * | `canceled` | `cancel_time` | `old_reserves.cancellationdate` |
 * | `expired` | cancelled for expiry (`cancel_cause` 1 or 2, or after `expire_time`) | cancelled after its expiration date |
 *
 * `wait_days` is the whole days from the request to the capture (or to the fulfilment when no
 * capture was recorded). `queue_band` is the position in the title's queue of a pending or
 * suspended hold, in bands ({@linkcode queueBand}): Evergreen's rank among the uncaptured open
 * holds on the same target (cut-in-line first, then by request time), Koha's `priority`.
 *
 * Each run reads every open hold (its state and queue position move without a timestamp) and the
 * holds closed in its interval: Evergreen by `fulfillment_time`/`cancel_time`, Koha
 * `old_reserves` by `timestamp`.
 *
 * @module
 */
import { z } from "zod";
import { quoteIdentifier, quoteMysqlIdentifier, type SqlLoadTarget } from "./sql_common.ts";
import { branchId, digits, kohaInstant, kohaPatronKey, utcInstant } from "./koha.ts";
import { iso, isoTimestamp } from "./circulation.ts";

/** The states a hold request can be in (see the module doc). */
export const HOLD_STATES = [
  "pending",
  "suspended",
  "in_transit",
  "waiting",
  "fulfilled",
  "canceled",
  "expired",
] as const;

/** What a hold asks for. */
export const HOLD_LEVELS = [
  "title",
  "item",
  "volume",
  "part",
  "metarecord",
  "issuance",
  "recall",
  "force",
] as const;

/** Queue position bands (see {@linkcode queueBand}). */
export const QUEUE_BANDS = ["1", "2-5", "6-10", "11-25", "26+"] as const;

/**
 * A queue position in bands: `1`, `2-5`, `6-10`, `11-25`, `26+`; `null` for none. Bands, not
 * positions: an exact position joined to a title and a pickup library narrows who a patron is.
 *
 * @example Usage
 * ```ts
 * import { queueBand } from "./holds.ts";
 * console.log(queueBand(7)); // "6-10"
 * ```
 */
export function queueBand(position: unknown): (typeof QUEUE_BANDS)[number] | null {
  if (position === null || position === undefined || position === "") return null;
  const n = Number(position);
  if (!Number.isInteger(n) || n < 1) return null;
  if (n === 1) return "1";
  if (n <= 5) return "2-5";
  if (n <= 10) return "6-10";
  if (n <= 25) return "11-25";
  return "26+";
}

/**
 * Every open hold, and every hold fulfilled or cancelled in `[$1, $2)`, from Evergreen's
 * `action.hold_request`, with its bibliographic record (title holds name it; copy, recall and
 * force holds through the copy's call number; volume holds through the call number) and its rank
 * in the queue of its target. Enclave data (`usr` is the raw patron key).
 */
export const EVERGREEN_HOLDS_QUERY = `
WITH queue AS (
  SELECT q.id,
         rank() OVER (PARTITION BY q.hold_type, q.target
                      ORDER BY coalesce(q.cut_in_line, false) DESC, q.request_time, q.id) AS position
    FROM action.hold_request q
   WHERE q.capture_time IS NULL AND q.fulfillment_time IS NULL AND q.cancel_time IS NULL
)
SELECT h.id::text AS hold_id,
       h.usr::text AS patron_id,
       h.hold_type,
       (CASE WHEN h.hold_type = 'T' THEN h.target
             WHEN h.hold_type = 'V' THEN vcn.record
             WHEN h.hold_type IN ('C', 'R', 'F') THEN ccn.record END)::text AS bib_id,
       h.pickup_lib,
       h.request_time,
       h.capture_time,
       h.shelf_time,
       h.fulfillment_time,
       h.cancel_time,
       h.cancel_cause,
       h.expire_time,
       h.frozen,
       queue.position::int AS queue_position
  FROM action.hold_request h
  LEFT JOIN queue ON queue.id = h.id
  LEFT JOIN asset.call_number vcn ON h.hold_type = 'V' AND vcn.id = h.target
  LEFT JOIN asset.copy cp ON h.hold_type IN ('C', 'R', 'F') AND cp.id = h.target
  LEFT JOIN asset.call_number ccn ON ccn.id = cp.call_number
 WHERE (h.fulfillment_time IS NULL AND h.cancel_time IS NULL)
    OR (h.fulfillment_time >= $1 AND h.fulfillment_time < $2)
    OR (h.cancel_time >= $1 AND h.cancel_time < $2)`;

/**
 * Every open hold (`reserves`) and the holds closed in `[?, ?)` (`old_reserves` by `timestamp`,
 * UTC text) from Koha. Enclave data (`borrowernumber` is the raw patron key).
 */
export const KOHA_HOLDS_QUERY = `
SELECT CAST(r.reserve_id AS CHAR) AS hold_id, CAST(r.borrowernumber AS CHAR) AS patron_id,
       CAST(r.biblionumber AS CHAR) AS bib_id, r.item_level_hold, r.item_group_id,
       r.branchcode AS pickup_branch, r.reservedate, r.waitingdate, r.cancellationdate,
       r.expirationdate, r.patron_expiration_date, r.found, r.priority, r.suspend,
       r.timestamp AS changed_at, 0 AS closed
  FROM reserves r
UNION ALL
SELECT CAST(o.reserve_id AS CHAR), CAST(o.borrowernumber AS CHAR), CAST(o.biblionumber AS CHAR),
       o.item_level_hold, o.item_group_id, o.branchcode, o.reservedate, o.waitingdate,
       o.cancellationdate, o.expirationdate, o.patron_expiration_date, o.found, o.priority,
       o.suspend, o.timestamp, 1
  FROM old_reserves o
 WHERE o.timestamp >= ? AND o.timestamp < ?`;

/**
 * Which ILS an extracted hold row came from: rows of {@linkcode KOHA_HOLDS_QUERY} carry Koha's
 * `reservedate`, rows of {@linkcode EVERGREEN_HOLDS_QUERY} never do. Lets a task downstream of the
 * extract tell them apart without reading the connection's variable (and its password).
 *
 * @example Usage
 * ```ts
 * import { holdRowIls } from "./holds.ts";
 * console.log(holdRowIls({ hold_id: "1", reservedate: "2026-01-02" })); // "koha"
 * console.log(holdRowIls({ hold_id: "1", request_time: new Date() })); // "evergreen"
 * ```
 */
export function holdRowIls(row: Record<string, unknown>): "evergreen" | "koha" {
  return "reservedate" in row ? "koha" : "evergreen";
}

/** The params of {@linkcode KOHA_HOLDS_QUERY} for `[from, to)` (Koha's `TIMESTAMP`s, UTC). */
export function kohaHoldsParams(from: Date, to: Date): string[] {
  const text = (d: Date) => d.toISOString().slice(0, 19).replace("T", " ");
  return [text(from), text(to)];
}

/** A hold request as it may leave the enclave: tokenized patron, no notes, no free text. */
export const HoldRequest = z.object({
  hold_id: z.string().regex(/^\d+$/),
  patron_token: z.string().regex(/^[0-9a-f]{64}$/),
  bib_id: z.string().regex(/^\d+$/).nullable(),
  hold_level: z.enum(HOLD_LEVELS),
  pickup_lib: z.number().int(),
  state: z.enum(HOLD_STATES),
  request_time: isoTimestamp,
  capture_time: isoTimestamp.nullable(),
  fulfillment_time: isoTimestamp.nullable(),
  cancellation_time: isoTimestamp.nullable(),
  wait_days: z.number().int().min(0).nullable(),
  queue_band: z.enum(QUEUE_BANDS).nullable(),
});

/** The TypeScript type of {@linkcode HoldRequest}. */
export type HoldRequestValue = z.infer<typeof HoldRequest>;

/** The warehouse columns, in the order `sqlLoad` inserts them. */
export const HOLD_REQUEST_COLUMNS: readonly string[] = Object.keys(HoldRequest.shape);

/**
 * DDL of a hold requests table (idempotent) on PostgreSQL, or MariaDB/MySQL with
 * `dialect: "mysql"`. `hold_id` is the natural key.
 *
 * @example Usage
 * ```ts
 * import { holdRequestsDdl } from "./holds.ts";
 * console.log(holdRequestsDdl().includes("hold_requests")); // true
 * ```
 */
export function holdRequestsDdl(
  table = "hold_requests",
  dialect: "postgres" | "mysql" = "postgres",
): string {
  const index = table.replaceAll(".", "_");
  if (dialect === "mysql") {
    return `
CREATE TABLE IF NOT EXISTS ${quoteMysqlIdentifier(table)} (
  hold_id BIGINT NOT NULL PRIMARY KEY,
  patron_token CHAR(64) NOT NULL,
  bib_id BIGINT,
  hold_level VARCHAR(16) NOT NULL,
  pickup_lib INT NOT NULL,
  state VARCHAR(16) NOT NULL,
  request_time DATETIME(3) NOT NULL,
  capture_time DATETIME(3),
  fulfillment_time DATETIME(3),
  cancellation_time DATETIME(3),
  wait_days INT,
  queue_band VARCHAR(8),
  loaded_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  KEY \`${index}_state_idx\` (state),
  KEY \`${index}_request_time_idx\` (request_time),
  KEY \`${index}_patron_token_idx\` (patron_token)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4`;
  }
  const name = quoteIdentifier(table);
  return `
CREATE TABLE IF NOT EXISTS ${name} (
  hold_id bigint PRIMARY KEY,
  patron_token char(64) NOT NULL,
  bib_id bigint,
  hold_level text NOT NULL,
  pickup_lib integer NOT NULL,
  state text NOT NULL,
  request_time timestamptz NOT NULL,
  capture_time timestamptz,
  fulfillment_time timestamptz,
  cancellation_time timestamptz,
  wait_days integer,
  queue_band text,
  loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS "${index}_state_idx" ON ${name} (state);
CREATE INDEX IF NOT EXISTS "${index}_request_time_idx" ON ${name} (request_time);
CREATE INDEX IF NOT EXISTS "${index}_patron_token_idx" ON ${name} (patron_token);
`;
}

/**
 * The `sqlLoad` target for hold requests in `table` (default `hold_requests`, created when
 * missing): keyed on `hold_id`, updated when a hold changes, unchanged on a rerun.
 *
 * @example Usage
 * ```ts
 * import { holdRequestsTarget } from "./holds.ts";
 * console.log(holdRequestsTarget().onConflict); // "update"
 * ```
 */
export function holdRequestsTarget(table = "hold_requests"): SqlLoadTarget {
  return {
    table,
    columns: HOLD_REQUEST_COLUMNS,
    key: ["hold_id"],
    onConflict: "update",
    createSql: { postgres: holdRequestsDdl(table), mysql: holdRequestsDdl(table, "mysql") },
  };
}

/** The `sqlLoad` target for `hold_requests`. */
export const HOLD_REQUESTS_TARGET: SqlLoadTarget = holdRequestsTarget();

const DAY_MS = 86_400_000;

function waitDays(request: string | null, until: string | null): number | null {
  if (request === null || until === null) return null;
  const days = Math.floor((Date.parse(until) - Date.parse(request)) / DAY_MS);
  return days >= 0 ? days : 0;
}

/** What a hold record is made of; the wait and the band follow from the state and times. */
interface HoldParts {
  id: unknown;
  patron: string | null;
  bib: unknown;
  level: (typeof HOLD_LEVELS)[number];
  pickup: number | null;
  state: (typeof HOLD_STATES)[number];
  request: string | null;
  capture: string | null;
  fulfilled: string | null;
  canceled: string | null;
  position: unknown;
}

function holdRecord(p: HoldParts): Record<string, unknown> {
  const queued = p.state === "pending" || p.state === "suspended";
  return {
    hold_id: digits(p.id),
    patron_id: p.patron,
    bib_id: digits(p.bib),
    hold_level: p.level,
    pickup_lib: p.pickup,
    state: p.state,
    request_time: p.request,
    capture_time: p.capture,
    fulfillment_time: p.fulfilled,
    cancellation_time: p.canceled,
    wait_days: waitDays(p.request, p.capture ?? p.fulfilled),
    queue_band: queued ? queueBand(p.position) : null,
  };
}

function truthy(value: unknown): boolean {
  return value === true || value === 1 || value === "1" || value === "t" || value === "true";
}

const EVERGREEN_LEVELS: Readonly<Record<string, (typeof HOLD_LEVELS)[number]>> = {
  T: "title",
  C: "item",
  V: "volume",
  P: "part",
  M: "metarecord",
  I: "issuance",
  R: "recall",
  F: "force",
};

/** Evergreen `cancel_cause` values that mean the hold expired (untargeted, or shelf expiry). */
const EXPIRY_CAUSES = new Set([1, 2]);

/**
 * An Evergreen hold (a row of {@linkcode EVERGREEN_HOLDS_QUERY}) as a {@linkcode HoldRequest}
 * with the raw `patron_id` still in it, for `tokenize` to replace.
 *
 * @example Usage
 * ```ts
 * import { deidentifyEvergreenHold } from "./holds.ts";
 * const hold = deidentifyEvergreenHold({
 *   hold_id: "1", patron_id: "42", hold_type: "T", bib_id: "7", pickup_lib: 4,
 *   request_time: new Date("2026-01-01T10:00:00Z"), queue_position: 3,
 * });
 * console.log(hold.state, hold.queue_band); // "pending" "2-5"
 * ```
 */
export function deidentifyEvergreenHold(row: Record<string, unknown>): Record<string, unknown> {
  const request = iso(row.request_time);
  const capture = iso(row.capture_time);
  const shelf = iso(row.shelf_time);
  const fulfilled = iso(row.fulfillment_time);
  const canceled = iso(row.cancel_time);
  const expire = iso(row.expire_time);
  const cause = row.cancel_cause === null || row.cancel_cause === undefined
    ? null
    : Number(row.cancel_cause);
  const state: (typeof HOLD_STATES)[number] = fulfilled !== null
    ? "fulfilled"
    : canceled !== null
    ? (cause !== null && EXPIRY_CAUSES.has(cause)) ||
        (expire !== null && Date.parse(canceled) >= Date.parse(expire))
      ? "expired"
      : "canceled"
    : capture !== null
    ? shelf !== null ? "waiting" : "in_transit"
    : truthy(row.frozen)
    ? "suspended"
    : "pending";
  return holdRecord({
    id: row.hold_id,
    patron: digits(row.patron_id),
    bib: row.bib_id,
    level: EVERGREEN_LEVELS[String(row.hold_type ?? "T")] ?? "title",
    pickup: row.pickup_lib === null || row.pickup_lib === undefined ? null : Number(row.pickup_lib),
    state,
    request,
    capture,
    fulfilled,
    canceled,
    position: row.queue_position,
  });
}

/** How {@linkcode deidentifyKohaHold} reads a Koha row. */
export interface KohaHoldOptions {
  /** Koha's time zone (its `timezone` setting; default `"UTC"`). */
  timeZone?: string;
  /** Branch code to library id. */
  branches: Readonly<Record<string, number>>;
  /** Koha's `AnonymousPatron` borrowernumber (default: none): set aside like deleted patrons. */
  anonymousPatron?: number;
}

/** A Koha hold as a record, or set aside with a value-free reason. */
export type KohaHoldResult =
  | { hold: Record<string, unknown> }
  | { reason: "patron deleted or anonymized" | "no pickup library" };

/**
 * A Koha hold (a row of {@linkcode KOHA_HOLDS_QUERY}) as a {@linkcode HoldRequest} with the raw
 * `patron_id` still in it, or the reason it cannot be one. Koha records dates (not times) for the
 * request, the capture (`waitingdate`) and the cancellation: they become midnight in Koha's time
 * zone; the fulfilment time is the `old_reserves.timestamp` of the filled hold.
 *
 * @example Usage
 * ```ts
 * import { deidentifyKohaHold } from "./holds.ts";
 * const result = deidentifyKohaHold({
 *   hold_id: "5", patron_id: "42", bib_id: "7", pickup_branch: "CPL", reservedate: "2026-01-02",
 *   found: "W", waitingdate: "2026-01-05", priority: 0, suspend: 0, closed: 0,
 * }, { branches: { CPL: 4 } });
 * // { hold: { state: "waiting", wait_days: 3, ... } }
 * ```
 */
export function deidentifyKohaHold(
  row: Record<string, unknown>,
  options: KohaHoldOptions,
): KohaHoldResult {
  const zone = options.timeZone ?? "UTC";
  const patron = kohaPatronKey(row.patron_id, options.anonymousPatron);
  if (patron === null) return { reason: "patron deleted or anonymized" };
  const pickup = branchId(options.branches, row.pickup_branch, "pickup library");
  if (pickup === null) return { reason: "no pickup library" };
  const closed = truthy(row.closed);
  const found = row.found === null || row.found === undefined ? null : String(row.found);
  const request = kohaInstant(row.reservedate, zone);
  const capture = kohaInstant(row.waitingdate, zone);
  const canceledOn = kohaInstant(row.cancellationdate, zone);
  const expires = kohaInstant(row.expirationdate, zone) ??
    kohaInstant(row.patron_expiration_date, zone);
  let state: (typeof HOLD_STATES)[number];
  let fulfilled: string | null = null;
  let canceled: string | null = null;
  if (closed) {
    if (found === "F") {
      state = "fulfilled";
      fulfilled = utcInstant(row.changed_at);
    } else {
      canceled = canceledOn ?? utcInstant(row.changed_at);
      state =
        canceledOn !== null && expires !== null && Date.parse(canceledOn) > Date.parse(expires)
          ? "expired"
          : "canceled";
    }
  } else if (found === "W") state = "waiting";
  else if (found === "T" || found === "P") state = "in_transit";
  else if (truthy(row.suspend)) state = "suspended";
  else state = "pending";
  const level = truthy(row.item_level_hold)
    ? "item"
    : row.item_group_id !== null && row.item_group_id !== undefined
    ? "part"
    : "title";
  return {
    hold: holdRecord({
      id: row.hold_id,
      patron,
      bib: row.bib_id,
      level,
      pickup,
      state,
      request,
      capture,
      fulfilled,
      canceled,
      position: row.priority,
    }),
  };
}
