/**
 * Deterministic, Evergreen-shaped ILS fixtures of any size.
 *
 * {@linkcode ilsSchemaSql} creates the `actor`, `asset` and `action` tables Carrel's DAGs read, with
 * Evergreen's column names and types (so real Evergreen `COPY` dumps load into them too).
 * {@linkcode loadIlsFixture} fills them with synthetic patrons, cards, addresses, call numbers,
 * copies and circulations. All rows are generated server-side (`INSERT ... SELECT` over
 * `generate_series`, in chunks) from a seeded integer hash, so the same options always produce the
 * same data, on PostgreSQL and PGlite alike, and 10 million circulations stay feasible.
 *
 * Every generated value is obviously fake: `@example.invalid` emails, `555-01xx` phone numbers,
 * `FAKEP`/`FAKEC` barcodes, `FAKEID` identifiers and invented family names and towns.
 *
 * @module
 */
import type { Sql } from "./sql.ts";

/** The subset of a PGlite instance (or transaction) the loader needs. */
export interface PgliteLike {
  /** Runs one or more statements without parameters. */
  exec(query: string): Promise<unknown>;
  /** Runs one statement with parameters. */
  query<T>(query: string, params?: unknown[]): Promise<{ rows: T[] }>;
  /** Runs `callback` in a transaction. */
  transaction?<T>(callback: (tx: PgliteLike) => Promise<T>): Promise<T>;
}

/** A postgres.js client or a PGlite instance. */
export type FixtureDatabase = Sql | PgliteLike;

/**
 * DDL for the Evergreen tables used by Carrel (idempotent: `IF NOT EXISTS`). Column names, order
 * and types follow Evergreen; foreign keys and secondary indexes are left out (see
 * {@linkcode ilsIndexSql}) so bulk loads stay fast.
 *
 * @example Usage
 * ```ts ignore
 * import postgres from "postgres";
 * import { ilsSchemaSql } from "./ils_fixtures.ts";
 * const sql = postgres(Deno.env.get("CARREL_TEST_DATABASE_URL")!);
 * await sql.unsafe(ilsSchemaSql).simple();
 * ```
 */
export const ilsSchemaSql: string = `
CREATE SCHEMA IF NOT EXISTS actor;
CREATE SCHEMA IF NOT EXISTS asset;
CREATE SCHEMA IF NOT EXISTS action;

CREATE TABLE IF NOT EXISTS actor.usr (
  id serial PRIMARY KEY,
  card integer,
  profile integer NOT NULL,
  usrname text NOT NULL UNIQUE,
  email text,
  passwd text,
  standing integer NOT NULL DEFAULT 1,
  ident_type integer NOT NULL,
  ident_value text,
  ident_type2 integer,
  ident_value2 text,
  net_access_level integer NOT NULL DEFAULT 1,
  photo_url text,
  prefix text,
  first_given_name text NOT NULL,
  second_given_name text,
  family_name text NOT NULL,
  suffix text,
  guardian text,
  pref_prefix text,
  pref_first_given_name text,
  pref_second_given_name text,
  pref_family_name text,
  pref_suffix text,
  name_keywords text,
  name_kw_tsvector tsvector,
  alias text,
  day_phone text,
  evening_phone text,
  other_phone text,
  mailing_address integer,
  billing_address integer,
  home_ou integer NOT NULL,
  dob date,
  active boolean NOT NULL DEFAULT true,
  master_account boolean NOT NULL DEFAULT false,
  super_user boolean NOT NULL DEFAULT false,
  barred boolean NOT NULL DEFAULT false,
  deleted boolean NOT NULL DEFAULT false,
  juvenile boolean NOT NULL DEFAULT false,
  usrgroup serial NOT NULL,
  claims_returned_count integer NOT NULL DEFAULT 0,
  credit_forward_balance numeric(6,2) NOT NULL DEFAULT 0.00,
  last_xact_id text NOT NULL DEFAULT 'none',
  create_date timestamptz NOT NULL DEFAULT now(),
  expire_date timestamptz NOT NULL DEFAULT now() + interval '3 years',
  claims_never_checked_out_count integer NOT NULL DEFAULT 0,
  last_update_time timestamptz,
  locale text,
  guardian_email text
);

CREATE TABLE IF NOT EXISTS actor.card (
  id serial PRIMARY KEY,
  usr integer NOT NULL,
  barcode text NOT NULL UNIQUE,
  active boolean NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS actor.usr_address (
  id serial PRIMARY KEY,
  valid boolean NOT NULL DEFAULT true,
  within_city_limits boolean NOT NULL DEFAULT true,
  address_type text NOT NULL DEFAULT 'MAILING',
  usr integer NOT NULL,
  street1 text NOT NULL,
  street2 text,
  city text NOT NULL,
  county text,
  state text,
  country text NOT NULL,
  post_code text NOT NULL,
  pending boolean NOT NULL DEFAULT false,
  replaces integer
);

CREATE TABLE IF NOT EXISTS asset.call_number (
  id bigserial PRIMARY KEY,
  creator bigint NOT NULL,
  create_date timestamptz DEFAULT now(),
  editor bigint NOT NULL,
  edit_date timestamptz DEFAULT now(),
  record bigint NOT NULL,
  owning_lib integer NOT NULL,
  label text NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  prefix integer NOT NULL DEFAULT -1,
  suffix integer NOT NULL DEFAULT -1,
  label_class bigint NOT NULL DEFAULT 1,
  label_sortkey text
);

CREATE TABLE IF NOT EXISTS asset.copy (
  id bigserial PRIMARY KEY,
  circ_lib integer NOT NULL,
  creator bigint NOT NULL,
  call_number bigint NOT NULL,
  editor bigint NOT NULL,
  create_date timestamptz DEFAULT now(),
  edit_date timestamptz DEFAULT now(),
  copy_number integer,
  status integer NOT NULL DEFAULT 0,
  location integer NOT NULL DEFAULT 1,
  loan_duration integer NOT NULL,
  fine_level integer NOT NULL,
  age_protect integer,
  circulate boolean NOT NULL DEFAULT true,
  deposit boolean NOT NULL DEFAULT false,
  ref boolean NOT NULL DEFAULT false,
  holdable boolean NOT NULL DEFAULT true,
  deposit_amount numeric(6,2) NOT NULL DEFAULT 0.00,
  price numeric(8,2),
  barcode text NOT NULL,
  circ_modifier text,
  circ_as_type text,
  dummy_title text,
  dummy_author text,
  alert_message text,
  opac_visible boolean NOT NULL DEFAULT true,
  deleted boolean NOT NULL DEFAULT false,
  floating integer,
  dummy_isbn text,
  status_changed_time timestamptz,
  active_date timestamptz,
  mint_condition boolean NOT NULL DEFAULT true,
  cost numeric(8,2)
);
CREATE UNIQUE INDEX IF NOT EXISTS copy_barcode_key ON asset.copy (barcode) WHERE deleted = false;

CREATE TABLE IF NOT EXISTS action.circulation (
  id bigserial PRIMARY KEY,
  usr integer NOT NULL,
  xact_start timestamptz NOT NULL DEFAULT now(),
  xact_finish timestamptz,
  unrecovered boolean,
  target_copy bigint NOT NULL,
  circ_lib integer NOT NULL,
  circ_staff integer NOT NULL,
  checkin_staff integer,
  checkin_lib integer,
  renewal_remaining integer NOT NULL,
  grace_period interval NOT NULL,
  due_date timestamptz,
  stop_fines_time timestamptz,
  checkin_time timestamptz,
  create_time timestamptz NOT NULL DEFAULT now(),
  duration interval,
  fine_interval interval NOT NULL DEFAULT '1 day',
  recurring_fine numeric(6,2),
  max_fine numeric(6,2),
  phone_renewal boolean NOT NULL DEFAULT false,
  desk_renewal boolean NOT NULL DEFAULT false,
  opac_renewal boolean NOT NULL DEFAULT false,
  duration_rule text NOT NULL,
  recurring_fine_rule text NOT NULL,
  max_fine_rule text NOT NULL,
  stop_fines text,
  workstation integer,
  checkin_workstation integer,
  copy_location integer NOT NULL DEFAULT 1,
  checkin_scan_time timestamptz,
  auto_renewal boolean,
  auto_renewal_remaining integer,
  parent_circ bigint
);
`;

/**
 * Secondary indexes matching the access paths Carrel's DAGs use (patron, copy, time window).
 * {@linkcode loadIlsFixture} creates them after loading.
 *
 * @example Usage
 * ```ts ignore
 * import { ilsIndexSql } from "./ils_fixtures.ts";
 * await sql.unsafe(ilsIndexSql).simple();
 * ```
 */
export const ilsIndexSql: string = `
CREATE INDEX IF NOT EXISTS actor_card_usr_idx ON actor.card (usr);
CREATE INDEX IF NOT EXISTS actor_usr_address_usr_idx ON actor.usr_address (usr);
CREATE INDEX IF NOT EXISTS cp_cn_idx ON asset.copy (call_number);
CREATE INDEX IF NOT EXISTS circ_all_usr_idx ON action.circulation (usr);
CREATE INDEX IF NOT EXISTS circ_target_copy_idx ON action.circulation (target_copy);
CREATE INDEX IF NOT EXISTS circ_xact_start_idx ON action.circulation (xact_start);
`;

/** Options for {@linkcode loadIlsFixture}. */
export interface IlsFixtureOptions {
  /** Patrons (one card and one address each). */
  patrons: number;
  /** Item copies. */
  copies: number;
  /** Circulations (checkouts), e.g. 1,000 to 10,000,000. */
  circulations: number;
  /** Call numbers (default: half the copies, rounded up). */
  callNumbers?: number;
  /** Circulations' `xact_start` is spread over [start, end), increasing with `id`. */
  start: Date | string;
  /** End of the circulation window (exclusive). */
  end: Date | string;
  /** PRNG seed, an integer in [0, 2^31) (default 1). Same seed and sizes, same rows. */
  seed?: number;
  /** Rows per `INSERT ... SELECT` statement (default 250,000 on PostgreSQL, 50,000 on PGlite). */
  chunkSize?: number;
  /** Run {@linkcode ilsSchemaSql} first (default true). */
  createSchema?: boolean;
  /** Called after each chunk. */
  onProgress?: (table: string, loaded: number, total: number) => void;
  /** Aborting stops between chunks and rolls the whole load back. */
  signal?: AbortSignal;
}

/** Row counts loaded by {@linkcode loadIlsFixture}. */
export interface IlsFixtureResult {
  /** Rows in `actor.usr` (also `actor.card` and `actor.usr_address`). */
  patrons: number;
  /** Rows in `asset.call_number`. */
  callNumbers: number;
  /** Rows in `asset.copy`. */
  copies: number;
  /** Rows in `action.circulation`. */
  circulations: number;
  /** Wall time in milliseconds. */
  ms: number;
}

/** Raised for invalid options or a non-empty target. */
export class FixtureError extends Error {
  /**
   * Creates a fixture error.
   *
   * @example Usage
   * ```ts
   * import { FixtureError } from "./ils_fixtures.ts";
   * const err = new FixtureError("Cannot load ILS fixture: action.circulation is not empty");
   * console.log(err.name); // "FixtureError"
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "FixtureError";
  }
}

const FIRST_NAMES = [
  "Ada",
  "Basil",
  "Clara",
  "Dmitri",
  "Edith",
  "Farah",
  "Gideon",
  "Hana",
  "Ines",
  "Jonah",
  "Keiko",
  "Lars",
  "Mirela",
  "Nnamdi",
  "Olive",
  "Priya",
  "Quentin",
  "Rosa",
  "Sami",
  "Thea",
  "Umar",
  "Vera",
  "Wendell",
  "Xiomara",
  "Yusuf",
  "Zofia",
];
const FAMILY_NAMES = [
  "Fixture",
  "Testwood",
  "Mockridge",
  "Sampleton",
  "Fakely",
  "Stubbs",
  "Dummett",
  "Placeholder",
  "Synthwell",
  "Examplar",
  "Pretendis",
  "Madeupson",
  "Fauxberg",
  "Notreal",
  "Seedling",
  "Generata",
];
const TOWNS = [
  "Fixtureville",
  "Testford",
  "Mockton",
  "Sample Falls",
  "Fakeham",
  "Stub City",
  "Dummy Harbor",
  "Nulltown",
];
const STREETS = [
  "Fixture",
  "Sample",
  "Mock",
  "Test",
  "Example",
  "Placeholder",
  "Synthetic",
  "Pretend",
];
const STREET_KINDS = ["Lane", "Way", "Road", "Court", "Avenue", "Street"];
const STATES = ["ZZ", "XX", "QQ"];
const MODIFIERS = ["book", "book", "book", "book", "dvd", "cd", "magazine", "audiobook"];
const DURATIONS = ["14 days", "14 days", "14 days", "7 days", "21 days"];

const TWO_32 = 4_294_967_296;

function literalArray(values: readonly string[]): string {
  return `ARRAY[${values.map((v) => `'${v.replaceAll("'", "''")}'`).join(",")}]::text[]`;
}

function pick(values: readonly string[], hash: string): string {
  return `(${literalArray(values)})[1 + ${hash} % ${values.length}]`;
}

/**
 * SQL that derives independent 32-bit hashes `h1..hn` for each `i` of `generate_series(lo, hi)`
 * from the seed, using PostgreSQL's built-in `hashint8extended` (the seeded hash behind hash
 * partitioning: pure integer arithmetic, stable across platforms and since PostgreSQL 11, so
 * PostgreSQL and PGlite produce the same rows). Returns the FROM clause.
 */
function hashedSeries(lo: number, hi: number, seed: number, salt: number, count: number): string {
  const hashes = Array.from({ length: count }, (_, k) => {
    const key = seed * 64 + salt * 8 + k; // distinct per (seed, table, column)
    return `hashint8extended(i, ${key}) & ${TWO_32 - 1} AS h${k + 1}`;
  });
  return `FROM generate_series(${lo}::bigint, ${hi}::bigint) AS g(i)
      CROSS JOIN LATERAL (SELECT ${hashes.join(", ")}) AS hashes`;
}

function timestampSql(ms: string): string {
  return `to_timestamp((${ms})::float8 / 1000.0)`;
}

interface Runner {
  exec(text: string): Promise<void>;
  rows<T>(text: string): Promise<T[]>;
}

function isPostgresJs(db: FixtureDatabase): db is Sql {
  return typeof db === "function";
}

function positiveInt(value: number, what: string, min: number): number {
  if (!Number.isInteger(value) || value < min || value > 1_000_000_000) {
    throw new FixtureError(`Cannot load ILS fixture: ${what} must be an integer >= ${min}`);
  }
  return value;
}

function toMs(value: Date | string, what: string): number {
  const ms = value instanceof Date ? value.getTime() : Date.parse(value);
  if (!Number.isFinite(ms)) {
    throw new FixtureError(`Cannot load ILS fixture: ${what} is not a valid date`);
  }
  return ms;
}

/**
 * Creates the Evergreen tables (unless `createSchema: false`) and loads a deterministic synthetic
 * ILS into them in one transaction: `patrons` rows in `actor.usr`, `actor.card` and
 * `actor.usr_address`; call numbers and copies in `asset`; circulations in `action.circulation`
 * with `xact_start` increasing with `id` across [start, end), `due_date` 7/14/21 days later, and a
 * `checkin_time` (with `stop_fines = 'CHECKIN'`) when the item came back before `end`. Also creates
 * {@linkcode ilsIndexSql}, advances the id sequences and analyzes the tables.
 *
 * The target tables must be empty. Works with a postgres.js client or a PGlite instance.
 *
 * @example Usage
 * ```ts ignore
 * import { PGlite } from "@electric-sql/pglite";
 * import { loadIlsFixture } from "./ils_fixtures.ts";
 * const db = new PGlite();
 * const result = await loadIlsFixture(db, {
 *   patrons: 200, copies: 500, circulations: 1000,
 *   start: "2024-01-01T00:00:00Z", end: "2025-01-01T00:00:00Z", seed: 42,
 * });
 * console.log(result.circulations); // 1000
 * ```
 */
export async function loadIlsFixture(
  db: FixtureDatabase,
  options: IlsFixtureOptions,
): Promise<IlsFixtureResult> {
  const started = performance.now();
  const patrons = positiveInt(options.patrons, "patrons", 1);
  const copies = positiveInt(options.copies, "copies", 1);
  const circulations = positiveInt(options.circulations, "circulations", 0);
  const callNumbers = positiveInt(options.callNumbers ?? Math.ceil(copies / 2), "callNumbers", 1);
  const seed = options.seed ?? 1;
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 31) {
    throw new FixtureError("Cannot load ILS fixture: seed must be an integer in [0, 2^31)");
  }
  const startMs = toMs(options.start, "start");
  const endMs = toMs(options.end, "end");
  if (endMs <= startMs) throw new FixtureError("Cannot load ILS fixture: end must be after start");
  const pg = isPostgresJs(db);
  const chunk = positiveInt(options.chunkSize ?? (pg ? 250_000 : 50_000), "chunkSize", 1);
  const { signal, onProgress } = options;

  const body = async (run: Runner): Promise<void> => {
    if (options.createSchema ?? true) await run.exec(ilsSchemaSql);
    for (
      const table of [
        "actor.usr",
        "actor.card",
        "actor.usr_address",
        "asset.call_number",
        "asset.copy",
        "action.circulation",
      ]
    ) {
      const [row] = await run.rows<{ present: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM ${table}) AS present`,
      );
      if (row?.present === true) {
        throw new FixtureError(`Cannot load ILS fixture: ${table} is not empty`);
      }
    }
    const chunked = async (
      table: string,
      total: number,
      statement: (lo: number, hi: number) => string,
    ) => {
      for (let lo = 1; lo <= total; lo += chunk) {
        if (signal?.aborted) throw new FixtureError("Cannot load ILS fixture: aborted");
        const hi = Math.min(total, lo + chunk - 1);
        await run.exec(statement(lo, hi));
        onProgress?.(table, hi, total);
      }
    };
    const created = (h: string) => timestampSql(`${startMs} - (${h} % 3650) * 86400000::bigint`);

    await chunked("actor.usr", patrons, (lo, hi) => `
      INSERT INTO actor.usr (id, card, profile, usrname, email, standing, ident_type, ident_value, net_access_level,
        first_given_name, second_given_name, family_name, name_keywords, day_phone, mailing_address, billing_address,
        home_ou, dob, active, master_account, super_user, barred, deleted, juvenile, usrgroup, claims_returned_count,
        credit_forward_balance, last_xact_id, create_date, expire_date, claims_never_checked_out_count, last_update_time)
      SELECT i, i, 2 + h1 % 3, 'fixture-user-' || i,
        lower(n.first) || '.' || lower(n.family) || i || '@example.invalid', 1, 1 + h2 % 3,
        'FAKEID' || lpad(i::text, 9, '0'), 1, n.first, CASE WHEN h3 % 3 = 0 THEN chr(65 + (h3 % 26)::int) END,
        n.family, NULL, '555-555-01' || lpad((h4 % 100)::text, 2, '0'), i, i, 4 + h2 % 6,
        date '1940-01-01' + (h5 % 27000)::int, true, false, false, h4 % 50 = 0, false, h5 % 27000 > 23000, i, 0,
        0.00, 'none', ${created("h6")}, ${created("h6")} + interval '3 years', 0, ${created("h6")}
      ${hashedSeries(lo, hi, seed, 1, 6)}
      CROSS JOIN LATERAL (SELECT ${pick(FIRST_NAMES, "h1")} AS first, ${
      pick(FAMILY_NAMES, "h3")
    } AS family) AS n`);

    await chunked("actor.card", patrons, (lo, hi) => `
      INSERT INTO actor.card (id, usr, barcode, active)
      SELECT i, i, 'FAKEP' || lpad(i::text, 9, '0'), true FROM generate_series(${lo}::bigint, ${hi}::bigint) AS g(i)`);

    await chunked("actor.usr_address", patrons, (lo, hi) => `
      INSERT INTO actor.usr_address (id, valid, within_city_limits, address_type, usr, street1, street2, city, county,
        state, country, post_code, pending, replaces)
      SELECT i, true, h1 % 2 = 0, 'MAILING', i,
        (1 + h1 % 9999)::text || ' ' || ${pick(STREETS, "h2")} || ' ' || ${
      pick(STREET_KINDS, "h3")
    }, '',
        ${pick(TOWNS, "h4")}, 'Fixture County', ${
      pick(STATES, "h2")
    }, 'USA', lpad((h3 % 100000)::text, 5, '0'), false, NULL
      ${hashedSeries(lo, hi, seed, 2, 4)}`);

    const bibs = Math.max(1, Math.ceil(callNumbers * 0.9));
    await chunked("asset.call_number", callNumbers, (lo, hi) => `
      INSERT INTO asset.call_number (id, creator, create_date, editor, edit_date, record, owning_lib, label, deleted,
        prefix, suffix, label_class, label_sortkey)
      SELECT i, 1, ${created("h3")}, 1, ${
      created("h3")
    }, 1 + h1 % ${bibs}, 4 + h2 % 6, l.label, false, -1, -1, 1,
        l.label
      ${hashedSeries(lo, hi, seed, 3, 3)}
      CROSS JOIN LATERAL (SELECT lpad((h1 % 1000)::text, 3, '0') || '.' || lpad((h2 % 100)::text, 2, '0') || ' '
        || upper(left(${pick(FAMILY_NAMES, "h3")}, 3)) AS label) AS l`);

    await chunked("asset.copy", copies, (lo, hi) => `
      INSERT INTO asset.copy (id, circ_lib, creator, call_number, editor, create_date, edit_date, status, location,
        loan_duration, fine_level, circulate, deposit, ref, holdable, deposit_amount, price, barcode, circ_modifier,
        opac_visible, deleted, status_changed_time, active_date, mint_condition)
      SELECT i, 4 + h1 % 6, 1, 1 + ((i - 1) * ${callNumbers}) / ${copies}, 1, ${created("h2")}, ${
      created("h2")
    },
        CASE WHEN h3 % 20 = 0 THEN 1 ELSE 0 END, 100 + h1 % 30, 2, 2, true, false, h2 % 25 = 0, true, 0.00,
        round((5 + (h3 % 9500) / 100.0)::numeric, 2), 'FAKEC' || lpad(i::text, 9, '0'), ${
      pick(MODIFIERS, "h4")
    },
        true, false, ${created("h2")}, ${created("h2")}, true
      ${hashedSeries(lo, hi, seed, 4, 4)}`);

    const span = endMs - startMs;
    // Nested `OFFSET 0` subqueries compute each derived value once per row instead of letting the
    // planner inline (and repeat) the expressions.
    const startAt = timestampSql(
      `${startMs} + floor(((i - 1) + h4 / ${TWO_32}.0) * (${span}::float8 / ${circulations}))::bigint`,
    );
    await chunked("action.circulation", circulations, (lo, hi) => `
      INSERT INTO action.circulation (id, usr, xact_start, xact_finish, target_copy, circ_lib, circ_staff,
        checkin_staff, checkin_lib, renewal_remaining, grace_period, due_date, stop_fines_time, checkin_time,
        create_time, duration, fine_interval, recurring_fine, max_fine, phone_renewal, desk_renewal, opac_renewal,
        duration_rule, recurring_fine_rule, max_fine_rule, stop_fines, copy_location, checkin_scan_time,
        auto_renewal)
      SELECT i, 1 + h1 % ${patrons}, start_at, back_at, 1 + h2 % ${copies}, lib, 1,
        CASE WHEN back_at IS NOT NULL THEN 1 END, CASE WHEN back_at IS NOT NULL THEN lib END,
        2, interval '1 day', due, CASE WHEN back_at IS NOT NULL THEN back_at WHEN lost THEN due END,
        back_at, start_at, loan, interval '1 day', 0.10, 3.00, false, false, false, 'default', 'default',
        'default', CASE WHEN back_at IS NOT NULL THEN 'CHECKIN' WHEN lost THEN 'LOST' END, 100 + h2 % 30,
        back_at, false
      FROM (
        SELECT i, h1, h2, lib, start_at, loan, lost, start_at + loan AS due,
          CASE WHEN NOT lost AND start_at + delay < ${
      timestampSql(String(endMs))
    } THEN start_at + delay END AS back_at
        FROM (
          SELECT i, h1, h2, 4 + h3 % 6 AS lib, h3 % 97 = 0 AS lost, ${startAt} AS start_at,
            (${literalArray(DURATIONS)}::interval[])[1 + h5 % ${DURATIONS.length}] AS loan,
            ((1 + h5 % 30) * 86400 + h4 % 36000) * interval '1 second' AS delay
          ${hashedSeries(lo, hi, seed, 5, 5)}
          OFFSET 0
        ) AS base
        OFFSET 0
      ) AS derived`);

    if (signal?.aborted) throw new FixtureError("Cannot load ILS fixture: aborted");
    await run.exec(ilsIndexSql);
    await run.exec(`
      SELECT setval(pg_get_serial_sequence('actor.usr', 'id'), ${patrons});
      SELECT setval(pg_get_serial_sequence('actor.usr', 'usrgroup'), ${patrons});
      SELECT setval(pg_get_serial_sequence('actor.card', 'id'), ${patrons});
      SELECT setval(pg_get_serial_sequence('actor.usr_address', 'id'), ${patrons});
      SELECT setval(pg_get_serial_sequence('asset.call_number', 'id'), ${callNumbers});
      SELECT setval(pg_get_serial_sequence('asset.copy', 'id'), ${copies});
      SELECT setval(pg_get_serial_sequence('action.circulation', 'id'), ${
      Math.max(1, circulations)
    }, ${circulations > 0});`);
  };

  if (pg) {
    await db.begin(async (tx) => {
      await body({
        exec: async (text) => {
          await tx.unsafe(text).simple();
        },
        rows: async <T>(text: string) => (await tx.unsafe(text)) as unknown as T[],
      });
    });
    await db.unsafe(
      "ANALYZE actor.usr, actor.card, actor.usr_address, asset.call_number, asset.copy, action.circulation",
    );
  } else {
    const runner = (target: PgliteLike): Runner => ({
      exec: async (text) => {
        await target.exec(text);
      },
      rows: async <T>(text: string) => (await target.query<T>(text)).rows,
    });
    if (db.transaction !== undefined) await db.transaction((tx) => body(runner(tx)));
    else await body(runner(db));
    await db.exec("ANALYZE");
  }
  return {
    patrons,
    callNumbers,
    copies,
    circulations,
    ms: Math.round(performance.now() - started),
  };
}
