import assert from "node:assert/strict";
import { join } from "node:path";
import { batched, Dataset, recordBatches, Workspace } from "../../core/mod.ts";
import { withTmpDir } from "../test_utils.ts";

/** Records with the values a dataset must give back as JSON would. */
function sample(n: number): Record<string, unknown>[] {
  return Array.from({ length: n }, (_, i) => ({
    id: String(i),
    n: i % 3 === 0 ? -0 : i,
    at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
    note: i % 5 === 0 ? "tab\there\nnewline \u2028 \\" : null,
    gone: undefined,
    nested: { list: [i, "x"] },
  }));
}

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

for (const encrypted of [false, true]) {
  const kind = encrypted ? "encrypted" : "plain";
  Deno.test(`dataset (${kind}): batches and records give what JSON would, in order`, async () => {
    await using dir = await withTmpDir();
    const ws = new Workspace(dir.path, "d@2026-01-01T00:00:00Z");
    const records = sample(5000);
    const out = await ws.create("t", "data", encrypted);
    // Mixed writes: one by one, in arrays, from a batched source.
    await out.write(records[0]);
    await out.writeBatch(records.slice(1, 1000));
    await out.writeAll(batched(async function* () {
      yield records.slice(1000, 3000);
      yield records.slice(3000);
    }));
    const dataset = await out.close();
    assert.equal(dataset.records, 5000);
    const expected = records.map((r) => JSON.parse(JSON.stringify(r)));

    const batches = await collect(dataset.batches());
    assert.ok(batches.length > 1, "a 5000-record dataset comes in more than one array");
    assert.deepEqual(batches.flat(), expected);
    assert.deepEqual(await collect(dataset), expected);
    assert.deepEqual((await collect(recordBatches(dataset))).flat(), expected);
  });
}

Deno.test("dataset: an encrypted dataset holds no plaintext and is refused under another key", async () => {
  await using dir = await withTmpDir();
  const ws = new Workspace(dir.path, "d@2026-01-01T00:00:00Z");
  const out = await ws.create("t", "data", true);
  await out.writeBatch([{ secret: "SENTINEL-VALUE-123" }, { secret: "SENTINEL-VALUE-456" }]);
  const dataset = await out.close();
  const bytes = await Deno.readFile(join(dir.path, dataset.ref.$dataset.path));
  assert.ok(!new TextDecoder("latin1").decode(bytes).includes("SENTINEL"));
  const other = new Workspace(dir.path, "d@2026-01-01T00:00:00Z");
  await assert.rejects(
    () => collect(other.open(dataset.ref).batches()),
    /written by another process \(its key is gone\) or altered/,
  );
});

Deno.test("dataset: a line that is not JSON fails the read as it would line by line", async () => {
  await using dir = await withTmpDir();
  const ws = new Workspace(dir.path, "d@2026-01-01T00:00:00Z");
  const out = await ws.create("t", "data", false);
  await out.writeBatch([{ a: 1 }, { a: 2 }]);
  const dataset = await out.close();
  const path = join(dir.path, dataset.ref.$dataset.path);
  await Deno.writeTextFile(path, '{"a":1}\n{"a":\n{"a":3}\n');
  await assert.rejects(() => collect(new Dataset(dataset.ref, ws).batches()), SyntaxError);
});

Deno.test("jsonRecord gives what a dataset would give back, as a copy", async (t) => {
  const { jsonRecord } = await import("../../core/dataset.ts");
  const viaJson = (r: unknown) => JSON.parse(JSON.stringify(r));
  const flat = { id: "7", n: 3.5, ok: true, none: null, text: "a\tb" };
  const cases: [string, unknown][] = [
    ["a flat record", flat],
    ["-0", { a: -0, b: 1 }],
    ["-0, NaN, Infinity", { a: -0, b: NaN, c: Infinity, d: 1 }],
    ["dates, undefined, functions", { at: new Date(0), u: undefined, f: () => 1, s: "x" }],
    ["nested values", { list: [1, { at: new Date(0) }], o: { u: undefined } }],
    ["a __proto__ key", JSON.parse('{"__proto__": "x", "a": 1}')],
    ["a __proto__ key beside a date", JSON.parse('{"__proto__": {"y": 2}, "a": 1}')],
    ["a symbol key", { a: "1", [Symbol("s")]: "hidden" }],
  ];
  cases[5]![1] = Object.assign(cases[5]![1] as object, { at: new Date(0) });
  for (const [name, record] of cases) {
    await t.step(name, () => {
      const copy = jsonRecord(record) as Record<string, unknown>;
      assert.deepEqual(copy, viaJson(record));
      assert.equal(Object.getPrototypeOf(copy), Object.prototype);
      assert.deepEqual(Object.getOwnPropertySymbols(copy), []);
      assert.notEqual(copy, record);
    });
  }
  // A copy: changing it leaves the original as it was.
  const copy = jsonRecord(flat) as Record<string, unknown>;
  copy.id = "8";
  assert.equal(flat.id, "7");
});
