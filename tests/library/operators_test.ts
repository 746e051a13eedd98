/**
 * The DAG-facing library operators: embedded (PGlite) extract and load, `pglite:` connections,
 * csvExtract quarantine, jsonlWrite, catalog records and files, circulation de-identification.
 *
 * @module
 */
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import {
  birthYearBand,
  CIRCULATION_EVENT_COLUMNS,
  CirculationEvent,
  csvExtract,
  type CsvQuarantineEntry,
  DEFAULT_PII_KEYS,
  deidentifyCirculation,
  isCredentialFree,
  jsonlWrite,
  openEmbeddedDatabases,
  pglitePath,
  postalPrefix,
  readIso2709,
  readMarcXml,
  resolveConnection,
  SqlError,
  sqlExtract,
  sqlLoad,
  toCatalogRecord,
  writeCatalogFiles,
} from "../../operators/mod.ts";
import { iso, isoTimestamp } from "../../operators/ils/circulation.ts";
import { fixtureRecord } from "../../fixtures/mod.ts";
import { withTmpDir } from "../test_utils.ts";

async function drain<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function seededPglite(dir: string, rows: number): Promise<void> {
  const db = await openPgliteDatabase(dir);
  await db.exec(`CREATE TABLE t (id bigint PRIMARY KEY, secret text); CREATE SEQUENCE s;
    INSERT INTO t SELECT g, 'value-' || g FROM generate_series(1, ${rows}) g;`);
  await db.close();
}

Deno.test("pglite: connections resolve by URL and by CARREL_CONN_<NAME>", () => {
  assert.equal(pglitePath("pglite:///srv/ils"), "/srv/ils");
  assert.equal(pglitePath("pglite:memory"), undefined);
  assert.equal(pglitePath("pglite:rel/dir"), join(Deno.cwd(), "rel/dir"));
  assert.equal(pglitePath("pglite:./rel"), join(Deno.cwd(), "rel"));
  const env = new Map([["CARREL_CONN_ILS", "pglite:/data/ils"]]);
  const conn = resolveConnection("ils", env);
  assert.equal(conn.kind, "pglite");
  assert.equal(conn.url, "pglite:/data/ils");
  assert.equal(resolveConnection("postgres://u@h/db").kind, "postgres");
  assert.equal(isCredentialFree("postgres://u@h/db"), true);
  assert.equal(isCredentialFree("pglite:./x"), true);
  assert.equal(isCredentialFree("postgres://u:pw@h/db"), false);
  assert.equal(isCredentialFree("postgres://u@h/db?password=pw"), false);
});

Deno.test("sqlExtract on PGlite: read-only, streamed in batches, data dir closed afterwards", async () => {
  await using tmp = await withTmpDir();
  const dir = join(tmp.path, "src");
  await seededPglite(dir, 2500);
  const url = `pglite:${dir}`;
  const rows = await drain(sqlExtract(url, "SELECT id::text AS id FROM t ORDER BY t.id", [], {
    batchSize: 100,
  }));
  assert.equal(rows.length, 2500);
  assert.equal(rows[2499]!.id, "2500");
  assert.equal(openEmbeddedDatabases(), 0);

  // A write inside the extract's transaction fails: nextval() writes the sequence.
  const err = await drain(sqlExtract(url, "SELECT nextval('s') FROM t")).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(err instanceof SqlError);
  assert.equal(err.code, "25006");
  assert.equal(openEmbeddedDatabases(), 0);
  // Non-read statements are refused before opening anything.
  const refused = await drain(sqlExtract(url, "DELETE FROM t")).then(() => undefined, (e) => e);
  assert.equal((refused as SqlError).code, "READ_ONLY");

  // Stopping early rolls back and closes too.
  for await (const _ of sqlExtract(url, "SELECT * FROM t", [], { batchSize: 10 })) break;
  assert.equal(openEmbeddedDatabases(), 0);

  // Errors carry no row values.
  const bad = await drain(sqlExtract(url, "SELECT secret::int FROM t")).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(bad instanceof SqlError);
  assert.ok(!bad.message.includes("value-"), "the error must not carry a value");
  assert.equal(openEmbeddedDatabases(), 0);

  // A missing data directory is an error, not an empty database.
  const missing = await drain(sqlExtract(`pglite:${join(tmp.path, "nope")}`, "SELECT 1")).then(
    () => undefined,
    (e) => e,
  );
  assert.equal((missing as SqlError).code, "3D000");

  // The data was not changed and the directory opens again.
  const db = await openPgliteDatabase(dir);
  const { rows: count } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM t");
  assert.equal(count[0]!.n, 2500);
  await db.close();
});

Deno.test("sqlLoad on PGlite: creates the table, idempotent on the natural key", async () => {
  await using tmp = await withTmpDir();
  const url = `pglite:${join(tmp.path, "wh")}`;
  const target = {
    table: "events",
    columns: ["id", "v"],
    key: ["id"],
    createSql: "CREATE TABLE IF NOT EXISTS events (id bigint PRIMARY KEY, v text)",
  };
  const rows = Array.from({ length: 1234 }, (_, i) => ({ id: String(i + 1), v: `v${i}` }));
  assert.deepEqual(await sqlLoad(url, target, rows, { batchSize: 100 }), {
    inserted: 1234,
    skipped: 0,
  });
  assert.deepEqual(await sqlLoad(url, target, rows), { inserted: 0, skipped: 1234 });
  // A failing load rolls back entirely and names the row, not the value.
  const broken = [{ id: "5000", v: "ok" }, { id: "5001" }] as Record<string, unknown>[];
  const err = await sqlLoad(url, target, broken).then(() => undefined, (e) => e);
  assert.equal((err as SqlError).code, "MISSING_VALUE");
  assert.match((err as SqlError).message, /row 2 has no value for column "v"/);
  assert.equal(openEmbeddedDatabases(), 0);
  const db = await openPgliteDatabase(join(tmp.path, "wh"));
  const { rows: n } = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM events");
  assert.equal(n[0]!.n, 1234);
  await db.close();
});

Deno.test("csvExtract yields typed rows and quarantines broken ones without content", async () => {
  const Loan = z.object({ issue_id: z.coerce.number().int(), cardnumber: z.string().min(1) });
  const input = [
    "issue_id\tcardnumber\n",
    "1\t23000000000001\n",
    "oops-23000000000002\t23000000000002\n",
    "3\n",
    "4\t23000000000004\n",
  ];
  const quarantined: CsvQuarantineEntry[] = [];
  const it = csvExtract(input, {
    delimiter: "\t",
    columns: Loan,
    onQuarantine: (q) => void quarantined.push(q),
  });
  const records = [];
  let next = await it.next();
  while (!next.done) {
    records.push(next.value);
    next = await it.next();
  }
  assert.deepEqual(records.map((r) => r.issue_id), [1, 4]);
  assert.deepEqual(next.value, { rows: 4, valid: 2, quarantined: 2 });
  assert.deepEqual(quarantined.map((q) => q.line), [3, 4]);
  for (const q of quarantined) {
    assert.ok(!/2300000000000|oops/.test(q.reason), "reasons carry no values");
  }
});

Deno.test("jsonlWrite creates the folder and writes one record per line", async () => {
  await using tmp = await withTmpDir();
  const path = join(tmp.path, "a", "b", "out.jsonl");
  assert.equal(await jsonlWrite(path, [{ a: 1 }, { a: 2 }]), 2);
  assert.equal(await Deno.readTextFile(path), '{"a":1}\n{"a":2}\n');
});

Deno.test("toCatalogRecord: sanitized, holdings counted before stripping, id fallbacks", () => {
  const raw = fixtureRecord(7);
  const out = toCatalogRecord(raw);
  assert.ok(out.ok);
  assert.equal(out.record.id, "crl000000007");
  assert.ok(out.record.holdings_count >= 1);
  const tags = out.record.marc.fields.map((f) => f.tag);
  assert.ok(!tags.some((t) => t.startsWith("9") || t === "876"), `kept ${tags}`);
  assert.ok(!JSON.stringify(out.record).match(/39999\d{9}/), "no barcode survives");
  assert.ok(Object.values(out.stripped).reduce((a, b) => a + b, 0) > 0);

  const no001 = {
    leader: raw.leader,
    fields: [
      ...raw.fields.filter((f) => f.tag !== "001"),
      { tag: "901", ind1: " ", ind2: " ", subfields: [{ code: "c", value: "4242" }] },
    ],
  };
  const fallback = toCatalogRecord(no001);
  assert.ok(fallback.ok);
  assert.equal(fallback.record.id, "4242");
  assert.deepEqual(fallback.record.marc.fields[0], { tag: "001", value: "4242" });
  // No id in the sources: a content-derived id (with a warning), or a refusal with strict ids.
  const derived = toCatalogRecord(no001, {}, { idFrom: ["001"] });
  assert.ok(derived.ok);
  assert.match(derived.record.id, /^carrel-[0-9a-f]{24}$/);
  assert.deepEqual(derived.warnings, ["id-derived"]);
  const none = toCatalogRecord(no001, {}, { idFrom: ["001"], strictIds: true });
  assert.equal(none.ok, false);
});

Deno.test("writeCatalogFiles writes JSONL, MARCXML and ISO 2709 that read back", async () => {
  await using tmp = await withTmpDir();
  const records = Array.from({ length: 50 }, (_, i) => {
    const r = toCatalogRecord(fixtureRecord(i + 1));
    assert.ok(r.ok);
    return r.record;
  });
  const result = await writeCatalogFiles(tmp.path, records);
  assert.equal(result.written, 50);
  const lines = (await Deno.readTextFile(result.files.jsonl)).trim().split("\n");
  assert.equal(lines.length, 50);
  assert.equal(JSON.parse(lines[0]!).marc, undefined);
  const mrc = await Deno.open(result.files.mrc);
  const back = (await drain(readIso2709(mrc.readable))).filter((r) => r.ok);
  assert.equal(back.length, 50);
  const xml = await Deno.open(result.files.xml);
  const fromXml = await drain(readMarcXml(xml.readable));
  assert.equal(fromXml.filter((r) => r.ok).length, 50);
  assert.deepEqual(
    back[3]!.ok && back[3]!.record.fields,
    records[3]!.marc.fields,
  );
});

Deno.test("deidentifyCirculation keeps event fields only; generalizes only when asked", () => {
  const raw = {
    circ_id: "11",
    patron_id: "42",
    first_given_name: "Ada",
    family_name: "Fixture",
    email: "ada@example.invalid",
    card_barcode: "FAKEP000000042",
    item_barcode: "FAKEC000000009",
    dob: "1984-05-01",
    street1: "1 Mock Lane",
    city: "Testford",
    post_code: "K1A 0B1",
    home_ou: 4,
    copy_id: "9",
    bib_id: "3",
    circ_lib: 5,
    circ_modifier: "book",
    xact_start: new Date("2026-01-02T10:00:00Z"),
    due_date: new Date("2026-01-16T10:00:00Z"),
    checkin_time: null,
    stop_fines: null,
    renewal_remaining: 2,
  };
  const plain = deidentifyCirculation(raw);
  const text = JSON.stringify(plain);
  for (const value of ["Ada", "Fixture", "example.invalid", "FAKE", "1984", "K1A", "Mock"]) {
    assert.ok(!text.includes(value), `${value} must be dropped`);
  }
  assert.equal(plain.birth_year_band, null);
  assert.equal(plain.postal_prefix, null);
  assert.equal(plain.xact_start, "2026-01-02T10:00:00.000Z");
  const general = deidentifyCirculation(raw, { birthYearBand: true, postalPrefix: true });
  assert.equal(general.birth_year_band, "1980-1989");
  assert.equal(general.postal_prefix, "K1A");
  assert.equal(birthYearBand(new Date("1999-12-31T00:00:00Z")), "1990-1999");
  assert.equal(postalPrefix("12"), null);
  // Every key but the raw patron key is an event column, and none is a PII key.
  const keys = Object.keys(plain).filter((k) => k !== "patron_id");
  assert.deepEqual(keys, CIRCULATION_EVENT_COLUMNS.filter((k) => k !== "patron_token"));
  for (const key of CIRCULATION_EVENT_COLUMNS) assert.ok(!DEFAULT_PII_KEYS.includes(key), key);
  const event = { ...plain, patron_token: "a".repeat(64) };
  delete (event as Record<string, unknown>).patron_id;
  assert.ok(CirculationEvent.safeParse(event).success);
});

Deno.test("iso and isoTimestamp: canonical instants pass as they are, anything else as Date says", () => {
  const slow = (s: string) => {
    const d = new Date(s);
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  };
  const cases = [
    "2026-01-05T14:03:00.123Z",
    "2024-02-29T23:59:59.999Z", // leap day
    "2026-02-29T00:00:00.000Z", // no such day: Date rolls it over
    "2026-04-31T00:00:00.000Z",
    "2026-02-28T24:00:00.000Z",
    "2026-13-01T00:00:00.000Z",
    "2026-01-01T00:00:60.000Z",
    "2026-01-01 00:00:00.000Z",
    "0999-12-31T00:00:00.000Z",
    "not a date",
  ];
  for (const s of cases) {
    assert.equal(iso(s), slow(s), s);
    assert.equal(isoTimestamp.safeParse(s).success, !Number.isNaN(Date.parse(s)), s);
  }
  for (let i = 0; i < 2000; i++) {
    const s = new Date(Date.UTC(1900 + (i % 300), i % 12, 1 + (i % 31), i % 24, i % 60))
      .toISOString();
    assert.equal(iso(s), s);
  }
});
