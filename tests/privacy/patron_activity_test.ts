/**
 * `dags/patron_activity.ts` end to end through the CLI on a generated Evergreen-shaped ILS in an
 * embedded PGlite (no server): the month's counts per branch, age band and format are published
 * with k = 10. Checked against the true counts read straight from the ILS: every published count
 * is the true one and at least 10, every true count from 1 to 9 is withheld, the totals are the
 * true totals where published, and no withheld count is recomputable from what is published.
 *
 * @module
 */
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadIlsFixture } from "../../fixtures/ils.ts";
import { checkSmallCells, TOTAL } from "../../operators/privacy/small_cells.ts";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";
import { assertExit, byTask, oneJson, world } from "../e2e/helpers.ts";

notePostgresSkipped();

const DAGS = new URL("../../dags", import.meta.url).pathname;
const TABLE = { by: ["month"], dimensions: ["branch", "age_band", "format"], k: 10 };

type Row = Record<string, unknown>;

/** The true counts, straight from the ILS (the DAG's query is not reused). */
async function trueCounts(ils: string): Promise<Map<string, number>> {
  const db = await openPgliteDatabase(ils);
  try {
    const { rows } = await db.query<
      { branch: string; dob: string | null; start: string; fmt: string }
    >(
      `SELECT c.circ_lib::text AS branch, u.dob::text AS dob, c.xact_start::date::text AS start,
              coalesce(cp.circ_modifier, 'unknown') AS fmt
         FROM action.circulation c JOIN actor.usr u ON u.id = c.usr
         LEFT JOIN asset.copy cp ON cp.id = c.target_copy
        WHERE c.xact_start >= '2026-01-01T00:00:00Z' AND c.xact_start < '2026-02-01T00:00:00Z'`,
    );
    const counts = new Map<string, number>();
    for (const r of rows) {
      let age = Number(r.start.slice(0, 4)) - Number(r.dob!.slice(0, 4));
      if (r.start.slice(5) < r.dob!.slice(5)) age--;
      const band = age < 13
        ? "0-12"
        : age < 18
        ? "13-17"
        : age < 25
        ? "18-24"
        : age < 45
        ? "25-44"
        : age < 65
        ? "45-64"
        : "65+";
      // Every combination of a cell and its totals.
      for (const b of [r.branch, TOTAL]) {
        for (const a of [band, TOTAL]) {
          for (const f of [r.fmt, TOTAL]) {
            const key = `${b}|${a}|${f}`;
            counts.set(key, (counts.get(key) ?? 0) + 1);
          }
        }
      }
    }
    return counts;
  } finally {
    await db.close();
  }
}

for (const backend of BACKENDS) {
  Deno.test(`patron_activity: monthly counts with k = 10 from an embedded ILS [${backend}]`, async () => {
    await using w = await world(backend, "activity");
    const ils = join(w.dir, "ils");
    const db = await openPgliteDatabase(ils);
    try {
      await loadIlsFixture(db, {
        patrons: 500,
        copies: 800,
        circulations: 2500,
        start: "2026-01-01T00:00:00Z",
        end: "2026-02-01T00:00:00Z",
        seed: 11,
      });
    } finally {
      await db.close();
    }
    const out = join(w.dir, "out");
    const args = [
      "dags",
      "run",
      "patron_activity",
      "--dags",
      DAGS,
      "--date",
      "2026-01-01T00:00:00Z",
      "--param",
      `source=pglite:${ils}`,
      "--param",
      `output=${out}`,
      "--json",
    ];
    const r = await w.run(args);
    assertExit(r, 0);
    const doc = oneJson(r);
    const tasks = byTask(doc);
    assert.equal(tasks.extract.zone, "enclave");
    assert.equal(tasks.protect.zone, "enclave");
    assert.equal(tasks.checkpoint.state, "success");
    assert.equal(tasks.publish.zone, "shared");

    const rows: Row[] = (await Deno.readTextFile(join(out, "patron_activity_2026-01.jsonl")))
      .trim().split("\n").map((l) => JSON.parse(l));
    const csv = (await Deno.readTextFile(join(out, "patron_activity_2026-01.csv"))).trim()
      .split("\n");
    assert.equal(csv[0], "month,branch,age_band,format,count,suppressed");
    assert.equal(csv.length, rows.length + 1);

    const truth = await trueCounts(ils);
    let withheld = 0;
    let small = 0;
    for (const [key, n] of truth) {
      const [branch, band, format] = key.split("|");
      const row = rows.find((x) =>
        x.branch === branch && x.age_band === band && x.format === format
      );
      assert.ok(row, `group ${key} (${n}) is listed`);
      assert.equal(row.month, "2026-01");
      if (row.count === null) {
        withheld++;
        assert.equal(row.suppressed, true);
      } else assert.equal(row.count, n, `group ${key}`);
      if (n < 10) {
        small++;
        assert.equal(row.count, null, `group ${key} has ${n} < 10 and is withheld`);
      }
    }
    assert.equal(rows.length, truth.size, "one row per non-empty group and total");
    assert.ok(small > 0, "the fixture has small groups (the test can fail)");
    assert.ok(withheld > small, "complementary suppression withheld more than the small groups");
    assert.equal(
      rows.find((x) => x.branch === TOTAL && x.age_band === TOTAL && x.format === TOTAL)?.count,
      2500,
    );
    // No published count below k, totals add up, no withheld count recomputable.
    assert.deepEqual(checkSmallCells(rows, TABLE), []);
    assert.ok(csv.slice(1).every((line) => !/,[1-9],(true|false)$/.test(line)));

    const audit = await w.run(["audit", "export"]);
    assertExit(audit, 0);
    const entries = audit.stdout.trim().split("\n").map((l) => JSON.parse(l));
    const protectedEntry = entries.find((e) => e.operation === "small_cells:protected");
    assert.equal(protectedEntry?.detail?.k ?? protectedEntry?.detail?.["k"], 10);
    const verdict = entries.find((e) => e.operation === "checkpoint:verdict");
    assert.equal(verdict?.detail?.passed, true);
  });
}
