/**
 * Mapping of a MARC 21 bibliographic record to a flat discovery document,
 * with ISBN/ISSN normalization and item counting.
 *
 * @module
 */

import {
  controlValue,
  type DataField,
  dataFields,
  type MarcRecord,
  subfieldValues,
} from "./marc_record.ts";

/** Flat document for a discovery index or warehouse. */
export interface DiscoveryDocument {
  /** Control number (001), or `null`. */
  id: string | null;
  /** 245 $a and $b, with trailing ISBD punctuation removed, or `null`. */
  title: string | null;
  /** 100/110/700/710 $a, in record order, without duplicates. */
  creators: string[];
  /** Valid ISBNs from 020 $a as ISBN-13 digits, without duplicates. */
  isbns: string[];
  /** First valid ISSN from 022 $a as `NNNN-NNNC`, or `null`. */
  issn: string | null;
  /** Publication year from 264 $c, else 260 $c, else 008/07-10. */
  year: number | null;
  /** Language code from 008/35-37, else 041 $a. */
  language: string | null;
  /** Subject headings ({@linkcode SUBJECT_TAGS}), subfields joined with " -- ", without duplicates. */
  subjects: string[];
  /** Coarse material type from leader/06-07. */
  format: string;
  /** Number of items (see {@linkcode countHoldings}). */
  holdings_count: number;
}

/** Options for {@linkcode toDiscovery}. */
export interface ToDiscoveryOptions {
  /**
   * Items counted before sanitizing (see {@linkcode countHoldings}). When
   * omitted, items are counted on the record passed in, which after
   * sanitizing usually gives 0.
   */
  holdingsCount?: number;
}

const TRAILING_PUNCT = /[\s/:;,=]+$/;

/** Trim whitespace and trailing ISBD punctuation (` /`, ` :`, ` ;`, `,`, `=`, final `.`). */
function trimIsbd(s: string): string {
  let t = s.trim().replace(TRAILING_PUNCT, "");
  // A final period is punctuation unless it ends an initial ("W.") or abbreviation ("Jr.").
  if (t.endsWith(".") && !/(?:^|[\s.])\p{Lu}\.$/u.test(t) && !/\b(?:Jr|Sr|Dr|St|etc)\.$/.test(t)) {
    t = t.slice(0, -1).replace(TRAILING_PUNCT, "");
  }
  return t.trim();
}

function isbn10Valid(d: string): boolean {
  let sum = 0;
  for (let i = 0; i < 10; i++) {
    const c = d[i]!;
    const v = c === "X" ? 10 : c.charCodeAt(0) - 48;
    if (v < 0 || v > 10 || (v === 10 && i !== 9)) return false;
    sum += v * (10 - i);
  }
  return sum % 11 === 0;
}

function ean13CheckDigit(first12: string): number {
  let sum = 0;
  for (let i = 0; i < 12; i++) sum += (first12.charCodeAt(i) - 48) * (i % 2 === 0 ? 1 : 3);
  return (10 - (sum % 10)) % 10;
}

/**
 * Normalize an ISBN (as found in 020 $a) to 13 digits: hyphens and spaces
 * removed, qualifiers such as "(pbk.)" dropped, ISBN-10 converted, checksum
 * validated. Returns `null` when invalid.
 *
 * @example
 * ```ts
 * import { normalizeIsbn } from "./marc_discovery.ts";
 * normalizeIsbn("0-306-40615-2 (pbk.)"); // "9780306406157"
 * normalizeIsbn("978-0-306-40615-7"); // "9780306406157"
 * normalizeIsbn("0-306-40615-3"); // null (bad checksum)
 * ```
 */
export function normalizeIsbn(raw: string): string | null {
  const m = /^[\s]*([0-9Xx][0-9Xx\s-]*)/.exec(raw);
  if (!m) return null;
  const d = m[1]!.replace(/[\s-]/g, "").toUpperCase();
  if (d.length === 10) {
    if (!isbn10Valid(d)) return null;
    const first12 = "978" + d.slice(0, 9);
    return first12 + ean13CheckDigit(first12);
  }
  if (d.length === 13 && /^97[89]\d{10}$/.test(d)) {
    return ean13CheckDigit(d.slice(0, 12)) === d.charCodeAt(12) - 48 ? d : null;
  }
  return null;
}

/**
 * Normalize an ISSN to `NNNN-NNNC`, validating the check character.
 * Returns `null` when invalid.
 *
 * @example
 * ```ts
 * import { normalizeIssn } from "./marc_discovery.ts";
 * normalizeIssn("0009-7330"); // "0009-7330"
 * ```
 */
export function normalizeIssn(raw: string): string | null {
  const m = /^\s*(\d{4})-?(\d{3}[\dXx])\b/.exec(raw);
  if (!m) return null;
  const d = (m[1]! + m[2]!).toUpperCase();
  let sum = 0;
  for (let i = 0; i < 7; i++) sum += (d.charCodeAt(i) - 48) * (8 - i);
  const check = (11 - (sum % 11)) % 11;
  const expected = check === 10 ? "X" : String(check);
  return d[7] === expected ? `${d.slice(0, 4)}-${d.slice(4)}` : null;
}

/**
 * Subject access tags defined by MARC 21 (local `69X` and undefined `6X9`
 * tags such as Sirsi's `659` are left out).
 */
export const SUBJECT_TAGS: readonly string[] = [
  "600",
  "610",
  "611",
  "630",
  "647",
  "648",
  "650",
  "651",
  "653",
  "654",
  "655",
  "656",
  "657",
  "658",
  "662",
];

/** Item-bearing tags counted by {@linkcode countHoldings}. */
export const HOLDINGS_TAGS: readonly string[] = ["852", "876", "877", "878", "945", "949", "952"];

/**
 * Count items in a record before item fields are stripped: Koha `952`,
 * III `945` and `949` fields count one each; MARC 21 embedded holdings
 * count the larger of the number of `852` fields and the number of
 * `876`-`878` fields (both describe the same copies).
 *
 * @example
 * ```ts
 * import { countHoldings } from "./marc_discovery.ts";
 * countHoldings({ leader: "", fields: [{ tag: "952", ind1: " ", ind2: " ", subfields: [] }] }); // 1
 * ```
 */
export function countHoldings(record: MarcRecord): number {
  let n852 = 0;
  let n87x = 0;
  let other = 0;
  for (const f of record.fields) {
    switch (f.tag) {
      case "852":
        n852++;
        break;
      case "876":
      case "877":
      case "878":
        n87x++;
        break;
      case "945":
      case "949":
      case "952":
        other++;
        break;
    }
  }
  return other + Math.max(n852, n87x);
}

const FORMATS: Record<string, string> = {
  c: "score",
  d: "score",
  e: "map",
  f: "map",
  g: "video",
  i: "audio",
  j: "music",
  k: "image",
  m: "computer file",
  o: "kit",
  p: "mixed materials",
  r: "object",
};

/**
 * Coarse material type from leader/06 (type of record) and leader/07
 * (bibliographic level).
 *
 * @example
 * ```ts
 * import { formatOf } from "./marc_discovery.ts";
 * formatOf("00000nam a2200000   4500"); // "book"
 * formatOf("00000cas a2200000   4500"); // "serial"
 * ```
 */
export function formatOf(leader: string): string {
  const type = leader[6] ?? " ";
  const level = leader[7] ?? " ";
  if (type === "a") return level === "b" || level === "i" || level === "s" ? "serial" : "book";
  if (type === "t") return "manuscript";
  return FORMATS[type] ?? "unknown";
}

function yearFrom(s: string): number | null {
  const m = /(\d{4})/.exec(s);
  return m ? Number(m[1]) : null;
}

function firstYear(fields: DataField[]): number | null {
  for (const f of fields) {
    for (const c of subfieldValues(f, "c")) {
      const y = yearFrom(c);
      if (y !== null) return y;
    }
  }
  return null;
}

function uniq(values: string[]): string[] {
  return [...new Set(values.filter((v) => v.length > 0))];
}

/**
 * Map a record to a {@linkcode DiscoveryDocument}. Pass the item count
 * taken before sanitizing as `holdingsCount`.
 *
 * @example
 * ```ts
 * import { toDiscovery } from "./marc_discovery.ts";
 * const doc = toDiscovery({
 *   leader: "00000nam a2200000   4500",
 *   fields: [
 *     { tag: "001", value: "b1" },
 *     { tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "Les aspirations :" }, { code: "b", value: "poésies /" }] },
 *   ],
 * }, { holdingsCount: 2 });
 * // doc.title === "Les aspirations : poésies"
 * ```
 */
export function toDiscovery(record: MarcRecord, opts: ToDiscoveryOptions = {}): DiscoveryDocument {
  const id = controlValue(record, "001")?.trim() || null;
  let title: string | null = null;
  const f245 = dataFields(record, "245")[0];
  if (f245) {
    const parts = f245.subfields.filter((s) => s.code === "a" || s.code === "b").map((s) =>
      s.value.trim()
    );
    const joined = trimIsbd(parts.join(" "));
    title = joined.length > 0 ? joined : null;
  }
  const creators = uniq(
    dataFields(record, "100", "110", "700", "710").flatMap((f) =>
      subfieldValues(f, "a").map(trimIsbd)
    ),
  );
  const isbns = uniq(
    dataFields(record, "020").flatMap((f) => subfieldValues(f, "a")).map(normalizeIsbn).filter((
      v,
    ): v is string => v !== null),
  );
  let issn: string | null = null;
  for (const f of dataFields(record, "022")) {
    for (const a of subfieldValues(f, "a")) {
      issn ??= normalizeIssn(a);
    }
  }
  const f008 = controlValue(record, "008") ?? "";
  const f264 = dataFields(record, "264");
  let year = firstYear(f264.filter((f) => f.ind2 === "1")) ?? firstYear(f264) ??
    firstYear(dataFields(record, "260"));
  if (year === null && /^\d{4}$/.test(f008.slice(7, 11))) year = Number(f008.slice(7, 11));
  let language: string | null = null;
  const lang008 = f008.slice(35, 38);
  if (/^[a-z]{3}$/.test(lang008)) language = lang008;
  else {
    const a041 = dataFields(record, "041").flatMap((f) => subfieldValues(f, "a"))[0];
    if (a041 && /^[a-z]{3}/.test(a041.trim())) language = a041.trim().slice(0, 3);
  }
  const subjects = uniq(
    dataFields(record, ...SUBJECT_TAGS).map((f) =>
      f.subfields.filter((s) => /[a-z]/.test(s.code)).map((s) => trimIsbd(s.value)).filter((v) =>
        v.length > 0
      ).join(" -- ")
    ),
  );
  return {
    id,
    title,
    creators,
    isbns,
    issn,
    year,
    language,
    subjects,
    format: formatOf(record.leader),
    holdings_count: opts.holdingsCount ?? countHoldings(record),
  };
}
