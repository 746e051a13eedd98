import assert from "node:assert/strict";
import {
  countHoldings,
  type DataField,
  dataFields,
  formatOf,
  indexDataFields,
  type MarcRecord,
  normalizeIsbn,
  normalizeIssn,
  sanitizeRecord,
  toDiscovery,
  trimIsbd,
} from "../../../operators/marc/mod.ts";

function df(tag: string, ind2: string, ...pairs: string[]): DataField {
  const subfields = [];
  for (let i = 0; i < pairs.length; i += 2) {
    subfields.push({ code: pairs[i]!, value: pairs[i + 1]! });
  }
  return { tag, ind1: " ", ind2, subfields };
}

Deno.test("normalizeIsbn converts, strips qualifiers and validates checksums", () => {
  assert.equal(normalizeIsbn("0-306-40615-2"), "9780306406157");
  assert.equal(normalizeIsbn("0306406152 (pbk.)"), "9780306406157");
  assert.equal(normalizeIsbn("978-0-306-40615-7 (hardcover ; alk. paper)"), "9780306406157");
  assert.equal(normalizeIsbn("0-8044-2957-x"), "9780804429573");
  assert.equal(normalizeIsbn("0-306-40615-3"), null);
  assert.equal(normalizeIsbn("978-0-306-40615-8"), null);
  assert.equal(normalizeIsbn("(pbk.)"), null);
  assert.equal(normalizeIsbn("12345"), null);
});

Deno.test("normalizeIssn validates the check character", () => {
  assert.equal(normalizeIssn("0009-7330"), "0009-7330");
  assert.equal(normalizeIssn("1524-4571 (Electronic)"), "1524-4571");
  assert.equal(normalizeIssn("0009-7331"), null);
  assert.equal(normalizeIssn("2434-561x"), "2434-561X");
});

const rec: MarcRecord = {
  leader: "00000nam a2200000 i 4500",
  fields: [
    { tag: "001", value: " b42 " },
    { tag: "008", value: "970701s1919    quc           000 0 fre d" },
    df("020", " ", "a", "0-306-40615-2 (pbk.)"),
    df("020", " ", "a", "9780306406157"),
    df("020", " ", "a", "0-000-00000-0x"),
    df("020", " ", "z", "0-8044-2957-X"),
    df("022", " ", "a", "0009-7331"),
    df("022", " ", "a", "1524-4571"),
    df("100", " ", "a", "Chouinard, Ernest,", "d", "1856-1924."),
    df("110", " ", "a", "Carrel Society."),
    df("245", "0", "a", "Les aspirations :", "b", "poésies canadiennes /", "c", "W. Chapman."),
    df("260", " ", "c", "1904."),
    df("264", "4", "c", "©1920"),
    df("264", "1", "a", "Québec :", "b", "Le Soleil,", "c", "[1919?]"),
    df("650", "0", "a", "Canadian poetry", "y", "19th century.", "0", "http://id"),
    df("651", "0", "a", "Québec (Province)", "x", "History."),
    df("659", " ", "a", "FR9110"),
    df("700", " ", "a", "Chapman, W."),
    df("710", " ", "a", "Carrel Society."),
    df("852", " ", "p", "39999000000017"),
    df("876", " ", "p", "39999000000017"),
    df("876", " ", "p", "39999000000025"),
    df("952", " ", "p", "39999000000033"),
    df("949", " ", "i", "39999000000041"),
  ],
};

Deno.test("toDiscovery maps the documented fields", () => {
  const holdings = countHoldings(rec);
  assert.equal(holdings, 4); // 952 + 949 + max(1 x 852, 2 x 876)
  const { record } = sanitizeRecord(rec);
  assert.equal(countHoldings(record), 0);
  const doc = toDiscovery(record, { holdingsCount: holdings });
  assert.deepEqual(doc, {
    id: "b42",
    title: "Les aspirations : poésies canadiennes",
    creators: ["Chouinard, Ernest", "Carrel Society", "Chapman, W."],
    isbns: ["9780306406157"],
    issn: "1524-4571",
    year: 1919,
    language: "fre",
    subjects: ["Canadian poetry -- 19th century", "Québec (Province) -- History"],
    format: "book",
    holdings_count: 4,
  });
});

Deno.test("toDiscovery falls back to 260 $c, 008 dates and 041 $a", () => {
  const base: MarcRecord = {
    leader: "00000cas a2200000   4500",
    fields: [
      { tag: "008", value: "970701s1887    quc           000 0     d" },
      df("041", " ", "a", "engfre"),
      df("260", " ", "c", "c1901."),
    ],
  };
  const a = toDiscovery(base);
  assert.equal(a.year, 1901);
  assert.equal(a.language, "eng");
  assert.equal(a.format, "serial");
  assert.equal(a.id, null);
  assert.equal(a.title, null);
  assert.equal(a.holdings_count, 0);
  const b = toDiscovery({ ...base, fields: base.fields.slice(0, 1) });
  assert.equal(b.year, 1887);
  assert.equal(b.language, null);
});

Deno.test("formatOf covers the leader/06-07 families", () => {
  const f = (t: string, l: string) => formatOf(`00000n${t}${l} a2200000   4500`);
  assert.equal(f("a", "m"), "book");
  assert.equal(f("a", "s"), "serial");
  assert.equal(f("a", "i"), "serial");
  assert.equal(f("e", "m"), "map");
  assert.equal(f("c", "m"), "score");
  assert.equal(f("g", "m"), "video");
  assert.equal(f("j", "m"), "music");
  assert.equal(f("i", "m"), "audio");
  assert.equal(f("m", "m"), "computer file");
  assert.equal(f("t", "m"), "manuscript");
  assert.equal(f("z", "m"), "unknown");
});

/** The regular-expression definition of trimIsbd: the oracle its scanning version must match. */
function trimIsbdByRegex(s: string): string {
  const trailing = /[\s/:;,=]+$/;
  let t = s.trim().replace(trailing, "");
  if (
    t.endsWith(".") && !t.endsWith("...") && !/(?:^|[\s.])\p{Lu}\.$/u.test(t) &&
    !/\b(?:Jr|Sr|Dr|St|etc)\.$/.test(t)
  ) {
    t = t.slice(0, -1).replace(trailing, "");
  }
  return t.trim();
}

Deno.test("trimIsbd trims like its regular-expression definition, every whitespace included", () => {
  // Every character of \s (and near misses), ISBD punctuation, capitals, abbreviations, surrogates.
  const alphabet = [
    ..."\t\n\v\f\r \u00a0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000\ufeff",
    ..."\u0008\u000e\u001f\u007f\u0085\u180e\u200b\u200c\u2060",
    ..."/:;,=.-()[]",
    ..."aAbWzZÉé",
    "Jr",
    "etc",
    "St",
    "\ud83d\ude00",
    "\ud83d",
  ];
  let seed = 7;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 16;
  for (let i = 0; i < 20_000; i++) {
    let s = "";
    const n = next() % 12;
    for (let k = 0; k < n; k++) s += alphabet[next() % alphabet.length];
    assert.equal(trimIsbd(s), trimIsbdByRegex(s), `case ${i}: ${JSON.stringify(s)}`);
  }
  const fixed = [
    "Les aspirations :",
    "tinyana ...",
    "Smith, J.",
    "Smith, Jr.",
    "x. /",
    " .",
    "x/\u3000/",
  ];
  for (const s of fixed) {
    assert.equal(trimIsbd(s), trimIsbdByRegex(s));
  }
});

Deno.test("indexDataFields finds the fields dataFields finds, in record order", () => {
  const record: MarcRecord = {
    leader: "00000nam a2200000   4500",
    fields: [
      { tag: "001", value: "b1" },
      df("650", "0", "a", "x"),
      df("100", " ", "a", "y"),
      df("650", "7", "a", "z"),
      { tag: "005", value: "2024" },
      df("700", " ", "a", "w"),
      df("110", " ", "a", "v"),
    ],
  };
  const index = indexDataFields(record);
  assert.deepEqual(index.all, dataFields(record));
  for (const tag of ["650", "100", "001", "999"]) {
    assert.deepEqual(index.tagged(tag), dataFields(record, tag));
  }
  for (const tags of [["100", "110", "700"], ["650", "001"], []]) {
    assert.deepEqual(index.anyOf(tags), dataFields(record, ...tags).filter(() => tags.length > 0));
  }
  assert.equal(index.tagged("650")[1], record.fields[3]);
});
