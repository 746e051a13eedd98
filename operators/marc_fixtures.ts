/**
 * Deterministic synthetic MARC 21 bibliographic records for tests and
 * benchmarks: titles with diacritics, ISBNs, subjects, local and item
 * fields holding fake barcodes (`39999` + 9 digits), streamed as ISO 2709
 * in UTF-8 or MARC-8, with an optional defect injector.
 *
 * Every record depends only on `(seed, index)`, so any record can be
 * regenerated on its own to compute expectations.
 *
 * @module
 */

import { encodeIso2709, type MarcEncoding } from "./marc_iso2709.ts";
import type { DataField, MarcField, MarcRecord } from "./marc_record.ts";

/** Kinds of damage the defect injector can apply to a record's bytes. */
export type FixtureDefect =
  | "bad-length"
  | "non-numeric-length"
  | "bad-directory"
  | "directory-past-data"
  | "missing-field-terminator"
  | "missing-record-terminator"
  | "invalid-bytes"
  | "bad-indicator"
  | "bad-subfield-code"
  | "junk";

/** All defect kinds, in the order the injector cycles through them. */
export const FIXTURE_DEFECTS: readonly FixtureDefect[] = [
  "bad-length",
  "non-numeric-length",
  "bad-directory",
  "directory-past-data",
  "missing-field-terminator",
  "missing-record-terminator",
  "invalid-bytes",
  "bad-indicator",
  "bad-subfield-code",
  "junk",
];

/** Options for the fixture generators. */
export interface FixtureOptions {
  /** Number of records. */
  count: number;
  /** PRNG seed (default 1). */
  seed?: number;
  /** Byte encoding (default `"utf-8"`). */
  encoding?: MarcEncoding;
  /** Damage every n-th record (1-based index divisible by n); 0 or absent = none. */
  defectEvery?: number;
  /** Defect kinds to cycle through (default all of {@linkcode FIXTURE_DEFECTS}). */
  defects?: readonly FixtureDefect[];
  /** Approximate size of the byte chunks yielded (default 64 KiB). */
  chunkBytes?: number;
}

/** Small fast seeded PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PLACES = [
  "Montréal",
  "Québec",
  "São Paulo",
  "Zürich",
  "Kraków",
  "Gdańsk",
  "Łódź",
  "Ærøskøbing",
  "Þingvellir",
  "Curaçao",
  "Málaga",
  "Reykjavík",
  "Đà Nẵng",
  "Besançon",
  "Plzeň",
  "İzmir",
  "Trois-Rivières",
  "Ørsted",
];
const PEOPLE = [
  ["Dvořák", "Antonín"],
  ["Brontë", "Charlotte"],
  ["Čapek", "Karel"],
  ["Ångström", "Anders"],
  ["Gauß", "Carl Friedrich"],
  ["Núñez", "Álvar"],
  ["Chouinard", "Ernest"],
  ["Lemaître", "Georges"],
  ["Smith", "Jane"],
  ["Hašek", "Jaroslav"],
];
const NOUNS = [
  "Chronique",
  "Letters",
  "Voyage",
  "Poèmes",
  "History",
  "Souvenirs",
  "Music",
  "Carnets",
  "Études",
  "Maps",
];
const SUBJECTS = [
  "Canadian poetry",
  "Music",
  "Rivers",
  "Cathedrals",
  "Economic history",
  "Folk songs",
  "Architecture",
  "Railroads",
];
const SUBDIVISIONS = ["History", "Criticism and interpretation", "Pictorial works", "Biography"];
const PUBLISHERS = [
  "Éditions du Soleil",
  "Carrel Press",
  "Librairie Beauchemin",
  "Nakladatelství Orbis",
];
const LANGS = ["fre", "eng", "cze", "pol", "ger", "spa"];

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)]!;
}

function digits(rand: () => number, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += Math.floor(rand() * 10);
  return s;
}

function isbn13(rand: () => number): string {
  const body = "978" + digits(rand, 9);
  let sum = 0;
  for (let i = 0; i < 12; i++) sum += Number(body[i]) * (i % 2 === 0 ? 1 : 3);
  const check = (10 - (sum % 10)) % 10;
  return `${body.slice(0, 3)}-${body[3]}-${body.slice(4, 8)}-${body.slice(8, 12)}-${check}`;
}

function isbn10(rand: () => number): string {
  const body = digits(rand, 9);
  let sum = 0;
  for (let i = 0; i < 9; i++) sum += Number(body[i]) * (10 - i);
  const c = (11 - (sum % 11)) % 11;
  return `${body[0]}-${body.slice(1, 4)}-${body.slice(4, 9)}-${c === 10 ? "X" : c}`;
}

function df(tag: string, ind1: string, ind2: string, ...pairs: string[]): DataField {
  const subfields = [];
  for (let i = 0; i < pairs.length; i += 2) {
    subfields.push({ code: pairs[i]!, value: pairs[i + 1]! });
  }
  return { tag, ind1, ind2, subfields };
}

/** Fake item barcode: `39999` followed by 9 digits. */
function barcode(rand: () => number): string {
  return "39999" + digits(rand, 9);
}

/**
 * The synthetic record at 1-based `index` for `seed`.
 *
 * @example
 * ```ts
 * import { fixtureRecord } from "./marc_fixtures.ts";
 * const rec = fixtureRecord(1);
 * rec.fields[0]; // { tag: "001", value: "crl000000001" }
 * ```
 */
export function fixtureRecord(index: number, seed = 1): MarcRecord {
  const rand = prng(Math.imul(seed, 0x9e3779b1) ^ Math.imul(index, 0x85ebca6b));
  const year = 1850 + Math.floor(rand() * 170);
  const lang = pick(rand, LANGS);
  const place = pick(rand, PLACES);
  const [surname, forename] = pick(rand, PEOPLE);
  const fields: MarcField[] = [
    { tag: "001", value: `crl${String(index).padStart(9, "0")}` },
    { tag: "005", value: "20240101120000.0" },
    {
      tag: "008",
      value: `240101s${year}    xx ${" ".repeat(17)}${lang} d`,
    },
  ];
  const isbnRoll = rand();
  if (isbnRoll < 0.5) fields.push(df("020", " ", " ", "a", isbn13(rand)));
  else if (isbnRoll < 0.8) fields.push(df("020", " ", " ", "a", `${isbn10(rand)} (pbk.)`));
  else if (isbnRoll < 0.9) fields.push(df("020", " ", " ", "a", "0-000-00000-1")); // bad checksum
  fields.push(
    df("100", "1", " ", "a", `${surname}, ${forename},`, "d", `${year - 40}-${year + 20}.`),
  );
  const noun = pick(rand, NOUNS);
  const other = pick(rand, PLACES);
  fields.push(
    df(
      "245",
      "1",
      "0",
      "a",
      `${noun} de ${place} :`,
      "b",
      `${other} et ${surname} /`,
      "c",
      `${forename} ${surname}.`,
    ),
  );
  fields.push(
    df("264", " ", "1", "a", `${place} :`, "b", `${pick(rand, PUBLISHERS)},`, "c", `${year}.`),
  );
  fields.push(df("300", " ", " ", "a", `${100 + Math.floor(rand() * 400)} p. ;`, "c", "24 cm."));
  if (rand() < 0.3) fields.push(df("590", " ", " ", "a", "Local note: copy bound with others."));
  if (rand() < 0.2) {
    fields.push(df("541", "0", " ", "a", "Private acquisition source", "d", "2001."));
  }
  if (rand() < 0.2) fields.push(df("583", "0", " ", "a", "condition reviewed", "x", "Staff only."));
  if (rand() < 0.2) fields.push(df("583", "1", " ", "a", "digitized", "x", "Internal remark."));
  const nSubjects = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < nSubjects; i++) {
    fields.push(
      df(
        "650",
        " ",
        "0",
        "a",
        pick(rand, SUBJECTS),
        "z",
        pick(rand, PLACES),
        "x",
        `${pick(rand, SUBDIVISIONS)}.`,
      ),
    );
  }
  if (rand() < 0.5) fields.push(df("700", "1", " ", "a", `${pick(rand, PEOPLE)[0]}, ${forename}.`));
  const items = 1 + Math.floor(rand() * 3);
  const system = Math.floor(rand() * 3);
  const call = `PS${8000 + Math.floor(rand() * 999)} .${String.fromCharCode(65 + (index % 26))}${
    Math.floor(rand() * 90) + 10
  }`;
  for (let i = 0; i < items; i++) {
    if (system === 0) {
      fields.push(
        df("952", " ", " ", "a", "MAIN", "b", "MAIN", "o", call, "p", barcode(rand), "y", "BK"),
      );
    } else if (system === 1) {
      fields.push(df("945", " ", " ", "a", call, "i", barcode(rand), "l", "main"));
    } else {
      fields.push(
        df(
          "852",
          "0",
          " ",
          "a",
          "CRL",
          "b",
          "MAIN",
          "h",
          call,
          "p",
          barcode(rand),
          "x",
          "shelf check",
        ),
      );
      fields.push(df("876", " ", " ", "a", String(index * 10 + i), "p", barcode(rand)));
    }
  }
  fields.push(df("999", " ", " ", "c", String(index), "d", String(index)));
  return { leader: "00000nam a2200000 i 4500", fields };
}

/**
 * The defect the injector applies to record `index` (1-based), or `null`.
 *
 * @example
 * ```ts
 * import { fixtureDefectAt } from "./marc_fixtures.ts";
 * fixtureDefectAt(10, { count: 100, defectEvery: 10 }); // "bad-length"
 * ```
 */
export function fixtureDefectAt(index: number, opts: FixtureOptions): FixtureDefect | null {
  const every = opts.defectEvery ?? 0;
  if (every <= 0 || index % every !== 0) return null;
  const kinds = opts.defects ?? FIXTURE_DEFECTS;
  if (kinds.length === 0) return null;
  return kinds[(index / every - 1) % kinds.length]!;
}

/**
 * Synthetic records as objects (no defects; those apply to bytes only).
 *
 * @example
 * ```ts
 * import { generateMarcRecords } from "./marc_fixtures.ts";
 * for (const rec of generateMarcRecords({ count: 3 })) console.log(rec.fields.length);
 * ```
 */
export function* generateMarcRecords(opts: FixtureOptions): Generator<MarcRecord> {
  for (let i = 1; i <= opts.count; i++) yield fixtureRecord(i, opts.seed ?? 1);
}

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** Locate a field's directory entry and data in an encoded record we wrote. */
function locate(bytes: Uint8Array, tag: string): { entry: number; start: number; length: number } {
  const base = Number(String.fromCharCode(...bytes.subarray(12, 17)));
  for (let at = 24; bytes[at] !== 0x1e; at += 12) {
    if (String.fromCharCode(...bytes.subarray(at, at + 3)) === tag) {
      const length = Number(String.fromCharCode(...bytes.subarray(at + 3, at + 7)));
      const start = Number(String.fromCharCode(...bytes.subarray(at + 7, at + 12)));
      return { entry: at, start: base + start, length };
    }
  }
  throw new Error(`Cannot inject fixture defect: field ${tag} not found`);
}

/** Apply `defect` to an encoded record; returns the bytes to emit in its place. */
function injectDefect(bytes: Uint8Array, defect: FixtureDefect): Uint8Array {
  const b = bytes.slice();
  switch (defect) {
    case "bad-length":
      b.set(ascii(String(b.length + 37).padStart(5, "0")), 0);
      return b;
    case "non-numeric-length":
      b.set(ascii("0x5?7"), 0);
      return b;
    case "bad-directory": {
      const f = locate(b, "264");
      b.set(ascii("0A0B0"), f.entry + 7);
      return b;
    }
    case "directory-past-data": {
      const f = locate(b, "300");
      b.set(ascii("9999"), f.entry + 3);
      return b;
    }
    case "missing-field-terminator": {
      const f = locate(b, "245");
      b[f.start + f.length - 1] = 0x20;
      return b;
    }
    case "missing-record-terminator": {
      const cut = b.slice(0, b.length - 1);
      cut.set(ascii(String(cut.length).padStart(5, "0")), 0);
      return cut;
    }
    case "invalid-bytes": {
      const f = locate(b, "245");
      b[f.start + 4] = 0xff; // inside $a
      return b;
    }
    case "bad-indicator": {
      const f = locate(b, "245");
      b[f.start] = 0x23; // '#'
      return b;
    }
    case "bad-subfield-code": {
      const f = locate(b, "300");
      b[f.start + 3] = 0x07; // code of $a
      return b;
    }
    case "junk": {
      const junk = ascii("NOT A MARC RECORD\x1d");
      const out = new Uint8Array(junk.length + b.length);
      out.set(junk);
      out.set(b, junk.length);
      return out;
    }
  }
}

/**
 * Stream synthetic records as ISO 2709 bytes in chunks of about
 * `chunkBytes`. Memory stays flat for any `count`.
 *
 * @example
 * ```ts
 * import { generateIso2709 } from "./marc_fixtures.ts";
 * import { readIso2709 } from "./marc_iso2709.ts";
 * let n = 0;
 * for await (const r of readIso2709(generateIso2709({ count: 1000, encoding: "marc-8" }))) {
 *   if (r.ok) n++;
 * }
 * ```
 */
export async function* generateIso2709(opts: FixtureOptions): AsyncGenerator<Uint8Array> {
  const chunkBytes = opts.chunkBytes ?? 1 << 16;
  const encoding = opts.encoding ?? "utf-8";
  let parts: Uint8Array[] = [];
  let size = 0;
  const flush = () => {
    const out = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    parts = [];
    size = 0;
    return out;
  };
  for (let i = 1; i <= opts.count; i++) {
    let bytes = encodeIso2709(fixtureRecord(i, opts.seed ?? 1), { encoding });
    const defect = fixtureDefectAt(i, opts);
    if (defect) bytes = injectDefect(bytes, defect);
    parts.push(bytes);
    size += bytes.length;
    if (size >= chunkBytes) yield flush();
  }
  if (size > 0) yield flush();
}
