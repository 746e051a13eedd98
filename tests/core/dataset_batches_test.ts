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
