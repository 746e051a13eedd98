import assert from "node:assert/strict";
import postgres from "postgres";
import { batched } from "../../../core/mod.ts";
import { connectionVariable, resolveConnection } from "../../../operators/ils/connection.ts";
import {
  quoteIdentifier,
  type Row,
  SqlError,
  sqlExtract,
  sqlExtractBatches,
  sqlLoad,
} from "../../../operators/ils/sql.ts";
import { drain, rejects } from "./sql_test_utils.ts";

const ADMIN_URL = Deno.env.get("CARREL_TEST_DATABASE_URL");
const SENTINEL = "Sentinel-Pw-9f4e1c";

function databaseUrl(admin: string, name: string): string {
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return url.toString();
}

Deno.test("resolveConnection resolves names through CARREL_CONN_* and masks passwords", () => {
  const env = new Map([[
    "CARREL_CONN_KOHA_PROD",
    `postgres://carrel:${SENTINEL}@db.example.org:5432/koha`,
  ]]);
  assert.equal(connectionVariable("koha-prod"), "CARREL_CONN_KOHA_PROD");
  const conn = resolveConnection("koha-prod", env);
  assert.equal(conn.url, `postgres://carrel:${SENTINEL}@db.example.org:5432/koha`);
  assert.equal(conn.display, "postgres://carrel:***@db.example.org:5432/koha");
  assert.equal(conn.name, "koha-prod");

  const direct = resolveConnection(`postgresql://u:${SENTINEL}@h/db`, env);
  assert.equal(direct.url, `postgresql://u:${SENTINEL}@h/db`);
  assert.equal(direct.display, "postgresql://u:***@h/db");

  assert.throws(() => resolveConnection("ils", env), (err: Error) => {
    assert.match(err.message, /^Cannot resolve connection "ils": CARREL_CONN_ILS is not set$/);
    return true;
  });
  // A URL with a mistyped scheme must not be echoed back.
  assert.throws(() => resolveConnection(`postgre://u:${SENTINEL}@h/db`, env), (err: Error) => {
    assert.ok(!err.message.includes(SENTINEL));
    return true;
  });
  const bad = new Map([["CARREL_CONN_ILS", `sqlserver://u:${SENTINEL}@h/db`]]);
  assert.throws(() => resolveConnection("ils", bad), (err: Error) => {
    assert.ok(err.message.includes("CARREL_CONN_ILS"));
    assert.ok(!err.message.includes(SENTINEL));
    return true;
  });
});

Deno.test("quoteIdentifier accepts plain and schema-qualified names only", () => {
  assert.equal(quoteIdentifier("loan_events"), `"loan_events"`);
  assert.equal(quoteIdentifier("warehouse.loan_events"), `"warehouse"."loan_events"`);
  for (const bad of [`x"; DROP TABLE y; --`, "a.b.c", "", "1abc", "a b"]) {
    assert.throws(() => quoteIdentifier(bad), SqlError);
  }
});

Deno.test("connection errors never contain the password", async () => {
  const env = new Map([["CARREL_CONN_DOWN", `postgres://carrel:${SENTINEL}@127.0.0.1:1/ils`]]);
  const err = await rejects(drain(sqlExtract("down", "SELECT 1", [], { env })));
  assert.match(
    err.message,
    /^Cannot connect to "down" \(postgres:\/\/carrel:\*\*\*@127\.0\.0\.1:1\/ils\): /,
  );
  assert.ok(!err.message.includes(SENTINEL));
  assert.ok(!String(err.stack).includes(SENTINEL));

  const direct = await rejects(
    drain(sqlExtract(`postgres://carrel:${SENTINEL}@127.0.0.1:1/ils`, "SELECT 1")),
  );
  assert.ok(!direct.message.includes(SENTINEL), direct.message);
  assert.ok(direct.message.includes("carrel:***@"));

  const load = await rejects(
    sqlLoad(`postgres://carrel:${SENTINEL}@127.0.0.1:1/ils`, {
      table: "t",
      columns: ["a"],
      key: ["a"],
    }, [
      { a: 1 },
    ]),
  );
  assert.ok(!load.message.includes(SENTINEL), load.message);

  // A malformed URL (postgres.js cannot parse it) is reported without echoing it.
  const malformed = await rejects(
    drain(sqlExtract(`postgres://carrel:${SENTINEL}@[::1/ils`, "SELECT 1")),
  );
  assert.ok(!malformed.message.includes(SENTINEL), malformed.message);
});

Deno.test("extract rejects non-read statements before connecting", async () => {
  const err = await rejects(
    drain(sqlExtract("postgres://u@127.0.0.1:1/x", "  -- note\n INSERT INTO t VALUES (1)")),
  );
  assert.equal(err.code, "READ_ONLY");
  assert.match(
    err.message,
    /only SELECT, WITH, VALUES or TABLE queries can be extracted \(found INSERT\)$/,
  );
});

Deno.test({
  name: "sqlExtract and sqlLoad against PostgreSQL",
  ignore: ADMIN_URL === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const admin = postgres(ADMIN_URL!, { max: 1, onnotice: () => {} });
    const name = `helper_sql_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = databaseUrl(ADMIN_URL!, name);
    const env = new Map([["CARREL_CONN_TESTDB", url]]);
    const db = postgres(url, {
      max: 2,
      onnotice: () => {},
      connection: { application_name: "carrel_test" },
    });
    try {
      await db.unsafe(`
        CREATE TABLE items (id int PRIMARY KEY, barcode text NOT NULL);
        INSERT INTO items SELECT g, 'FAKE' || g FROM generate_series(1, 20) g;
        CREATE SEQUENCE s;
        CREATE FUNCTION write_item() RETURNS int LANGUAGE sql AS $$ INSERT INTO items VALUES (1000, 'x') RETURNING id $$;
      `).simple();

      await t.step(
        "streams many rows through COPY, parameters never in the statement",
        async () => {
          let count = 0;
          let sum = 0;
          let sawCopy = false;
          let leaked = -1;
          for await (
            const row of sqlExtract<{ g: number; pad: string }>(
              "testdb",
              "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, $1::int) g WHERE g % $2::int = 0 ORDER BY g",
              [400_123, 2],
              { env },
            )
          ) {
            count++;
            sum += row.g;
            if (count === 50_000) {
              // A slow consumer: the server waits on a full socket, the COPY is still running.
              await new Promise((resolve) => setTimeout(resolve, 50));
              const [activity] = await db`
              SELECT count(*)::int AS n, count(*) FILTER (WHERE query LIKE '%400123%')::int AS leaked
                FROM pg_stat_activity
               WHERE datname = ${name} AND application_name = 'carrel'
                 AND state = 'active' AND query LIKE 'COPY (%) TO STDOUT'`;
              sawCopy = activity?.n === 1;
              leaked = activity?.leaked ?? -1;
            }
          }
          assert.equal(count, 200_061);
          assert.equal(sum, 200_061 * 200_062);
          assert.ok(sawCopy, "a running COPY was visible mid-stream");
          assert.equal(leaked, 0, "parameter values never appear in the statement text");
          const [left] =
            await db`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${name} AND application_name = 'carrel'`;
          assert.equal(left?.n, 0, "the owned connection is closed at the end");
        },
      );

      await t.step(
        "parameters: typed, null, and left alone inside literals and comments",
        async () => {
          const rows = await drain(sqlExtract(
            db,
            `SELECT $1::int + 1 AS n, '$1' AS literal, $2 AS nothing, /* $1 */ $3 >= now() - interval '1 day' AS recent, -- $2
                  $$ $1 $$ AS dollar, $tag$ $2 $tag$ AS tagged, $4::text AS text, $1 AS again`,
            [41, null, new Date(), "it's a \\ 'quoted' $1 value"],
          ));
          assert.deepEqual(rows, [{
            n: 42,
            literal: "$1",
            nothing: null,
            recent: true,
            dollar: " $1 ",
            tagged: " $2 ",
            text: "it's a \\ 'quoted' $1 value",
            again: 41,
          }]);
        },
      );

      await t.step("empty results and exact batch multiples end cleanly", async () => {
        assert.equal((await drain(sqlExtract(db, "SELECT 1 WHERE false"))).length, 0);
        const rows = await drain(
          sqlExtract(db, "SELECT g FROM generate_series(1, 10) g", [], { batchSize: 5 }),
        );
        assert.deepEqual(rows.map((r) => r.g), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      });

      await t.step(
        "sqlExtractBatches: the same rows in arrays, and a load takes them",
        async () => {
          const query = "SELECT g, g::text AS t FROM generate_series(1, 30000) g ORDER BY g";
          const one = await drain(sqlExtract(db, query));
          const arrays: Record<string, unknown>[][] = [];
          for await (const rows of sqlExtractBatches(db, query)) arrays.push(rows);
          assert.ok(arrays.length > 1, "30000 rows arrive in more than one array");
          assert.ok(arrays.every((a) => a.length > 0));
          assert.deepEqual(arrays.flat(), one);
          // A load reads a batched source array by array: same rows, same counts.
          await db.unsafe("CREATE TABLE batched (g int PRIMARY KEY, t text NOT NULL)");
          const target = { table: "batched", columns: ["g", "t"], key: ["g"] };
          const source = batched(() => sqlExtractBatches(db, query));
          assert.deepEqual(await sqlLoad(db, target, source), { inserted: 30000, skipped: 0 });
          assert.deepEqual(await sqlLoad(db, target, source), { inserted: 0, skipped: 30000 });
          const [sum] = await db`SELECT sum(g)::bigint AS s FROM batched`;
          assert.equal(Number(sum?.s), 30000 * 30001 / 2);
        },
      );

      await t.step("writes fail inside the read-only transaction", async () => {
        const viaFunction = await rejects(drain(sqlExtract(db, "SELECT write_item()")));
        assert.equal(viaFunction.code, "25006");
        assert.match(
          viaFunction.message,
          /^Cannot extract from the database: cannot execute INSERT in a read-only transaction/,
        );
        const viaSequence = await rejects(
          drain(sqlExtract({ sql: db, name: "ils" }, "SELECT nextval('s')")),
        );
        assert.equal(viaSequence.code, "25006");
        assert.match(viaSequence.message, /^Cannot extract from "ils": /);
        const viaCte = await rejects(
          drain(sqlExtract(db, "WITH x AS (DELETE FROM items RETURNING id) SELECT * FROM x")),
        );
        assert.ok(viaCte.code === "0A000" || viaCte.code === "25006", viaCte.code);
        const [n] = await db`SELECT count(*)::int AS n FROM items`;
        assert.equal(n?.n, 20);
      });

      await t.step("a statement timeout fires with a clear error", async () => {
        const started = Date.now();
        const err = await rejects(
          drain(sqlExtract("testdb", "SELECT pg_sleep(5)", [], { env, statementTimeout: "300ms" })),
        );
        assert.equal(err.code, "STATEMENT_TIMEOUT");
        assert.match(
          err.message,
          /^Cannot extract from "testdb" \(postgres:\/\/.*\): statement timed out after 300ms$/,
        );
        assert.ok(Date.now() - started < 4000);
      });

      await t.step("a slow consumer does not trip the statement timeout", async () => {
        let count = 0;
        for await (
          const _ of sqlExtract(db, "SELECT g FROM generate_series(1, 30) g", [], {
            batchSize: 10,
            statementTimeout: 300,
          })
        ) {
          if (++count % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 200));
        }
        assert.equal(count, 30);
      });

      await t.step("stopping early rolls back and frees the connection", async () => {
        const single = postgres(url, { max: 1, onnotice: () => {} });
        try {
          let seen = 0;
          for await (
            const _ of sqlExtract(single, "SELECT g FROM generate_series(1, 100000) g", [], {
              batchSize: 100,
            })
          ) {
            if (++seen === 150) break;
          }
          assert.equal(seen, 150);
          // Same (only) pooled connection: the read-only transaction and its SET LOCAL are gone.
          const [state] =
            await single`SELECT current_setting('transaction_read_only') AS ro, current_setting('statement_timeout') AS st`;
          assert.equal(state?.ro, "off");
          assert.equal(state?.st, "0");
          const [cursors] =
            await single`SELECT count(*)::int AS n FROM pg_cursors WHERE name = 'carrel_extract'`;
          assert.equal(cursors?.n, 0);
        } finally {
          await single.end();
        }
      });

      await t.step("an abort signal cancels a running statement", async () => {
        const controller = new AbortController();
        setTimeout(() => controller.abort(), 200);
        const started = Date.now();
        const err = await rejects(
          drain(sqlExtract(db, "SELECT pg_sleep(10)", [], { signal: controller.signal })),
        );
        assert.equal(err.code, "ABORTED");
        assert.match(err.message, /^Cannot extract from the database: aborted$/);
        assert.ok(Date.now() - started < 5000);
      });

      await t.step(
        "early stops, aborts and time limits at any moment never leave a connection stuck",
        async () => {
          // Each case ends its extract at a different point (before the COPY is sent, mid-stream,
          // at the server's time limit); the one pooled connection must answer the next statement.
          // A stuck connection fails the step at the deadline instead of hanging the suite.
          const single = postgres(url, { max: 1, onnotice: () => {} });
          const deadline = (what: string) =>
            new Promise<never>((_, reject) => {
              const timer = setTimeout(
                () => reject(new Error(`the connection is stuck after ${what}`)),
                15_000,
              );
              Deno.unrefTimer(timer);
            });
          const ended = { early: 0, aborted: 0, timedOut: 0 };
          try {
            for (let i = 0; i < 90; i++) {
              const kind = i % 3;
              const what = ["an early stop", "an abort", "a time limit"][kind]!;
              const attempt = async () => {
                if (kind === 0) {
                  let seen = 0;
                  for await (
                    const _ of sqlExtract(
                      single,
                      "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 50000) g",
                    )
                  ) if (++seen === 1 + (i * 37) % 3000) break;
                  ended.early++;
                } else if (kind === 1) {
                  const controller = new AbortController();
                  const timer = setTimeout(() => controller.abort(), i % 12);
                  const err = await rejects(drain(sqlExtract(
                    single,
                    "SELECT g FROM generate_series(1, 300000) g",
                    [],
                    { signal: controller.signal },
                  ))).finally(() => clearTimeout(timer));
                  assert.equal(err.code, "ABORTED", err.message);
                  ended.aborted++;
                } else {
                  const err = await rejects(drain(sqlExtract(
                    single,
                    "SELECT pg_sleep(1)",
                    [],
                    { statementTimeout: 1 + (i % 20) },
                  )));
                  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
                  ended.timedOut++;
                }
                const [row] = await single`SELECT 1 AS one`;
                assert.equal(row?.one, 1);
              };
              await Promise.race([attempt(), deadline(what)]);
            }
          } finally {
            await single.end({ timeout: 1 });
          }
          assert.deepEqual(ended, { early: 30, aborted: 30, timedOut: 30 });
        },
      );

      await t.step("errors carry neither parameter values nor row values", async () => {
        const err = await rejects(drain(sqlExtract(db, "SELECT $1::int AS n", [SENTINEL])));
        assert.equal(err.code, "22P02");
        assert.ok(!err.message.includes(SENTINEL), err.message);
        assert.ok(!("cause" in err));
      });

      await t.step("loads idempotently, creating the table when missing", async () => {
        const target = {
          table: "public.loan_events",
          columns: ["circ_id", "branch", "checkout_date"],
          key: ["circ_id"],
          createSql:
            "CREATE TABLE public.loan_events (circ_id bigint PRIMARY KEY, branch text, checkout_date timestamptz NOT NULL)",
        };
        async function* rows(n: number): AsyncGenerator<Row> {
          for (let i = 1; i <= n; i++) {
            yield {
              circ_id: i,
              branch: i % 3 === 0 ? null : `BR${i % 5}`,
              checkout_date: new Date(Date.UTC(2024, 0, 1) + i * 60_000),
              extra: "ignored",
            };
          }
        }
        const first = await sqlLoad("testdb", target, rows(2500), { env, batchSize: 1000 });
        assert.deepEqual(first, { inserted: 2500, skipped: 0 });
        const again = await sqlLoad("testdb", target, rows(2500), { env, batchSize: 1000 });
        assert.deepEqual(again, { inserted: 0, skipped: 2500 });
        const more = await sqlLoad(db, target, [
          ...Array.from(
            { length: 3 },
            (_, i) => ({ circ_id: 2500 + i, branch: "X", checkout_date: "2024-06-01T00:00:00Z" }),
          ),
          {
            circ_id: 2502,
            branch: "dup",
            checkout_date: "2024-06-01T00:00:00Z",
          },
        ]);
        assert.deepEqual(more, { inserted: 2, skipped: 2 });
        const [stats] =
          await db`SELECT count(*)::int AS n, count(branch)::int AS branches, min(checkout_date) AS first FROM loan_events`;
        assert.equal(stats?.n, 2502);
        assert.equal(stats?.branches, 2502 - 833);
        assert.equal((stats?.first as Date).toISOString(), "2024-01-01T00:01:00.000Z");
      });

      await t.step("extract pipes into load", async () => {
        await db`CREATE TABLE item_copy (id int PRIMARY KEY, barcode text NOT NULL)`;
        const target = { table: "item_copy", columns: ["id", "barcode"], key: ["id"] };
        const result = await sqlLoad(
          db,
          target,
          sqlExtract(db, "SELECT id, barcode FROM items ORDER BY id", [], { batchSize: 7 }),
        );
        assert.deepEqual(result, { inserted: 20, skipped: 0 });
        assert.deepEqual(await sqlLoad(db, target, sqlExtract(db, "TABLE items")), {
          inserted: 0,
          skipped: 20,
        });
      });

      await t.step("load failures roll back and name rows and columns, never values", async () => {
        await db`CREATE TABLE strict_t (id int PRIMARY KEY, n int NOT NULL)`;
        const target = { table: "strict_t", columns: ["id", "n"], key: ["id"] };
        const good = Array.from({ length: 12 }, (_, i) => ({ id: i + 1, n: i }));

        const bad = await rejects(
          sqlLoad(db, target, [...good, { id: 13, n: SENTINEL }], { batchSize: 5 }),
        );
        assert.equal(bad.code, "22P02");
        assert.ok(!bad.message.includes(SENTINEL), bad.message);
        assert.match(
          bad.message,
          /^Cannot load into strict_t on the database, row 13, column "n": invalid input syntax/,
        );

        const missing = await rejects(sqlLoad(db, target, [{ id: 1, n: 1 }, { id: 2 }]));
        assert.equal(missing.code, "MISSING_VALUE");
        assert.match(missing.message, /row 2 has no value for column "n"/);

        const notNull = await rejects(sqlLoad(db, target, [{ id: 1, n: null }]));
        assert.equal(notNull.code, "23502");
        assert.match(notNull.message, /column "n"/);

        const [count] = await db`SELECT count(*)::int AS n FROM strict_t`;
        assert.equal(count?.n, 0, "nothing from the failed loads was committed");

        const noKey = await rejects(
          sqlLoad(db, { table: "strict_t", columns: ["id", "n"], key: ["n"] }, good),
        );
        assert.equal(noKey.code, "42P10");

        const invalid = await rejects(
          sqlLoad(db, { table: "strict_t; DROP TABLE items", columns: ["id"], key: ["id"] }, good),
        );
        assert.equal(invalid.code, "INVALID_ARGUMENT");
        const keyNotColumn = await rejects(
          sqlLoad(db, { table: "strict_t", columns: ["id"], key: ["n"] }, good),
        );
        assert.equal(keyNotColumn.code, "INVALID_ARGUMENT");
      });

      await t.step("errors thrown by the input pass through untouched and roll back", async () => {
        const target = { table: "strict_t", columns: ["id", "n"], key: ["id"] };
        async function* failing(): AsyncGenerator<Row> {
          yield { id: 1, n: 1 };
          throw new RangeError("Source broke at row 2");
        }
        await assert.rejects(sqlLoad(db, target, failing()), {
          name: "RangeError",
          message: "Source broke at row 2",
        });
        const [count] = await db`SELECT count(*)::int AS n FROM strict_t`;
        assert.equal(count?.n, 0);
      });

      await t.step("an aborted load rolls back", async () => {
        const target = { table: "strict_t", columns: ["id", "n"], key: ["id"] };
        const controller = new AbortController();
        async function* slow(): AsyncGenerator<Row> {
          for (let i = 1; i <= 100; i++) {
            if (i === 50) controller.abort();
            yield { id: i, n: i };
          }
        }
        const err = await rejects(
          sqlLoad(db, target, slow(), { batchSize: 10, signal: controller.signal }),
        );
        assert.equal(err.code, "ABORTED");
        const [count] = await db`SELECT count(*)::int AS n FROM strict_t`;
        assert.equal(count?.n, 0);
      });
    } finally {
      await db.end();
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  },
});
