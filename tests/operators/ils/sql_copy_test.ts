/**
 * The COPY paths of `sqlExtract` and `sqlLoad` on PGlite and (with `CARREL_TEST_DATABASE_URL`)
 * PostgreSQL: hostile values of every column type the circulation and holds tables use survive a
 * load and an extract unchanged; reloading adds nothing; `onConflict: "update"` updates only what
 * changed; a COPY error names the row (across chunks) and the column, never the value.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { PGlite } from "@electric-sql/pglite";
import {
  type Row,
  SqlError,
  sqlExtract,
  sqlLoad,
  type SqlSource,
} from "../../../operators/ils/sql.ts";
import {
  bindAsSettings,
  copyErrorPosition,
  copyTextField,
  CopyTextReader,
  copyTextValue,
} from "../../../operators/ils/sql_copy.ts";
import { drain, rejects } from "./sql_test_utils.ts";

const ADMIN_URL = Deno.env.get("CARREL_TEST_DATABASE_URL");
const SENTINEL = "Sentinel-Value-5c1d";

const HOSTILE_TEXT = [
  "tab\there",
  "new\nline",
  "cr\rreturn\r\n",
  "back\\slash",
  "\\N",
  "\\.",
  "\\.\n\\.",
  "trailing backslash\\",
  "\\t is not a tab",
  "quote ' and \" and `",
  "",
  " ",
  "日本語 ✓ 😀 é",
  "\u0001\u0002\u001f\u007f control",
  "comma,semi;pipe|",
  "$1 and $$ dollars $$",
  SENTINEL,
];

const DDL = `CREATE TABLE IF NOT EXISTS hostile (
  id bigint PRIMARY KEY,
  t text,
  token char(64),
  n numeric,
  i integer,
  b boolean,
  ts timestamptz,
  d date,
  j jsonb,
  raw bytea
)`;

const COLUMNS = ["id", "t", "token", "n", "i", "b", "ts", "d", "j", "raw"];

function hostileRows(): Row[] {
  return HOSTILE_TEXT.map((t, k) => ({
    id: k + 1,
    t,
    token: k % 3 === 0 ? null : "ab".repeat(32),
    n: k % 2 === 0 ? "12345678901234567890.0123456789" : -k / 4,
    i: k % 4 === 0 ? null : -2147483648 + k,
    b: k % 3 === 0 ? null : k % 3 === 1,
    ts: k % 2 === 0 ? new Date(Date.UTC(2026, 0, 1, 2, 3, 4, k)) : "2026-03-01T10:00:00+02:00",
    d: k % 5 === 0 ? null : "2026-02-28",
    j: k % 4 === 1 ? null : { text: t, nested: [1, null, t, { deep: "\\\t\n" }], k },
    raw: k % 2 === 0 ? new Uint8Array([0, 9, 10, 13, 92, 255, k]) : null,
  }));
}

interface Fixture {
  source: SqlSource;
  count(table: string): Promise<number>;
}

async function withDatabase(
  kind: "pglite" | "postgres",
  fn: (db: Fixture) => Promise<void>,
): Promise<void> {
  if (kind === "pglite") {
    const db = await PGlite.create();
    try {
      await db.exec(DDL);
      await fn({
        source: db,
        count: async (table) =>
          (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]!.n,
      });
    } finally {
      await db.close();
    }
    return;
  }
  const admin = postgres(ADMIN_URL!, { max: 1, onnotice: () => {} });
  const name = `helper_copy_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = new URL(ADMIN_URL!);
  url.pathname = `/${name}`;
  const sql = postgres(url.toString(), { max: 2, onnotice: () => {} });
  try {
    await sql.unsafe(DDL);
    await fn({
      source: sql,
      count: async (table) =>
        (await sql.unsafe(`SELECT count(*)::int AS n FROM ${table}`))[0]!.n as number,
    });
  } finally {
    await sql.end();
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

const READ_BACK = `SELECT id::int AS id, t, token, n::text AS n, i, b, ts, d::text AS d, j,
  encode(raw, 'hex') AS raw FROM hostile ORDER BY id`;

function expected(row: Row): Row {
  const hex = row.raw instanceof Uint8Array
    ? [...row.raw].map((x) => x.toString(16).padStart(2, "0")).join("")
    : null;
  return {
    id: row.id,
    t: row.t,
    token: row.token,
    n: typeof row.n === "number" ? String(row.n) : row.n,
    i: row.i,
    b: row.b,
    ts: new Date(row.ts as string | Date).toISOString(),
    d: row.d,
    j: row.j,
    raw: hex,
  };
}

for (const kind of ["pglite", "postgres"] as const) {
  Deno.test({
    name: `COPY load and extract on ${kind}: hostile values, idempotency, error positions`,
    ignore: kind === "postgres" && ADMIN_URL === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      await withDatabase(kind, async (db) => {
        const target = { table: "hostile", columns: COLUMNS, key: ["id"] };
        const rows = hostileRows();

        await t.step("every value survives a load and an extract unchanged", async () => {
          assert.deepEqual(await sqlLoad(db.source, target, rows), {
            inserted: rows.length,
            skipped: 0,
          });
          const back = await drain(sqlExtract(db.source, READ_BACK));
          assert.deepEqual(
            back.map((r) => ({ ...r, ts: (r.ts as Date).toISOString() })),
            rows.map(expected),
          );
          // Extracting through COPY gives what a cursor gives: the same text, typed values.
          const texts = await drain(
            sqlExtract<{ t: string | null }>(
              db.source,
              "SELECT t FROM hostile WHERE id = ANY($1::bigint[]) ORDER BY id",
              [rows.map((r) => r.id)],
            ),
          );
          assert.deepEqual(texts.map((r) => r.t), HOSTILE_TEXT);
        });

        await t.step("reloading adds nothing", async () => {
          assert.deepEqual(await sqlLoad(db.source, target, rows), {
            inserted: 0,
            skipped: rows.length,
          });
          assert.equal(await db.count("hostile"), rows.length);
        });

        await t.step("onConflict update: changed rows only, the last repeat wins", async () => {
          const upsert = { ...target, onConflict: "update" as const };
          const changed = rows.map((r, k) => k < 3 ? { ...r, t: `${r.t}\tchanged` } : r);
          const input = [
            ...changed,
            { ...changed[4]!, t: "first\\" },
            { ...changed[4]!, t: "last\\\n" },
            { ...changed[0]!, id: 1000, t: "new" },
          ];
          assert.deepEqual(await sqlLoad(db.source, upsert, input), {
            inserted: 1,
            updated: 4,
            skipped: input.length - 5,
          });
          const [fifth] = await drain(
            sqlExtract<{ t: string }>(db.source, "SELECT t FROM hostile WHERE id = $1", [5]),
          );
          assert.equal(fifth?.t, "last\\\n");
          const settled = [...changed.slice(0, 4), { ...changed[4]!, t: "last\\\n" }];
          assert.deepEqual(
            await sqlLoad(db.source, upsert, [...settled, { ...changed[0]!, id: 1000, t: "new" }]),
            { inserted: 0, updated: 0, skipped: 6 },
          );
          assert.equal(await db.count("hostile"), rows.length + 1);
        });

        await t.step(
          "a bad value names its row across chunks and its column, never itself",
          async () => {
            // About 9 MB of COPY text: the bad row sits in the ninth 1 MB chunk.
            const big = { table: "big", columns: ["id", "pad", "n"], key: ["id"] };
            const create = "CREATE TABLE big (id bigint PRIMARY KEY, pad text, n integer NOT NULL)";
            const pad = "p\\\t".repeat(30);
            function* many(bad: number): Generator<Row> {
              for (let id = 1; id <= 60_000; id++) {
                yield { id, pad, n: id === bad ? SENTINEL : id };
              }
            }
            const err = await rejects(
              sqlLoad(db.source, { ...big, createSql: create }, many(57_321)),
            );
            assert.equal(err.code, "22P02");
            assert.match(
              err.message,
              /^Cannot load into big on .*, row 57321, column "n": invalid input syntax for the column type \[SQLSTATE 22P02\]$/,
            );
            assert.ok(!err.message.includes(SENTINEL));
            assert.ok(!("cause" in err));
            // Rolled back, table creation included; a clean load then works.
            const ok = await sqlLoad(db.source, { ...big, createSql: create }, many(0));
            assert.deepEqual(ok, { inserted: 60_000, skipped: 0 });
            const notNull = await rejects(
              sqlLoad(db.source, big, [{ id: 70_000, pad: "x", n: null }]),
            );
            assert.equal(notNull.code, "23502");
            assert.match(notNull.message, /column "n"/);
            assert.equal(await db.count("big"), 60_000);
            // Staged rows move into the target every `stageBytes` (here: after each 1 MB chunk): a
            // row the INSERT refuses is placed within what was staged (the staging table has no
            // NOT NULL, so the COPY took it), and nothing of the load stays.
            function* later(bad: number): Generator<Row> {
              for (let id = 60_001; id <= 120_000; id++) {
                yield { id, pad, n: id === bad ? null : id };
              }
            }
            const late = await rejects(
              sqlLoad(db.source, big, later(117_321), { stageBytes: 1 }),
            );
            assert.equal(late.code, "23502");
            const range = /, rows (\d+)-(\d+): /.exec(late.message);
            assert.ok(range, late.message);
            const [from, to] = [Number(range[1]), Number(range[2])];
            // Positions count the load's input from 1: row 117,321 is its 57,321st.
            assert.ok(from <= 57_321 && 57_321 <= to && to - from < 20_000, late.message);
            assert.equal(await db.count("big"), 60_000);
            // By default (16 MB) these 9 MB move at the end, in one INSERT: the span is the load.
            const whole = await rejects(sqlLoad(db.source, big, later(117_321)));
            assert.match(whole.message, /, rows 1-60000: /);
            // A key repeated in a later chunk keeps its first row (a rerun adds nothing).
            function* repeated(): Generator<Row> {
              for (let id = 200_001; id <= 230_000; id++) yield { id, pad, n: 1 };
              for (let id = 200_001; id <= 230_000; id++) yield { id, pad, n: 2 };
            }
            assert.deepEqual(await sqlLoad(db.source, big, repeated(), { stageBytes: 1 }), {
              inserted: 30_000,
              skipped: 30_000,
            });
            const [sum] = await drain(
              sqlExtract<{ n: number }>(
                db.source,
                "SELECT sum(n)::int AS n FROM big WHERE id > $1",
                [
                  200_000,
                ],
              ),
            );
            assert.equal(sum?.n, 30_000);
          },
        );

        await t.step("values no column can take are refused before loading", async () => {
          const err = await rejects(
            sqlLoad(db.source, target, [{ ...rows[1]!, id: 2000, ts: new Date(NaN) }]),
          );
          assert.equal(err.code, "INVALID_ROW");
          assert.match(err.message, /row 1, column "ts": cannot store a value of type Date/);
        });
      });
    },
  });
}

Deno.test("copyTextField and copyTextValue are inverses for text", () => {
  for (const text of HOSTILE_TEXT) {
    const field = copyTextField(text)!;
    assert.ok(!/[\t\n\r]/.test(field), "no raw tab, newline or carriage return in a field");
    assert.equal(copyTextValue(field), text);
  }
  assert.equal(copyTextField(null), "\\N");
  assert.equal(copyTextValue("\\N"), null);
  assert.equal(copyTextField("\\N"), "\\\\N");
  assert.equal(copyTextField(true), "t");
  assert.equal(copyTextField(12n), "12");
  assert.equal(copyTextField(Number.POSITIVE_INFINITY), "Infinity");
  assert.equal(copyTextField(new Uint8Array([0, 255])), "\\\\x00ff");
  assert.equal(copyTextField({ a: "\t" }), '{"a":"\\\\t"}');
  assert.equal(copyTextField(() => 1), undefined);
  assert.equal(copyTextValue("\\b\\f\\v\\q"), "\b\f\vq");
});

Deno.test("CopyTextReader joins lines cut anywhere, UTF-8 included", () => {
  const bytes = new TextEncoder().encode("a\tb\\tc\n😀\t\\N\n");
  for (let cut = 0; cut <= bytes.length; cut++) {
    const reader = new CopyTextReader();
    const lines = [...reader.lines(bytes.slice(0, cut)), ...reader.lines(bytes.slice(cut))];
    reader.end();
    assert.deepEqual(lines, [["a", "b\\tc"], ["😀", "\\N"]]);
  }
  const cut = new CopyTextReader();
  cut.lines(new TextEncoder().encode("a\tb"));
  assert.throws(() => cut.end(), /middle of a line/);
});

Deno.test("bindAsSettings replaces placeholders only outside literals, identifiers and comments", () => {
  const q = bindAsSettings(
    `SELECT $1, '$1''$2', "$2", E'\\\\$1', e'it\\'s $1', $$ $1 $$, $x$ $2 $x$, x$1, -- $2\n /* $1 /* $2 */ */ $2, $10`,
    Array.from({ length: 10 }, (_, i) => (i === 9 ? "text" : "integer")),
    Array.from({ length: 10 }, (_, i) => i === 1),
  );
  assert.equal(
    q,
    `SELECT (SELECT current_setting('carrel.bind_1')::integer), '$1''$2', "$2", E'\\\\$1', e'it\\'s $1', $$ $1 $$, $x$ $2 $x$, x$1, -- $2\n /* $1 /* $2 */ */ NULL::integer, (SELECT current_setting('carrel.bind_10')::text)`,
  );
  assert.throws(() => bindAsSettings("SELECT $3", ["integer"], [false]), SqlError);
});

Deno.test("copyErrorPosition reads the line and column, never the value", () => {
  assert.deepEqual(
    copyErrorPosition({ where: `COPY carrel_load_stage, line 7, column n: "${SENTINEL}"` }),
    { line: 7, column: "n" },
  );
  assert.deepEqual(copyErrorPosition({ where: "COPY s, line 2" }), { line: 2 });
  assert.equal(copyErrorPosition({ where: "SQL function" }), undefined);
  assert.equal(copyErrorPosition(new Error("x")), undefined);
});
