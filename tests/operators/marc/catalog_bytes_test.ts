/**
 * The catalog outputs byte for byte: a generated fixture with defects (MARC-8 ISO 2709 with
 * damaged records, MARCXML, a Koha export with Hebrew and Russian 880s, records without ids) read,
 * mapped and written as catalog_sync writes it (discovery JSON, MARCXML, ISO 2709, BIBFRAME RDF/XML
 * and JSON-LD, and the read and map quarantine with its counts), each file's SHA-256 pinned.
 *
 * The digests were taken with the codec as it stood before the speed work of issue 9; a change
 * that moves any byte of any output fails here. If a change of output is intended, say so in the
 * commit and pin the new digests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createHash } from "node:crypto";
import {
  type CatalogRecordValue,
  readMarcFiles,
  toCatalogRecord,
  writeBibframeFiles,
  writeCatalogFiles,
} from "../../../operators/mod.ts";
import type { DataField, MarcRecord } from "../../../operators/marc/mod.ts";
import { generateFixtures } from "../../../fixtures/main.ts";
import { generateIso2709 } from "../../../fixtures/marc.ts";
import { withTmpDir } from "../../test_utils.ts";

const PINNED: Record<string, string> = {
  "catalog.bibframe.jsonld": "befdd389ebbd6496e6dcea8aee9a96e771c7a7ebbb8a8624df34f076f9c87982",
  "catalog.bibframe.rdf": "e42c18fc94b824d95f5ccd9aad5429f5c28828aaa83f6a84203618720dd3cea7",
  "catalog.jsonl": "b41120becea4015454d4d9f949cbb1a218fce61392e9aa497dd4e3188da06994",
  "catalog.mrc": "274bf869bb11252066e11d2eb1383be6f3440213dca017d0334d11fbab4d1662",
  "catalog.xml": "556ea15a4e38ecf89fd6690daa2fda9adad6b771ea744ed3ad48dc415fe03d79",
  report: "d265eb6c327cee44defbe99a8fa40a1c0f789448a14f379ead0ec824a9b6638d",
};

const WORDS = [
  "Les aspirations :",
  "tinyana ...",
  "Smith, J.",
  "Jr.",
  "a/b =",
  "Ōsaka ;",
  "x & <y>",
];

/** Records with every tag the mappings read (the generator's records carry only some of them). */
function richRecord(i: number): MarcRecord {
  const w = (k: number) => WORDS[(i + k) % WORDS.length]!;
  const df = (tag: string, ind1: string, ind2: string, ...pairs: string[]): DataField => {
    const subfields = [];
    for (let k = 0; k < pairs.length; k += 2) {
      subfields.push({ code: pairs[k]!, value: pairs[k + 1]! });
    }
    return { tag, ind1, ind2, subfields };
  };
  const lang = ["eng", "heb", "rus", "fre", "xx1"][i % 5]!;
  return {
    leader: `00000n${"atcegijkmoprz"[i % 13]}m a2200000 i 4500`,
    fields: [
      { tag: "001", value: `rich${i}` },
      { tag: "005", value: i % 3 === 0 ? "bad" : `2024010${i % 9}123456.0` },
      { tag: "008", value: `240101s2020    xx            000 0 ${lang} d` },
      df("010", " ", " ", "a", `  20200${i}`),
      df("020", " ", " ", "a", i % 2 ? "0-306-40615-2 (pbk.)" : "9780306406157", "q", "hc"),
      df("022", " ", " ", "a", "0317-8471"),
      df("041", "0", " ", "a", "engfre", "a", "ger"),
      df("050", " ", "0", "a", `QA${i}.`, ...(i % 2 ? ["b", ".S6 /"] : [])),
      df("082", "0", "4", "a", "510 /"),
      ...(i % 4 === 0 ? [df("066", " ", " ", "c", "(2")] : []),
      df(
        ["100", "110", "111"][i % 3]!,
        String(i % 4),
        " ",
        "a",
        w(0),
        "d",
        "1900-",
        "e",
        "author.",
        "j",
        "chair",
        "4",
        "aut",
        "6",
        "880-01",
      ),
      df(
        "245",
        "1",
        "0",
        "a",
        w(1),
        "b",
        w(2),
        "n",
        "Part 1.",
        "p",
        w(3),
        "c",
        "by J. Smith.",
        "6",
        "880-02",
      ),
      df("250", " ", " ", "a", "2nd ed. /", "b", w(4)),
      df("260", " ", " ", "a", "Paris :", "b", w(5), "c", "1999."),
      df("264", " ", String(i % 5), "a", "London :", "b", w(6), "c", "©2001", "6", "880-03"),
      df("300", " ", " ", "a", "300 p. :", "b", "ill. ;", "c", "24 cm."),
      df("490", "0", " ", "a", w(0), "v", "v. 2"),
      df("500", " ", " ", "a", w(1)),
      df("501", " ", " ", "a", "With: other."),
      df("504", " ", " ", "a", "Includes index."),
      df("505", "0", " ", "a", w(2), "g", "1.", "r", w(3), "t", w(4)),
      df("520", " ", " ", "a", w(5)),
      df("546", " ", " ", "a", "In Hebrew."),
      ...["600", "610", "611", "630", "648", "650", "651", "655", "662"].map((tag, k) =>
        df(tag, "1", "0", "a", w(k), "x", "History", "v", "Sources.", "2", "lcsh")
      ),
      df(["700", "710", "711"][i % 3]!, "1", " ", "a", w(2), "e", "editor,", "4", "edt"),
      df("880", "1", " ", "6", "100-01/(2/r", "a", "שלום"),
      df("880", "1", "0", "6", "245-02/(N", "a", "Мир :", "b", "книга"),
      df("880", " ", "1", "6", "264-03", "a", "Москва"),
      df("880", " ", " ", "6", "500-00/(2/r", "a", "הערה"),
      df("852", " ", " ", "b", "MAIN", "h", "QA76", "i", ".S6", "x", "staff note"),
      df("945", " ", " ", "a", "QA 1", "l", "STACKS", "i", "31234000012345"),
      df("952", " ", " ", "a", "MAIN", "c", "REF", "o", "REF 1", "p", "39999000001"),
    ],
  };
}

function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

Deno.test("catalog outputs of a generated fixture with defects keep every byte", async () => {
  await using tmp = await withTmpDir("carrel-catalog-bytes-");
  await generateFixtures({
    out: join(tmp.path, "fx"),
    records: 700,
    circulations: 0,
    defectEvery: 29,
  });
  const input = join(tmp.path, "fx", "marc");
  const koha = await Deno.open(join(input, "koha.mrc"), { write: true, create: true });
  for await (
    const chunk of generateIso2709({
      count: 90,
      seed: 3,
      ids: "koha",
      vernacularEvery: 3,
      encoding: "marc-8",
      defectEvery: 7,
      defects: ["directory-one-short", "blank-subfield-code", "invalid-tag", "unterminated-record"],
    })
  ) await koha.write(chunk);
  koha.close();
  await Deno.writeFile(
    join(input, "noid.mrc"),
    new Uint8Array(
      await new Response(ReadableStream.from(generateIso2709({ count: 6, seed: 4, ids: "none" })))
        .arrayBuffer(),
    ),
  );

  const records: CatalogRecordValue[] = [];
  const report: unknown[] = [];
  for await (const r of readMarcFiles(input)) {
    if (!r.ok) {
      report.push(["read", r.file, r.position, r.defect, r.reason]);
      continue;
    }
    const c = toCatalogRecord(r.record, {}, { idFrom: "marc21" });
    if (!c.ok) {
      report.push(["map", r.file, r.position, c.reason, c.stripped]);
      continue;
    }
    report.push(["ok", r.warnings.map((w) => w.defect), c.warnings, c.idSource, c.stripped]);
    records.push(c.record);
  }
  for (let i = 0; i < 40; i++) {
    const c = toCatalogRecord(richRecord(i), {}, { idFrom: "marc21" });
    report.push(c.ok ? ["rich", c.warnings, c.idSource, c.stripped] : ["rich", c.reason]);
    if (c.ok) records.push(c.record);
  }
  const out = join(tmp.path, "out");
  const written = await writeCatalogFiles(out, records);
  const linked = await writeBibframeFiles(out, records);
  assert.equal(written.written, records.length);
  assert.equal(linked.written, records.length);
  const actual: Record<string, string> = {
    report: sha256(JSON.stringify(report)),
  };
  for (const name of [...Object.values(written.files), ...Object.values(linked.files)]) {
    actual[name.slice(out.length + 1)] = sha256(await Deno.readFile(name));
  }
  assert.ok(
    report.some((r) => (r as string[])[0] === "read"),
    "the fixture has unreadable records",
  );
  assert.deepEqual(actual, PINNED);
});
