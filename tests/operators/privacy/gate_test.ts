import assert from "node:assert/strict";
import { z } from "zod";
import {
  createGate,
  describeZodIssues,
  formatGateFailure,
  formatIssuePath,
  GateError,
  strictSchema,
} from "../../../operators/privacy/gate.ts";
import { DEFAULT_PII_KEYS, piiFieldNamer } from "../../../operators/privacy/pii.ts";
import { schemaFields } from "../../../operators/privacy/schema_paths.ts";

const SENTINEL = "SENTINEL-7f3a@example.org";

const circulation = z.object({
  event: z.enum(["checkout", "checkin", "renew"]),
  item_id: z.string().min(3),
  title: z.string(),
  due: z.string().optional(),
  renewals: z.number().int().nonnegative(),
  branch: z.object({ code: z.string(), label: z.string() }),
  holds: z.array(z.object({ pickup: z.string() })).optional(),
});

function goodRecord(): Record<string, unknown> {
  return {
    event: "checkout",
    item_id: "i-100",
    title: "Emma",
    renewals: 0,
    branch: { code: "MAIN", label: "Main library" },
  };
}

Deno.test("gate strips PII keys case-insensitively at any depth before validating", () => {
  const gate = createGate({ schema: circulation, onInvalid: "quarantine" });
  const result = gate.check(
    {
      ...goodRecord(),
      PatronId: 42,
      Email: SENTINEL,
      branch: { code: "MAIN", label: "Main library", PHONE: "555-123-4567" },
      holds: [{ pickup: "EAST", patron_barcode: "21234000567890" }, { pickup: "WEST" }],
    },
    0,
  );
  assert.ok(result.ok);
  assert.deepEqual(result.value, {
    ...goodRecord(),
    holds: [{ pickup: "EAST" }, { pickup: "WEST" }],
  });
  assert.deepEqual(result.stripped, {
    PatronId: 1,
    Email: 1,
    "branch.PHONE": 1,
    "holds[].patron_barcode": 1,
  });
  const summary = gate.summary();
  assert.equal(summary.passed, 1);
  assert.deepEqual(summary.strippedByField, result.stripped);
});

Deno.test("gate rejects unknown keys at the top level and nested", () => {
  const gate = createGate({ schema: circulation, onInvalid: "quarantine" });
  const result = gate.check(
    {
      ...goodRecord(),
      extra_note: "x",
      branch: { code: "MAIN", label: "Main", floor: 2 },
      holds: [{ pickup: "EAST", shelf: "A" }],
    },
    3,
  );
  assert.ok(!result.ok);
  assert.equal(result.position, 3);
  assert.deepEqual(
    result.issues.map((i) => `${i.path}: ${i.reason}`).sort(),
    // Keys that are neither declared nor PII keys are shown by position, never by name.
    [
      "branch.{key 3}: unexpected field",
      "holds[].{key 2}: unexpected field",
      "{key 6}: unexpected field",
    ],
  );
  // A key the schema declares elsewhere is a known word and is named.
  const elsewhere = gate.check({ ...goodRecord(), pickup: "x" }, 4);
  assert.ok(!elsewhere.ok);
  assert.deepEqual(elsewhere.issues, [{ path: "pickup", reason: "unexpected field" }]);
});

Deno.test("gate never names a barcode- or name-shaped key, at any depth", () => {
  const gate = createGate({ schema: circulation, onInvalid: "quarantine" });
  const keys = ["ZZ9SENTINEL42", "Zzsentinelname_Smith"];
  const outputs: unknown[] = [];
  for (const key of keys) {
    outputs.push(gate.check({ ...goodRecord(), [key]: "x" }, 1));
    outputs.push(gate.check({ ...goodRecord(), branch: { code: "M", label: "L", [key]: 1 } }, 2));
    outputs.push(
      gate.check({ ...goodRecord(), holds: [{ pickup: "E", [key]: { email: "x" } }] }, 3),
    );
    outputs.push(gate.check({ ...goodRecord(), [key]: { Patron_ID: 1 } }, 4));
  }
  const summary = gate.summary();
  const message = formatGateFailure(summary);
  const everything = JSON.stringify({ outputs, summary, message });
  for (const key of keys) assert.ok(!everything.includes(key), everything);
  assert.equal(summary.rejected, 8);
  assert.deepEqual(summary.strippedByField, { "holds[].{key 2}.email": 2, "{key 6}.Patron_ID": 2 });
  assert.deepEqual(summary.invalidByFieldReason, {
    "{key 6}: unexpected field": 4,
    "branch.{key 3}: unexpected field": 2,
    "holds[].{key 2}: unexpected field": 2,
  });
  let caught: unknown;
  try {
    createGate({ schema: circulation }).check({ ...goodRecord(), ZZ9SENTINEL42: 1 }, 9);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof GateError);
  assert.equal(
    caught.message,
    "Schema gate rejected record at position 9: {key 6}: unexpected field",
  );
});

Deno.test("gate reasons come from issue codes and types, never values", () => {
  const gate = createGate({
    schema: z.object({
      title: z.string(),
      item_id: z.string().min(3).max(5),
      event: z.enum(["checkout", "checkin"]),
      kind: z.literal("book"),
      renewals: z.number(),
      contact: z.email(),
      // A custom error that embeds the input: the gate must not use messages.
      code: z.string().refine((v) => v === "ok", {
        error: (issue) => `Bad code ${String(issue.input)}`,
      }),
      shelf: z.string().regex(/^[A-Z]$/),
      tags: z.array(z.string()).min(1),
      when: z.union([z.number(), z.boolean()]),
    }),
    onInvalid: "quarantine",
  });
  const result = gate.check(
    {
      item_id: "ab",
      event: SENTINEL,
      kind: SENTINEL,
      renewals: SENTINEL,
      contact: `x ${SENTINEL}`,
      code: SENTINEL,
      shelf: SENTINEL,
      tags: [],
      when: SENTINEL,
    },
    0,
  );
  assert.ok(!result.ok);
  assert.deepEqual(result.issues, [
    { path: "title", reason: "required" },
    { path: "item_id", reason: "too short" },
    { path: "event", reason: "not an allowed value" },
    { path: "kind", reason: "not an allowed value" },
    { path: "renewals", reason: "expected number, received string" },
    { path: "contact", reason: "invalid format: email" },
    { path: "code", reason: "failed custom check" },
    { path: "shelf", reason: "invalid format: regex" },
    { path: "tags", reason: "too few items" },
    { path: "when", reason: "no matching union variant" },
  ]);
  assert.ok(!JSON.stringify(result).includes("SENTINEL"));
  const tooLong = gate.check({ item_id: "abcdef" }, 1);
  assert.ok(!tooLong.ok);
  assert.ok(tooLong.issues.some((i) => i.path === "item_id" && i.reason === "too long"));
});

Deno.test("gate quarantine keeps a value-free summary and failure message", () => {
  const gate = createGate({ schema: circulation, onInvalid: "quarantine" });
  const outputs: unknown[] = [];
  for (let i = 0; i < 7; i++) outputs.push(gate.check(goodRecord(), i));
  const missingTitle = goodRecord();
  delete missingTitle.title;
  outputs.push(gate.check({ ...missingTitle, email: SENTINEL }, 7));
  outputs.push(gate.check({ ...missingTitle, notes: SENTINEL }, 8));
  outputs.push(gate.check({ ...goodRecord(), extra_note: SENTINEL }, 9));
  const summary = gate.summary();
  assert.deepEqual(summary, {
    records: 10,
    passed: 7,
    quarantined: 3,
    rejected: 3,
    strippedByField: { email: 1 },
    invalidByFieldReason: {
      "title: required": 2,
      "{key 5}: unexpected field": 1,
      "{key 6}: unexpected field": 1,
    },
  });
  const message = formatGateFailure(summary);
  assert.equal(
    message,
    "Schema gate rejected 3 of 10 records: title: required (2); {key 5}: unexpected field (1); {key 6}: unexpected field (1)",
  );
  const everything = JSON.stringify({ outputs: outputs.slice(7), summary, message });
  assert.ok(!everything.includes("SENTINEL"), everything);
});

Deno.test("gate in fail mode throws GateError without values on the first invalid record", () => {
  const gate = createGate({ schema: circulation });
  assert.equal(gate.onInvalid, "fail");
  assert.ok(gate.check(goodRecord(), 0).ok);
  let caught: unknown;
  try {
    gate.check({ ...goodRecord(), title: 7, secret: SENTINEL }, 1);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof GateError);
  assert.equal(caught.position, 1);
  assert.equal(
    caught.message,
    "Schema gate rejected record at position 1: title: expected string, received number; {key 6}: unexpected field",
  );
  assert.ok(!JSON.stringify({ m: caught.message, i: caught.issues }).includes("SENTINEL"));
  const summary = gate.summary();
  assert.equal(summary.rejected, 1);
  assert.equal(summary.quarantined, 0);
  assert.equal(summary.passed, 1);
});

Deno.test("gate fails closed on records that are not plain objects", () => {
  const gate = createGate({
    schema: z.object({ title: z.string().optional() }),
    onInvalid: "quarantine",
  });
  const cases: Array<[unknown, string]> = [
    [null, "expected object, received null"],
    [[{ title: "x" }], "expected object, received array"],
    [SENTINEL, "expected object, received string"],
    [new Map(), "expected object, received Map"],
  ];
  for (const [record, reason] of cases) {
    const result = gate.check(record, 0);
    assert.ok(!result.ok);
    assert.deepEqual(result.issues, [{ path: "(record)", reason }]);
  }
});

Deno.test("createGate refuses a schema that declares PII fields or is not an object", () => {
  assert.throws(
    () =>
      createGate({
        schema: z.object({ title: z.string(), item: z.object({ Barcode: z.string() }) }),
      }),
    /Schema gate misconfigured: schema declares PII fields that are always stripped: "item.Barcode"/,
  );
  assert.throws(
    () => createGate({ schema: z.string() as unknown as z.ZodObject }),
    /schema must be a zod object schema/,
  );
  // A custom key list makes the same schema acceptable.
  const gate = createGate({
    schema: z.object({ name: z.string() }),
    pii: { keys: DEFAULT_PII_KEYS.filter((k) => k !== "name") },
  });
  assert.ok(gate.check({ name: "Main branch" }, 0).ok);
});

Deno.test("strictSchema reaches objects behind wrappers and keeps refinements", () => {
  const inner = z.object({ id: z.string() });
  const schema = z.object({
    a: inner.optional(),
    b: z.array(inner),
    c: z.union([inner, z.null()]),
    d: z.record(z.string(), inner),
    e: inner.default({ id: "x" }),
    f: z.looseObject({ q: z.number() }).nullable(),
    t: z.tuple([inner]),
  }).refine((v) => v.b.length < 3, { message: "too many" });
  const strict = strictSchema(schema);
  const valid = {
    a: { id: "1" },
    b: [{ id: "2" }],
    c: null,
    d: { k: { id: "3" } },
    f: null,
    t: [{ id: "4" }],
  };
  assert.ok(strict.safeParse(valid).success);
  const withExtras = {
    a: { id: "1", x: 1 },
    b: [{ id: "2", x: 1 }],
    c: { id: "3", x: 1 },
    d: { "k 1": { id: "4", x: 1 } },
    e: { id: "5", x: 1 },
    f: { q: 1, x: 1 },
    t: [{ id: "6", x: 1 }],
    x: 1,
  };
  const parsed = strict.safeParse(withExtras);
  assert.ok(!parsed.success);
  const namer = piiFieldNamer({}, schemaFields(schema).names);
  assert.deepEqual(
    describeZodIssues(parsed.error.issues, withExtras, namer).map((i) => i.path).sort(),
    [
      "a.{key 2}",
      "b[].{key 2}",
      "c.{key 2}",
      "d.{key 1}.{key 2}",
      "e.{key 2}",
      "f.{key 2}",
      "t[].{key 2}",
      "{key 8}",
    ],
  );
  // Declared names are shown (a map's keys are data: shown by position).
  const known = piiFieldNamer({}, [...schemaFields(schema).names, "x"]);
  assert.deepEqual(
    describeZodIssues(parsed.error.issues, withExtras, known).map((i) => i.path).sort(),
    ["a.x", "b[].x", "c.x", "d.{key 1}.x", "e.x", "f.x", "t[].x", "x"],
  );
  // The original schema is unchanged, and the refinement still applies.
  assert.ok(schema.safeParse(withExtras).success);
  const refined = strict.safeParse({ ...valid, b: [{ id: "1" }, { id: "2" }, { id: "3" }] });
  assert.ok(!refined.success);
});

Deno.test("formatIssuePath aggregates indexes and names known keys only", () => {
  const namer = piiFieldNamer({}, ["items", "title", "counts"]);
  assert.equal(formatIssuePath(["items", 3, "title"], namer), "items[].title");
  assert.equal(formatIssuePath(["counts", SENTINEL], namer), "counts.{key}");
  assert.equal(
    formatIssuePath(["counts", SENTINEL], namer, { counts: { a: 1, [SENTINEL]: 2 } }),
    "counts.{key 2}",
  );
  assert.equal(formatIssuePath(["items", 0, "title"]), "{key}[].{key}");
  assert.equal(formatIssuePath([]), "");
});

Deno.test("formatGateFailure limits long lists", () => {
  const invalidByFieldReason: Record<string, number> = {};
  for (let i = 0; i < 25; i++) invalidByFieldReason[`f${String(i).padStart(2, "0")}: required`] = 1;
  const message = formatGateFailure({
    records: 25,
    passed: 0,
    quarantined: 25,
    rejected: 25,
    strippedByField: {},
    invalidByFieldReason,
  }, 2);
  assert.equal(
    message,
    "Schema gate rejected 25 of 25 records: f00: required (1); f01: required (1); and 23 more",
  );
});
