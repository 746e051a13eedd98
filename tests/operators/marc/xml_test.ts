import assert from "node:assert/strict";
import {
  type MarcReadResult,
  type MarcRecord,
  readMarcXml,
  toMarcXml,
  writeMarcXml,
} from "../../../operators/marc/mod.ts";

const records: MarcRecord[] = [
  {
    leader: "01782cas a2200409   4500",
    fields: [
      { tag: "001", value: "21061" },
      { tag: "008", value: "660524c19939999mduer p       0   |0eng b" },
      {
        tag: "245",
        ind1: "0",
        ind2: "0",
        subfields: [
          { code: "a", value: "Grune & Stratton <1998-> \"quoted\" 'x'" },
          { code: "b", value: "Québec, Dvořák, Ἀθῆναι" },
        ],
      },
      { tag: "500", ind1: " ", ind2: " ", subfields: [{ code: "a", value: "]]> and <![CDATA[" }] },
    ],
  },
  {
    leader: "00000nam a2200000 i 4500",
    fields: [{ tag: "001", value: "b2" }, {
      tag: "650",
      ind1: " ",
      ind2: "0",
      subfields: [{ code: "a", value: "Français" }],
    }],
  },
];

async function collect(src: string | Uint8Array[]): Promise<MarcReadResult[]> {
  const out: MarcReadResult[] = [];
  for await (const r of readMarcXml(src)) out.push(r);
  return out;
}

function chunked(s: string, size: number): Uint8Array[] {
  const bytes = new TextEncoder().encode(s);
  const out: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

Deno.test("MARCXML round trip through writeMarcXml and readMarcXml, any chunking", async () => {
  let xml = "";
  for await (const s of writeMarcXml(records)) xml += s;
  assert.ok(xml.startsWith('<?xml version="1.0" encoding="UTF-8"?>'));
  assert.ok(xml.includes("&amp;") && xml.includes("&lt;1998-&gt;"));
  for (const size of [1, 5, 64, 1 << 16]) {
    const results = await collect(chunked(xml, size));
    assert.equal(results.length, 2);
    results.forEach((r, i) => {
      assert.ok(r.ok, r.ok ? "" : r.reason);
      assert.deepEqual(r.record, records[i]);
      assert.deepEqual(r.warnings, []);
      assert.equal(r.position.index, i + 1);
    });
  }
});

Deno.test("readMarcXml handles prefixes, entities, CDATA, comments and bare records", async () => {
  const xml = `<?xml version="1.0"?>
<!DOCTYPE marc:collection>
<!-- exported -->
<marc:collection xmlns:marc="http://www.loc.gov/MARC21/slim">
  <marc:record>
    <marc:leader>00000nam a2200000 i 4500</marc:leader>
    <marc:controlfield tag='001'>x&#49;&#x32;</marc:controlfield>
    <marc:datafield tag="245" ind1="1" ind2="0">
      <marc:subfield code="a"><![CDATA[A <b> & c]]> tail &apos;q&apos; &quot;</marc:subfield>
      <marc:subfield code="c">Montre&#x301;al</marc:subfield>
    </marc:datafield>
  </marc:record>
</marc:collection>
<record><leader>00000nam a2200000 i 4500</leader><controlfield tag="001">y</controlfield></record>`;
  const results = await collect(xml);
  assert.equal(results.length, 2);
  const [a, bare] = results;
  assert.ok(a && a.ok && bare && bare.ok);
  assert.deepEqual(a.record.fields, [
    { tag: "001", value: "x12" },
    {
      tag: "245",
      ind1: "1",
      ind2: "0",
      subfields: [{ code: "a", value: "A <b> & c tail 'q' \"" }, { code: "c", value: "Montréal" }],
    },
  ]);
  assert.deepEqual(bare.record.fields, [{ tag: "001", value: "y" }]);
});

Deno.test("malformed MARCXML: warnings for bad attributes, failure for unclosed record", async () => {
  const xml = `<collection>
<record><leader>short</leader>
  <datafield tag="245" ind1="10" ind2=" "><subfield code="ab">x</subfield><subfield code="a">ok &bogus;</subfield></datafield>
</record>
<record><leader>00000nam a2200000 i 4500</leader><controlfield tag="001">lost
<record><leader>00000nam a2200000 i 4500</leader><controlfield tag="001">z</controlfield></record>
</collection>`;
  const results = await collect(xml);
  assert.deepEqual(results.map((r) => r.ok), [true, false, true]);
  const [first, broken, last] = results;
  assert.ok(first && first.ok && broken && !broken.ok && last && last.ok);
  assert.equal(first.record.leader.length, 24);
  assert.deepEqual(first.warnings.map((w) => w.defect).sort(), ["leader", "xml", "xml", "xml"]);
  assert.deepEqual(first.record.fields[0], {
    tag: "245",
    ind1: " ",
    ind2: " ",
    subfields: [{ code: "a", value: "ok &bogus;" }],
  });
  assert.equal(
    broken.reason,
    "Cannot read MARCXML record 2: record element is not closed before the next record",
  );
  assert.deepEqual(last.record.fields, [{ tag: "001", value: "z" }]);
  assert.equal(last.position.index, 3);
});

Deno.test("truncated MARCXML document quarantines the open record", async () => {
  const results = await collect(
    `<collection><record><leader>00000nam a2200000 i 4500</leader><controlfield tag="001">a</controlfield></record><record><leader>00000nam a22`,
  );
  assert.deepEqual(results.map((r) => r.ok), [true, false]);
  const last = results[1]!;
  assert.ok(!last.ok);
  assert.equal(last.reason, "Cannot read MARCXML record 2: document ends inside a record");
});

Deno.test("toMarcXml escapes attributes and replaces characters XML cannot hold", () => {
  const xml = toMarcXml({
    leader: "00000nam a2200000 i 4500",
    fields: [{ tag: "500", ind1: " ", ind2: " ", subfields: [{ code: "a", value: "a\u0007b<" }] }],
  });
  assert.ok(xml.startsWith('<record xmlns="http://www.loc.gov/MARC21/slim">'));
  assert.ok(xml.includes('<subfield code="a">a\ufffdb&lt;</subfield>'));
});
