import assert from "node:assert/strict";
import { z } from "zod";
import { CsvError, type CsvRow, parseCsv, readCsv } from "../../../operators/ils/csv.ts";

const SENTINEL = "Sentinel-Value-51c2";

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

const RFC_SAMPLE =
  'id,title,note\r\n1,"Moby ""Dick""",plain\r\n2,"two\r\nlines",\r\n\r\n3,,"a,b"\n4,x,"multi\nline\nnote"\n5,last,end';

const RFC_EXPECTED: CsvRow[] = [
  { ok: true, line: 1, fields: ["id", "title", "note"] },
  { ok: true, line: 2, fields: ["1", 'Moby "Dick"', "plain"] },
  { ok: true, line: 3, fields: ["2", "two\r\nlines", ""] },
  { ok: true, line: 6, fields: ["3", "", "a,b"] },
  { ok: true, line: 7, fields: ["4", "x", "multi\nline\nnote"] },
  { ok: true, line: 10, fields: ["5", "last", "end"] },
];

Deno.test("parseCsv handles RFC 4180 quoting, CRLF/LF, embedded newlines and blank lines", async () => {
  assert.deepEqual(await collect(parseCsv([RFC_SAMPLE])), RFC_EXPECTED);
  assert.deepEqual(await collect(parseCsv([RFC_SAMPLE + "\n"])), RFC_EXPECTED);
  assert.deepEqual(await collect(parseCsv(["a\rb\r"])), [
    { ok: true, line: 1, fields: ["a"] },
    { ok: true, line: 2, fields: ["b"] },
  ]);
  assert.deepEqual(await collect(parseCsv(['""\n,\n'])), [
    { ok: true, line: 1, fields: [""] },
    { ok: true, line: 2, fields: ["", ""] },
  ]);
  // A quote inside an unquoted field is kept literally.
  assert.deepEqual(await collect(parseCsv(['a 12" ruler,b\n'])), [{
    ok: true,
    line: 1,
    fields: ['a 12" ruler', "b"],
  }]);
  assert.deepEqual(await collect(parseCsv([""])), []);
});

Deno.test("parseCsv gives the same records for every chunk split, including inside UTF-8 and CRLF", async () => {
  const text = RFC_SAMPLE.replace("plain", "Zoë 📚 ñ");
  const bytes = new TextEncoder().encode(text);
  const expected = await collect(parseCsv([bytes]));
  assert.equal((expected[1] as { fields: string[] }).fields[2], "Zoë 📚 ñ");
  for (let cut = 0; cut <= bytes.length; cut++) {
    for (const second of [cut, Math.min(bytes.length, cut + 1), Math.min(bytes.length, cut + 3)]) {
      const parts = [bytes.subarray(0, cut), bytes.subarray(cut, second), bytes.subarray(second)];
      assert.deepEqual(await collect(parseCsv(parts)), expected, `split at ${cut}/${second}`);
    }
  }
});

Deno.test("parseCsv reads tab-separated Koha-style exports and other encodings", async () => {
  const tsv = 'borrowernumber\tsurname\tcardnumber\n12\t"O\'Brien\tJr"\tFAKE0001\n';
  assert.deepEqual(await collect(parseCsv([tsv], { delimiter: "\t" })), [
    { ok: true, line: 1, fields: ["borrowernumber", "surname", "cardnumber"] },
    { ok: true, line: 2, fields: ["12", "O'Brien\tJr", "FAKE0001"] },
  ]);
  const latin1 = new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x3b, 0x78, 0x0a]); // "café;x\n"
  assert.deepEqual(
    await collect(parseCsv([latin1], { delimiter: ";", encoding: "windows-1252" })),
    [
      { ok: true, line: 1, fields: ["café", "x"] },
    ],
  );
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x61, 0x2c, 0x62]);
  assert.deepEqual(await collect(parseCsv([bom])), [{ ok: true, line: 1, fields: ["a", "b"] }]);
  await assert.rejects(collect(parseCsv(["a"], { delimiter: "ab" })), CsvError);
  await assert.rejects(collect(parseCsv(["a"], { delimiter: '"' })), CsvError);
});

Deno.test("readCsv quarantines broken rows with reasons naming columns, never values", async () => {
  const input = [
    "id,name,email\n",
    `1,Ann,ann@example.invalid\n`,
    `2,${SENTINEL}\n`, // too few fields
    `3,"${SENTINEL}"x,e@example.invalid\n`, // junk after closing quote
    `4,Bob,bob@example.invalid,${SENTINEL}\n`, // too many fields
    `5,Cy,cy@example.invalid\n`,
    `6,"${SENTINEL} never closed,z\n7,a,b\n`,
  ];
  const rows = await collect(readCsv(input));
  assert.deepEqual(rows, [
    { ok: true, line: 2, record: { id: "1", name: "Ann", email: "ann@example.invalid" } },
    { ok: false, line: 3, reason: "Expected 3 fields, found 2" },
    { ok: false, line: 4, reason: 'Unexpected character after closing quote in column 2 ("name")' },
    { ok: false, line: 5, reason: "Expected 3 fields, found 4" },
    { ok: true, line: 6, record: { id: "5", name: "Cy", email: "cy@example.invalid" } },
    { ok: false, line: 7, reason: 'Unterminated quoted field in column 2 ("name")' },
  ]);
  for (const row of rows) if (!row.ok) assert.ok(!row.reason.includes(SENTINEL));
});

Deno.test("readCsv validates with a zod schema and reports the failing column only", async () => {
  const schema = z.object({
    borrowernumber: z.coerce.number().int().positive(),
    email: z.email().optional(),
    categorycode: z.enum(["PT", "ST"]),
  });
  const tsv = [
    "borrowernumber\temail\tcategorycode\textra\n",
    "1\tpat@example.invalid\tPT\tignored\n",
    "2\t\tST\t\n",
    `3\t${SENTINEL}\tPT\t\n`,
    `${SENTINEL}\t\t${SENTINEL}\t\n`,
  ];
  const rows = await collect(
    readCsv(tsv, { delimiter: "\t", columns: schema, emptyAs: "undefined" }),
  );
  assert.equal(rows.length, 4);
  assert.deepEqual(rows[0], {
    ok: true,
    line: 2,
    record: { borrowernumber: 1, email: "pat@example.invalid", categorycode: "PT" },
  });
  assert.deepEqual(rows[1], {
    ok: true,
    line: 3,
    record: { borrowernumber: 2, categorycode: "ST" },
  });
  const bad = rows[2]!;
  assert.equal(bad.ok, false);
  assert.ok(!bad.ok && bad.reason.startsWith('Column "email": '), JSON.stringify(bad));
  const worse = rows[3]!;
  assert.ok(
    !worse.ok && worse.reason.includes('Column "borrowernumber"') &&
      worse.reason.includes('Column "categorycode"'),
  );
  for (const row of rows) if (!row.ok) assert.ok(!row.reason.includes(SENTINEL), row.reason);

  await assert.rejects(
    collect(readCsv(["email,categorycode\n"], { columns: schema })),
    (err: Error) =>
      err instanceof CsvError &&
      err.message === 'Cannot read CSV: header has no column "borrowernumber"',
  );
});

Deno.test("readCsv supports header mappings, column lists, no header and empty-field handling", async () => {
  const mapped = await collect(
    readCsv(["Borrower Number,Surname,Secret\n7,Doe,x\n"], {
      columns: { "Borrower Number": "borrowernumber", Surname: "surname" },
    }),
  );
  assert.deepEqual(mapped, [{
    ok: true,
    line: 2,
    record: { borrowernumber: "7", surname: "Doe" },
  }]);

  const positional = await collect(
    readCsv(["1,,c\n"], { header: false, columns: ["a", "b", "c"], emptyAs: "null" }),
  );
  assert.deepEqual(positional, [{ ok: true, line: 1, record: { a: "1", b: null, c: "c" } }]);

  const kept = await collect(readCsv(["a,b,c\n1,2,3\n"], { columns: ["c", "a"] }));
  assert.deepEqual(kept, [{ ok: true, line: 2, record: { a: "1", c: "3" } }]);

  await assert.rejects(collect(readCsv(["a,a\n"])), /duplicate header column "a"/);
  await assert.rejects(collect(readCsv(['"a,b\n'])), /header on line 1 is malformed/);
  await assert.rejects(collect(readCsv(["1,2\n"], { header: false })), CsvError);
  await assert.rejects(
    collect(readCsv(["x\n"], { columns: { Missing: "m" } })),
    /header has no column "Missing"/,
  );
});

Deno.test("readCsv keeps memory bounded on over-long records and resumes after them", async () => {
  const long = "y".repeat(5000);
  const rows = await collect(
    readCsv([`a,b\n1,${long}\n2,ok\n3,"${long}\n`], { maxRecordChars: 1000 }),
  );
  assert.deepEqual(rows, [
    { ok: false, line: 2, reason: "Record exceeds 1000 characters" },
    { ok: true, line: 3, record: { a: "2", b: "ok" } },
    { ok: false, line: 4, reason: 'Unterminated quoted field in column 2 ("b")' },
  ]);
});

Deno.test("readCsv streams a file from a ReadableStream", async () => {
  const path = await Deno.makeTempFile({ suffix: ".csv" });
  try {
    const lines = ["id,title"];
    for (let i = 1; i <= 50_000; i++) lines.push(`${i},"Title ${i}, vol. ""${i % 7}"""`);
    await Deno.writeTextFile(path, lines.join("\r\n") + "\r\n");
    using file = await Deno.open(path);
    let count = 0;
    let last: Record<string, unknown> | undefined;
    for await (const row of readCsv(file.readable)) {
      assert.ok(row.ok);
      count++;
      last = row.record;
      assert.equal(row.line, count + 1);
    }
    assert.equal(count, 50_000);
    assert.deepEqual(last, { id: "50000", title: 'Title 50000, vol. "6"' });
  } finally {
    await Deno.remove(path);
  }
});
