/**
 * `dags/holds_sync.ts` end to end through the CLI: Evergreen holds (PGlite, and PostgreSQL when
 * `CARREL_TEST_DATABASE_URL` is set) and Koha holds (MariaDB, when `CARREL_TEST_MYSQL_URL` is
 * set) in every state land in `hold_requests` with the state, times, wait days and queue bands
 * the source implies and the contract's patron token; a rerun changes nothing; a hold that moved
 * on in the ILS is updated; no note or notification contact reaches the warehouse or CARREL_HOME.
 *
 * @module
 */
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import postgres from "postgres";
import { files, query } from "./koha_holds_utils.ts";
import { loadIlsFixture } from "../../fixtures/ils.ts";
import { connectKoha, KOHA_FIXTURE_BRANCHES, loadKohaFixture } from "../../fixtures/koha.ts";
import { HOLD_STATES } from "../../operators/ils/holds.ts";
import {
  BACKENDS,
  cli,
  freshDatabase,
  notePostgresSkipped,
  seedHome,
  withTmpDir,
} from "../test_utils.ts";
import {
  freshMysqlDatabase,
  mysqlQuery,
  noteMysqlSkipped,
  TEST_MYSQL_URL,
} from "../operators/ils/mysql_test_utils.ts";

notePostgresSkipped();
noteMysqlSkipped();

const DAGS = new URL("../../dags", import.meta.url).pathname;
const KEY = "holds-test-key-0123456789abcdef0123456789abcdef";
const WINDOW = { start: "2026-01-01T00:00:00Z", end: "2026-01-08T00:00:00Z" };
const NOTES = /Patron called from 555-555-01\d\d|Text me at 555-01\d\d|555-555-01\d\d/;

async function assertNoNotes(home: string, warehouse: string, outputs: string[]): Promise<void> {
  const rows = await query(warehouse, "SELECT * FROM hold_requests");
  assert.ok(!NOTES.test(JSON.stringify(rows)), "no note in the warehouse");
  assert.ok(!NOTES.test(outputs.join("\n")), "no note in the CLI output");
  const latin1 = new TextDecoder("latin1");
  for await (const path of files(home)) {
    assert.ok(!NOTES.test(latin1.decode(await Deno.readFile(path))), `no note in ${path}`);
  }
}

interface Loaded {
  inserted: number;
  updated: number;
  unchanged: number;
}

function loadOutput(stdout: string): Loaded {
  const task = JSON.parse(stdout).tasks.find((t: { taskId: string }) => t.taskId === "load");
  assert.equal(task.state, "success");
  return task.output as Loaded;
}

type Hold = {
  hold_id: string;
  patron_token: string;
  state: string;
  bib_id: string | null;
  hold_level: string;
  pickup_lib: number;
  request: string;
  capture: string | null;
  fulfilled: string | null;
  canceled: string | null;
  wait_days: number | null;
  queue_band: string | null;
};

const HOLDS_SQL =
  `SELECT hold_id::text AS hold_id, patron_token, state, bib_id::text AS bib_id, hold_level,
  pickup_lib, request_time::text AS request, capture_time::text AS capture,
  fulfillment_time::text AS fulfilled, cancellation_time::text AS canceled, wait_days, queue_band
  FROM hold_requests ORDER BY hold_id`;

const EVERGREEN_STATES = [
  "pending",
  "suspended",
  "in_transit",
  "waiting",
  "fulfilled",
  "canceled",
  "expired",
];

for (const backend of BACKENDS) {
  Deno.test({
    name: `holds_sync from Evergreen, every state, updates and reruns (${backend})`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using tmp = await withTmpDir("carrel-holds-");
      const disposables: AsyncDisposable[] = [];
      const home = join(tmp.path, "home");
      const env: Record<string, string> = {
        CARREL_HOME: home,
        CARREL_DAGS_DIR: DAGS,
        PII_HMAC_KEY: KEY,
        CARREL_LOG_FORMAT: "json",
      };
      try {
        const fixture = {
          patrons: 40,
          copies: 120,
          circulations: 10,
          holds: 210,
          start: WINDOW.start,
          end: WINDOW.end,
          seed: 9,
        };
        let source: string;
        let warehouse: string;
        if (backend === "pglite") {
          await seedHome(home);
          const dir = join(tmp.path, "ils");
          const db = await openPgliteDatabase(dir);
          await loadIlsFixture(db, fixture);
          await db.close();
          source = `pglite:${dir}`;
          warehouse = `pglite:${join(tmp.path, "wh")}`;
        } else {
          const store = await freshDatabase("holds_store");
          const ils = await freshDatabase("holds_ils");
          const wh = await freshDatabase("holds_wh");
          disposables.push(store, ils, wh);
          env.CARREL_DATABASE_URL = store.url;
          const sql = postgres(ils.url, { max: 1, onnotice: () => {} });
          await loadIlsFixture(sql, fixture);
          await sql.end();
          source = ils.url;
          warehouse = wh.url;
        }
        env.CARREL_CONN_ILS = source;
        env.CARREL_CONN_WAREHOUSE = warehouse;
        const outputs: string[] = [];
        const run = async (date: string) => {
          const r = await cli([
            "dags",
            "run",
            "holds_sync",
            "--date",
            date,
            "--json",
            "--param",
            `from=${WINDOW.start}`,
            "--param",
            `to=${WINDOW.end}`,
          ], { cwd: tmp.path, env });
          outputs.push(r.stdout, r.stderr);
          assert.equal(r.code, 0, r.stderr);
          return r;
        };

        const first = loadOutput((await run("2026-01-09")).stdout);
        assert.deepEqual(first, { ...first, inserted: 210, updated: 0, unchanged: 0 });
        const holds = await query<Hold>(warehouse, HOLDS_SQL);
        assert.equal(holds.length, 210);
        const src = await query<{ id: string; usr: string; hold_type: string; target: string }>(
          source,
          "SELECT id::text AS id, usr::text AS usr, hold_type, target::text AS target FROM action.hold_request",
        );
        const byId = new Map(src.map((s) => [s.id, s]));
        const seen = new Set<string>();
        for (const h of holds) {
          const s = byId.get(h.hold_id)!;
          assert.equal(
            h.state,
            EVERGREEN_STATES[Number(h.hold_id) % 7],
            `state of hold ${h.hold_id}`,
          );
          seen.add(h.state);
          assert.equal(h.patron_token, createHmac("sha256", KEY).update(s.usr).digest("hex"));
          assert.equal(
            h.hold_level,
            { T: "title", C: "item", V: "volume" }[s.hold_type as "T" | "C" | "V"],
          );
          if (s.hold_type === "T") assert.equal(h.bib_id, s.target);
          else assert.match(String(h.bib_id), /^\d+$/, "copy and volume holds name their record");
          const open = h.state === "pending" || h.state === "suspended";
          assert.equal(h.queue_band !== null, open, `queue band only while queued (${h.state})`);
          assert.equal(
            h.capture !== null,
            ["in_transit", "waiting", "fulfilled"].includes(h.state),
          );
          assert.equal(h.fulfilled !== null, h.state === "fulfilled");
          assert.equal(h.canceled !== null, h.state === "canceled" || h.state === "expired");
          assert.equal(h.wait_days !== null, h.capture !== null);
          if (h.capture !== null) {
            const days = Math.floor((Date.parse(h.capture) - Date.parse(h.request)) / 86_400_000);
            assert.equal(h.wait_days, days);
          }
        }
        assert.deepEqual([...seen].sort(), [...HOLD_STATES].sort(), "every state is covered");
        // The first in each queue is in band "1"; queues of one title share a ranking.
        assert.ok(holds.some((h) => h.queue_band === "1"));

        // A rerun changes nothing.
        const again = loadOutput((await run("2026-01-10")).stdout);
        assert.deepEqual(again, { ...again, inserted: 0, updated: 0, unchanged: 210 });

        // The ILS moves on: a pending hold is fulfilled, a waiting one cancelled.
        const pending = holds.find((h) => h.state === "pending")!;
        const waiting = holds.find((h) => h.state === "waiting")!;
        await query(
          source,
          `UPDATE action.hold_request SET capture_time = request_time + interval '1 day',
              shelf_time = request_time + interval '1 day 1 hour',
              fulfillment_time = timestamptz '2026-01-07T12:00:00Z' WHERE id = ${pending.hold_id}`,
        );
        await query(
          source,
          `UPDATE action.hold_request SET cancel_time = timestamptz '2026-01-07T13:00:00Z', cancel_cause = 2
            WHERE id = ${waiting.hold_id}`,
        );
        const moved = loadOutput((await run("2026-01-11")).stdout);
        assert.deepEqual(moved, { ...moved, inserted: 0, updated: 2, unchanged: 208 });
        const after = new Map((await query<Hold>(warehouse, HOLDS_SQL)).map((h) => [h.hold_id, h]));
        assert.equal(after.get(pending.hold_id)!.state, "fulfilled");
        assert.equal(after.get(pending.hold_id)!.queue_band, null);
        assert.equal(after.get(waiting.hold_id)!.state, "expired", "shelf expiry (cause 2)");
        const still = loadOutput((await run("2026-01-12")).stdout);
        assert.deepEqual(still, { ...still, inserted: 0, updated: 0, unchanged: 210 });

        await assertNoNotes(home, warehouse, outputs);
      } finally {
        for (const d of disposables.reverse()) await d[Symbol.asyncDispose]();
      }
    },
  });
}

Deno.test({
  name: "holds_sync from Koha on MariaDB, every state",
  ignore: TEST_MYSQL_URL === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await withTmpDir("carrel-koha-holds-");
    await using koha = await freshMysqlDatabase("koha_holds");
    const home = join(tmp.path, "home");
    await seedHome(home);
    const conn = await connectKoha(koha.url);
    const made = await loadKohaFixture(conn, {
      patrons: 50,
      items: 150,
      checkouts: 10,
      holds: 240,
      start: WINDOW.start,
      end: WINDOW.end,
      timeZone: "Europe/Helsinki",
      seed: 4,
    });
    await conn.end();
    const warehouse = `pglite:${join(tmp.path, "wh")}`;
    const env = {
      CARREL_HOME: home,
      CARREL_DAGS_DIR: DAGS,
      PII_HMAC_KEY: KEY,
      CARREL_LOG_FORMAT: "json",
      CARREL_CONN_KOHA: koha.url,
      CARREL_CONN_WAREHOUSE: warehouse,
    };
    const branches = JSON.stringify(
      Object.fromEntries(KOHA_FIXTURE_BRANCHES.map((code, i) => [code, 20 + i])),
    );
    const outputs: string[] = [];
    const run = async (date: string) => {
      const r = await cli([
        "dags",
        "run",
        "holds_sync",
        "--date",
        date,
        "--json",
        ...[
          "source=koha",
          `from=${WINDOW.start}`,
          `to=${WINDOW.end}`,
          "timezone=Europe/Helsinki",
          `branches=${branches}`,
        ].flatMap((p) => ["--param", p]),
      ], { cwd: tmp.path, env });
      outputs.push(r.stdout, r.stderr);
      assert.equal(r.code, 0, r.stderr);
      return r;
    };
    const total = made.reserves + made.oldReserves;
    const first = loadOutput((await run("2026-01-09")).stdout);
    assert.deepEqual(first, { ...first, inserted: total, updated: 0, unchanged: 0 });
    const holds = await query<Hold>(warehouse, HOLDS_SQL);
    assert.equal(holds.length, total);
    // reserve_id % 8: pending, suspended, in transit, in processing, waiting, fulfilled,
    // cancelled, expired (fixtures/koha.ts).
    const expected = [
      "pending",
      "suspended",
      "in_transit",
      "in_transit",
      "waiting",
      "fulfilled",
      "canceled",
      "expired",
    ];
    const source = await mysqlQuery<
      { id: string; patron: string; reservedate: string; priority: number }
    >(
      koha.url,
      `SELECT CAST(reserve_id AS CHAR) AS id, CAST(borrowernumber AS CHAR) AS patron, reservedate, priority
         FROM reserves UNION ALL
       SELECT CAST(reserve_id AS CHAR), CAST(borrowernumber AS CHAR), reservedate, priority FROM old_reserves`,
    );
    const byId = new Map(source.map((s) => [s.id, s]));
    for (const h of holds) {
      const s = byId.get(h.hold_id)!;
      assert.equal(h.state, expected[Number(h.hold_id) % 8], `state of reserve ${h.hold_id}`);
      assert.equal(h.patron_token, createHmac("sha256", KEY).update(s.patron).digest("hex"));
      assert.ok(h.pickup_lib >= 20 && h.pickup_lib < 24);
      // reservedate is a Helsinki date: its midnight is 22:00 UTC the day before.
      const midnight = new Date(`${s.reservedate}T00:00:00+02:00`).getTime();
      assert.equal(Date.parse(h.request), midnight);
      if (h.state === "pending" || h.state === "suspended") {
        const p = s.priority;
        const band = p === 1 ? "1" : p <= 5 ? "2-5" : p <= 10 ? "6-10" : p <= 25 ? "11-25" : "26+";
        assert.equal(h.queue_band, band);
      } else assert.equal(h.queue_band, null);
      assert.equal(h.wait_days !== null, h.state === "waiting" || h.state === "fulfilled");
    }
    assert.deepEqual(
      [...new Set(holds.map((h) => h.state))].sort(),
      [...HOLD_STATES].sort(),
    );
    const again = loadOutput((await run("2026-01-10")).stdout);
    assert.deepEqual(again, { ...again, inserted: 0, updated: 0, unchanged: total });
    await assertNoNotes(home, warehouse, outputs);
  },
});
