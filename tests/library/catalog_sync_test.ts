/**
 * `dags/catalog_sync.ts` end to end through the CLI, on generated MARC (MARC-8 ISO 2709 with
 * damaged records, plus MARCXML), against the PGlite store and the PostgreSQL store: outputs
 * read back, counts match a direct computation, quarantine holds positions and reasons only, no
 * barcode reaches any plaintext file, and a local keep-list that lets barcodes through is blocked
 * by the checkpoint.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { openStore } from "../../core/mod.ts";
import { readIso2709, readMarcFiles, readMarcXml, toCatalogRecord } from "../../operators/mod.ts";
import { generateFixtures } from "../../scripts/fixtures.ts";
import {
  BACKENDS,
  cli,
  freshDatabase,
  notePostgresSkipped,
  seedHome,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

const DAGS = new URL("../../dags", import.meta.url).pathname;
const KEY = "library-test-key-0123456789abcdef0123456789abcdef";
const BARCODE = /39999\d{9}/;

async function* files(dir: string): AsyncIterable<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) yield* files(path);
    else if (entry.isFile) yield path;
  }
}

/** Files under `dir` whose bytes (read as latin1) match `pattern`. */
async function filesMatching(dir: string, pattern: RegExp): Promise<string[]> {
  const hits: string[] = [];
  const decoder = new TextDecoder("latin1");
  for await (const path of files(dir)) {
    if (pattern.test(decoder.decode(await Deno.readFile(path)))) hits.push(path);
  }
  return hits;
}

async function drain<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

for (const backend of BACKENDS) {
  Deno.test(`catalog_sync end to end on generated MARC (${backend} store)`, async () => {
    await using tmp = await withTmpDir("carrel-catalog-");
    const home = join(tmp.path, "home");
    const env: Record<string, string> = {
      CARREL_HOME: home,
      CARREL_DAGS_DIR: DAGS,
      PII_HMAC_KEY: KEY,
      CARREL_LOG_FORMAT: "json",
    };
    let db: ({ url: string } & AsyncDisposable) | undefined;
    if (backend === "pglite") await seedHome(home);
    else {
      db = await freshDatabase("catalog_sync");
      env.CARREL_DATABASE_URL = db.url;
    }
    try {
      const made = await generateFixtures({
        out: join(tmp.path, "fx"),
        records: 800,
        circulations: 0,
        defectEvery: 37,
      });
      const input = join(tmp.path, "fx", "marc");
      assert.ok(made.marc);

      // What the run must produce, computed directly from the same files.
      let read = 0;
      let unreadable = 0;
      let good = 0;
      const stripped: Record<string, number> = {};
      for await (const r of readMarcFiles(input)) {
        read++;
        if (!r.ok) {
          unreadable++;
          continue;
        }
        const c = toCatalogRecord(r.record);
        for (const [tag, n] of Object.entries(c.stripped)) stripped[tag] = (stripped[tag] ?? 0) + n;
        if (c.ok) good++;
      }
      assert.ok(unreadable > 0, "the fixture must contain unrecoverable records");

      const output = join(tmp.path, "out");
      const date = "2026-02-01T00:00:00Z";
      const run = await cli([
        "dags",
        "run",
        "catalog_sync",
        "--date",
        date,
        "--param",
        `input=${input}`,
        "--param",
        `output=${output}`,
        "--json",
      ], { cwd: tmp.path, env });
      assert.equal(run.code, 0, run.stderr);
      const result = JSON.parse(run.stdout);
      assert.equal(result.state, "success");
      assert.deepEqual(
        result.tasks.map((t: { taskId: string; zone: string }) => [t.taskId, t.zone]),
        [["parse", "enclave"], ["gate", "enclave"], ["checkpoint", "enclave"], [
          "publish",
          "shared",
        ]],
      );

      // The summary is the run's output (the publish task's).
      Deno.env.set("CARREL_HOME", home);
      if (env.CARREL_DATABASE_URL) Deno.env.set("CARREL_DATABASE_URL", env.CARREL_DATABASE_URL);
      const store = await openStore();
      const summary = (await store.listTaskInstances(result.runId)).find((t) =>
        t.taskId === "publish"
      )!.output as Record<string, unknown>;
      await store.close();
      Deno.env.delete("CARREL_DATABASE_URL");
      Deno.env.delete("CARREL_HOME");
      assert.equal(summary.read, read);
      assert.equal(summary.written, good);
      assert.equal(summary.quarantined, read - good);
      assert.equal(summary.files, 2);
      assert.deepEqual(summary.stripped, Object.fromEntries(Object.entries(stripped).sort()));
      for (const tag of ["852", "876", "945", "952", "999"]) {
        assert.ok((stripped[tag] ?? 0) > 0, `fixture strips ${tag}`);
      }

      // The files read back, with the written count, and hold no barcode.
      const jsonl = (await Deno.readTextFile(join(output, "catalog.jsonl"))).trim().split("\n");
      assert.equal(jsonl.length, good);
      const doc = JSON.parse(jsonl[0]!);
      assert.deepEqual(Object.keys(doc).sort(), [
        "creators",
        "format",
        "holdings_count",
        "id",
        "isbns",
        "issn",
        "language",
        "subjects",
        "title",
        "year",
      ]);
      const mrc = await Deno.open(join(output, "catalog.mrc"));
      const back = await drain(readIso2709(mrc.readable));
      assert.equal(back.filter((r) => r.ok).length, good);
      const xml = await Deno.open(join(output, "catalog.xml"));
      assert.equal((await drain(readMarcXml(xml.readable))).filter((r) => r.ok).length, good);
      // MARC-8 diacritics came out as UTF-8 (NFC), not mojibake.
      const text = await Deno.readTextFile(join(output, "catalog.xml"));
      assert.ok(/[éèçøåöüłńžřš]/u.test(text), "diacritics present");
      assert.equal(text, text.normalize("NFC"));

      // Quarantine: positions and reasons, no record content.
      const quarantine = (await Deno.readTextFile(join(output, "quarantine.jsonl"))).trim().split(
        "\n",
      ).map((l) => JSON.parse(l));
      assert.equal(quarantine.length, read - good);
      const allowed = new Set([
        "stage",
        "file",
        "position",
        "offset",
        "defect",
        "reason",
        "issues",
      ]);
      for (const q of quarantine) {
        for (const key of Object.keys(q)) assert.ok(allowed.has(key), `quarantine key ${key}`);
        assert.equal(typeof q.position, "number");
        assert.ok(!BARCODE.test(JSON.stringify(q)));
        assert.ok(!/Chronique|Voyage|Letters|Poèmes|crl0/.test(JSON.stringify(q)), "no content");
      }

      // No barcode in any plaintext Carrel wrote (workspaces, logs, embedded store pages).
      assert.deepEqual(await filesMatching(home, BARCODE), []);
      assert.deepEqual(await filesMatching(output, BARCODE), []);
      if (db) {
        const sql = postgres(db.url, { max: 1, onnotice: () => {} });
        const tables = await sql<{ name: string }[]>`
          SELECT quote_ident(table_name) AS name FROM information_schema.tables
           WHERE table_schema = 'public'`;
        for (const { name } of tables) {
          const [row] = await sql.unsafe(`SELECT coalesce(string_agg(t::text, ''), '') AS all
            FROM ${name} t`);
          assert.ok(!BARCODE.test(String(row?.all)), `barcode in store table ${name}`);
        }
        await sql.end();
      }

      // A keep-list that lets item fields through: the checkpoint blocks the run.
      const leakOut = join(tmp.path, "leak");
      const leak = await cli([
        "dags",
        "run",
        "catalog_sync",
        "--date",
        "2026-02-02T00:00:00Z",
        "--param",
        `input=${input}`,
        "--param",
        `output=${leakOut}`,
        "--param",
        'keep_local_tags=["952","945"]',
        "--param",
        'item_tags=["876"]',
        "--json",
      ], { cwd: tmp.path, env });
      assert.equal(leak.code, 1);
      const blocked = JSON.parse(leak.stdout);
      const state = Object.fromEntries(
        blocked.tasks.map((t: { taskId: string; state: string }) => [t.taskId, t.state]),
      );
      assert.deepEqual(state, {
        parse: "success",
        gate: "success",
        checkpoint: "failed",
        publish: "upstream_failed",
      });
      assert.ok(!BARCODE.test(leak.stdout + leak.stderr), "no barcode in CLI output");
      await assert.rejects(Deno.stat(join(leakOut, "catalog.jsonl")));
      assert.deepEqual(await filesMatching(home, BARCODE), []);
    } finally {
      await db?.[Symbol.asyncDispose]();
    }
  });
}
