import assert from "node:assert/strict";
import { task } from "../../core/mod.ts";
import { tokenize } from "../../operators/mod.ts";
import { TOKEN_CACHE_ENTRIES } from "../../operators/privacy/tokenize.ts";
import { withTmpDir } from "../test_utils.ts";
import { hmac, KEY, KEY_ENV, run } from "./run_helpers.ts";

/** The definition the operator must match: spread, then per field delete a renamed one, assign. */
function reference(
  record: Record<string, unknown>,
  fields: string[],
  rename: Record<string, string>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...record };
  for (const field of fields) {
    const raw = record[field];
    const target = rename[field] ?? field;
    if (target !== field) delete out[field];
    out[target] = raw === null || raw === undefined || raw === "" ? null : hmac(KEY, String(raw));
  }
  return out;
}

Deno.test("tokenize: batched tokens and records built without delete match the reference, key order included, across chunks", async () => {
  await using dir = await withTmpDir();
  const records: Record<string, unknown>[] = [];
  for (let i = 0; i < 700; i++) {
    const r: Record<string, unknown> = {};
    if (i % 3 === 0) r.patron_token = "stale"; // the rename target already present
    r.n = i;
    if (i % 5 !== 0) r.patron_id = i % 11 === 0 ? "" : i % 2 ? `P-${i % 37}` : 1000 + i;
    r.cardnumber = i % 7 === 0 ? null : `C-${i}`;
    r.tail = true;
    records.push(r);
  }
  await matchesReference(dir.path, records, ["patron_id", "cardnumber"]);
});

/** Tokenizes `records` (`patron_id` renamed to `patron_token`) and checks each against the reference. */
async function matchesReference(
  home: string,
  records: Record<string, unknown>[],
  fields: string[],
): Promise<void> {
  const rename = { patron_id: "patron_token" };
  const result = await run(home, {
    extract: task({ zone: "enclave", run: () => records }),
    tokens: tokenize({ after: ["extract"], fields, rename, env: KEY_ENV }),
  });
  assert.equal(result.state, "success", JSON.stringify(result.tasks));
  const out = result.outputs.get("tokens") as Record<string, unknown>[];
  assert.equal(out.length, records.length);
  for (const [i, r] of records.entries()) {
    const want = reference(r, fields, rename);
    assert.deepEqual(Object.keys(out[i]!), Object.keys(want), `key order of record ${i + 1}`);
    assert.deepEqual(out[i], want, `record ${i + 1}`);
  }
}

Deno.test("tokenize: a bad value names the first record in input order, even past a chunk boundary", async () => {
  await using dir = await withTmpDir();
  const records = Array.from({ length: 600 }, (_, i) => ({
    a: i === 400 ? { nested: true } : `A${i}`,
    b: i === 300 ? [1] : `B${i}`,
  }));
  const result = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => records }),
    tokens: tokenize({ after: ["extract"], fields: ["a", "b"], env: KEY_ENV }),
  });
  assert.equal(result.state, "failed");
  const t = result.tasks.find((x) => x.taskId === "tokens")!;
  assert.match(t.error ?? "", /field "b" of record 301: expected a string or number, got an array/);
});

Deno.test("tokenize: remembered tokens match fresh ones, past the memory's size and across chunks", async () => {
  await using dir = await withTmpDir();
  // More distinct values than are remembered, each coming back (a patron's next loans).
  const distinct = TOKEN_CACHE_ENTRIES + 3_000;
  const records: Record<string, unknown>[] = [];
  for (let i = 0; i < distinct + 6_000; i++) {
    const v = i < distinct ? i : (i * 7919) % distinct;
    records.push({ patron_id: i % 2 ? `P${v}` : v, other: i % 5 ? `O${v % 300}` : null });
  }
  await matchesReference(dir.path, records, ["patron_id", "other"]);
});
