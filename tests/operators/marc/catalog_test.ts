/**
 * Catalog records: ids from `idFrom` (Koha, Evergreen, FOLIO presets, derived ids, strict ids),
 * 880 vernacular forms in discovery, items, and the codec defects of issue 12 item 6, each on a
 * generated fixture.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  derivedRecordId,
  resolveIdSources,
  toCatalogRecord,
  writeCatalogFiles,
} from "../../../operators/mod.ts";
import {
  type DataField,
  decodeMarc8,
  encodeIso2709,
  type MarcRecord,
  readIso2709,
  readMarcXml,
  sanitizeRecord,
  toDiscovery,
  toMarcXml,
  vernacularForms,
} from "../../../operators/marc/mod.ts";
import { fixtureRecord, generateIso2709 } from "../../../fixtures/marc.ts";
import { withTmpDir } from "../../test_utils.ts";

function df(tag: string, ind1: string, ind2: string, ...pairs: string[]): DataField {
  const subfields = [];
  for (let i = 0; i < pairs.length; i += 2) {
    subfields.push({ code: pairs[i]!, value: pairs[i + 1]! });
  }
  return { tag, ind1, ind2, subfields };
}

async function readBack(bytes: AsyncIterable<Uint8Array> | Uint8Array[]) {
  const out = [];
  for await (const r of readIso2709(bytes)) out.push(r);
  return out;
}

Deno.test("Koha records without 001/035 publish under 999 $c; without any id a derived id", async () => {
  // Generated Koha-style export in MARC-8: no 001, no 035; half with 999 $c, half with nothing.
  const withBiblio = await readBack(generateIso2709({ count: 6, ids: "koha", encoding: "marc-8" }));
  const bare = await readBack(generateIso2709({ count: 6, ids: "none", encoding: "marc-8" }));
  for (const [i, r] of withBiblio.entries()) {
    assert.ok(r.ok);
    for (const idFrom of ["marc21", "koha"]) {
      const c = toCatalogRecord(r.record, {}, { idFrom });
      assert.ok(c.ok);
      assert.equal(c.record.id, String(i + 1));
      assert.equal(c.idSource, "999$c");
      assert.deepEqual(c.warnings, []);
      // Discovery loaders read 001: the id is written there, 999 is still stripped.
      assert.deepEqual(c.record.marc.fields[0], { tag: "001", value: String(i + 1) });
      assert.ok(!c.record.marc.fields.some((f) => f.tag === "999"));
    }
  }
  const ids = new Set<string>();
  for (const r of bare) {
    assert.ok(r.ok);
    const c = toCatalogRecord(r.record);
    assert.ok(c.ok);
    assert.match(c.record.id, /^carrel-[0-9a-f]{24}$/);
    assert.equal(c.idSource, "derived");
    assert.deepEqual(c.warnings, ["id-derived"]);
    ids.add(c.record.id);
    // Strict ids: quarantined, naming where it looked, no content.
    const strict = toCatalogRecord(r.record, {}, { strictIds: true });
    assert.ok(!strict.ok);
    assert.equal(strict.reason, "no record id (looked in 001, 901$c, 035$a, 999$c)");
  }
  assert.equal(ids.size, 6, "different records, different ids");
});

Deno.test("derived ids are stable across runs and exports, and change with the description", () => {
  const record = fixtureRecord(9, 1, { ids: "none" });
  const id = derivedRecordId(record);
  assert.equal(derivedRecordId(structuredClone(record)), id);
  // A new export time stamp, new items or local fields: same id.
  const reexported: MarcRecord = structuredClone(record);
  reexported.fields = reexported.fields.map((f) =>
    f.tag === "005" ? { tag: "005", value: "20991231235959.0" } : f
  );
  reexported.fields.push(df("952", " ", " ", "p", "39999000000042"), df("998", " ", " ", "a", "x"));
  assert.equal(derivedRecordId(reexported), id);
  // The same record read from MARC-8 bytes and from MARCXML: same id.
  const title = record.fields.find((f) => f.tag === "245") as DataField;
  const edited: MarcRecord = structuredClone(record);
  (edited.fields.find((f) => f.tag === "245") as DataField).subfields[0]!.value =
    title.subfields[0]!.value + " revised";
  assert.notEqual(derivedRecordId(edited), id);
});

Deno.test("id sources: presets, lists, legacy spellings and errors", () => {
  assert.deepEqual(resolveIdSources("koha"), ["999$c", "001", "035$a"]);
  assert.deepEqual(resolveIdSources("Evergreen"), ["901$c", "001", "035$a"]);
  assert.deepEqual(resolveIdSources("folio"), ["001", "999$i", "035$a"]);
  assert.deepEqual(resolveIdSources(["001", "901c", "035$a"]), ["001", "901$c", "035$a"]);
  assert.throws(
    () => resolveIdSources("voyager"),
    /Cannot use id source "voyager": expected one of/,
  );
  assert.throws(() => resolveIdSources(["24"]), /Cannot use id source "24"/);
  assert.throws(() => resolveIdSources(["245$ab"]), /Cannot use id source "245\$ab"/);
  const record: MarcRecord = {
    leader: "00000nam a2200000   4500",
    fields: [
      { tag: "001", value: "ocm123" },
      df("035", " ", " ", "a", "(OCoLC)123"),
      df("901", " ", " ", "c", "77"),
      df("999", "f", "f", "c", "42", "i", "6f1b-uuid"),
    ],
  };
  const idOf = (idFrom: string | string[]) => {
    const c = toCatalogRecord(record, {}, { idFrom });
    assert.ok(c.ok);
    return [c.record.id, c.idSource];
  };
  assert.deepEqual(idOf("marc21"), ["ocm123", "001"]);
  assert.deepEqual(idOf("koha"), ["42", "999$c"]);
  assert.deepEqual(idOf("evergreen"), ["77", "901$c"]);
  assert.deepEqual(idOf(["999$i"]), ["6f1b-uuid", "999$i"]);
  assert.deepEqual(idOf(["035$a"]), ["(OCoLC)123", "035$a"]);
});

Deno.test("880 Hebrew and Cyrillic pairs reach discovery with their scripts; others unchanged", async () => {
  for (const encoding of ["marc-8", "utf-8"] as const) {
    const results = await readBack(generateIso2709({ count: 4, vernacularEvery: 2, encoding }));
    const docs = results.map((r) => {
      assert.ok(r.ok);
      const c = toCatalogRecord(r.record);
      assert.ok(c.ok);
      return c.record;
    });
    // Records 1 and 3 have no 880: exactly the discovery document of before (no new key).
    for (const i of [0, 2]) {
      assert.ok(!("vernacular" in docs[i]!));
      const { marc: _m, items: _i, ...doc } = docs[i]!;
      assert.deepEqual(doc, {
        ...toDiscovery(docs[i]!.marc, { holdingsCount: doc.holdings_count }),
      });
    }
    const hebrew = docs[1]!.vernacular!;
    assert.deepEqual(hebrew.map((v) => v.field), [
      "creators",
      "title",
      "publisher",
      "series",
      "subjects",
    ]);
    assert.deepEqual(hebrew.find((v) => v.field === "title"), {
      field: "title",
      tag: "245",
      value: "בית־הספר העברי",
      romanized: "Bet-ha-sefer ha-ʻIvri",
      script: "Hebr",
      direction: "rtl",
    });
    assert.equal(hebrew.find((v) => v.field === "creators")!.value, "עגנון, שמואל יוסף");
    assert.equal(hebrew.find((v) => v.field === "publisher")!.value, "עם עובד");
    const russian = docs[3]!.vernacular!;
    assert.deepEqual(russian.find((v) => v.field === "publisher"), {
      field: "publisher",
      tag: "264",
      value: "Художественная литература",
      romanized: "Khudozhestvennai͡a literatura",
      script: "Cyrl",
      direction: "ltr",
    });
    assert.deepEqual(russian.find((v) => v.field === "series")!.value, "Библиотека классики");
    // MARCXML and ISO 2709 outputs keep the 880s.
    assert.equal(docs[3]!.marc.fields.filter((f) => f.tag === "880").length, 5);
    assert.match(toMarcXml(docs[1]!.marc), /<datafield tag="880" ind1="1" ind2="0">/);
  }
});

Deno.test("880 script falls back to 066, then to the letters; CJK refined to Japanese", () => {
  const rec = (six: string, text: string, f066?: string): MarcRecord => ({
    leader: "00000nam a2200000   4500",
    fields: [
      ...(f066 ? [df("066", " ", " ", "c", f066)] : []),
      df("245", "1", "0", "6", "880-01", "a", "Romanized"),
      df("880", "1", "0", "6", six, "a", text),
    ],
  });
  assert.equal(vernacularForms(rec("245-01", "Война", "(N"))[0]!.script, "Cyrl");
  assert.equal(vernacularForms(rec("245-01", "Война"))[0]!.script, "Cyrl");
  assert.equal(vernacularForms(rec("245-01/$1", "東京ものがたり"))[0]!.script, "Jpan");
  assert.equal(vernacularForms(rec("245-01/$1", "서울"))[0]!.script, "Kore");
  assert.equal(vernacularForms(rec("245-01/$1", "北京"))[0]!.script, "Hani");
  const unlinked = vernacularForms(rec("245-00/(3/r", "كتاب"))[0]!;
  assert.equal(unlinked.romanized, null);
  assert.equal(unlinked.direction, "rtl");
});

Deno.test("the sanitizer judges an 880 as the field it stands for", () => {
  const { record, stripped } = sanitizeRecord({
    leader: "00000nam a2200000   4500",
    fields: [
      df("541", "0", " ", "6", "880-01", "a", "Private donor"),
      df("880", "0", " ", "6", "541-01/(2/r", "a", "תורם פרטי"),
      df("880", " ", " ", "6", "952-02", "p", "39999000000001"),
      df("880", "1", "0", "6", "245-03/(2/r", "a", "שלום"),
    ],
  });
  assert.deepEqual(record.fields.map((f) => f.tag), ["880"]);
  assert.deepEqual(stripped, { "541": 1, "880": 2 });
});

Deno.test("items keep shelving location and call number only", () => {
  const c = toCatalogRecord(fixtureRecord(1, 1));
  assert.ok(c.ok);
  assert.ok(c.record.items && c.record.items.length > 0);
  for (const item of c.record.items) {
    assert.deepEqual(Object.keys(item).sort(), ["call_number", "location"]);
  }
  assert.ok(!/39999\d{9}/.test(JSON.stringify(c.record)));
});

// ---------------------------------------------------------------------------------------------
// Codec conformance defects (issue 12 item 6), each on a generated fixture.

Deno.test("Hebrew set: gershayim, geresh and maqaf", () => {
  const r = decodeMarc8(Uint8Array.from([0x1b, 0x28, 0x32, 0x22, 0x27, 0x2d]));
  assert.equal(r.text, "\u05f4\u05f3\u05be");
  assert.deepEqual(r.problems, []);
});

Deno.test("final-period rule keeps an ellipsis; 111 is a main entry", () => {
  const doc = toDiscovery({
    leader: "00000nam a2200000   4500",
    fields: [
      df("111", "2", " ", "a", "Conference on Catalogs", "d", "(2019 :", "c", "Oslo)"),
      df("245", "1", "0", "a", "Ha-Shir shel tinyana ..."),
      df("711", "2", " ", "a", "Workshop on Linked Data."),
    ],
  });
  assert.equal(doc.title, "Ha-Shir shel tinyana ...");
  assert.deepEqual(doc.creators, ["Conference on Catalogs", "Workshop on Linked Data"]);
});

Deno.test("invalid tags and subfield codes: kept by the reader, dropped and counted by the sanitizer", async () => {
  const record: MarcRecord = {
    leader: "00000nam a2200000   4500",
    fields: [
      { tag: "001", value: "b1" },
      df("020", " ", " ", "a", "0306406152"),
      df("245", "0", "0", "a", "Title"),
      df("260", " ", " ", "a", "Paris :", "b", "Publisher,", "c", "1900."),
    ],
  };
  const bytes = encodeIso2709(record);
  // 020's tag becomes "0 2"; 260 $b's code byte a blank, 245 $a's a non-ASCII byte.
  const at = (tag: string) => {
    for (let e = 24; bytes[e] !== 0x1e; e += 12) {
      if (String.fromCharCode(...bytes.subarray(e, e + 3)) === tag) {
        return {
          entry: e,
          start: Number(String.fromCharCode(...bytes.subarray(12, 17))) +
            Number(String.fromCharCode(...bytes.subarray(e + 7, e + 12))),
        };
      }
    }
    throw new Error(tag);
  };
  const f260 = at("260");
  const f245 = at("245");
  bytes[f260.start + 2 + 1 + "Paris :".length + 1 + 1] = 0x20; // 260 $b -> $" "
  bytes[f245.start + 3] = 0xc3; // 245 $a -> non-ASCII code
  bytes.set([0x30, 0x20, 0x32], at("020").entry);
  const [r] = await readBack([bytes]);
  assert.ok(r && r.ok);
  const tags = r.record.fields.map((f) => f.tag);
  assert.deepEqual(tags, ["001", "0 2", "245", "260"]);
  const f = (t: string) => r.record.fields.find((x) => x.tag === t) as DataField;
  assert.deepEqual(f("0 2").subfields, [{ code: "a", value: "0306406152" }]);
  assert.deepEqual(f("260").subfields.map((s) => [s.code, s.value]), [["a", "Paris :"], [
    " ",
    "Publisher,",
  ], ["c", "1900."]]);
  assert.equal(f("245").subfields[0]!.value, "Title".slice(0));
  assert.deepEqual(
    r.warnings.map((w) => w.defect).sort(),
    ["subfield-code", "subfield-code", "tag", "utf8"].sort(),
  );
  const { record: clean, stripped } = sanitizeRecord(r.record);
  assert.deepEqual(clean.fields.map((x) => x.tag), ["001", "260"]);
  assert.deepEqual(stripped, { "(invalid tag)": 1, "245": 1, "260": 1 });
  // What is published can be written and read back.
  await using tmp = await withTmpDir("carrel-invalid-");
  const c = toCatalogRecord(r.record);
  assert.ok(c.ok);
  const out = await writeCatalogFiles(tmp.path, [c.record]);
  assert.equal(out.written, 1);
  assert.deepEqual(out.unencodable, []);
  let n = 0;
  for await (const x of readMarcXml((await Deno.open(out.files.xml)).readable)) if (x.ok) n++;
  assert.equal(n, 1);
});
