/**
 * `dags/circulation_sync.ts` end to end through the CLI on a generated Evergreen-shaped ILS, with
 * PGlite source/target/store and with PostgreSQL source/target/store: every circulation of the
 * interval lands in `circulation_events` with the contract's patron token and no direct
 * identifier, a rerun of the same interval adds no rows, the default (scheduled) interval syncs one
 * day, a leak into a free-text field is blocked by the checkpoint, and no patron value reaches any
 * plaintext file, the store, or the CLI output.
 *
 * @module
 */
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import postgres from "postgres";
import { openStore } from "../../core/mod.ts";
import { loadIlsFixture } from "../../fixtures/ils.ts";
import {
  BACKENDS,
  cli,
  CORE_MOD,
  freshDatabase,
  notePostgresSkipped,
  OPERATORS_MOD,
  seedHome,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

const DAGS = new URL("../../dags", import.meta.url).pathname;
const REAL_DAG = new URL("../../dags/circulation_sync.ts", import.meta.url).href;
const KEY = "library-test-key-0123456789abcdef0123456789abcdef";
const PATRON_VALUES = /@example\.invalid|FAKEP\d{5}|FAKEC\d{5}|FAKEID\d{5}|555-555-01/;
const WINDOW = { start: "2026-01-01T00:00:00Z", end: "2026-01-04T00:00:00Z" };
const CIRCULATIONS = 1500;

/** A copy of circulation_sync whose de-identification lets an e-mail slip into a text field. */
const LEAKY_DAG = `
import real from "${REAL_DAG}";
import { defineDag, task } from "${CORE_MOD}";
import { deidentifyCirculation, upstreamRecords } from "${OPERATORS_MOD}";
const c = real.config;
export default defineDag({
  ...c,
  id: "circulation_sync_leaky",
  schedule: null,
  tasks: {
    ...c.tasks,
    deidentify: task({
      after: ["extract"],
      zone: "enclave",
      run: async (ctx) => {
        const out = await ctx.dataset("events");
        let i = 0;
        for await (const row of upstreamRecords(ctx, "extract")) {
          const event = deidentifyCirculation(row);
          if (i++ === 3) event.circ_modifier = "call back at " + row.email;
          await out.write(event);
        }
        return await out.close();
      },
    }),
  },
});
`;

/** Runs SQL on a pglite: or postgres: URL. */
async function query<T>(url: string, text: string): Promise<T[]> {
  if (url.startsWith("pglite:")) {
    const db = await openPgliteDatabase(url.slice("pglite:".length));
    try {
      return (await db.query<T>(text)).rows;
    } finally {
      await db.close();
    }
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return (await sql.unsafe(text)) as unknown as T[];
  } finally {
    await sql.end();
  }
}

async function* files(dir: string): AsyncIterable<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* files(path);
    else if (entry.isFile) yield path;
  }
}

async function filesMatching(dir: string, pattern: RegExp): Promise<string[]> {
  const hits: string[] = [];
  const decoder = new TextDecoder("latin1");
  for await (const path of files(dir)) {
    if (pattern.test(decoder.decode(await Deno.readFile(path)))) hits.push(path);
  }
  return hits;
}

async function taskOutput(
  env: Record<string, string>,
  runId: string,
  taskId: string,
): Promise<Record<string, unknown>> {
  Deno.env.set("CARREL_HOME", env.CARREL_HOME!);
  if (env.CARREL_DATABASE_URL) Deno.env.set("CARREL_DATABASE_URL", env.CARREL_DATABASE_URL);
  try {
    const store = await openStore();
    try {
      const ti = (await store.listTaskInstances(runId)).find((t) => t.taskId === taskId);
      return ti?.output as Record<string, unknown>;
    } finally {
      await store.close();
    }
  } finally {
    Deno.env.delete("CARREL_DATABASE_URL");
    Deno.env.delete("CARREL_HOME");
  }
}

function states(stdout: string): Record<string, string> {
  const result = JSON.parse(stdout);
  return Object.fromEntries(
    result.tasks.map((t: { taskId: string; state: string }) => [t.taskId, t.state]),
  );
}

for (const backend of BACKENDS) {
  Deno.test(`circulation_sync end to end on a generated ILS (${backend})`, async () => {
    await using tmp = await withTmpDir("carrel-circ-");
    const home = join(tmp.path, "home");
    const disposables: AsyncDisposable[] = [];
    const env: Record<string, string> = {
      CARREL_HOME: home,
      CARREL_DAGS_DIR: DAGS,
      PII_HMAC_KEY: KEY,
      CARREL_LOG_FORMAT: "json",
    };
    try {
      let source: string;
      const targets: string[] = [];
      const fixture = {
        patrons: 1200,
        copies: 300,
        circulations: CIRCULATIONS,
        start: WINDOW.start,
        end: WINDOW.end,
        seed: 7,
      };
      if (backend === "pglite") {
        await seedHome(home);
        const dir = join(tmp.path, "ils");
        const db = await openPgliteDatabase(dir);
        await loadIlsFixture(db, fixture);
        await db.close();
        source = `pglite:${dir}`;
        for (const name of ["wh1", "wh2", "wh3"]) targets.push(`pglite:${join(tmp.path, name)}`);
      } else {
        const store = await freshDatabase("circ_store");
        disposables.push(store);
        env.CARREL_DATABASE_URL = store.url;
        const ils = await freshDatabase("circ_ils");
        disposables.push(ils);
        const sql = postgres(ils.url, { max: 1, onnotice: () => {} });
        await loadIlsFixture(sql, fixture);
        await sql.end();
        source = ils.url;
        for (const name of ["wh1", "wh2", "wh3"]) {
          const wh = await freshDatabase(`circ_${name}`);
          disposables.push(wh);
          targets.push(wh.url);
        }
      }
      // Connections by name, as in production.
      env.CARREL_CONN_ILS = source;
      env.CARREL_CONN_WAREHOUSE = targets[0]!;
      env.CARREL_CONN_WAREHOUSE2 = targets[1]!;
      env.CARREL_CONN_WAREHOUSE3 = targets[2]!;

      const run = (date: string, params: string[], dagsDir = DAGS, dag = "circulation_sync") =>
        cli([
          "dags",
          "run",
          dag,
          "--date",
          date,
          "--json",
          ...params.flatMap((p) => ["--param", p]),
        ], {
          cwd: tmp.path,
          env: { ...env, CARREL_DAGS_DIR: dagsDir },
        });

      // 1. The whole window, with birth year bands: every group of events sharing home library
      // and band holds 2 patrons or more in this fixture (k_anonymity=2 passes; see 4).
      const full = [
        `from=${WINDOW.start}`,
        `to=${WINDOW.end}`,
        "birth_year_band=true",
        "k_anonymity=2",
      ];
      const first = await run("2026-01-05T02:00:00Z", full);
      assert.equal(first.code, 0, first.stderr);
      assert.deepEqual(states(first.stdout), {
        extract: "success",
        deidentify: "success",
        tokens: "success",
        gate: "success",
        checkpoint: "success",
        load: "success",
      });
      const runId = JSON.parse(first.stdout).runId;
      const loaded = await taskOutput(env, runId, "load");
      assert.equal(loaded.inserted, CIRCULATIONS);
      assert.equal(loaded.skipped, 0);

      const events = await query<Record<string, unknown>>(
        targets[0]!,
        "SELECT *, circ_id::text AS circ, xact_start::text AS started FROM circulation_events",
      );
      assert.equal(events.length, CIRCULATIONS);
      const expected = await query<{ circ: string; usr: string; band: string | null }>(
        source,
        `SELECT c.id::text AS circ, c.usr::text AS usr,
                (extract(year FROM u.dob)::int / 10 * 10)::text AS band
           FROM action.circulation c JOIN actor.usr u ON u.id = c.usr`,
      );
      const byCirc = new Map(expected.map((e) => [e.circ, e]));
      for (const e of events) {
        const src = byCirc.get(String(e.circ))!;
        assert.ok(src, "every event comes from a source circulation");
        const token = createHmac("sha256", KEY).update(src.usr).digest("hex");
        assert.equal(e.patron_token, token, "the contract's HMAC token of actor.usr.id");
        assert.equal(
          e.birth_year_band,
          src.band === null ? null : `${src.band}-${Number(src.band) + 9}`,
        );
        assert.equal(e.postal_prefix, null, "postal prefix only when asked");
      }
      const columns = Object.keys(events[0]!);
      for (const forbidden of ["email", "family_name", "first_given_name", "dob", "post_code"]) {
        assert.ok(!columns.includes(forbidden), forbidden);
      }
      assert.ok(!columns.some((c) => c.includes("barcode")));
      assert.ok(!PATRON_VALUES.test(JSON.stringify(events)), "no patron value in the warehouse");

      // 2. A rerun of the same interval (another run, same from/to) adds no rows.
      const again = await run("2026-01-06T02:00:00Z", full);
      assert.equal(again.code, 0, again.stderr);
      const reloaded = await taskOutput(env, JSON.parse(again.stdout).runId, "load");
      assert.equal(reloaded.inserted, 0);
      assert.equal(reloaded.skipped, CIRCULATIONS);
      const [count] = await query<{ n: number }>(
        targets[0]!,
        "SELECT count(*)::int AS n FROM circulation_events",
      );
      assert.equal(count!.n, CIRCULATIONS);

      // 3. The scheduled run syncs its own interval only: [02:00, next day 02:00).
      const daily = await run("2026-01-02T02:00:00Z", ["target=warehouse2"]);
      assert.equal(daily.code, 0, daily.stderr);
      const [day] = await query<{ n: number }>(
        source,
        `SELECT count(*)::int AS n FROM action.circulation
          WHERE xact_start >= '2026-01-02T02:00:00Z' AND xact_start < '2026-01-03T02:00:00Z'`,
      );
      const [synced] = await query<{ n: number; lo: string; hi: string }>(
        targets[1]!,
        `SELECT count(*)::int AS n, min(xact_start)::text AS lo, max(xact_start)::text AS hi
           FROM circulation_events`,
      );
      assert.ok(day!.n > 0 && day!.n < CIRCULATIONS);
      assert.equal(synced!.n, day!.n);

      // 4. Bands and postal prefixes at the default k (10 patrons per home library x band x
      // prefix): groups this small would single patrons out, so the checkpoint fails, naming the
      // columns and k only, and nothing is loaded.
      const small = await run("2026-01-03T02:00:00Z", [
        `from=${WINDOW.start}`,
        `to=${WINDOW.end}`,
        "birth_year_band=true",
        "postal_prefix=true",
        "target=warehouse3",
      ]);
      assert.equal(small.code, 1, small.stderr);
      assert.equal(states(small.stdout).checkpoint, "failed");
      assert.equal(states(small.stdout).load, "upstream_failed");
      assert.match(
        small.stdout + small.stderr,
        /quasi_identifiers: home_ou\+birth_year_band\+postal_prefix: class of fewer than k=10 distinct patron_token \(\d+\)/,
      );
      assert.ok(!PATRON_VALUES.test(small.stdout + small.stderr), "no patron value in CLI output");

      // 5. A leak into a free-text field: the checkpoint blocks it, nothing is loaded.
      const leakyDags = join(tmp.path, "leaky_dags");
      await Deno.mkdir(leakyDags);
      await Deno.writeTextFile(join(leakyDags, "leaky.ts"), LEAKY_DAG);
      const leak = await run(
        "2026-01-02T02:00:00Z",
        [...full, "target=warehouse3"],
        leakyDags,
        "circulation_sync_leaky",
      );
      assert.equal(leak.code, 1, leak.stderr);
      assert.deepEqual(states(leak.stdout), {
        extract: "success",
        deidentify: "success",
        tokens: "success",
        gate: "success",
        checkpoint: "failed",
        load: "upstream_failed",
      });
      assert.ok(!PATRON_VALUES.test(leak.stdout + leak.stderr), "no patron value in CLI output");
      const [table] = await query<{ present: boolean }>(
        targets[2]!,
        "SELECT to_regclass('circulation_events') IS NOT NULL AS present",
      );
      assert.equal(table!.present, false, "the load never ran");

      // 6. No patron value in any plaintext Carrel wrote, nor in the store.
      for (const out of [first, again, daily]) {
        assert.ok(!PATRON_VALUES.test(out.stdout + out.stderr));
      }
      assert.deepEqual(await filesMatching(home, PATRON_VALUES), []);
      if (env.CARREL_DATABASE_URL) {
        const tables = await query<{ name: string }>(
          env.CARREL_DATABASE_URL,
          `SELECT quote_ident(table_name) AS name FROM information_schema.tables
            WHERE table_schema = 'public'`,
        );
        assert.ok(tables.length > 0);
        for (const { name } of tables) {
          const [row] = await query<{ all: string }>(
            env.CARREL_DATABASE_URL,
            `SELECT coalesce(string_agg(t::text, ''), '') AS all FROM ${name} t`,
          );
          assert.ok(!PATRON_VALUES.test(row!.all), `patron value in store table ${name}`);
        }
      }
    } finally {
      for (const d of disposables.reverse()) await d[Symbol.asyncDispose]();
    }
  });
}
