import assert from "node:assert/strict";
import postgres from "postgres";
import { CopyTextReader } from "../../../operators/ils/sql_copy.ts";
import { sqlExtractBatches } from "../../../operators/ils/sql.ts";

const ROWS = ["1\tÉmile Zola\t\\N", "2\t日本語の本\tx\\ty", "3\t\t🙂 emoji", "4\tplain\tlast"];

Deno.test("CopyTextReader: lines gathered over many appends, cut anywhere, come out whole", () => {
  const bytes = new TextEncoder().encode(ROWS.map((r) => `${r}\n`).join(""));
  const expected = ROWS.map((r) => r.split("\t"));
  for (let size = 1; size <= bytes.length; size++) {
    // Appended in pieces of `size` bytes (splitting multi-byte characters), taken every 3rd.
    const reader = new CopyTextReader();
    const out: string[][] = [];
    for (let at = 0, n = 0; at < bytes.length; at += size, n++) {
      reader.append(bytes.subarray(at, at + size));
      if (n % 3 === 2) out.push(...reader.take());
    }
    out.push(...reader.take());
    assert.equal(reader.buffered, 0);
    assert.deepEqual(out, expected, `pieces of ${size} bytes`);
    reader.end();
    // The same pieces through lines(), one at a time.
    const one = new CopyTextReader();
    const lines: string[][] = [];
    for (let at = 0; at < bytes.length; at += size) {
      lines.push(...one.lines(bytes.subarray(at, at + size)));
    }
    assert.deepEqual(lines, expected);
  }
});

Deno.test("CopyTextReader: appended bytes are copied, so a reused chunk does not change them", () => {
  const reader = new CopyTextReader();
  const chunk = new TextEncoder().encode("1\ta\n");
  reader.append(chunk);
  chunk.fill(0x7a);
  reader.append(new TextEncoder().encode("2\tb\n"));
  assert.equal(reader.buffered, 8);
  assert.deepEqual(reader.take(), [["1", "a"], ["2", "b"]]);
});

Deno.test("CopyTextReader: an output ending mid-line, or mid-character, fails at the end", () => {
  const reader = new CopyTextReader();
  reader.append(new TextEncoder().encode("1\tpartial"));
  assert.throws(() => reader.end(), /middle of a line/);
  const cut = new CopyTextReader();
  cut.append(new TextEncoder().encode("1\té\n").subarray(0, 3));
  assert.deepEqual(cut.take(), []);
  assert.throws(() => cut.end());
});

const url = Deno.env.get("CARREL_TEST_DATABASE_URL");

Deno.test({
  name: "postgres extract: rows gathered while the consumer is slow come out whole and in order",
  ignore: url === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const admin = postgres(url!, { max: 1, onnotice: () => {} });
    const name = `carrel_copy_reader_${crypto.randomUUID().slice(0, 8)}`;
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const target = new URL(url!);
    target.pathname = `/${name}`;
    try {
      const query = "SELECT g AS id, repeat('é', g % 50) || E'\\t' || g::text AS label, " +
        "CASE WHEN g % 7 = 0 THEN NULL ELSE g * 2 END AS twice " +
        "FROM generate_series(1, $1::int) AS g ORDER BY g";
      const n = 30_000;
      let seen = 0;
      let batches = 0;
      for await (
        const batch of sqlExtractBatches<{ id: number; label: string; twice: number | null }>(
          target.toString(),
          query,
          [n],
          { batchSize: 1000 },
        )
      ) {
        batches++;
        for (const row of batch) {
          seen++;
          assert.equal(row.id, seen);
          assert.equal(row.label, `${"é".repeat(seen % 50)}\t${seen}`);
          assert.equal(row.twice, seen % 7 === 0 ? null : seen * 2);
        }
        // A slow consumer: the stream keeps sending meanwhile.
        if (batches % 5 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.equal(seen, n);
    } finally {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await admin.end();
    }
  },
});
