import assert from "node:assert/strict";
import { z } from "zod";
import {
  createCheckpoint,
  formatCheckpointFailure,
  RAW_PII_TAG,
} from "../../../operators/privacy/checkpoint_checks.ts";

const SENTINEL = "SENTINEL-7f3a@example.org";
const TOKEN = "0123456789abcdef".repeat(4);

function cleanRecord(): Record<string, unknown> {
  return {
    patron_id: TOKEN,
    item_id: "i-100",
    event: "checkout",
    branch: "MAIN",
    notes: "Left at desk",
  };
}

const allowFields = ["patron_id", "item_id", "event", "branch", "notes"];

function labels(checkpoint: ReturnType<typeof createCheckpoint>): string[] {
  return checkpoint.verdict().violations.map((v) =>
    `${v.check}|${v.field}${v.reason === undefined ? "" : `|${v.reason}`}|${v.count}`
  );
}

Deno.test("checkpoint passes clean records", () => {
  const checkpoint = createCheckpoint({ tokenized: ["patron_id"], allowFields });
  for (let i = 0; i < 5; i++) assert.ok(checkpoint.check(cleanRecord(), i).ok);
  assert.ok(checkpoint.check({ ...cleanRecord(), patron_id: null }, 5).ok);
  const verdict = checkpoint.verdict();
  assert.deepEqual(verdict, { passed: true, records: 6, failedRecords: 0, violations: [] });
  assert.equal(formatCheckpointFailure(verdict), "Privacy checkpoint passed: 6 records");
});

Deno.test("tokenized check fails on raw values, nested and in arrays", () => {
  const checkpoint = createCheckpoint({
    tokenized: ["patron_id", "holds[].patron_id", "payer.token"],
  });
  const bad = [
    { patron_id: "12345" },
    { patron_id: 12345 },
    { patron_id: TOKEN.toUpperCase() },
    { patron_id: [TOKEN] },
    { patron_id: TOKEN, holds: [{ patron_id: TOKEN }, { patron_id: "raw" }, { patron_id: "raw" }] },
    { payer: "raw name" },
    { payer: { token: SENTINEL } },
  ];
  bad.forEach((record, i) => assert.ok(!checkpoint.check(record, i).ok, String(i)));
  const fine = [{ holds: [] }, { payer: null }, { payer: { token: TOKEN } }, {}];
  fine.forEach((record, i) => assert.ok(checkpoint.check(record, i).ok, String(i)));
  const verdict = checkpoint.verdict();
  assert.equal(verdict.passed, false);
  assert.equal(verdict.failedRecords, 7);
  assert.deepEqual(labels(checkpoint).filter((l) => l.startsWith("tokenized")), [
    "tokenized|patron_id|4",
    "tokenized|holds[].patron_id|2",
    "tokenized|payer.token|2",
  ]);
});

Deno.test("allowed_fields check fails on fields outside the allow list", () => {
  const checkpoint = createCheckpoint({
    allowFields: ["item_id", "holds[].pickup", "meta"],
    detectors: { email: false, phone: false, barcode: false, birthDateFields: false },
    knownFields: ["extra", "shelf"],
  });
  assert.ok(
    checkpoint.check({ item_id: "i", holds: [{ pickup: "E" }], meta: { any: { depth: 1 } } }, 0)
      .ok,
  );
  const result = checkpoint.check(
    { item_id: "i", extra: 1, holds: [{ pickup: "E", shelf: "A" }, { shelf: "B" }, "odd"] },
    1,
  );
  assert.ok(!result.ok);
  assert.deepEqual(result.findings, [
    { check: "allowed_fields", field: "extra" },
    { check: "allowed_fields", field: "holds[].shelf" },
    { check: "allowed_fields", field: "holds[]" },
  ]);
  assert.ok(!checkpoint.check({ holds: "flat" }, 2).ok);
  assert.deepEqual(labels(checkpoint), [
    "allowed_fields|extra|1",
    "allowed_fields|holds|1",
    "allowed_fields|holds[]|1",
    "allowed_fields|holds[].shelf|1",
  ]);
});

Deno.test("schema check rejects undeclared fields and invalid values", () => {
  const checkpoint = createCheckpoint({
    schema: z.object({
      item_id: z.string(),
      branch: z.object({ code: z.string() }),
    }),
    knownFields: ["floor", "memo"],
  });
  assert.ok(checkpoint.check({ item_id: "i", branch: { code: "MAIN" } }, 0).ok);
  assert.ok(!checkpoint.check({ item_id: 5, branch: { code: "MAIN", floor: 2 } }, 1).ok);
  assert.ok(!checkpoint.check({ branch: { code: "MAIN" }, memo: SENTINEL }, 2).ok);
  assert.deepEqual(labels(checkpoint), [
    "allowed_fields|branch.floor|1",
    "allowed_fields|memo|1",
    "detector:email|memo|1",
    "schema|item_id|expected string, received number|1",
    "schema|item_id|required|1",
  ]);
});

Deno.test("detector checks fire on strings at any depth and on keys", () => {
  const checkpoint = createCheckpoint({
    detectors: { patronIdPatterns: [/\bP\d{7}\b/] },
    knownFields: ["notes", "history", "memo", "extra", "remark", "by_contact"],
  });
  const result = checkpoint.check({
    notes: `Contact ${SENTINEL}`,
    history: [{ memo: "call (555) 123-4567" }, { memo: "card 21234000567890" }],
    extra: { DateOfBirth: "1990-01-01", remark: "renewed for P1234567" },
    by_contact: { [SENTINEL]: 2 },
  }, 0);
  assert.ok(!result.ok);
  assert.deepEqual(labels(checkpoint), [
    "detector:barcode|history[].memo|1",
    "detector:birth_date_field|extra.DateOfBirth|1",
    "detector:email|by_contact.{key 1}|1",
    "detector:email|notes|1",
    "detector:patron_id|extra.remark|1",
    "detector:phone|history[].memo|1",
    "pii_key|extra.DateOfBirth|1",
  ]);
  assert.ok(checkpoint.check({ isbn: "978-0-306-40615-7", due: "2024-01-15" }, 1).ok);
});

Deno.test("pii_key check fails on PII-named fields unless they are tokenized", () => {
  const checkpoint = createCheckpoint({ tokenized: ["patron_id"], knownFields: ["item"] });
  assert.ok(checkpoint.check({ patron_id: TOKEN, Email: null }, 0).ok);
  assert.ok(
    !checkpoint.check({ patron_id: TOKEN, Email: "withheld", item: { Barcode: "x" } }, 1).ok,
  );
  assert.deepEqual(labels(checkpoint), ["pii_key|Email|1", "pii_key|item.Barcode|1"]);
  const off = createCheckpoint({ piiKeys: { keys: [] } });
  assert.ok(off.check({ Email: "withheld" }, 0).ok);
});

Deno.test("upstream pii:raw tag fails the checkpoint immediately", () => {
  const checkpoint = createCheckpoint({ upstreamTags: ["warehouse", "PII:RAW"] });
  assert.equal(checkpoint.failedEarly, true);
  let verdict = checkpoint.verdict();
  assert.equal(verdict.passed, false);
  assert.equal(verdict.records, 0);
  assert.deepEqual(verdict.violations, [
    { check: "upstream_tag", field: RAW_PII_TAG, count: 1, scope: "table" },
  ]);
  const result = checkpoint.check(cleanRecord(), 0);
  assert.ok(!result.ok);
  verdict = checkpoint.verdict();
  assert.equal(verdict.failedRecords, 1);
  assert.equal(
    formatCheckpointFailure(verdict),
    "Privacy checkpoint failed: upstream_tag: pii:raw (1)",
  );
  assert.equal(createCheckpoint({ upstreamTags: ["pii:tokenized"] }).failedEarly, false);
});

Deno.test("checkpoint fails closed on records that are not plain objects", () => {
  const checkpoint = createCheckpoint();
  for (const record of [null, undefined, SENTINEL, 42, [cleanRecord()], new Date(0)]) {
    const result = checkpoint.check(record, 0);
    assert.ok(!result.ok);
    assert.equal(result.findings[0]?.check, "record");
  }
  const verdict = checkpoint.verdict();
  assert.equal(verdict.failedRecords, 6);
  assert.ok(!JSON.stringify(verdict).includes("SENTINEL"));
});

Deno.test("formatCheckpointFailure lists violations and never values", () => {
  const checkpoint = createCheckpoint({ tokenized: ["patron_id"], allowFields });
  const outputs: unknown[] = [];
  outputs.push(checkpoint.check({ ...cleanRecord(), patron_id: SENTINEL }, 0));
  outputs.push(checkpoint.check({ ...cleanRecord(), patron_id: "raw-id" }, 1));
  outputs.push(checkpoint.check({ ...cleanRecord(), notes: `Ask ${SENTINEL}` }, 2));
  outputs.push(checkpoint.check(cleanRecord(), 3));
  const verdict = checkpoint.verdict();
  const message = formatCheckpointFailure(verdict);
  assert.equal(
    message,
    "Privacy checkpoint failed: tokenized: patron_id (2); detector:email: notes (1); detector:email: patron_id (1)",
  );
  assert.equal(verdict.records, 4);
  assert.equal(verdict.failedRecords, 3);
  const everything = JSON.stringify({ outputs, verdict, message });
  assert.ok(!everything.includes("SENTINEL"), everything);
  assert.ok(!everything.includes("raw-id"), everything);
});

Deno.test("checkpoint never names a key it does not know: barcode- and name-shaped keys by position", () => {
  const keys = ["ZZ9SENTINEL42", "Zzsentinelname_Smith"];
  const checkpoint = createCheckpoint({ tokenized: ["patron_id"], allowFields });
  const outputs: unknown[] = [];
  for (const key of keys) {
    outputs.push(checkpoint.check({ ...cleanRecord(), [key]: "x" }, 0));
    outputs.push(checkpoint.check({ ...cleanRecord(), [key]: { note: SENTINEL } }, 1));
    outputs.push(checkpoint.check({ ...cleanRecord(), notes: { [key]: "x" } }, 2));
  }
  const verdict = checkpoint.verdict();
  const message = formatCheckpointFailure(verdict);
  const everything = JSON.stringify({ outputs, verdict, message });
  for (const key of keys) assert.ok(!everything.includes(key), everything);
  assert.ok(!everything.includes("SENTINEL"), everything);
  assert.deepEqual(labels(checkpoint), [
    "allowed_fields|{key 6}|4",
    "detector:email|{key 6}.{key 1}|2",
  ]);
  // Without an allow list or schema, detector hits under unknown keys are still by position.
  const open = createCheckpoint();
  open.check({ ZZ9SENTINEL42: { Zzsentinelname_Smith: SENTINEL } }, 0);
  assert.deepEqual(labels(open), ["detector:email|{key 1}.{key 1}|1"]);
});

Deno.test("a tokenized or allowFields path that no record carries fails the verdict", () => {
  const typo = createCheckpoint({ tokenized: ["patron_tokn"] });
  assert.ok(typo.check({ patron_token: TOKEN }, 0).ok);
  assert.ok(typo.check({ patron_token: TOKEN }, 1).ok);
  let verdict = typo.verdict();
  assert.equal(verdict.passed, false);
  assert.equal(verdict.failedRecords, 0);
  assert.deepEqual(verdict.violations, [
    {
      check: "tokenized",
      field: "patron_tokn",
      reason: "no record carries this path",
      count: 1,
      scope: "table",
    },
  ]);
  assert.equal(
    formatCheckpointFailure(verdict),
    "Privacy checkpoint failed: tokenized: patron_tokn: no record carries this path (1)",
  );
  // Carried once (null included, or in one array element) is enough; exempt paths may be absent.
  const ok = createCheckpoint({
    tokenized: ["patron_id", "holds[].patron_id"],
    allowFields: ["patron_id", "holds[].patron_id", "note"],
    mayBeAbsent: ["note"],
  });
  ok.check({ patron_id: null, holds: [] }, 0);
  ok.check({ patron_id: TOKEN, holds: [{}, { patron_id: TOKEN }] }, 1);
  assert.deepEqual(ok.verdict().violations, []);
  const missing = createCheckpoint({ allowFields: ["item_id", "note"] });
  missing.check({ item_id: "i1" }, 0);
  verdict = missing.verdict();
  assert.deepEqual(verdict.violations.map((v) => `${v.check}|${v.field}|${v.reason}`), [
    "allowed_fields|note|no record carries this path",
  ]);
  // No records: nothing to say about paths.
  assert.ok(createCheckpoint({ tokenized: ["patron_tokn"] }).verdict().passed);
  assert.ok(createCheckpoint({ tokenized: ["x"], requireCarriedPaths: false }).verdict().passed);
});

Deno.test("quasi-identifier check: a class smaller than k fails, classes of k or more pass", () => {
  const columns = ["home_library", "birth_year_band", "postal_prefix"];
  const record = (library: string, band: string, prefix: string) => ({
    patron_token: TOKEN,
    home_library: library,
    birth_year_band: band,
    postal_prefix: prefix,
  });
  const passing = createCheckpoint({ quasiIdentifiers: { columns, k: 3 } });
  for (let i = 0; i < 3; i++) passing.check(record("MAIN", "1980-1989", "K1A"), i);
  for (let i = 0; i < 4; i++) passing.check(record("EAST", "1990-1999", "K1A"), 3 + i);
  assert.deepEqual(passing.verdict().violations, []);
  assert.equal(passing.inSmallClass(record("MAIN", "1980-1989", "K1A")), false);

  const failing = createCheckpoint({ quasiIdentifiers: { columns, k: 3 } });
  for (let i = 0; i < 3; i++) failing.check(record("MAIN", "1980-1989", "K1A"), i);
  // The only patron born in the 1920s at EAST, and two at WEST with another prefix.
  failing.check(record("EAST", "1920-1929", "K1A"), 3);
  failing.check(record("WEST", "1980-1989", "K2B"), 4);
  failing.check(record("WEST", "1980-1989", "K2B"), 5);
  // A record that fails another check does not count towards its class.
  failing.check({ ...record("MAIN", "1980-1989", "K1A"), note: SENTINEL }, 6);
  const verdict = failing.verdict();
  assert.equal(verdict.passed, false);
  assert.equal(verdict.failedRecords, 4);
  assert.deepEqual(
    verdict.violations.map((v) => `${v.check}|${v.field}|${v.reason}|${v.count}|${v.scope}`),
    [
      "quasi_identifiers|home_library+birth_year_band+postal_prefix|class smaller than k=3|3|record",
      "detector:email|{key 5}|undefined|1|record",
    ],
  );
  assert.ok(failing.inSmallClass(record("EAST", "1920-1929", "K1A")));
  assert.ok(!failing.inSmallClass(record("MAIN", "1980-1989", "K1A")));
  const message = formatCheckpointFailure(verdict);
  assert.ok(!/1920|EAST|K2B/.test(message + JSON.stringify(verdict)), message);
  assert.throws(
    () => createCheckpoint({ quasiIdentifiers: { columns: [], k: 3 } }),
    /quasiIdentifiers.columns/,
  );
  assert.throws(() => createCheckpoint({ quasiIdentifiers: { columns, k: 1 } }), /k must be/);
});

Deno.test("quasi-identifier check with an individual: a class counts distinct individuals, not records", () => {
  const columns = ["home_library", "birth_year_band"];
  const event = (patron: string, library: string, band: string) => ({
    patron_token: patron.repeat(64),
    home_library: library,
    birth_year_band: band,
  });
  const byRecords = createCheckpoint({ quasiIdentifiers: { columns, k: 3 } });
  const byPatrons = createCheckpoint({
    quasiIdentifiers: { columns, k: 3, individual: "patron_token" },
  });
  // Ten loans of the only patron born in the 1920s at EAST; three patrons in MAIN's 1980s class.
  const loans = [
    ...Array.from({ length: 10 }, () => event("a", "EAST", "1920-1929")),
    event("b", "MAIN", "1980-1989"),
    event("c", "MAIN", "1980-1989"),
    event("d", "MAIN", "1980-1989"),
    event("d", "MAIN", "1980-1989"),
  ];
  loans.forEach((loan, i) => {
    byRecords.check(loan, i + 1);
    byPatrons.check(loan, i + 1);
  });
  assert.ok(byRecords.verdict().passed, "ten records of one patron pass a count of records");
  const verdict = byPatrons.verdict();
  assert.equal(verdict.passed, false);
  assert.equal(verdict.failedRecords, 10);
  assert.deepEqual(
    verdict.violations.map((v) => `${v.check}|${v.field}|${v.reason}|${v.count}`),
    ["quasi_identifiers|home_library+birth_year_band|class of fewer than k=3 distinct patron_token|10"],
  );
  assert.ok(byPatrons.inSmallClass(event("a", "EAST", "1920-1929")));
  assert.ok(!byPatrons.inSmallClass(event("d", "MAIN", "1980-1989")));
  assert.ok(!formatCheckpointFailure(verdict).includes("a".repeat(64)));
  assert.throws(
    () => createCheckpoint({ quasiIdentifiers: { columns, k: 3, individual: "home_library" } }),
    /individual must be a column name not among its columns/,
  );
});
