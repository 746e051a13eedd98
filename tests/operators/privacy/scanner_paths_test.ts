import assert from "node:assert/strict";
import {
  createPiiStripper,
  createRecordScanner,
  DEFAULT_DETECTORS,
  isToken,
  phoneDetector,
  piiFieldNamer,
} from "../../../operators/privacy/pii.ts";

const TOKEN = "0123456789abcdef".repeat(4);

Deno.test("scanner: records of changing shapes are named by their own keys and positions", () => {
  const scanner = createRecordScanner(DEFAULT_DETECTORS, piiFieldNamer({}, ["note", "n"]));
  const runs: [Record<string, unknown>, { path: string; detector: string }[]][] = [
    [{ note: "jo@example.org", n: 1 }, [{ path: "note", detector: "email" }]],
    // The same keys at other positions, then an unknown key where "note" was.
    [{ n: 1, note: "jo@example.org" }, [{ path: "note", detector: "email" }]],
    [{ memo: "jo@example.org", n: 1 }, [{ path: "{key 1}", detector: "email" }]],
    [{ note: "ok", memo: "call 555-123-4567" }, [{ path: "{key 2}", detector: "phone" }]],
    [{ note: "jo@example.org", n: 1 }, [{ path: "note", detector: "email" }]],
    // Numbers, booleans and nulls under keys that trip a detector are still reported.
    [{ dob: 19840501, n: true }, [{ path: "dob", detector: "birth_date_field" }]],
    [{ "jo@example.org": 3 }, [{ path: "{key 1}", detector: "email" }]],
    [{ dob: null, n: 2 }, []],
    [{ n: [{ note: "jo@example.org" }] }, [{ path: "n[].note", detector: "email" }]],
    [{ note: TOKEN, n: `${TOKEN.slice(1)}G` }, []],
    [{ note: "21234000567890", n: 0 }, [{ path: "note", detector: "barcode" }]],
  ];
  for (let round = 0; round < 3; round++) {
    for (const [record, expected] of runs) assert.deepEqual(scanner.scan(record), expected);
  }
  // More keys than the positional memory holds.
  const wide: Record<string, unknown> = {};
  for (let i = 0; i < 80; i++) wide[`k${i}`] = i;
  wide.note = "jo@example.org";
  assert.deepEqual(scanner.scan(wide), [{ path: "note", detector: "email" }]);
});

Deno.test("scanner: a token is skipped exactly when isToken says so", () => {
  const scanner = createRecordScanner(DEFAULT_DETECTORS, piiFieldNamer({}, ["t"]));
  // 14-digit runs that look like barcodes inside 64-character strings.
  const base = `21234000567890${"a".repeat(50)}`;
  for (
    const t of [base, base.toUpperCase(), `${base.slice(0, 63)}g`, `${base}a`, base.slice(0, 63)]
  ) {
    const findings = scanner.scan({ t });
    assert.equal(findings.length === 0, isToken(t), t);
  }
});

// The North American pattern of the phone detector, as documented there.
const NANP =
  /(?<![\d.\-+])(?:(?:\+1|1)[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}(?![\d\-]|\.\d)/;

Deno.test("phone detector: the digit-run pre-check never hides a North American number", () => {
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const digits = (n: number) => {
    let s = "";
    for (let i = 0; i < n; i++) s += pick([..."0123456789"]);
    return s;
  };
  const seps = [" ", "-", ".", "", "  ", "/"];
  let fired = 0;
  for (let i = 0; i < 40_000; i++) {
    // Phone-like runs and near misses, among dates, times and other digits.
    const area = next() < 0.3 ? `(${digits(3)})` : digits(2 + Math.floor(next() * 2));
    const s = pick(["", "1", "1-", "x", "9", "2026-01-05T", "-", "."]) + area + pick(seps) +
      digits(2 + Math.floor(next() * 3)) + pick(seps) + digits(3 + Math.floor(next() * 3)) +
      pick(["", "Z", ".000Z", "-1", "5", " ext 2", ".5"]);
    let count = 0;
    for (const c of s) if (c >= "0" && c <= "9") count++;
    // No "+": only the North American pattern can fire.
    const expected = s.length >= 9 && count >= 8 && NANP.test(s);
    assert.equal(phoneDetector.test(s), expected, s);
    if (expected) fired++;
  }
  assert.ok(fired > 50, `only ${fired} phone numbers generated`);
  for (
    const s of ["(555) 123-4567", "555.123.4567", "1-555-123-4567", "2026-01-05T14:03:00.000Z"]
  ) {
    assert.equal(phoneDetector.test(s), NANP.test(s), s);
  }
});

Deno.test("stripper: mayStrip is false only when strip would remove nothing", () => {
  const stripper = createPiiStripper();
  const cases: unknown[] = [
    { id: 1 },
    { id: 1, email: null },
    { id: 1, nested: { list: [{ ok: 1 }, { PATRON_ID: 2 }] } },
    { id: [1, "x", null] },
    Object.create(null),
    "text",
    null,
    [{ name: "x" }],
  ];
  let deep: Record<string, unknown> = { leaf: 1 };
  for (let i = 0; i < 10; i++) deep = { deep };
  cases.push(deep);
  for (const record of cases) {
    const { total } = stripper.strip(record);
    if (!stripper.mayStrip(record)) assert.equal(total, 0, JSON.stringify(record));
    if (total > 0) assert.ok(stripper.mayStrip(record));
  }
  assert.equal(stripper.mayStrip({ id: 1, nested: { ok: [1] } }), false);
  assert.equal(stripper.mayStrip({ id: 1, email: null }), true);
});
