import assert from "node:assert/strict";
import {
  barcodeDetector,
  birthDateFieldDetector,
  createDetectors,
  createPatronIdDetector,
  createPiiStripper,
  createRecordScanner,
  DEFAULT_DETECTORS,
  DEFAULT_PII_KEYS,
  detectPii,
  emailDetector,
  isToken,
  normalizeKey,
  phoneDetector,
  piiFieldNamer,
  piiKeyMatcher,
  scanRecord,
  stripPii,
} from "../../../operators/privacy/pii.ts";

const SENTINEL = "SENTINEL-7f3a@example.org";
const TOKEN = "0123456789abcdef".repeat(4);

Deno.test("DEFAULT_PII_KEYS covers the ILS carrier keys the brief lists", () => {
  const normalized = new Set(DEFAULT_PII_KEYS.map(normalizeKey));
  for (
    const key of [
      "patron_id",
      "borrowernumber",
      "cardnumber",
      "usr",
      "card",
      "barcode",
      "email",
      "phone",
      "mobile",
      "first_given_name",
      "firstname",
      "first_name",
      "family_name",
      "surname",
      "last_name",
      "lastname",
      "middle_name",
      "second_given_name",
      "address",
      "street1",
      "street2",
      "city",
      "post_code",
      "postal_code",
      "zip",
      "zipcode",
      "county",
      "dob",
      "dateofbirth",
      "birth_date",
      "checkout_date",
      "fine_amount",
      "passwd",
      "password",
      "ident_value",
      "usrname",
      "username",
    ]
  ) {
    assert.ok(normalized.has(normalizeKey(key)), key);
  }
  assert.ok(!normalized.has("state"));
  assert.ok(!normalized.has("title"));
});

Deno.test("stripPii removes PII keys at any depth, any case and separator", () => {
  const record = {
    title: "Emma",
    patronId: 1,
    PATRON_ID: 2,
    "patron-id": 3,
    Email: SENTINEL,
    item: { barcode: "31234000567890", call_number: "PR4034 .E5", Surname: "x" },
    holds: [{ Patron_Id: 4, pickup: "MAIN" }, { pickup: "EAST", EMAIL: SENTINEL }, 7],
    address: { street1: "1 Main", city: "Springfield" },
    state: "checked_out",
  };
  const { value, stripped, total } = stripPii(record);
  assert.deepEqual(value, {
    title: "Emma",
    item: { call_number: "PR4034 .E5" },
    holds: [{ pickup: "MAIN" }, { pickup: "EAST" }, 7],
    state: "checked_out",
  });
  assert.deepEqual(stripped, {
    patronId: 1,
    PATRON_ID: 1,
    "patron-id": 1,
    Email: 1,
    // "item" and "holds" are neither declared nor PII keys: shown by position.
    "{key 6}.barcode": 1,
    "{key 6}.Surname": 1,
    "{key 7}[].Patron_Id": 1,
    "{key 7}[].EMAIL": 1,
    address: 1,
  });
  assert.equal(total, 9);
  assert.ok(!JSON.stringify({ value, stripped }).includes(SENTINEL));
  // The input is left untouched.
  assert.equal(record.holds[1] && (record.holds[1] as { EMAIL?: string }).EMAIL, SENTINEL);
});

Deno.test("stripPii honours keys and extraKeys", () => {
  const record = { name: "Main branch", nickname: "Jo", email: "x" };
  assert.deepEqual(
    stripPii(record, { keys: DEFAULT_PII_KEYS.filter((k) => k !== "name") }).value,
    { name: "Main branch", nickname: "Jo" },
  );
  assert.deepEqual(stripPii(record, { extraKeys: ["Nick_Name"] }).value, {});
  assert.deepEqual(stripPii(record, { keys: ["nickname"] }).value, {
    name: "Main branch",
    email: "x",
  });
});

Deno.test("stripPii never reports a key it does not know and stops at MAX_DEPTH", () => {
  const stripper = createPiiStripper();
  const record = { n: 1, counts: { a: 0, [SENTINEL]: { email: SENTINEL } } };
  // Neither "counts" nor the data-bearing key is known: both are shown by position.
  assert.deepEqual(stripper.strip(record).stripped, { "{key 2}.{key 2}.email": 1 });
  const named = createPiiStripper({}, piiFieldNamer({}, ["counts"]));
  assert.deepEqual(named.strip(record).stripped, { "counts.{key 2}.email": 1 });
  // Barcode- and name-shaped keys that look like identifiers are data too.
  const sentinels = createPiiStripper().strip({
    ZZ9SENTINEL42: { email: "x" },
    Zzsentinelname_Smith: [{ phone: "y" }],
  });
  assert.deepEqual(sentinels.stripped, { "{key 1}.email": 1, "{key 2}[].phone": 1 });
  let deep: Record<string, unknown> = {};
  const root = deep;
  for (let i = 0; i < 200; i++) {
    const next = {};
    deep.child = next;
    deep = next;
  }
  assert.throws(() => stripper.strip(root), /PII strip failed: record nests deeper than 128/);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => stripper.strip(cyclic), RangeError);
});

Deno.test("stripPii keeps non-plain objects by reference and copies plain ones", () => {
  const when = new Date(0);
  const nested = { a: 1 };
  const { value } = stripPii({ when, nested });
  assert.equal(value.when, when);
  assert.notEqual(value.nested, nested);
  assert.deepEqual(value.nested, nested);
});

Deno.test("piiFieldNamer names declared and PII keys only, others by position", () => {
  const namer = piiFieldNamer({ extraKeys: ["nickname"] }, ["due-date", "has space"]);
  assert.equal(namer.segment("due-date", 1), "due-date");
  assert.equal(namer.segment("has space", 1), "has space");
  assert.equal(namer.segment("Patron-ID", 2), "Patron-ID");
  assert.equal(namer.segment("Nick_Name", 2), "Nick_Name");
  assert.equal(namer.segment("ZZ9SENTINEL42", 3), "{key 3}");
  assert.equal(namer.segment("Zzsentinelname_Smith", 4), "{key 4}");
  assert.equal(namer.segment(SENTINEL), "{key}");
  assert.equal(namer.segment("12345", 1), "{key 1}");
  assert.ok(piiKeyMatcher()("E_MAIL"));
  assert.ok(!piiKeyMatcher()("title"));
  // A replaced key list still leaves the default PII keys nameable (they are words, not data).
  assert.ok(piiKeyMatcher({ keys: ["nickname"] })("email"));
});

Deno.test("emailDetector finds addresses and ignores near misses", () => {
  for (const text of [SENTINEL, "write to jo.smith+lib@mail.example.co.uk today", "A@B.CD"]) {
    assert.ok(emailDetector.test(text), text);
  }
  for (
    const text of ["@librarian", "jo@localhost", "user at example dot org", "a@b.c", "", "x@1.23"]
  ) {
    assert.ok(!emailDetector.test(text), text);
  }
});

Deno.test("phoneDetector finds North American and international numbers", () => {
  for (
    const text of [
      "(555) 123-4567",
      "(555)123-4567",
      "555-123-4567",
      "555.123.4567",
      "555 123 4567",
      "+1 555 123 4567",
      "+1-555-123-4567",
      "1-800-555-0199",
      "call 555-123-4567.",
      "+44 20 7946 0958",
      "+44 (0)20 7946 0958",
      "+33 1 23 45 67 89",
      "+442079460958",
      "tel:+49-30-1234567",
    ]
  ) {
    assert.ok(phoneDetector.test(text), text);
  }
});

Deno.test("phoneDetector does not flag ISBNs, dates, years or small numbers", () => {
  for (
    const text of [
      "978-0-306-40615-7",
      "ISBN 978-1-4028-9462-6",
      "0-306-40615-2",
      "0306406152",
      "2070360024",
      "9780306406157",
      "2024-01-15",
      "2024-01-15T10:30:00Z",
      "01/15/2024",
      "1999 2000 2001",
      "Renewals: 3 of 5",
      "Due in 14 days",
      "QA76.73 .J38 2019",
      "025.04 B123",
      "+5 renewals",
      "+1 555",
      "pages 123-456",
      "v. 12 no. 3 (2019)",
      "1234567890123",
      "+12345678901234567890",
    ]
  ) {
    assert.ok(!phoneDetector.test(text), text);
  }
});

Deno.test("barcodeDetector finds 14-digit library barcodes but not timestamps or ISBNs", () => {
  for (const text of ["21234000567890", "31234000567890", "patron card 29999001234567 scanned"]) {
    assert.ok(barcodeDetector.test(text), text);
  }
  for (
    const text of [
      "20240115123045",
      "19991231235959",
      "9780306406157",
      "11234000567890",
      "212340005678901",
      "2123400056789",
      "",
    ]
  ) {
    assert.ok(!barcodeDetector.test(text), text);
  }
});

Deno.test("createPatronIdDetector matches configured patterns statelessly", () => {
  const detector = createPatronIdDetector([/\bP\d{7}\b/g, /^EG-\d+$/]);
  assert.equal(detector.name, "patron_id");
  // With a g flag kept, the second call would start at lastIndex and miss.
  assert.ok(detector.test("renewed by P1234567"));
  assert.ok(detector.test("renewed by P1234567"));
  assert.ok(detector.test("EG-42"));
  assert.ok(!detector.test("P123"));
  assert.ok(!detector.test("see EG-42 above"));
});

Deno.test("birthDateFieldDetector flags birth-date key names only", () => {
  for (const key of ["dob", "DOB", "birth_date", "birthDate", "date-of-birth", "dateOfBirth"]) {
    assert.ok(birthDateFieldDetector.test(normalizeKey(key)), key);
  }
  for (const key of ["due_date", "date", "birth_place", "checkout_date"]) {
    assert.ok(!birthDateFieldDetector.test(normalizeKey(key)), key);
  }
});

Deno.test("createDetectors toggles detectors and adds patron-id patterns", () => {
  assert.deepEqual(DEFAULT_DETECTORS.map((d) => d.name), [
    "email",
    "phone",
    "barcode",
    "birth_date_field",
  ]);
  assert.deepEqual(
    createDetectors({ phone: false, birthDateFields: false, patronIdPatterns: [/^P\d+$/] }).map(
      (d) => d.name,
    ),
    ["email", "barcode", "patron_id"],
  );
});

Deno.test("detectPii names every value detector that fires", () => {
  assert.deepEqual(detectPii(`Call 555-123-4567 or write ${SENTINEL}`), ["email", "phone"]);
  assert.deepEqual(detectPii("Pride and Prejudice"), []);
  assert.deepEqual(detectPii("P7654321", createDetectors({ patronIdPatterns: [/^P\d{7}$/] })), [
    "patron_id",
  ]);
});

Deno.test("scanRecord reports paths and detectors, never values", () => {
  const record = {
    title: "Emma",
    notes: ["fine", `contact ${SENTINEL}`],
    patron: { DateOfBirth: "1990-01-01", dob: null, card: "21234000567890" },
    contacts: { [SENTINEL]: 1 },
    token: TOKEN,
    count: 5551234567,
  };
  const namer = piiFieldNamer({}, ["title", "notes", "contacts", "token", "count"]);
  const findings = scanRecord(record, DEFAULT_DETECTORS, namer);
  assert.deepEqual(findings, [
    { path: "notes[]", detector: "email" },
    { path: "patron.DateOfBirth", detector: "birth_date_field" },
    { path: "patron.card", detector: "barcode" },
    { path: "contacts.{key 1}", detector: "email" },
  ]);
  assert.ok(!JSON.stringify(findings).includes("SENTINEL"));
  assert.deepEqual(scanRecord({ title: "Emma", year: "2019" }), []);
  // Without a namer only PII keys are named.
  assert.deepEqual(scanRecord({ id: 1, memo: SENTINEL, patron: { note: SENTINEL } }), [
    { path: "{key 2}", detector: "email" },
    { path: "patron.{key 1}", detector: "email" },
  ]);
});

Deno.test("createRecordScanner gives the same findings on repeated records", () => {
  const scanner = createRecordScanner(DEFAULT_DETECTORS, piiFieldNamer({}, ["a", "phone_note"]));
  const record = { a: { phone_note: "(555) 123-4567" } };
  assert.deepEqual(scanner.scan(record), [{ path: "a.phone_note", detector: "phone" }]);
  assert.deepEqual(scanner.scan(record), [{ path: "a.phone_note", detector: "phone" }]);
  assert.deepEqual(scanner.scan("555-123-4567"), [{ path: "", detector: "phone" }]);
});

Deno.test("isToken accepts 64 lowercase hex characters only", () => {
  assert.ok(isToken(TOKEN));
  assert.ok(!isToken(TOKEN.toUpperCase()));
  assert.ok(!isToken(TOKEN.slice(1)));
  assert.ok(!isToken(`${TOKEN}0`));
  assert.ok(!isToken(`${TOKEN.slice(1)}g`));
  assert.ok(!isToken(null));
  assert.ok(!isToken(12));
});
