/**
 * BIBFRAME 2.0 output: both serializations are parsed back with maintained RDF libraries
 * (rdfxml-streaming-parser for RDF/XML, jsonld for JSON-LD, n3 for N-Quads), must describe the
 * same graph (URDNA2015 canonical forms equal), use only BIBFRAME 2.0 terms (the list below, from
 * the published vocabulary), keep vernacular forms, and never carry a barcode, a nonpublic note,
 * circulation data or a local administrative field.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import jsonld from "jsonld";
import { Parser, type Quad, Writer } from "n3";
import { RdfXmlParser } from "rdfxml-streaming-parser";
import {
  type CatalogRecordValue,
  toCatalogRecord,
  writeBibframeFiles,
} from "../../../operators/mod.ts";
import {
  type BfNode,
  bibframeRdfXml,
  type DataField,
  type MarcRecord,
} from "../../../operators/marc/mod.ts";
import { fixtureRecord } from "../../../fixtures/marc.ts";
import { withTmpDir } from "../../test_utils.ts";

const BF = "http://id.loc.gov/ontologies/bibframe/";
const RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
const RDFS = "http://www.w3.org/2000/01/rdf-schema#";

/** BIBFRAME 2.0 classes (id.loc.gov/ontologies/bibframe), the part a MARC bib record can need. */
const BF2_CLASSES = new Set([
  "AdminMetadata",
  "Agent",
  "Audio",
  "Cartography",
  "Classification",
  "ClassificationDdc",
  "ClassificationLcc",
  "ClassificationNlm",
  "ClassificationUdc",
  "Contribution",
  "Dataset",
  "Distribution",
  "Electronic",
  "Extent",
  "Family",
  "GenerationProcess",
  "GenreForm",
  "Identifier",
  "Instance",
  "Isbn",
  "Ismn",
  "Issn",
  "Item",
  "Jurisdiction",
  "Language",
  "Lccn",
  "Local",
  "Manufacture",
  "Manuscript",
  "Meeting",
  "MixedMaterial",
  "MovingImage",
  "Multimedia",
  "NotatedMovement",
  "NotatedMusic",
  "Note",
  "Object",
  "Organization",
  "Person",
  "Place",
  "Print",
  "Production",
  "ProvisionActivity",
  "Publication",
  "Role",
  "ShelfMark",
  "ShelfMarkDdc",
  "ShelfMarkLcc",
  "StillImage",
  "Sublocation",
  "Summary",
  "TableOfContents",
  "Tactile",
  "Temporal",
  "Text",
  "Title",
  "Topic",
  "VariantTitle",
  "Work",
]);

/** BIBFRAME 2.0 properties, same scope. */
const BF2_PROPERTIES = new Set([
  "adminMetadata",
  "agent",
  "changeDate",
  "classification",
  "classificationPortion",
  "contribution",
  "copyrightDate",
  "date",
  "dimensions",
  "editionStatement",
  "extent",
  "generationProcess",
  "genreForm",
  "hasInstance",
  "hasItem",
  "hasSeries",
  "identifiedBy",
  "instanceOf",
  "itemOf",
  "itemPortion",
  "language",
  "mainTitle",
  "note",
  "noteType",
  "partName",
  "partNumber",
  "physicalLocation",
  "place",
  "provisionActivity",
  "provisionActivityStatement",
  "qualifier",
  "responsibilityStatement",
  "role",
  "seriesStatement",
  "shelfMark",
  "subject",
  "sublocation",
  "subtitle",
  "summary",
  "tableOfContents",
  "title",
]);

/** Never in any serialization. */
const SENTINEL_BARCODE = "39999876543210";
const SENTINEL_NOTE = "ZZNONPUBLIC staff note";
const SECRETS = [
  SENTINEL_BARCODE,
  SENTINEL_NOTE,
  "Donor Dana",
  "Local binding",
  "2026-03-01",
  "12.95",
];

function df(tag: string, ind1: string, ind2: string, ...pairs: string[]): DataField {
  const subfields = [];
  for (let i = 0; i < pairs.length; i += 2) {
    subfields.push({ code: pairs[i]!, value: pairs[i + 1]! });
  }
  return { tag, ind1, ind2, subfields };
}

/** A Koha record full of what must not be published. */
function leakyRecord(): MarcRecord {
  return {
    leader: "00000nam a2200000 i 4500",
    fields: [
      { tag: "005", value: "20250102030405.0" },
      { tag: "008", value: "250101s2020    xx            000 0 eng d" },
      df("010", " ", " ", "a", "  2020012345"),
      df("020", " ", " ", "a", "9780306406157 (pbk.)"),
      df("050", "0", "0", "a", "QA76.73", "b", ".J38 2020"),
      df("111", "2", " ", "a", "Conference on Catalogs", "d", "(2019 :", "c", "Oslo)"),
      df(
        "245",
        "1",
        "0",
        "a",
        "Proceedings :",
        "b",
        "catalogs and privacy ...",
        "c",
        "edited by A. Editor.",
      ),
      df("264", " ", "1", "a", "Oslo :", "b", "Carrel Press,", "c", "2020."),
      df("264", " ", "4", "c", "©2020"),
      df("300", " ", " ", "a", "xii, 300 pages ;", "c", "24 cm."),
      df("500", " ", " ", "a", "Includes index."),
      df("541", "0", " ", "a", "Donor Dana", "d", "2019."),
      df("583", "1", " ", "a", "condition reviewed", "x", SENTINEL_NOTE),
      df("590", " ", " ", "a", "Local binding note."),
      df("650", " ", "0", "a", "Library catalogs", "x", "Privacy."),
      df("655", " ", "7", "a", "Conference papers and proceedings.", "2", "lcgft"),
      df(
        "852",
        "0",
        " ",
        "a",
        "CRL",
        "b",
        "MAIN",
        "c",
        "STACKS",
        "h",
        "QA76.73",
        "i",
        ".J38",
        "p",
        SENTINEL_BARCODE,
        "x",
        SENTINEL_NOTE,
      ),
      df("876", " ", " ", "a", "1", "p", SENTINEL_BARCODE, "x", SENTINEL_NOTE, "c", "12.95"),
      df(
        "952",
        " ",
        " ",
        "a",
        "MAIN",
        "c",
        "REF",
        "o",
        "QA76.73 .J38",
        "p",
        SENTINEL_BARCODE,
        "l",
        "17",
        "q",
        "2026-03-01",
        "s",
        "2026-03-01",
        "x",
        SENTINEL_NOTE,
        "g",
        "12.95",
      ),
      df("999", " ", " ", "c", "4242", "d", "4242"),
    ],
  };
}

function catalog(record: MarcRecord, idFrom: string): CatalogRecordValue {
  const c = toCatalogRecord(record, {}, { idFrom });
  assert.ok(c.ok);
  return c.record;
}

async function parseRdfXml(text: string): Promise<Quad[]> {
  const parser = new RdfXmlParser();
  const quads: Quad[] = [];
  const done = new Promise<void>((resolve, reject) => {
    parser.on("data", (q: Quad) => quads.push(q));
    parser.on("end", () => resolve());
    parser.on("error", reject);
  });
  parser.write(text);
  parser.end();
  await done;
  return quads;
}

const nquads = (quads: Quad[]) => new Writer({ format: "N-Quads" }).quadsToString(quads);

Deno.test("BIBFRAME RDF/XML and JSON-LD parse back to the same graph of BIBFRAME 2.0 terms", async () => {
  await using tmp = await withTmpDir("carrel-bibframe-");
  const records = [
    catalog(leakyRecord(), "koha"),
    catalog(fixtureRecord(3, 1, { vernacularEvery: 3 }), "marc21"), // Hebrew
    catalog(fixtureRecord(6, 1, { vernacularEvery: 3 }), "marc21"), // Russian
    catalog(fixtureRecord(7, 1), "marc21"), // 945 or 852 or 952 items
  ];
  const out = await writeBibframeFiles(tmp.path, records, {
    baseUri: "https://catalog.example.org/",
  });
  assert.equal(out.written, 4);
  const rdfText = await Deno.readTextFile(join(tmp.path, "catalog.bibframe.rdf"));
  const jsonText = await Deno.readTextFile(join(tmp.path, "catalog.bibframe.jsonld"));

  const fromXml = await parseRdfXml(rdfText);
  const fromJson = new Parser({ format: "N-Quads" }).parse(
    await jsonld.toRDF(JSON.parse(jsonText), { format: "application/n-quads" }) as string,
  );
  assert.ok(fromXml.length > 100, `${fromXml.length} triples`);
  assert.equal(fromXml.length, fromJson.length);
  const canon = (q: Quad[]) =>
    jsonld.canonize(nquads(q), { algorithm: "URDNA2015", inputFormat: "application/n-quads" });
  assert.equal(await canon(fromXml), await canon(fromJson));

  // Every class and property is a BIBFRAME 2.0 term (or rdf:type, rdf:value, rdfs:label).
  for (const q of fromXml) {
    const p = q.predicate.value;
    if (p === `${RDF}type`) {
      assert.ok(q.object.value.startsWith(BF), q.object.value);
      assert.ok(BF2_CLASSES.has(q.object.value.slice(BF.length)), `class ${q.object.value}`);
    } else if (p !== `${RDF}value` && p !== `${RDFS}label`) {
      assert.ok(p.startsWith(BF) && BF2_PROPERTIES.has(p.slice(BF.length)), `property ${p}`);
    }
  }

  // The privacy filter: no barcode, nonpublic note, circulation datum, price or local note.
  for (const secret of SECRETS) {
    assert.ok(!rdfText.includes(secret), `RDF/XML carries "${secret}"`);
    assert.ok(!jsonText.includes(secret), `JSON-LD carries "${secret}"`);
  }
  assert.ok(!/39999\d{9}/.test(rdfText + jsonText), "no barcode-shaped value");

  // Items: only itemOf, a shelving location and a call number.
  const bySubject = new Map<string, Quad[]>();
  for (const q of fromXml) {
    const list = bySubject.get(q.subject.value) ?? [];
    list.push(q);
    bySubject.set(q.subject.value, list);
  }
  const items = fromXml.filter((q) =>
    q.predicate.value === `${RDF}type` && q.object.value === `${BF}Item`
  );
  assert.ok(items.length >= 3, `${items.length} items`);
  for (const item of items) {
    const props = new Set(bySubject.get(item.subject.value)!.map((q) => q.predicate.value));
    for (const p of props) {
      assert.ok(
        [`${RDF}type`, `${BF}itemOf`, `${BF}sublocation`, `${BF}shelfMark`].includes(p),
        `item property ${p}`,
      );
    }
  }
  const koha = "https://catalog.example.org/4242";
  const label = (s: string, p: string) =>
    fromXml.filter((q) => q.subject.value === s && q.predicate.value === p).map((q) => q.object);
  const [kohaItem] = label(`${koha}#Item1`, `${BF}shelfMark`);
  assert.ok(kohaItem);
  assert.deepEqual(label(kohaItem.value, `${RDFS}label`).map((o) => o.value), ["QA76.73 .J38"]);

  // Work, Instance, identifiers, language, meeting as a contributor, the ellipsis kept.
  const types = (s: string) => label(s, `${RDF}type`).map((o) => o.value.slice(BF.length)).sort();
  assert.deepEqual(types(`${koha}#Work`), ["Text", "Work"]);
  assert.deepEqual(types(`${koha}#Instance`), ["Instance", "Print"]);
  assert.deepEqual(label(`${koha}#Work`, `${BF}language`).map((o) => o.value), [
    "http://id.loc.gov/vocabulary/languages/eng",
  ]);
  const values = fromXml.filter((q) => q.predicate.value === `${RDF}value`).map((q) =>
    q.object.value
  );
  for (const v of ["9780306406157", "2020012345", "4242"]) assert.ok(values.includes(v), v);
  const literals = fromXml.filter((q) => q.object.termType === "Literal").map((q) =>
    q.object.value
  );
  assert.ok(literals.includes("Conference on Catalogs (2019 : Oslo)"));
  assert.ok(literals.includes("catalogs and privacy ..."));

  // Vernacular forms, tagged with language and script, beside their romanized forms.
  const tagged = (value: string) =>
    fromXml.find((q) => q.object.termType === "Literal" && q.object.value === value)?.object as
      | { language: string }
      | undefined;
  assert.equal(tagged("בית־הספר העברי")?.language, "he-hebr");
  assert.equal(tagged("Bet-ha-sefer ha-ʻIvri")?.language, "");
  assert.equal(tagged("Война и мир")?.language, "ru-cyrl");
  assert.equal(tagged("Толстой, Лев")?.language, "ru-cyrl");
  assert.equal(tagged("Khudozhestvennai͡a literatura")?.language, "");
});

/** Hand-made nodes: no IRI, a language tag, a key repeated apart, text that XML escapes. */
const TRICKY: BfNode[] = [
  {
    iri: 'http://example.org/a"b<c>&d#Work',
    types: ["Work", "Text"],
    props: [
      ["title", { types: ["Title"], props: [["mainTitle", { literal: 'Q "x" \\ <y> & z' }]] }],
      ["note", { literal: "tab\there\u0001\ud800 \u2028", lang: "he-hebr" }],
      ["language", { iri: "http://id.loc.gov/vocabulary/languages/heb" }],
      ["title", { types: ["Title"], props: [["subtitle", { literal: "", lang: "" }]] }],
      ["rdfs:label", { literal: "\ufffe\uffff\r\n" }],
      ["bf:title", { literal: "prefixed" }],
    ],
  },
  { types: ["Instance"], props: [] },
];

Deno.test("bibframeRdfXml lays out nested nodes, types, languages and escapes line by line", () => {
  assert.equal(
    bibframeRdfXml(TRICKY),
    [
      '  <bf:Work rdf:about="http://example.org/a&quot;b&lt;c&gt;&amp;d#Work">',
      `    <rdf:type rdf:resource="http://id.loc.gov/ontologies/bibframe/Text"/>`,
      "    <bf:title>",
      "      <bf:Title>",
      '        <bf:mainTitle>Q "x" \\ &lt;y&gt; &amp; z</bf:mainTitle>',
      "      </bf:Title>",
      "    </bf:title>",
      '    <bf:note xml:lang="he-hebr">tab\there\ufffd\ud800 \u2028</bf:note>',
      '    <bf:language rdf:resource="http://id.loc.gov/vocabulary/languages/heb"/>',
      "    <bf:title>",
      "      <bf:Title>",
      "        <bf:subtitle></bf:subtitle>",
      "      </bf:Title>",
      "    </bf:title>",
      "    <rdfs:label>\ufffd\ufffd\r\n</rdfs:label>",
      "    <bf:title>prefixed</bf:title>",
      "  </bf:Work>",
      "  <bf:Instance>",
      "  </bf:Instance>",
      "",
    ].join("\n"),
  );
});
