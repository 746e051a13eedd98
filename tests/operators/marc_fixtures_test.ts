import assert from "node:assert/strict";
import {
  countHoldings,
  FIXTURE_DEFECTS,
  fixtureDefectAt,
  type FixtureOptions,
  fixtureRecord,
  generateIso2709,
  generateMarcRecords,
  type MarcDefect,
  type MarcReadResult,
  type MarcRecord,
  readIso2709,
  sanitizeRecord,
  toDiscovery,
} from "../../operators/marc.ts";

function sameFields(actual: MarcRecord, expected: MarcRecord): void {
  assert.deepEqual(actual.fields, expected.fields);
}

async function readAll(opts: FixtureOptions): Promise<MarcReadResult[]> {
  const out: MarcReadResult[] = [];
  for await (const r of readIso2709(generateIso2709(opts))) out.push(r);
  return out;
}

Deno.test("fixtures are deterministic per seed and index", () => {
  assert.deepEqual(fixtureRecord(7, 3), fixtureRecord(7, 3));
  assert.notDeepEqual(fixtureRecord(7, 3), fixtureRecord(7, 4));
  const list = [...generateMarcRecords({ count: 5, seed: 3 })];
  assert.equal(list.length, 5);
  assert.deepEqual(list[4], fixtureRecord(5, 3));
});

Deno.test("clean fixtures read back identically in UTF-8 and MARC-8", async () => {
  for (const encoding of ["utf-8", "marc-8"] as const) {
    const results = await readAll({ count: 300, seed: 11, encoding, chunkBytes: 1000 });
    assert.equal(results.length, 300);
    let diacritics = 0;
    let items = 0;
    let isbns = 0;
    results.forEach((r, i) => {
      assert.ok(r.ok, r.ok ? "" : r.reason);
      assert.deepEqual(r.warnings, []);
      const expected = fixtureRecord(i + 1, 11);
      sameFields(r.record, expected);
      const title = JSON.stringify(r.record.fields.find((f) => f.tag === "245"));
      if (/[\u0080-\uffff]/.test(title)) diacritics++;
      items += countHoldings(r.record);
      const { record } = sanitizeRecord(r.record);
      assert.ok(!JSON.stringify(record).includes("39999"), "barcodes are stripped");
      isbns += toDiscovery(record).isbns.length;
    });
    assert.ok(diacritics > 250, `titles with diacritics: ${diacritics}`);
    // 1-3 items per record.
    assert.ok(items >= 300 && items <= 900);
    // About 80% of records carry a valid ISBN, 10% an invalid one.
    assert.ok(isbns > 180 && isbns < 290, `valid ISBNs: ${isbns}`);
  }
});

const EXPECTED_WARNING: Record<string, MarcDefect | "quarantine"> = {
  "bad-length": "record-length",
  "non-numeric-length": "record-length",
  "bad-directory": "directory",
  "directory-past-data": "field-bounds",
  "missing-field-terminator": "field-terminator",
  "missing-record-terminator": "record-terminator",
  "bad-indicator": "indicator",
  "bad-subfield-code": "subfield-code",
};

Deno.test("every injected defect is recovered or quarantined and later records still read", async () => {
  for (const encoding of ["utf-8", "marc-8"] as const) {
    const opts: FixtureOptions = { count: 200, seed: 5, encoding, defectEvery: 7, chunkBytes: 777 };
    const results = await readAll(opts);
    const junk = Array.from({ length: 200 }, (_, i) =>
      fixtureDefectAt(i + 1, opts)).filter((d) =>
        d === "junk"
      ).length;
    assert.ok(junk >= 2);
    assert.equal(results.length, 200 + junk);
    assert.equal(results.filter((r) => !r.ok).length, junk);
    let k = 0;
    const seen = new Set<string>();
    for (let i = 1; i <= 200; i++) {
      const defect = fixtureDefectAt(i, opts);
      if (defect === "junk") {
        const q = results[k++]!;
        assert.ok(!q.ok);
        assert.match(q.reason, /^Cannot read MARC record \d+: /);
      }
      const r = results[k++]!;
      assert.ok(r.ok, r.ok ? "" : r.reason);
      assert.equal(
        (r.record.fields[0] as { value: string }).value,
        `crl${String(i).padStart(9, "0")}`,
      );
      if (defect === null || defect === "junk") {
        assert.deepEqual(r.warnings, [], `record ${i}`);
        sameFields(r.record, fixtureRecord(i, 5));
        continue;
      }
      seen.add(defect);
      const want = defect === "invalid-bytes"
        ? (encoding === "utf-8" ? "utf8" : "marc8")
        : EXPECTED_WARNING[defect];
      assert.ok(
        r.warnings.some((w) => w.defect === want),
        `record ${i} ${defect}: ${JSON.stringify(r.warnings)}`,
      );
    }
    assert.equal(k, results.length);
    assert.deepEqual([...seen].sort(), FIXTURE_DEFECTS.filter((d) => d !== "junk").sort());
  }
});

Deno.test("fixture stream is chunked and does not materialise the whole file", async () => {
  let chunks = 0;
  let largest = 0;
  let total = 0;
  for await (const c of generateIso2709({ count: 2000, chunkBytes: 8192 })) {
    chunks++;
    largest = Math.max(largest, c.length);
    total += c.length;
  }
  assert.ok(chunks > 50, `chunks: ${chunks}`);
  assert.ok(largest < 8192 + 4096, `largest chunk: ${largest}`);
  assert.ok(total > 2000 * 500);
});
