import assert from "node:assert/strict";
import {
  encodeIso2709,
  type MarcReadResult,
  type MarcRecord,
  readIso2709,
  writeIso2709,
} from "../../../operators/marc/mod.ts";

const LEADER = "00000nam a2200000 i 4500";

function sample(id: string, title = "Dvořák à Montréal"): MarcRecord {
  return {
    leader: LEADER,
    fields: [
      { tag: "001", value: id },
      { tag: "008", value: "240101s1919    quc                 fre d" },
      {
        tag: "245",
        ind1: "1",
        ind2: "0",
        subfields: [{ code: "a", value: title }, { code: "b", value: "São Paulo /" }],
      },
      { tag: "300", ind1: " ", ind2: " ", subfields: [{ code: "a", value: "250 p." }] },
      { tag: "650", ind1: " ", ind2: "0", subfields: [{ code: "a", value: "Français" }] },
    ],
  };
}

/** Compare everything except the computed leader positions (lengths, base, 09). */
function sameRecord(actual: MarcRecord, expected: MarcRecord): void {
  const strip = (l: string) => l.slice(5, 9) + l.slice(10, 12) + l.slice(17);
  assert.equal(strip(actual.leader), strip(expected.leader));
  assert.deepEqual(actual.fields, expected.fields);
}

async function readAll(
  bytes: Uint8Array,
  chunk = 1 << 16,
  opts = {},
): Promise<MarcReadResult[]> {
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
  const out: MarcReadResult[] = [];
  for await (const r of readIso2709(chunks, opts)) out.push(r);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** Directory entry offset and absolute data start of `tag` in bytes we wrote. */
function locate(bytes: Uint8Array, tag: string) {
  const base = Number(String.fromCharCode(...bytes.subarray(12, 17)));
  for (let at = 24; bytes[at] !== 0x1e; at += 12) {
    if (String.fromCharCode(...bytes.subarray(at, at + 3)) === tag) {
      const len = Number(String.fromCharCode(...bytes.subarray(at + 3, at + 7)));
      const start = Number(String.fromCharCode(...bytes.subarray(at + 7, at + 12)));
      return { entry: at, start: base + start, len };
    }
  }
  throw new Error(`no ${tag}`);
}

function okRecord(r: MarcReadResult | undefined): MarcRecord {
  assert.ok(r, "missing result");
  assert.ok(r.ok, r.ok ? "" : r.reason);
  return r.record;
}

Deno.test("encodeIso2709 writes correct leader, directory and terminators", () => {
  const rec = sample("b1");
  const bytes = encodeIso2709(rec);
  const leader = String.fromCharCode(...bytes.subarray(0, 24));
  assert.equal(Number(leader.slice(0, 5)), bytes.length);
  assert.equal(leader[9], "a");
  assert.equal(leader.slice(10, 12), "22");
  assert.equal(leader.slice(20), "4500");
  const base = Number(leader.slice(12, 17));
  assert.equal(base, 24 + 12 * rec.fields.length + 1);
  assert.equal(bytes[base - 1], 0x1e);
  assert.equal(bytes[bytes.length - 1], 0x1d);
  const f245 = locate(bytes, "245");
  assert.equal(bytes[f245.start + f245.len - 1], 0x1e);
  assert.equal(String.fromCharCode(bytes[f245.start]!, bytes[f245.start + 1]!), "10");
});

Deno.test("ISO 2709 round trip in UTF-8 and MARC-8, across chunk boundaries", async () => {
  const records = [sample("b1"), sample("b2", "Ἀθῆναι и Москва"), sample("b3", "Plain title")];
  for (const encoding of ["utf-8", "marc-8"] as const) {
    const chunks: Uint8Array[] = [];
    for await (const c of writeIso2709(records, { encoding })) chunks.push(c);
    const bytes = concat(...chunks);
    for (const chunk of [1, 7, 1 << 16]) {
      const results = await readAll(bytes, chunk);
      assert.equal(results.length, 3);
      let offset = 0;
      results.forEach((r, i) => {
        sameRecord(okRecord(r), records[i]!);
        assert.deepEqual(r.position, { index: i + 1, offset });
        assert.deepEqual(r.ok && r.warnings, []);
        offset += chunks[i]!.length;
      });
    }
  }
});

Deno.test("readIso2709 accepts a ReadableStream and skips line breaks between records", async () => {
  const a = encodeIso2709(sample("a"));
  const b = encodeIso2709(sample("b"));
  const stream = ReadableStream.from([concat(a, ascii("\r\n")), b, ascii("\n")]);
  const results: MarcReadResult[] = [];
  for await (const r of readIso2709(stream)) results.push(r);
  assert.equal(results.length, 2);
  assert.equal(results[1]!.position.offset, a.length + 2);
  assert.equal((okRecord(results[1]).fields[0] as { value: string }).value, "b");
});

Deno.test("writer rejects structural characters, bad tags and oversize records", () => {
  assert.throws(
    () =>
      encodeIso2709({
        leader: LEADER,
        fields: [{ tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "x\x1ey" }] }],
      }),
    /Cannot write MARC field 245: subfield 1 contains a structural control character at 1/,
  );
  assert.throws(
    () => encodeIso2709({ leader: LEADER, fields: [{ tag: "24", value: "x" }] }),
    /invalid tag/,
  );
  assert.throws(
    () =>
      encodeIso2709({
        leader: LEADER,
        fields: Array.from({ length: 20 }, () => ({ tag: "500", value: "x".repeat(9000) })),
      }),
    /exceeds 99999/,
  );
});

// --- Defects: each class is recovered (or quarantined) and the next record still reads.

interface DefectCase {
  name: string;
  damage: (b: Uint8Array) => Uint8Array;
  defect: string;
  check?: (r: MarcRecord) => void;
}

const cases: DefectCase[] = [
  {
    name: "record length too long",
    damage: (b) => {
      b.set(ascii(String(b.length + 40).padStart(5, "0")), 0);
      return b;
    },
    defect: "record-length",
  },
  {
    name: "record length too short",
    damage: (b) => {
      b.set(ascii(String(b.length - 30).padStart(5, "0")), 0);
      return b;
    },
    defect: "record-length",
  },
  {
    name: "record length not numeric",
    damage: (b) => {
      b.set(ascii("x12y4"), 0);
      return b;
    },
    defect: "record-length",
  },
  {
    name: "missing record terminator",
    damage: (b) => {
      const cut = b.slice(0, -1);
      cut.set(ascii(String(cut.length).padStart(5, "0")), 0);
      return cut;
    },
    defect: "record-terminator",
  },
  {
    name: "missing field terminator",
    damage: (b) => {
      const f = locate(b, "300");
      b[f.start + f.len - 1] = 0x20;
      return b;
    },
    defect: "field-terminator",
    check: (r) => {
      const f = r.fields.find((f) => f.tag === "300") as { subfields: { value: string }[] };
      assert.equal(f.subfields[0]!.value, "250 p. ");
    },
  },
  {
    name: "non-numeric directory entry",
    damage: (b) => {
      b.set(ascii("0x0y0"), locate(b, "300").entry + 7);
      return b;
    },
    defect: "directory",
    check: (r) => assert.equal(r.fields.length, 5),
  },
  {
    name: "directory pointing past the data",
    damage: (b) => {
      b.set(ascii("9000"), locate(b, "650").entry + 3);
      return b;
    },
    defect: "field-bounds",
    check: (r) =>
      assert.deepEqual(r.fields[4], {
        tag: "650",
        ind1: " ",
        ind2: "0",
        subfields: [{ code: "a", value: "Français" }],
      }),
  },
  {
    name: "wrong base address",
    damage: (b) => {
      b.set(ascii("00099"), 12);
      return b;
    },
    defect: "base-address",
  },
  {
    name: "invalid UTF-8",
    damage: (b) => {
      b[locate(b, "245").start + 4] = 0xff;
      return b;
    },
    defect: "utf8",
    check: (r) => {
      const f = r.fields[2] as { subfields: { value: string }[] };
      assert.equal(f.subfields[0]!.value, "\ufffdvořák à Montréal");
    },
  },
  {
    name: "bad indicator",
    damage: (b) => {
      b[locate(b, "245").start] = 0x07;
      return b;
    },
    defect: "indicator",
    check: (r) => assert.equal((r.fields[2] as { ind1: string }).ind1, " "),
  },
  {
    name: "bad subfield code",
    damage: (b) => {
      b[locate(b, "245").start + 3] = 0x02;
      return b;
    },
    defect: "subfield-code",
    check: (r) => {
      // Kept with its text (as pymarc does); the sanitizer decides what is published.
      const f = r.fields[2] as { subfields: { code: string; value: string }[] };
      assert.deepEqual(f.subfields.map((s) => s.code), ["\x02", "b"]);
      assert.equal(f.subfields[0]!.value, "Dvořák à Montréal");
    },
  },
];

for (const c of cases) {
  Deno.test(`defect recovered: ${c.name}`, async () => {
    const a = encodeIso2709(sample("a"));
    const bad = c.damage(encodeIso2709(sample("bad")));
    const z = encodeIso2709(sample("z"));
    for (const chunk of [3, 1 << 16]) {
      const results = await readAll(concat(a, bad, z), chunk);
      assert.equal(results.length, 3);
      const mid = results[1]!;
      assert.ok(mid.ok, mid.ok ? "" : mid.reason);
      assert.ok(
        mid.warnings.some((w) => w.defect === c.defect),
        `expected ${c.defect}, got ${JSON.stringify(mid.warnings)}`,
      );
      for (const w of mid.warnings) {
        assert.ok(!/Dvo|Montr|Fran/.test(w.message), "warning must not carry record values");
      }
      assert.equal((mid.record.fields[0] as { value: string }).value, "bad");
      c.check?.(mid.record);
      assert.deepEqual(results[0]!.ok && results[0]!.warnings, []);
      const last = okRecord(results[2]);
      sameRecord(last, sample("z"));
      assert.equal(results[2]!.position.index, 3);
      assert.equal(results[2]!.position.offset, a.length + bad.length);
    }
  });
}

Deno.test("missing record terminator on the last record is recovered", async () => {
  const a = encodeIso2709(sample("a"));
  const results = await readAll(concat(a, encodeIso2709(sample("b")).slice(0, -1)));
  assert.equal(results.length, 2);
  const last = results[1]!;
  assert.ok(last.ok);
  assert.ok(last.warnings.some((w) => w.defect === "record-terminator"));
  sameRecord(last.record, sample("b"));
});

Deno.test("unrecoverable chunks are quarantined and the stream goes on", async () => {
  const a = encodeIso2709(sample("a"));
  const junk = ascii("THIS IS NOT MARC\x1d");
  const noDirectory = ascii("00040nam a22xxxxx   4500no directory here\x1d");
  const z = encodeIso2709(sample("z"));
  const results = await readAll(concat(a, junk, noDirectory, z), 5);
  assert.deepEqual(results.map((r) => r.ok), [true, false, false, true]);
  const [, j, n] = results;
  assert.ok(j && !j.ok && n && !n.ok);
  assert.equal(
    j.reason,
    "Cannot read MARC record 2: record is 17 bytes, shorter than the 24-byte leader",
  );
  assert.equal(j.position.offset, a.length);
  assert.match(n.reason, /^Cannot read MARC record 3: /);
  assert.ok(!n.reason.includes("no directory here"));
  sameRecord(okRecord(results[3]), sample("z"));
});

Deno.test("a run longer than maxRecordBytes without terminator is skipped without buffering", async () => {
  const a = encodeIso2709(sample("a"));
  const z = encodeIso2709(sample("z"));
  const garbage = new Uint8Array(5000).fill(0x41);
  garbage[4999] = 0x1d;
  const results = await readAll(concat(a, garbage, z), 256, { maxRecordBytes: 1000 });
  assert.deepEqual(results.map((r) => r.ok), [true, false, true]);
  const bad = results[1]!;
  assert.ok(!bad.ok);
  assert.match(bad.reason, /no record terminator within 1000 bytes \(5000 bytes skipped\)/);
  sameRecord(okRecord(results[2]), sample("z"));
});

Deno.test("leader/09 blank with valid UTF-8 data is decoded as UTF-8 with a warning", async () => {
  const bytes = encodeIso2709(sample("a"));
  bytes[9] = 0x20;
  const [r] = await readAll(bytes);
  assert.ok(r && r.ok);
  assert.ok(r.warnings.some((w) => w.defect === "leader"));
  sameRecord(r.record, sample("a"));
  // Forcing MARC-8 gives no UTF-8 detection.
  const [forced] = await readAll(bytes, 1 << 16, { encoding: "marc-8" });
  assert.ok(forced && forced.ok);
  assert.notDeepEqual(forced.record.fields, sample("a").fields);
});

Deno.test("a record missing its terminator does not swallow the next one (counts add up)", async () => {
  const records = ["a", "b", "c", "d"].map((id) => encodeIso2709(sample(id)));
  // Record 2 loses its 0x1D; its leader still counts it (the writer forgot the byte).
  const damaged = [records[0]!, records[1]!.slice(0, -1), records[2]!, records[3]!];
  for (const chunk of [1, 7, 1 << 16]) {
    const results = await readAll(concat(...damaged), chunk);
    assert.equal(results.length, 4, `chunk ${chunk}`);
    assert.ok(results.every((r) => r.ok));
    results.forEach((r, i) => sameRecord(okRecord(r), sample(["a", "b", "c", "d"][i]!)));
    assert.ok(results[1]!.ok && results[1]!.warnings.some((w) => w.defect === "record-terminator"));
    assert.deepEqual(results[2]!.ok && results[2]!.warnings, []);
  }
  // Length and terminator both wrong: still framed at the last field terminator.
  const garbled = records[1]!.slice(0, -1);
  garbled.set(ascii("9x9x9"), 0);
  const results = await readAll(concat(records[0]!, garbled, records[2]!, records[3]!), 5);
  assert.deepEqual(results.map((r) => r.ok), [true, true, true, true]);
  sameRecord(okRecord(results[2]), sample("c"));
});
