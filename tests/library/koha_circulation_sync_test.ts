/**
 * `dags/koha_circulation_sync.ts` end to end through the CLI: a generated Koha on MariaDB
 * (`CARREL_TEST_MYSQL_URL`) into a PGlite warehouse (and a PostgreSQL one with its store when
 * `CARREL_TEST_DATABASE_URL` is set). Every checkout of the window lands once, with Koha's wall
 * times converted from its time zone and the contract's token of `borrowernumber`; checkouts of
 * deleted patrons and items are set aside and counted; a run whose load failed resumes without
 * extracting again; a rerun adds nothing; an unmapped branch fails naming the code; the token of a
 * patron key equals Evergreen's for the same key and key version; and no raw patron value
 * reaches the warehouse, the logs, the audit trail, the CLI output or any file under
 * CARREL_HOME.
 *
 * @module
 */
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { byTask, files, query } from "./koha_holds_utils.ts";
import { connectKoha, KOHA_FIXTURE_BRANCHES, loadKohaFixture } from "../../fixtures/koha.ts";
import { loadIlsFixture } from "../../fixtures/ils.ts";
import { kohaInstant } from "../../operators/ils/koha.ts";
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
const REAL_DAG = new URL("../../dags/koha_circulation_sync.ts", import.meta.url).href;
const WINDOW = { start: "2026-01-01T06:00:00Z", end: "2026-01-08T06:00:00Z" };
const ZONE = "America/Chicago";
const FIRST_PATRON = 900_000_001;
const BRANCHES = JSON.stringify(
  Object.fromEntries(KOHA_FIXTURE_BRANCHES.map((code, i) => [code, 10 + i])),
);

/** koha_circulation_sync with a load that does not retry (so a failed load fails the run now). */
const NO_RETRY_DAG = `
import real from "${REAL_DAG}";
import { defineDag } from "carrel";
const c = real.config;
export default defineDag({
  ...c,
  id: "koha_circulation_sync_once",
  schedule: null,
  tasks: { ...c.tasks, load: { ...c.tasks.load, retries: 0 } },
});
`;

for (const backend of BACKENDS) {
  Deno.test({
    name: `koha_circulation_sync end to end from MariaDB (${backend})`,
    ignore: TEST_MYSQL_URL === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using tmp = await withTmpDir("carrel-koha-");
      await using koha = await freshMysqlDatabase("koha_circ");
      const disposables: AsyncDisposable[] = [];
      const home = join(tmp.path, "home");
      const env: Record<string, string> = {
        CARREL_HOME: home,
        CARREL_DAGS_DIR: DAGS,
        PII_HMAC_KEY: "koha-test-key-0123456789abcdef0123456789abcdef",
        CARREL_LOG_FORMAT: "json",
        CARREL_LOG_CONSOLE: "1",
        CARREL_LOG_LEVEL: "debug",
        CARREL_CONN_KOHA: koha.url,
        CARREL_CONN_DOWN: "postgres://carrel@127.0.0.1:1/none",
      };
      try {
        const conn = await connectKoha(koha.url);
        const made = await loadKohaFixture(conn, {
          patrons: 1500,
          items: 400,
          checkouts: 1200,
          currentShare: 0.15,
          start: WINDOW.start,
          end: WINDOW.end,
          timeZone: ZONE,
          firstPatron: FIRST_PATRON,
          seed: 11,
        });
        await conn.end();
        let warehouse: string;
        if (backend === "pglite") {
          await seedHome(home);
          warehouse = `pglite:${join(tmp.path, "wh")}`;
        } else {
          const store = await freshDatabase("koha_store");
          disposables.push(store);
          env.CARREL_DATABASE_URL = store.url;
          const wh = await freshDatabase("koha_wh");
          disposables.push(wh);
          warehouse = wh.url;
        }
        env.CARREL_CONN_WAREHOUSE = warehouse;
        const dagsOnce = join(tmp.path, "dags_once");
        await Deno.mkdir(dagsOnce);
        await Deno.writeTextFile(join(dagsOnce, "once.ts"), NO_RETRY_DAG);
        const outputs: string[] = [];
        const run = async (
          args: string[],
          extraEnv: Record<string, string> = {},
        ) => {
          const r = await cli(args, { cwd: tmp.path, env: { ...env, ...extraEnv } });
          outputs.push(r.stdout, r.stderr);
          return r;
        };
        const full = [
          `from=${WINDOW.start}`,
          `to=${WINDOW.end}`,
          `timezone=${ZONE}`,
          `branches=${BRANCHES}`,
          "birth_year_band=true",
          // Every home library x band group holds 2 patrons or more in this fixture.
          "k_anonymity=2",
        ].flatMap((p) => ["--param", p]);

        // 1. The load fails (unreachable warehouse): the run fails after the checkpoint.
        const failed = await run(
          [
            "dags",
            "run",
            "koha_circulation_sync_once",
            "--date",
            "2026-01-09",
            "--json",
            ...full,
            "--param",
            "target=down",
          ],
          { CARREL_DAGS_DIR: dagsOnce },
        );
        assert.equal(failed.code, 1, failed.stderr);
        assert.equal(byTask(failed.stdout, "state").checkpoint, "success");
        assert.equal(byTask(failed.stdout, "state").load, "failed");
        const runId = JSON.parse(failed.stdout).runId;

        // 2. Resume: only the load runs again, now into the warehouse (the param names "down",
        // whose URL the operator fixes in the environment, as in production).
        const resumed = await run(["runs", "resume", runId, "--json"], {
          CARREL_DAGS_DIR: dagsOnce,
          CARREL_CONN_DOWN: warehouse,
        });
        assert.equal(resumed.code, 0, resumed.stderr);
        const shown = await run(["runs", "show", runId, "--json"], { CARREL_DAGS_DIR: dagsOnce });
        assert.equal(JSON.parse(shown.stdout).state, "success");
        assert.equal(byTask(shown.stdout, "attempts").extract, 1, "the extract was not repeated");
        assert.equal(byTask(shown.stdout, "attempts").load, 2);

        // Every checkout of the window is in the warehouse, or was set aside with a reason.
        const source = await mysqlQuery<
          {
            circ: string;
            patron: number | null;
            item: number | null;
            issued: string;
            dob: string | null;
          }
        >(
          koha.url,
          `SELECT CAST(i.issue_id AS CHAR) AS circ, i.borrowernumber AS patron, i.itemnumber AS item,
                  i.issuedate AS issued, b.dateofbirth AS dob
             FROM (SELECT issue_id, borrowernumber, itemnumber, issuedate FROM issues
                   UNION ALL SELECT issue_id, borrowernumber, itemnumber, issuedate FROM old_issues) i
             LEFT JOIN borrowers b ON b.borrowernumber = i.borrowernumber`,
        );
        assert.equal(source.length, made.issues + made.oldIssues);
        const usable = source.filter((s) => s.patron !== null && s.item !== null);
        assert.ok(usable.length < source.length, "the fixture has deleted patrons and items");
        const events = await query<Record<string, unknown>>(
          warehouse,
          `SELECT circ_id::text AS circ, patron_token, circ_lib, home_ou, birth_year_band,
                  to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') AS started,
                  stop_fines, checkin_time IS NOT NULL AS returned
             FROM circulation_events`,
        );
        assert.equal(events.length, usable.length);
        const byCirc = new Map(usable.map((s) => [s.circ, s]));
        for (const e of events) {
          const src = byCirc.get(String(e.circ))!;
          assert.ok(src, "every event comes from a usable checkout");
          assert.equal(
            e.patron_token,
            createHmac("sha256", env.PII_HMAC_KEY!).update(String(src.patron)).digest("hex"),
          );
          assert.equal(
            `${e.started}.000Z`,
            kohaInstant(src.issued, ZONE),
            "wall time read in Koha's zone",
          );
          assert.ok(
            Number(e.circ_lib) >= 10 && Number(e.circ_lib) < 10 + KOHA_FIXTURE_BRANCHES.length,
          );
          const year = Number(String(src.dob).slice(0, 4));
          assert.equal(e.birth_year_band, `${year - year % 10}-${year - year % 10 + 9}`);
          assert.equal(e.stop_fines === "CHECKIN", e.returned);
        }
        const audit = await run(["audit", "export", "--run", runId]);
        assert.match(audit.stdout, /"operation":"deidentify:records"/);
        assert.match(audit.stdout, /patron deleted or anonymized/);
        assert.match(audit.stdout, /item deleted/);

        // 3. A rerun of the same window (another run) adds nothing.
        const again = await run([
          "dags",
          "run",
          "koha_circulation_sync",
          "--date",
          "2026-01-10",
          "--json",
          ...full,
        ]);
        assert.equal(again.code, 0, again.stderr);
        const [counted] = await query<{ n: number }>(
          warehouse,
          "SELECT count(*)::int AS n FROM circulation_events",
        );
        assert.equal(counted!.n, usable.length);

        // 3b. With postal prefixes too, at the default k (10 patrons per home library x band x
        // prefix), the groups of this fixture would single patrons out: the checkpoint fails,
        // nothing more is loaded.
        const strictK = [
          ...full.filter((p) => p !== "k_anonymity=2" && p !== "--param"),
          "postal_prefix=true",
        ];
        const small = await run([
          "dags",
          "run",
          "koha_circulation_sync",
          "--date",
          "2026-01-12",
          "--json",
          ...strictK.flatMap((p) => ["--param", p]),
        ]);
        assert.equal(small.code, 1, small.stderr);
        assert.equal(byTask(small.stdout, "state").checkpoint, "failed");
        assert.match(
          String(byTask(small.stdout, "error").checkpoint),
          /quasi_identifiers: home_ou\+birth_year_band\+postal_prefix: class of fewer than k=10 distinct patron_token/,
        );
        const [unchanged] = await query<{ n: number }>(
          warehouse,
          "SELECT count(*)::int AS n FROM circulation_events",
        );
        assert.equal(unchanged!.n, usable.length);

        // 4. A branch code without a library id fails the run naming the code.
        const unmapped = await run([
          "dags",
          "run",
          "koha_circulation_sync",
          "--date",
          "2026-01-11",
          "--json",
          "--param",
          `from=${WINDOW.start}`,
          "--param",
          `to=${WINDOW.end}`,
          "--param",
          `branches={"CPL":1}`,
        ]);
        assert.equal(unmapped.code, 1);
        const deid = JSON.parse(unmapped.stdout).tasks.find((t: { taskId: string }) =>
          t.taskId === "deidentify"
        );
        assert.equal(deid.state, "failed");
        assert.match(deid.error, /Koha branch code "(FFL|MPL|SPL)" \(.*\) has no library id/);

        // 5. No raw patron value anywhere Carrel wrote or printed, nor in the warehouse.
        const patrons = await mysqlQuery<Record<string, string | number>>(
          koha.url,
          "SELECT borrowernumber, cardnumber, surname, email, phone, zipcode, dateofbirth, borrowernotes FROM borrowers",
        );
        const notes = await mysqlQuery<{ note: string }>(
          koha.url,
          "SELECT note FROM old_issues WHERE note IS NOT NULL UNION SELECT note FROM issues WHERE note IS NOT NULL",
        );
        // Each kind of raw value has a shape; every match of the shape is looked up among the
        // real values (linear in the bytes searched, whatever the number of patrons).
        const kinds: { what: string; shape: RegExp; values: Set<string> }[] = [
          { what: "borrowernumber", shape: /(?=(\d{9}))/g, values: new Set() },
          { what: "cardnumber", shape: /FAKEK\d{9}/g, values: new Set() },
          { what: "e-mail", shape: /patron\.\d+@example\.invalid/g, values: new Set() },
          { what: "postal code", shape: /FZ\d \dQ\d/g, values: new Set() },
          { what: "birth date", shape: /\d{4}-\d\d-\d\d/g, values: new Set() },
          {
            what: "note",
            shape: /(?:Call back on|Patron phoned from) 555-01\d\d/g,
            values: new Set(),
          },
        ];
        const [numbers, cards, mails, zips, dobs, texts] = kinds.map((k) => k.values);
        for (const p of patrons) {
          numbers!.add(String(p.borrowernumber));
          cards!.add(String(p.cardnumber));
          mails!.add(String(p.email));
          zips!.add(String(p.zipcode));
          dobs!.add(String(p.dateofbirth));
          if (p.borrowernotes) texts!.add(String(p.borrowernotes));
        }
        for (const { note } of notes) texts!.add(note);
        assert.ok(texts!.size > 5 && dobs!.size > 100, "the needles are real");
        const leaks = (text: string) =>
          kinds.flatMap((k) =>
            [...text.matchAll(k.shape)].filter((m) => k.values.has(m[1] ?? m[0])).map(() => k.what)
          );
        const haystacks: [string, string][] = [
          ["CLI output", outputs.join("\n")],
          ["warehouse", JSON.stringify(await query(warehouse, "SELECT * FROM circulation_events"))],
        ];
        const latin1 = new TextDecoder("latin1");
        for await (const path of files(home)) {
          haystacks.push([path, latin1.decode(await Deno.readFile(path))]);
        }
        if (env.CARREL_DATABASE_URL) {
          const dump = await new Deno.Command("/usr/lib/postgresql/15/bin/pg_dump", {
            args: ["--data-only", env.CARREL_DATABASE_URL],
            stdout: "piped",
          }).output();
          assert.equal(dump.code, 0);
          haystacks.push(["pg_dump of the store", latin1.decode(dump.stdout)]);
        }
        assert.ok(haystacks.some(([path]) => path.includes("/logs/")), "a log file was written");
        for (const [what, text] of haystacks) {
          assert.deepEqual(leaks(text), [], `patron values found in ${what}`);
        }
        // Control: the search finds values where they are (it can fail).
        assert.deepEqual(
          [...new Set(leaks(JSON.stringify(patrons) + JSON.stringify(notes)))].sort(),
          ["birth date", "borrowernumber", "cardnumber", "e-mail", "note", "postal code"],
        );
      } finally {
        for (const d of disposables.reverse()) await d[Symbol.asyncDispose]();
      }
    },
  });
}

Deno.test({
  name: "a patron key gets the same token from Evergreen and from Koha (same key version)",
  ignore: TEST_MYSQL_URL === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await withTmpDir("carrel-cross-");
    await using koha = await freshMysqlDatabase("koha_cross");
    const home = join(tmp.path, "home");
    await seedHome(home);
    const keyring = join(tmp.path, "keyring.json");
    const env: Record<string, string> = {
      CARREL_HOME: home,
      CARREL_DAGS_DIR: DAGS,
      CARREL_LOG_FORMAT: "json",
    };
    const init = await cli(["keys", "init", keyring], { cwd: tmp.path, env });
    assert.equal(init.code, 0, init.stderr);
    const rotate = await cli(["keys", "rotate"], {
      cwd: tmp.path,
      env: { ...env, CARREL_KEYRING: keyring },
    });
    assert.equal(rotate.code, 0, rotate.stderr);
    env.CARREL_KEYRING = keyring;

    const ils = join(tmp.path, "ils");
    const db = await openPgliteDatabase(ils);
    await loadIlsFixture(db, {
      patrons: 60,
      copies: 200,
      circulations: 300,
      start: WINDOW.start,
      end: WINDOW.end,
      seed: 3,
    });
    await db.close();
    const conn = await connectKoha(koha.url);
    await loadKohaFixture(conn, {
      patrons: 60,
      items: 200,
      checkouts: 300,
      start: WINDOW.start,
      end: WINDOW.end,
      seed: 5,
    });
    await conn.end();
    const warehouse = `pglite:${join(tmp.path, "wh")}`;
    Object.assign(env, {
      CARREL_CONN_ILS: `pglite:${ils}`,
      CARREL_CONN_KOHA: koha.url,
      CARREL_CONN_WAREHOUSE: warehouse,
    });
    const window = ["--param", `from=${WINDOW.start}`, "--param", `to=${WINDOW.end}`];
    const evergreen = await cli([
      "dags",
      "run",
      "circulation_sync",
      "--date",
      "2026-01-09",
      ...window,
    ], {
      cwd: tmp.path,
      env,
    });
    assert.equal(evergreen.code, 0, evergreen.stderr);
    const kohaRun = await cli([
      "dags",
      "run",
      "koha_circulation_sync",
      "--date",
      "2026-01-09",
      ...window,
      "--param",
      "table=koha_circulation_events",
      "--param",
      `branches=${BRANCHES}`,
    ], { cwd: tmp.path, env });
    assert.equal(kohaRun.code, 0, kohaRun.stderr);

    const evergreenTokens = await query<{ token: string; usr: string }>(
      warehouse,
      "SELECT DISTINCT patron_token AS token FROM circulation_events",
    );
    const kohaTokens = await query<{ token: string }>(
      warehouse,
      "SELECT DISTINCT patron_token AS token FROM koha_circulation_events",
    );
    const evergreenUsers = await query<{ usr: string }>(
      `pglite:${ils}`,
      `SELECT DISTINCT usr::text AS usr FROM action.circulation
        WHERE xact_start >= '${WINDOW.start}' AND xact_start < '${WINDOW.end}'`,
    );
    const kohaPatrons = await mysqlQuery<{ patron: string }>(
      koha.url,
      `SELECT DISTINCT CAST(borrowernumber AS CHAR) AS patron FROM
        (SELECT borrowernumber, itemnumber FROM issues UNION ALL SELECT borrowernumber, itemnumber FROM old_issues) i
        WHERE borrowernumber IS NOT NULL AND itemnumber IS NOT NULL`,
    );
    const shared = evergreenUsers.map((u) => u.usr).filter((u) =>
      kohaPatrons.some((p) => p.patron === u)
    );
    assert.ok(shared.length > 10, "both systems have patrons with the same key");
    const eg = new Set(evergreenTokens.map((t) => t.token));
    const common = kohaTokens.filter((t) => eg.has(t.token));
    assert.equal(common.length, shared.length, "the same key gives the same token, and only it");
    assert.equal(eg.size, evergreenUsers.length);
    // The tokens are those of the active key version (the rotated one), for both systems.
    const ring = JSON.parse(await Deno.readTextFile(keyring)) as {
      active: string;
      keys: { id: string; secret: string }[];
    };
    assert.equal(ring.keys.length, 2);
    const active = ring.keys.find((k) => k.id === ring.active)!;
    const first = ring.keys.find((k) => k.id !== ring.active)!;
    const key = shared[0]!;
    const expected = createHmac("sha256", active.secret).update(key).digest("hex");
    assert.ok(eg.has(expected));
    assert.ok(kohaTokens.some((t) => t.token === expected));
    const old = createHmac("sha256", first.secret).update(key).digest("hex");
    assert.ok(!eg.has(old) && !kohaTokens.some((t) => t.token === old));
  },
});
