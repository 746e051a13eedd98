/**
 * `sqlExtract` and `sqlLoad` on MariaDB (`CARREL_TEST_MYSQL_URL`): the read-only scoped session
 * (a write inside it fails), streaming, the statement time limit, abort and early stop closing
 * the connection, idempotent and updating loads, and errors that never carry a password or a
 * value.
 *
 * @module
 */
import assert from "node:assert/strict";
import { resolveConnection } from "../../../operators/ils/connection.ts";
import { type Row, sqlExtract, sqlLoad } from "../../../operators/ils/sql.ts";
import { mysqlOptions } from "../../../operators/ils/sql_mysql.ts";
import { waitFor } from "../../test_utils.ts";
import {
  freshMysqlDatabase,
  mysqlQuery,
  noteMysqlSkipped,
  TEST_MYSQL_URL,
} from "./mysql_test_utils.ts";
import { drain, rejects } from "./sql_test_utils.ts";

noteMysqlSkipped();

const SENTINEL = "Sentinel-Pw-7c1d0e";
const VALUE = "SENTINELVALUE-5e2b";

Deno.test("mysql:// and mariadb:// resolve as MySQL connections, masked", () => {
  const env = new Map([["CARREL_CONN_KOHA", `mariadb://koha:${SENTINEL}@db:3306/koha_library`]]);
  const conn = resolveConnection("koha", env);
  assert.equal(conn.kind, "mysql");
  assert.equal(conn.display, "mariadb://koha:***@db:3306/koha_library");
  assert.equal(resolveConnection(`mysql://u:${SENTINEL}@h/db`).kind, "mysql");
  assert.ok(!resolveConnection(`mysql://u:${SENTINEL}@h/db`).display.includes(SENTINEL));
});

Deno.test("mysqlOptions reads the URL and refuses unknown options without echoing it", () => {
  const opts = mysqlOptions(`mysql://carrel:p%40ss@db.example.org:3307/koha?ssl=true`, '"koha"');
  assert.equal(opts.host, "db.example.org");
  assert.equal(opts.port, 3307);
  assert.equal(opts.user, "carrel");
  assert.equal(opts.password, "p@ss");
  assert.equal(opts.database, "koha");
  assert.equal(opts.ssl, true);
  assert.equal(opts.dateStrings, true);
  assert.equal(opts.logParam, false);
  assert.throws(
    () => mysqlOptions(`mysql://u:${SENTINEL}@h/db?charset=latin1`, '"koha"'),
    (err: Error) => {
      assert.match(err.message, /unknown connection option "charset"/);
      assert.ok(!err.message.includes(SENTINEL));
      return true;
    },
  );
});

Deno.test("MariaDB connection errors never contain the password", async () => {
  const env = new Map([["CARREL_CONN_DOWN", `mysql://carrel:${SENTINEL}@127.0.0.1:1/koha`]]);
  const err = await rejects(drain(sqlExtract("down", "SELECT 1", [], { env })));
  assert.match(
    err.message,
    /^Cannot connect to "down" \(mysql:\/\/carrel:\*\*\*@127\.0\.0\.1:1\/koha\): /,
  );
  assert.ok(!err.message.includes(SENTINEL));
  assert.ok(!String(err.stack).includes(SENTINEL));
  const load = await rejects(
    sqlLoad(`mariadb://carrel:${SENTINEL}@127.0.0.1:1/koha`, {
      table: "t",
      columns: ["a"],
      key: ["a"],
    }, [{ a: 1 }]),
  );
  assert.ok(!load.message.includes(SENTINEL), load.message);
  // A write is refused before any connection is made.
  const write = await rejects(drain(sqlExtract("down", "DELETE FROM issues", [], { env })));
  assert.equal(write.code, "READ_ONLY");
});

Deno.test({
  name: "sqlExtract and sqlLoad against MariaDB",
  ignore: TEST_MYSQL_URL === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using db = await freshMysqlDatabase("sql");
    const env = new Map([["CARREL_CONN_KOHA", db.url]]);
    await mysqlQuery(
      db.url,
      `CREATE TABLE items (itemnumber INT PRIMARY KEY, barcode VARCHAR(20) NOT NULL,
        big BIGINT, price DECIMAL(8,2), seen DATETIME, added DATE)`,
    );
    await mysqlQuery(
      db.url,
      `INSERT INTO items SELECT seq, CONCAT('FAKEI', seq), 9007199254740993, 12.5,
        '2026-03-01 10:00:00', '2026-03-01' FROM seq_1_to_5000`,
    );
    await mysqlQuery(
      db.url,
      `CREATE FUNCTION write_item() RETURNS INT MODIFIES SQL DATA
         BEGIN INSERT INTO items (itemnumber, barcode) VALUES (999999, 'x'); RETURN 1; END`,
    );
    const carrelConnections = async () =>
      (await mysqlQuery<{ n: number }>(
        db.url,
        `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()`,
        [db.name],
      ))[0]!.n;

    await t.step("streams every row, types as documented", async () => {
      const rows = await drain(
        sqlExtract("koha", "SELECT * FROM items WHERE itemnumber >= ? ORDER BY itemnumber", [1], {
          env,
        }),
      );
      assert.equal(rows.length, 5000);
      assert.deepEqual(rows[0], {
        itemnumber: 1,
        barcode: "FAKEI1",
        big: "9007199254740993",
        price: "12.50",
        seen: "2026-03-01 10:00:00",
        added: "2026-03-01",
      });
      // The server drops a closed connection from its list asynchronously.
      await waitFor(async () => await carrelConnections() === 0, 10_000, "the connection closed");
    });

    await t.step("runs in a read-only, read-committed session: a write inside fails", async () => {
      const [session] = await drain(
        sqlExtract("koha", "SELECT @@tx_read_only AS ro, @@tx_isolation AS iso", [], { env }),
      );
      assert.equal(Number(session!.ro), 1);
      assert.equal(session!.iso, "READ-COMMITTED");
      const err = await rejects(drain(sqlExtract("koha", "SELECT write_item() AS w", [], { env })));
      assert.equal(err.code, "25006");
      assert.match(
        err.message,
        /^Cannot extract from "koha" \(mysql:.*\): cannot write in a read-only transaction/,
      );
      const [row] = await mysqlQuery<{ n: number }>(
        db.url,
        "SELECT COUNT(*) AS n FROM items WHERE itemnumber = 999999",
      );
      assert.equal(row!.n, 0, "nothing was written");
    });

    await t.step("the statement time limit stops a slow query", async () => {
      const err = await rejects(
        drain(sqlExtract("koha", "SELECT SLEEP(5) AS s", [], { env, statementTimeout: "300ms" })),
      );
      assert.equal(err.code, "STATEMENT_TIMEOUT");
      assert.match(err.message, /statement timed out after 300ms/);
    });

    await t.step("an abort and an early stop close the connection", async () => {
      const controller = new AbortController();
      const slow = drain(
        sqlExtract("koha", "SELECT SLEEP(10) AS s", [], { env, signal: controller.signal }),
      );
      // Abort once the server is running the statement.
      await waitFor(
        async () =>
          (await mysqlQuery<{ n: number }>(
            db.url,
            `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(10)%'`,
          ))[0]!.n > 0,
        10_000,
        "the slow statement",
      );
      const started = Date.now();
      controller.abort();
      const err = await rejects(slow);
      assert.equal(err.code, "ABORTED");
      assert.ok(Date.now() - started < 5000, "the abort did not wait for the query");
      let n = 0;
      for await (const _ of sqlExtract("koha", "SELECT * FROM items", [], { env })) {
        if (++n === 10) break;
      }
      assert.equal(n, 10);
      // The server notices the killed connections asynchronously.
      await waitFor(async () => await carrelConnections() === 0, 10_000, "closed connections");
    });

    await t.step("errors name the table, never the value", async () => {
      const err = await rejects(
        drain(sqlExtract("koha", "SELECT * FROM missing_table", [], { env })),
      );
      assert.match(err.message, /table does not exist "[^"]*missing_table"/);
      const bad = await rejects(
        sqlLoad(
          "koha",
          { table: "items", columns: ["itemnumber", "barcode"], key: ["itemnumber"] },
          [
            { itemnumber: 1_000_001, barcode: "ok" },
            { itemnumber: VALUE, barcode: "x" },
          ],
          { env },
        ),
      );
      assert.ok(!bad.message.includes(VALUE), bad.message);
      assert.match(bad.message, /rows 1-2/);
      const [row] = await mysqlQuery<{ n: number }>(
        db.url,
        "SELECT COUNT(*) AS n FROM items WHERE itemnumber = 1000001",
      );
      assert.equal(row!.n, 0, "a failed load commits nothing");
    });

    await t.step("loads idempotently, creating the table when missing", async () => {
      const target = {
        table: "events",
        columns: ["id", "token", "at"],
        key: ["id"],
        createSql: {
          mysql:
            "CREATE TABLE events (id BIGINT PRIMARY KEY, token CHAR(8) NOT NULL, at DATETIME(3) NOT NULL)",
        },
      };
      const rows: Row[] = Array.from({ length: 2500 }, (_, i) => ({
        id: i + 1,
        token: `t${i % 7}`,
        at: "2026-03-01T10:00:00.250Z",
      }));
      assert.deepEqual(await sqlLoad("koha", target, rows, { env, batchSize: 700 }), {
        inserted: 2500,
        skipped: 0,
      });
      assert.deepEqual(await sqlLoad("koha", target, rows, { env }), {
        inserted: 0,
        skipped: 2500,
      });
      const [stored] = await mysqlQuery<{ n: number; at: string }>(
        db.url,
        "SELECT COUNT(*) AS n, MIN(at) AS at FROM events",
      );
      assert.equal(stored!.n, 2500);
      assert.equal(stored!.at, "2026-03-01 10:00:00.250", "ISO UTC times land as UTC DATETIME");
      const noKey = await rejects(
        sqlLoad("koha", { table: "events", columns: ["token", "id"], key: ["token"] }, rows, {
          env,
        }),
      );
      assert.equal(noKey.code, "42P10");
    });

    await t.step("onConflict update changes only what differs", async () => {
      const target = {
        table: "holds",
        columns: ["id", "state"],
        key: ["id"],
        onConflict: "update" as const,
        createSql: "CREATE TABLE holds (id INT PRIMARY KEY, state VARCHAR(16) NOT NULL)",
      };
      const rows = Array.from({ length: 50 }, (_, i) => ({ id: i + 1, state: "pending" }));
      assert.deepEqual(await sqlLoad("koha", target, rows, { env, batchSize: 20 }), {
        inserted: 50,
        updated: 0,
        skipped: 0,
      });
      const changed = rows.map((r) => r.id % 10 === 0 ? { ...r, state: "fulfilled" } : r);
      changed.push({ id: 51, state: "pending" });
      assert.deepEqual(await sqlLoad("koha", target, changed, { env, batchSize: 20 }), {
        inserted: 1,
        updated: 5,
        skipped: 45,
      });
      assert.deepEqual(await sqlLoad("koha", target, changed, { env }), {
        inserted: 0,
        updated: 0,
        skipped: 51,
      });
      const [row] = await mysqlQuery<{ n: number }>(
        db.url,
        "SELECT COUNT(*) AS n FROM holds WHERE state = 'fulfilled'",
      );
      assert.equal(row!.n, 5);
    });

    await t.step("a wrong password is reported without it", async () => {
      const url = new URL(db.url.replace(/^mysql:/, "http:"));
      url.password = SENTINEL;
      const wrong = url.toString().replace(/^http:/, "mysql:");
      const err = await rejects(drain(sqlExtract(wrong, "SELECT 1")));
      assert.ok(!err.message.includes(SENTINEL), err.message);
      assert.match(err.message, /^Cannot connect to /);
    });
  },
});
