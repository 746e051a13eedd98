/**
 * `dags/catalog_sync.ts` end to end through the CLI, on generated MARC (MARC-8 ISO 2709 with
 * damaged records, plus MARCXML, plus a Koha export without 001/035 with Hebrew and Russian 880s,
 * plus records with no id at all), against the PGlite store and the PostgreSQL store: outputs
 * (discovery JSON, MARCXML, ISO 2709, BIBFRAME RDF/XML and JSON-LD) read back, counts match a
 * direct computation (read = written + quarantined; warnings by kind; ids by source), quarantine
 * holds positions and reasons only, no barcode reaches any plaintext file, strict ids quarantine
 * the id-less records, and a local keep-list that lets barcodes through is blocked by the
 * checkpoint.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { openStore } from "../../core/mod.ts";
import { readIso2709, readMarcFiles, readMarcXml, toCatalogRecord } from "../../operators/mod.ts";
import { generateFixtures } from "../../fixtures/main.ts";
import { generateIso2709 } from "../../fixtures/marc.ts";
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
      // A Koha export (no 001, no 035; 999 $c) with Hebrew and Russian 880s, damaged in places,
      // and a few records without any id.
      const write = async (name: string, chunks: AsyncIterable<Uint8Array>) => {
        const file = await Deno.open(join(input, name), { write: true, create: true });
        for await (const chunk of chunks) await file.write(chunk);
        file.close();
      };
      await write(
        "koha.mrc",
        generateIso2709({
          count: 60,
          seed: 3,
          ids: "koha",
          vernacularEvery: 4,
          encoding: "marc-8",
          defectEvery: 9,
          defects: [
            "directory-one-short",
            "blank-subfield-code",
            "invalid-tag",
            "unterminated-record",
          ],
        }),
      );
      await write("noid.mrc", generateIso2709({ count: 5, seed: 4, ids: "none" }));

      // What the run must produce, computed directly from the same files.
      let read = 0;
      let unreadable = 0;
      let good = 0;
      let vernacular = 0;
      const stripped: Record<string, number> = {};
      const warnings: Record<string, number> = {};
      const idSources: Record<string, number> = {};
      const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
      for await (const r of readMarcFiles(input)) {
        read++;
        if (!r.ok) {
          unreadable++;
          continue;
        }
        for (const w of r.warnings) bump(warnings, w.defect);
        const c = toCatalogRecord(r.record);
        for (const [tag, n] of Object.entries(c.stripped)) stripped[tag] = (stripped[tag] ?? 0) + n;
        if (c.ok) {
          good++;
          bump(idSources, c.idSource);
          for (const w of c.warnings) bump(warnings, w);
          if (c.record.vernacular) vernacular++;
        }
      }
      assert.ok(unreadable > 0, "the fixture must contain unrecoverable records");
      assert.equal(idSources["999$c"], 60);
      assert.equal(idSources.derived, 5);
      assert.equal(vernacular, 15);
      for (const kind of ["directory", "subfield-code", "tag", "record-terminator", "id-derived"]) {
        assert.ok((warnings[kind] ?? 0) > 0, `fixture warns ${kind}`);
      }

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
        [
          ["parse", "enclave"],
          ["gate", "enclave"],
          ["checkpoint", "enclave"],
          ["publish", "shared"],
          ["bibframe", "shared"],
        ],
      );

      // The summary is the run's output (the publish task's).
      Deno.env.set("CARREL_HOME", home);
      if (env.CARREL_DATABASE_URL) Deno.env.set("CARREL_DATABASE_URL", env.CARREL_DATABASE_URL);
      const store = await openStore();
      const instances = await store.listTaskInstances(result.runId);
      const summary = instances.find((t) => t.taskId === "publish")!.output as Record<
        string,
        unknown
      >;
      const linked = instances.find((t) => t.taskId === "bibframe")!.output as Record<
        string,
        unknown
      >;
      await store.close();
      Deno.env.delete("CARREL_DATABASE_URL");
      Deno.env.delete("CARREL_HOME");
      assert.equal(summary.read, read);
      assert.equal(summary.written, good);
      assert.equal(summary.quarantined, read - good);
      // `runs show` counts every record set aside by the task that set it aside.
      const shown = await cli(["runs", "show", result.runId, "--json"], { cwd: tmp.path, env });
      assert.equal(shown.code, 0, shown.stderr);
      const byTask = Object.fromEntries(
        (JSON.parse(shown.stdout).tasks as { taskId: string; quarantined?: number }[])
          .map((t) => [t.taskId, t.quarantined ?? 0]),
      );
      assert.ok(byTask.parse! > 0, "the fixture has records the parse task sets aside");
      assert.equal(byTask.parse! + byTask.gate! + byTask.checkpoint!, read - good);
      assert.equal(summary.files, 4);
      assert.deepEqual(summary.warnings, Object.fromEntries(Object.entries(warnings).sort()));
      assert.deepEqual(summary.id_sources, Object.fromEntries(Object.entries(idSources).sort()));
      assert.equal(linked.written, good);
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
        "items",
        "language",
        "subjects",
        "title",
        "year",
      ]);
      const docs = jsonl.map((l) => JSON.parse(l));
      const hebrew = docs.filter((d) =>
        d.vernacular?.some((v: { value: string }) => v.value === "בית־הספר העברי")
      );
      assert.ok(hebrew.length > 0, "Hebrew titles reach discovery");
      assert.equal(docs.filter((d) => d.vernacular).length, vernacular);
      // BIBFRAME: one Work per published record in both serializations.
      const rdf = await Deno.readTextFile(join(output, "catalog.bibframe.rdf"));
      assert.equal(rdf.match(/<bf:Work rdf:about=/g)?.length, good);
      const graph = JSON.parse(await Deno.readTextFile(join(output, "catalog.bibframe.jsonld")));
      assert.equal(
        graph["@graph"].filter((n: { "@type": string[] }) => n["@type"][0] === "bf:Work").length,
        good,
      );
      assert.ok(rdf.includes('xml:lang="he-hebr">בית־הספר העברי<'));
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
        bibframe: "upstream_failed",
      });
      assert.ok(!BARCODE.test(leak.stdout + leak.stderr), "no barcode in CLI output");
      await assert.rejects(Deno.stat(join(leakOut, "catalog.jsonl")));
      await assert.rejects(Deno.stat(join(leakOut, "catalog.bibframe.rdf")));
      assert.deepEqual(await filesMatching(home, BARCODE), []);

      // Strict ids: the five records without an id are quarantined (stage map), the rest published.
      const strictOut = join(tmp.path, "strict");
      const strict = await cli([
        "dags",
        "run",
        "catalog_sync",
        "--date",
        "2026-02-03T00:00:00Z",
        "--param",
        `input=${input}`,
        "--param",
        `output=${strictOut}`,
        "--param",
        "strict_ids=true",
        "--json",
      ], { cwd: tmp.path, env });
      assert.equal(strict.code, 0, strict.stderr);
      const strictQ = (await Deno.readTextFile(join(strictOut, "quarantine.jsonl"))).trim().split(
        "\n",
      ).map((l) => JSON.parse(l));
      const noId = strictQ.filter((q) => q.stage === "map");
      assert.equal(noId.length, 5);
      assert.equal(noId[0].reason, "no record id (looked in 001, 901$c, 035$a, 999$c)");
      assert.equal(strictQ.length, read - good + 5);
    } finally {
      await db?.[Symbol.asyncDispose]();
    }
  });
}
