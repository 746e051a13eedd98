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
  indexDataFields,
  type MarcRecord,
  subfieldValues,
} from "./record.ts";

/** Flat document for a discovery index or warehouse. */
export interface DiscoveryDocument {
  /** Control number (001), or `null`. */
  id: string | null;
  /** 245 $a and $b, with trailing ISBD punctuation removed, or `null`. */
  title: string | null;
  /** 100/110/111/700/710/711 $a, in record order, without duplicates. */
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
  /**
   * Vernacular forms from `880` fields, each paired with its romanized field (see
   * {@linkcode vernacularForms}). Present only when the record has `880`s for these fields.
   */
  vernacular?: VernacularForm[];
}

/** Which discovery field a vernacular form belongs to. */
export type VernacularField = "title" | "creators" | "subjects" | "series" | "publisher";

/**
 * One `880` (alternate graphic representation) in discovery: the vernacular text, the romanized
 * text of the field it is linked to through `$6` (or `null` when it has no counterpart), and its
 * script.
 */
export interface VernacularForm {
  /** The discovery field the form belongs to. */
  field: VernacularField;
  /** The tag of the romanized field (`245`, `100`, `650` ...). */
  tag: string;
  /** The vernacular text, extracted as for the romanized field. */
  value: string;
  /** The linked romanized text, or `null` for an unlinked 880 (occurrence `00`). */
  romanized: string | null;
  /** ISO 15924 script code (`Hebr`, `Arab`, `Cyrl`, `Grek`, `Hani`, `Jpan`, `Kore`), or `null`. */
  script: string | null;
  /** Writing direction: `rtl` when `$6` says `/r` or the script is Hebrew or Arabic. */
  direction: "ltr" | "rtl";
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

/**
 * Whether UTF-16 unit `c` is ISBD trailing punctuation: `/ : ; , =` or a character of the regular
 * expression class `\s` (the set `String.prototype.trim` removes).
 */
function isTrailingPunct(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d);
  if (c < 0x7f) return c === 0x2f || c === 0x3a || c === 0x3b || c === 0x2c || c === 0x3d;
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 ||
    c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/** `t` without its trailing ISBD punctuation and whitespace (a scan from the end, no regex). */
function stripTrailingPunct(t: string): string {
  let end = t.length;
  while (end > 0 && isTrailingPunct(t.charCodeAt(end - 1))) end--;
  return end === t.length ? t : t.slice(0, end);
}

/**
 * Trim whitespace and trailing ISBD punctuation (` /`, ` :`, ` ;`, `,`, `=`, final `.`). A final
 * period stays when it ends an initial ("W."), an abbreviation ("Jr.") or an ellipsis ("...").
 *
 * @example
 * ```ts
 * import { trimIsbd } from "./discovery.ts";
 * trimIsbd("Les aspirations :"); // "Les aspirations"
 * trimIsbd("tinyana ..."); // "tinyana ..."
 * ```
 */
export function trimIsbd(s: string): string {
  let t = stripTrailingPunct(s.trim());
  if (
    t.charCodeAt(t.length - 1) === 0x2e && !t.endsWith("...") &&
    !/(?:^|[\s.])\p{Lu}\.$/u.test(t) && !/\b(?:Jr|Sr|Dr|St|etc)\.$/.test(t)
  ) {
    t = stripTrailingPunct(t.slice(0, -1));
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
 * import { normalizeIsbn } from "./discovery.ts";
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
 * import { normalizeIssn } from "./discovery.ts";
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
 * import { countHoldings } from "./discovery.ts";
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
 * import { formatOf } from "./discovery.ts";
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

function firstYear(fields: readonly DataField[]): number | null {
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
 * import { toDiscovery } from "./discovery.ts";
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
  const index = indexDataFields(record);
  const f245 = index.tagged("245")[0];
  const title = f245 ? titleOf(f245) : null;
  const creators = uniq(
    index.anyOf(CREATOR_TAGS).flatMap((f) => subfieldValues(f, "a").map(trimIsbd)),
  );
  const isbns = uniq(
    index.tagged("020").flatMap((f) => subfieldValues(f, "a")).map(normalizeIsbn).filter((
      v,
    ): v is string => v !== null),
  );
  let issn: string | null = null;
  for (const f of index.tagged("022")) {
    for (const a of subfieldValues(f, "a")) {
      issn ??= normalizeIssn(a);
    }
  }
  const f008 = controlValue(record, "008") ?? "";
  const f264 = index.tagged("264");
  let year = firstYear(f264.filter((f) => f.ind2 === "1")) ?? firstYear(f264) ??
    firstYear(index.tagged("260"));
  if (year === null && /^\d{4}$/.test(f008.slice(7, 11))) year = Number(f008.slice(7, 11));
  let language: string | null = null;
  const lang008 = f008.slice(35, 38);
  if (/^[a-z]{3}$/.test(lang008)) language = lang008;
  else {
    const a041 = index.tagged("041").flatMap((f) => subfieldValues(f, "a"))[0];
    if (a041 && /^[a-z]{3}/.test(a041.trim())) language = a041.trim().slice(0, 3);
  }
  const subjects = uniq(index.anyOf(SUBJECT_TAGS).map(headingOf));
  const vernacular = vernacularForms(record);
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
    ...(vernacular.length > 0 ? { vernacular } : {}),
  };
}

/** Main and added entries for persons, bodies and meetings (111/711 included). */
export const CREATOR_TAGS: readonly string[] = ["100", "110", "111", "700", "710", "711"];
/** Series statements and added entries. */
export const SERIES_TAGS: readonly string[] = ["440", "490", "800", "810", "811", "830"];
/** Publication, production and distribution statements. */
export const PUBLISHER_TAGS: readonly string[] = ["260", "264"];

function titleOf(f: DataField): string | null {
  const parts = f.subfields.filter((s) => s.code === "a" || s.code === "b").map((s) =>
    s.value.trim()
  );
  const joined = trimIsbd(parts.join(" "));
  return joined.length > 0 ? joined : null;
}

function headingOf(f: DataField): string {
  return f.subfields.filter((s) => /[a-z]/.test(s.code)).map((s) => trimIsbd(s.value)).filter((
    v,
  ) => v.length > 0).join(" -- ");
}

function seriesOf(f: DataField): string {
  const codes = f.tag === "490" || f.tag === "440" || f.tag === "830" ? ["a"] : ["a", "t"];
  return f.subfields.filter((s) => codes.includes(s.code)).map((s) => trimIsbd(s.value)).filter((
    v,
  ) => v.length > 0).join(". ");
}

/** The text of one field as its discovery field extracts it, by category. */
function textOf(category: VernacularField, f: DataField): string | null {
  let t: string | null;
  switch (category) {
    case "title":
      t = titleOf(f);
      break;
    case "creators":
      t = subfieldValues(f, "a").map(trimIsbd).filter((v) => v.length > 0)[0] ?? null;
      break;
    case "subjects":
      t = headingOf(f);
      break;
    case "series":
      t = seriesOf(f);
      break;
    case "publisher":
      t = subfieldValues(f, "b").map(trimIsbd).filter((v) => v.length > 0).join("; ");
      break;
  }
  return t !== null && t.length > 0 ? t : null;
}

function categoryOf(tag: string): VernacularField | undefined {
  if (tag === "245") return "title";
  if (CREATOR_TAGS.includes(tag)) return "creators";
  if (SUBJECT_TAGS.includes(tag)) return "subjects";
  if (SERIES_TAGS.includes(tag)) return "series";
  if (PUBLISHER_TAGS.includes(tag)) return "publisher";
  return undefined;
}

/** MARC script identification codes (as in `$6` and `066`) to ISO 15924. */
const SCRIPT_CODES: Record<string, string> = {
  "(3": "Arab",
  "(4": "Arab",
  "(B": "Latn",
  "$1": "Hani",
  "(N": "Cyrl",
  "(Q": "Cyrl",
  "(S": "Grek",
  "(2": "Hebr",
};

/** The script of a text from its letters, for 880s whose `$6` and `066` say nothing. */
function scriptOfText(text: string): string | null {
  if (/\p{Script=Hangul}/u.test(text)) return "Kore";
  if (/[\p{Script=Hiragana}\p{Script=Katakana}]/u.test(text)) return "Jpan";
  if (/\p{Script=Han}/u.test(text)) return "Hani";
  if (/\p{Script=Hebrew}/u.test(text)) return "Hebr";
  if (/\p{Script=Arabic}/u.test(text)) return "Arab";
  if (/\p{Script=Cyrillic}/u.test(text)) return "Cyrl";
  if (/\p{Script=Greek}/u.test(text)) return "Grek";
  if (/\p{Script=Latin}/u.test(text)) return "Latn";
  return null;
}

interface Linkage {
  tag: string;
  occurrence: string;
  script: string | null;
  rtl: boolean;
}

/** Parses `$6` linkage: `245-01/(2/r` -> tag 245, occurrence 01, script Hebr, right to left. */
function parseLinkage(value: string): Linkage | undefined {
  const m = /^\s*([0-9A-Za-z]{3})-(\d{2,})(?:\/([^/]*))?(?:\/(r))?/.exec(value);
  if (!m) return undefined;
  const code = m[3]?.trim() ?? "";
  return {
    tag: m[1]!,
    occurrence: m[2]!,
    script: code === "" ? null : SCRIPT_CODES[code] ?? null,
    rtl: m[4] === "r",
  };
}

/**
 * The vernacular forms of a record: every `880` linked (by `$6`) to a title, creator, subject,
 * series or publisher field, paired with the romanized field that links back to it (`$6 880-NN`).
 * The script comes from the 880's `$6` (`(2` Hebrew, `(3` Arabic, `(N` Cyrillic, `(S` Greek, `$1`
 * CJK, refined to Japanese or Korean from the letters), else from `066` when it names one
 * non-Latin set, else from the letters. A record without such 880s gives `[]`.
 *
 * @example
 * ```ts
 * import { vernacularForms } from "./discovery.ts";
 * const forms = vernacularForms({
 *   leader: "00000nam a2200000   4500",
 *   fields: [
 *     { tag: "245", ind1: "1", ind2: "0", subfields: [{ code: "6", value: "880-01" }, { code: "a", value: "Shalom /" }] },
 *     { tag: "880", ind1: "1", ind2: "0", subfields: [{ code: "6", value: "245-01/(2/r" }, { code: "a", value: "שלום /" }] },
 *   ],
 * });
 * // [{ field: "title", tag: "245", value: "שלום", romanized: "Shalom", script: "Hebr", direction: "rtl" }]
 * ```
 */
export function vernacularForms(record: MarcRecord): VernacularForm[] {
  const out: VernacularForm[] = [];
  for (const link of vernacularLinks(record)) {
    const category = categoryOf(link.tag);
    if (category === undefined) continue;
    const value = textOf(category, link.field);
    if (value === null) continue;
    out.push({
      field: category,
      tag: link.tag,
      value,
      romanized: link.partner ? textOf(category, link.partner) : null,
      script: link.script,
      direction: link.rtl ? "rtl" : "ltr",
    });
  }
  return out;
}

/** One `880` of a record, resolved: see {@linkcode vernacularLinks}. */
export interface VernacularLink {
  /** The 880 field. */
  field: DataField;
  /** The tag it stands for (from `$6`). */
  tag: string;
  /** The romanized field linked to it (`$6 880-NN`), if any. */
  partner: DataField | undefined;
  /** ISO 15924 script code, or `null`. */
  script: string | null;
  /** Right to left (`$6 .../r`, or a Hebrew or Arabic script). */
  rtl: boolean;
}

/**
 * Every `880` of a record with a readable `$6`, with the tag it stands for, its romanized partner
 * and its script (from `$6`, else `066`, else the letters; `$1` refined to Japanese or Korean).
 *
 * @example
 * ```ts
 * import { vernacularLinks } from "./discovery.ts";
 * vernacularLinks({ leader: "", fields: [] }); // []
 * ```
 */
export function vernacularLinks(record: MarcRecord): VernacularLink[] {
  const fields = dataFields(record);
  let recordScript: string | null = null;
  const f066 = fields.find((f) => f.tag === "066");
  if (f066) {
    const named = new Set(
      f066.subfields.filter((s) => s.code === "c" || s.code === "b").map((s) =>
        SCRIPT_CODES[s.value.trim()]
      ).filter((v): v is string => v !== undefined && v !== "Latn"),
    );
    if (named.size === 1) recordScript = [...named][0]!;
  }
  const romanized = new Map<string, DataField>();
  for (const f of fields) {
    if (f.tag === "880") continue;
    for (const six of subfieldValues(f, "6")) {
      const link = parseLinkage(six);
      if (link && link.tag === "880" && link.occurrence !== "00") {
        romanized.set(`${f.tag}-${link.occurrence}`, f);
      }
    }
  }
  const out: VernacularLink[] = [];
  for (const f of fields) {
    if (f.tag !== "880") continue;
    const link = parseLinkage(subfieldValues(f, "6")[0] ?? "");
    if (!link) continue;
    const letters = scriptOfText(
      f.subfields.filter((s) => s.code !== "6").map((s) => s.value).join(" "),
    );
    let script = link.script ?? recordScript ?? letters;
    // EACC also carries Japanese kana and Korean hangul.
    if (script === "Hani" && (letters === "Jpan" || letters === "Kore")) script = letters;
    out.push({
      field: f,
      tag: link.tag,
      partner: link.occurrence === "00"
        ? undefined
        : romanized.get(`${link.tag}-${link.occurrence}`),
      script,
      rtl: link.rtl || script === "Hebr" || script === "Arab",
    });
  }
  return out;
}
