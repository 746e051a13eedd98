import assert from "node:assert/strict";
import postgres from "postgres";
import { PGlite } from "@electric-sql/pglite";
import {
  FixtureError,
  type IlsFixtureOptions,
  ilsSchemaSql,
  loadIlsFixture,
  type PgliteLike,
} from "../../operators/ils_fixtures.ts";
import { sqlExtract } from "../../operators/sql.ts";

const ADMIN_URL = Deno.env.get("CARREL_TEST_DATABASE_URL");

const START = "2024-01-01T00:00:00Z";
const END = "2025-01-01T00:00:00Z";
const SMALL: IlsFixtureOptions = {
  patrons: 120,
  copies: 300,
  circulations: 3000,
  start: START,
  end: END,
  seed: 42,
};

/** Order-independent fingerprint of the generated data (epochs, so the session time zone does not matter). */
const DIGEST = `SELECT
  (SELECT md5(string_agg(concat_ws(',', id, usr, target_copy, circ_lib, extract(epoch FROM xact_start),
     extract(epoch FROM due_date), extract(epoch FROM checkin_time), stop_fines), ';' ORDER BY id))
   FROM action.circulation) AS circulation,
  (SELECT md5(string_agg(concat_ws(',', id, usrname, email, first_given_name, family_name, day_phone,
     to_char(dob, 'YYYY-MM-DD'), home_ou), ';' ORDER BY id)) FROM actor.usr) AS usr,
  (SELECT md5(string_agg(concat_ws(',', id, barcode, price, call_number, circ_modifier), ';' ORDER BY id))
   FROM asset.copy) AS copy`;

/** Invariants every fixture must satisfy; returns one row of counts and violation counts. */
const CHECKS = `SELECT
  (SELECT count(*)::int FROM actor.usr) AS usr,
  (SELECT count(*)::int FROM actor.card) AS card,
  (SELECT count(*)::int FROM actor.usr_address) AS address,
  (SELECT count(*)::int FROM asset.call_number) AS call_number,
  (SELECT count(*)::int FROM asset.copy) AS copy,
  (SELECT count(*)::int FROM action.circulation) AS circulation,
  (SELECT count(*)::int FROM action.circulation
    WHERE xact_start < '${START}'::timestamptz OR xact_start >= '${END}'::timestamptz) AS outside_window,
  (SELECT count(*)::int FROM (SELECT xact_start < lag(xact_start) OVER (ORDER BY id) AS back
     FROM action.circulation) AS s WHERE back) AS not_increasing,
  (SELECT count(*)::int FROM action.circulation c
    WHERE NOT EXISTS (SELECT 1 FROM actor.usr u WHERE u.id = c.usr)
       OR NOT EXISTS (SELECT 1 FROM asset.copy p WHERE p.id = c.target_copy)) AS dangling,
  (SELECT count(*)::int FROM action.circulation
    WHERE checkin_time IS NOT NULL AND (checkin_time <= xact_start OR checkin_time >= '${END}'::timestamptz
      OR stop_fines <> 'CHECKIN')) AS bad_checkin,
  (SELECT count(*)::int FROM action.circulation WHERE checkin_time IS NULL) AS open_loans,
  (SELECT count(*)::int FROM action.circulation WHERE due_date <= xact_start) AS bad_due,
  (SELECT count(*)::int FROM actor.usr WHERE email NOT LIKE '%@example.invalid'
     OR day_phone NOT LIKE '555-555-01__') AS not_fake_contact,
  (SELECT count(*)::int FROM actor.card WHERE barcode NOT LIKE 'FAKEP%') AS not_fake_card,
  (SELECT count(*)::int FROM asset.copy WHERE barcode NOT LIKE 'FAKEC%') AS not_fake_copy,
  (SELECT count(DISTINCT usr)::int FROM action.circulation) AS borrowers`;

interface Checks {
  usr: number;
  card: number;
  address: number;
  call_number: number;
  copy: number;
  circulation: number;
  outside_window: number;
  not_increasing: number;
  dangling: number;
  bad_checkin: number;
  open_loans: number;
  bad_due: number;
  not_fake_contact: number;
  not_fake_card: number;
  not_fake_copy: number;
  borrowers: number;
}

function assertInvariants(checks: Checks, options: IlsFixtureOptions): void {
  assert.equal(checks.usr, options.patrons);
  assert.equal(checks.card, options.patrons);
  assert.equal(checks.address, options.patrons);
  assert.equal(checks.call_number, Math.ceil(options.copies / 2));
  assert.equal(checks.copy, options.copies);
  assert.equal(checks.circulation, options.circulations);
  assert.equal(checks.outside_window, 0);
  assert.equal(checks.not_increasing, 0);
  assert.equal(checks.dangling, 0);
  assert.equal(checks.bad_checkin, 0);
  assert.equal(checks.bad_due, 0);
  assert.equal(checks.not_fake_contact, 0);
  assert.equal(checks.not_fake_card, 0);
  assert.equal(checks.not_fake_copy, 0);
  assert.ok(
    checks.open_loans > 0 && checks.open_loans < checks.circulation / 2,
    `open loans ${checks.open_loans}`,
  );
  assert.ok(checks.borrowers > options.patrons * 0.9, `borrowers ${checks.borrowers}`);
}

Deno.test("loadIlsFixture validates its options before touching the database", async () => {
  const untouchable: PgliteLike = {
    exec: () => Promise.reject(new Error("must not run")),
    query: () => Promise.reject(new Error("must not run")),
  };
  const cases: Partial<IlsFixtureOptions>[] = [
    { patrons: 0 },
    { copies: 1.5 },
    { circulations: -1 },
    { seed: 2 ** 31 },
    { start: "not a date" },
    { end: START },
  ];
  for (const override of cases) {
    await assert.rejects(loadIlsFixture(untouchable, { ...SMALL, ...override }), (err: Error) => {
      assert.ok(err instanceof FixtureError, err.message);
      assert.match(err.message, /^Cannot load ILS fixture: /);
      return true;
    });
  }
});

let pgliteDigest: Record<string, unknown> | undefined;

Deno.test({
  name: "loadIlsFixture loads a consistent, synthetic ILS into PGlite",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const db = new PGlite();
    try {
      const result = await loadIlsFixture(db, SMALL);
      assert.deepEqual({ ...result, ms: 0 }, {
        patrons: 120,
        callNumbers: 150,
        copies: 300,
        circulations: 3000,
        ms: 0,
      });
      const { rows } = await db.query<Checks>(CHECKS);
      assertInvariants(rows[0]!, SMALL);
      pgliteDigest = (await db.query<Record<string, unknown>>(DIGEST)).rows[0];
      await assert.rejects(
        loadIlsFixture(db, SMALL),
        /^FixtureError: Cannot load ILS fixture: actor\.usr is not empty$/,
      );
    } finally {
      await db.close();
    }
  },
});

Deno.test({
  name: "loadIlsFixture on PostgreSQL: counts, invariants, determinism, sequences",
  ignore: ADMIN_URL === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const admin = postgres(ADMIN_URL!, { max: 1, onnotice: () => {} });
    const name = `helper_sql_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = new URL(ADMIN_URL!);
    url.pathname = `/${name}`;
    const sql = postgres(url.toString(), { max: 2, onnotice: () => {} });
    try {
      await t.step("loads the requested counts with every invariant holding", async () => {
        const progress: string[] = [];
        const result = await loadIlsFixture(sql, {
          ...SMALL,
          chunkSize: 1000,
          onProgress: (table, loaded, total) => {
            if (loaded === total) progress.push(table);
          },
        });
        assert.equal(result.circulations, 3000);
        assert.deepEqual(progress, [
          "actor.usr",
          "actor.card",
          "actor.usr_address",
          "asset.call_number",
          "asset.copy",
          "action.circulation",
        ]);
        const [checks] = await sql.unsafe(CHECKS);
        assertInvariants(checks as unknown as Checks, SMALL);
      });

      await t.step(
        "the same seed gives the same rows (also on PGlite); another seed does not",
        async () => {
          const [digest] = await sql.unsafe(DIGEST);
          if (pgliteDigest !== undefined) assert.deepEqual({ ...digest }, pgliteDigest);
          const reset =
            `DROP SCHEMA action CASCADE; DROP SCHEMA actor CASCADE; DROP SCHEMA asset CASCADE`;
          await sql.unsafe(reset).simple();
          await loadIlsFixture(sql, SMALL);
          const [same] = await sql.unsafe(DIGEST);
          assert.deepEqual({ ...same }, { ...digest });
          await sql.unsafe(reset).simple();
          await loadIlsFixture(sql, { ...SMALL, seed: 43 });
          const [different] = await sql.unsafe(DIGEST);
          assert.notEqual(different?.circulation, digest?.circulation);
          assert.notEqual(different?.usr, digest?.usr);
          assert.notEqual(different?.copy, digest?.copy);
        },
      );

      await t.step("refuses to load twice and leaves sequences ready for new rows", async () => {
        await assert.rejects(loadIlsFixture(sql, SMALL), FixtureError);
        const [circ] = await sql`
          INSERT INTO action.circulation (usr, target_copy, circ_lib, circ_staff, renewal_remaining, grace_period,
            duration_rule, recurring_fine_rule, max_fine_rule) VALUES (1, 1, 4, 1, 0, '1 day', 'd', 'd', 'd')
          RETURNING id`;
        assert.equal(circ?.id, String(SMALL.circulations + 1));
      });

      await t.step(
        "the fixture feeds sqlExtract: a one-month window streams the right count",
        async () => {
          const [expected] = await sql`
          SELECT count(*)::int AS n FROM action.circulation
          WHERE xact_start >= '2024-03-01T00:00:00Z' AND xact_start < '2024-04-01T00:00:00Z'`;
          let n = 0;
          for await (
            const _ of sqlExtract(
              sql,
              "SELECT id, usr, target_copy, xact_start FROM action.circulation WHERE xact_start >= $1 AND xact_start < $2 ORDER BY id",
              ["2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"],
              { batchSize: 50 },
            )
          ) n++;
          assert.ok(n > 100);
          assert.equal(n, expected?.n);
        },
      );

      await t.step("an abort rolls the whole load back", async () => {
        await sql.unsafe(
          `DROP SCHEMA action CASCADE; DROP SCHEMA actor CASCADE; DROP SCHEMA asset CASCADE`,
        ).simple();
        await sql.unsafe(ilsSchemaSql).simple();
        const controller = new AbortController();
        await assert.rejects(
          loadIlsFixture(sql, {
            ...SMALL,
            chunkSize: 500,
            signal: controller.signal,
            onProgress: (table) => {
              if (table === "asset.copy") controller.abort();
            },
          }),
          /aborted$/,
        );
        const [left] = await sql`SELECT (SELECT count(*) FROM actor.usr)::int AS n`;
        assert.equal(left?.n, 0);
      });
    } finally {
      await sql.end();
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
  },
});
