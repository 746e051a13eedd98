import assert from "node:assert/strict";
import { z } from "zod";
import { CirculationEvent } from "../../../operators/ils/circulation.ts";
import { compileFastSchema } from "../../../operators/privacy/fast_schema.ts";
import { createGate, strictSchema } from "../../../operators/privacy/gate.ts";
import { createCheckpoint } from "../../../operators/privacy/checkpoint_checks.ts";

const TOKEN = "0123456789abcdef".repeat(4);

function event(i: number): Record<string, unknown> {
  return {
    circ_id: String(100 + i),
    patron_token: TOKEN,
    copy_id: String(7 * i),
    bib_id: i % 3 ? String(i) : null,
    circ_lib: i % 11,
    home_ou: i % 4 ? i % 13 : null,
    circ_modifier: i % 5 ? "book" : null,
    xact_start: "2026-01-05T14:03:00.000Z",
    due_date: i % 2 ? "2026-01-25T14:03:00.000Z" : null,
    checkin_time: null,
    stop_fines: i % 7 ? null : "LOST",
    renewal_remaining: i % 3,
    birth_year_band: i % 4 ? null : "1980-1989",
    postal_prefix: i % 6 ? null : "K1A",
  };
}

/** Values that break one field in every way a record could. */
const BAD_VALUES: unknown[] = [
  undefined,
  null,
  "",
  "x",
  "12a",
  "A".repeat(64),
  "1980-89",
  "K1A 0B1",
  "not a time",
  1.5,
  -0,
  NaN,
  Infinity,
  -Infinity,
  2 ** 60,
  true,
  {},
  [],
  ["1"],
  { toString: () => "1" },
];

/** Every record one mutation away from `base`: each field set to each bad value, removed, or an extra key. */
function mutations(base: Record<string, unknown>): unknown[] {
  const out: unknown[] = [base, null, [], "record", 42];
  for (const key of Object.keys(base)) {
    for (const value of BAD_VALUES) out.push({ ...base, [key]: value });
    const { [key]: _, ...rest } = base;
    out.push(rest);
  }
  out.push({ ...base, extra: null }, { ...base, __proto__: null }, { extra: 1, ...base });
  out.push(Object.assign(Object.create(null), base));
  return out;
}

Deno.test("fast schema: accepts exactly the circulation events zod accepts, and parses them alike", () => {
  const strict = strictSchema(CirculationEvent);
  const fast = compileFastSchema(strict);
  assert.ok(fast, "the circulation event schema compiles");
  let accepted = 0;
  let vouched = 0;
  for (let i = 0; i < 24; i++) {
    for (const value of mutations(event(i))) {
      const zod = strict.safeParse(value);
      const parsed = fast.parse(value);
      if (fast.accepts(value)) {
        vouched++;
        assert.ok(zod.success, `fast path accepted what zod rejects: ${JSON.stringify(value)}`);
      }
      if (parsed !== undefined) {
        assert.ok(zod.success);
        // Same keys in the same order, same values: what the gate writes is byte-identical.
        assert.equal(JSON.stringify(parsed), JSON.stringify(zod.data));
        assert.deepEqual(Object.keys(parsed), Object.keys(zod.data));
        assert.notEqual(parsed, value, "a fresh object, as zod gives");
      }
      if (zod.success) {
        accepted++;
        // Every valid event of this flat schema takes the fast path.
        assert.ok(fast.accepts(value) && parsed !== undefined);
      }
    }
  }
  assert.ok(accepted > 24 && vouched === accepted);
});

Deno.test("fast schema: checks zod has no cheaper form of still decide, and rewrites bail out", () => {
  const schema = z.object({
    code: z.string().length(3),
    email: z.email().nullable(),
    n: z.number().int().min(0).max(9).multipleOf(3),
    flag: z.boolean(),
    nested: z.object({ id: z.string().min(1) }).strict(),
    loose: z.object({ a: z.string() }),
  }).strict();
  const fast = compileFastSchema(schema);
  assert.ok(fast);
  const good = {
    code: "abc",
    email: "a@example.invalid",
    n: 6,
    flag: false,
    nested: { id: "x" },
    loose: { a: "y", dropped: 1 },
  };
  const cases: unknown[] = [
    good,
    { ...good, code: "abcd" },
    { ...good, email: "nope" },
    { ...good, email: null },
    { ...good, n: 4 },
    { ...good, n: 12 },
    { ...good, n: -3 },
    { ...good, flag: "false" },
    { ...good, nested: { id: "" } },
    { ...good, nested: { id: "x", more: 1 } },
    { ...good, loose: { a: 1 } },
    { ...good, loose: null },
  ];
  for (const value of cases) {
    const zod = schema.safeParse(value);
    assert.equal(fast.accepts(value), zod.success, JSON.stringify(value));
    const parsed = fast.parse(value);
    assert.equal(parsed !== undefined, zod.success);
    // A non-strict object drops unknown keys from its output, as zod does.
    if (parsed) assert.equal(JSON.stringify(parsed), JSON.stringify(zod.data));
  }
  // What the fast path does not know, zod alone decides: no fast path at all.
  for (
    const unknown of [
      z.object({ a: z.string().trim() }),
      z.object({ a: z.string().transform((s) => s.length) }),
      z.object({ a: z.string().optional() }),
      z.object({ a: z.coerce.number() }),
      z.object({ a: z.array(z.string()) }),
      z.object({ a: z.string() }).refine(() => true),
      z.object({ a: z.string() }).passthrough(),
      z.string(),
    ]
  ) {
    assert.equal(compileFastSchema(unknown as z.ZodType), undefined);
  }
});

Deno.test("fast schema: a refinement's falsy or async answer is zod's to judge", () => {
  let calls = 0;
  const schema = z.object({
    a: z.string().refine((v) => {
      calls++;
      return v === "ok" ? 1 : "";
    }),
    b: z.string().refine(async () => await Promise.resolve(true)),
  }).strict();
  const fast = compileFastSchema(schema)!;
  assert.equal(fast.accepts({ a: "no", b: "x" }), false);
  // A promise never passes the fast path (a synchronous zod parse throws on it).
  assert.equal(fast.accepts({ a: "ok", b: "x" }), false);
  assert.ok(calls >= 2);
});

Deno.test("gate and checkpoint give the same results with the fast path as zod alone", () => {
  const gate = createGate({ schema: CirculationEvent, onInvalid: "quarantine" });
  const checkpoint = createCheckpoint({ tokenized: ["patron_token"], schema: CirculationEvent });
  const strict = strictSchema(CirculationEvent);
  let position = 0;
  for (const value of mutations(event(5))) {
    position++;
    const result = gate.check(value, position);
    const zod = strict.safeParse(value);
    assert.equal(result.ok, zod.success);
    if (result.ok && zod.success) {
      assert.equal(JSON.stringify(result.value), JSON.stringify(zod.data));
    }
    const verdict = checkpoint.check(value, position);
    // The fast path only skips zod for valid records: a record zod rejects still fails.
    if (!zod.success) assert.equal(verdict.ok, false, JSON.stringify(value));
  }
  const summary = gate.summary();
  assert.equal(summary.passed + summary.rejected, summary.records);
  assert.ok(summary.rejected > 50);
});

Deno.test("gate: a record with nothing to strip is parsed as its stripped copy would be", () => {
  const schema = z.object({ id: z.string(), n: z.number().nullable() });
  const gate = createGate({ schema, onInvalid: "quarantine" });
  const plain = { id: "1", n: 2 };
  const ok = gate.check(plain, 1);
  assert.ok(ok.ok);
  assert.deepEqual(ok.value, { id: "1", n: 2 });
  assert.notEqual(ok.value, plain, "a fresh object");
  assert.deepEqual(ok.stripped, {});
  // A schema key that is not an own enumerable key is not in the stripped copy: rejected.
  const hidden = { n: 2 };
  Object.defineProperty(hidden, "id", { value: "1", enumerable: false });
  assert.equal(gate.check(hidden, 2).ok, false);
  const inherited = Object.assign(Object.create({ id: "1" }), { n: 2 });
  assert.equal(gate.check(inherited, 3).ok, false);
  // PII keys are still stripped and counted, at any depth, before the parse.
  const nested = createGate({
    schema: z.object({ id: z.string(), branch: z.object({ code: z.string() }) }),
    onInvalid: "quarantine",
  });
  const stripped = nested.check({ id: "1", branch: { code: "M", email: "x" }, Patron_ID: 3 }, 4);
  assert.ok(stripped.ok);
  assert.deepEqual(stripped.value, { id: "1", branch: { code: "M" } });
  assert.deepEqual(stripped.stripped, { "branch.email": 1, Patron_ID: 1 });
  assert.deepEqual(nested.summary().strippedByField, { "branch.email": 1, Patron_ID: 1 });
  const summary = gate.summary();
  assert.deepEqual([summary.passed, summary.rejected], [1, 2]);
});
