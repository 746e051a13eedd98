/**
 * Personally identifying information (PII) handling for patron data: key-based
 * stripping and value scanners.
 *
 * Nothing in this module ever returns or reports a record value. Results carry
 * field paths, detector names and counts only. Paths join object keys with
 * `.` and mark array elements with `[]` (so `holds[].patron_id` aggregates
 * every element of `holds`). Keys can themselves be data (a barcode or a name
 * used as a key), so a path names a key only when a {@link FieldNamer} knows
 * it to be safe (declared by the DAG, or a PII key); any other key is shown by
 * its position, `{key 2}`.
 *
 * @module
 */
import { createFieldNamer, type FieldNamer, unnamedKey } from "./field_names.ts";

/**
 * Known PII carrier keys, as written in common ILS schemas (Evergreen, Koha,
 * FOLIO, Sierra, Alma). Matching is case-insensitive and ignores `_` and `-`,
 * so `patron_id`, `patronId`, `PATRON_ID` and `patron-id` are the same key.
 * Keys are matched exactly (after normalization), never as substrings.
 *
 * Groups:
 * - Patron identifiers: `patron_id`, `patron`, `borrowernumber`, `borrower`,
 *   `usr`, `user_id`, `userid`, `card`, `cardnumber`, `card_number`,
 *   `barcode`, `barcodes`, `patron_barcode`, `item_barcode`, `ident_value`,
 *   `ident_value2`, `external_system_id`, `usrname`, `username`, `user_name`.
 * - Credentials: `passwd`, `password`.
 * - Contact: `email`, `emails`, `email_address`, `emailpro`, `phone`,
 *   `phones`, `phone_number`, `phonepro`, `day_phone`, `evening_phone`,
 *   `other_phone`, `home_phone`, `work_phone`, `mobile`, `mobile_phone`,
 *   `fax`.
 * - Names: `name`, `names`, `full_name`, `display_name`, `first_name`,
 *   `firstname`, `first_given_name`, `given_name`, `preferred_first_name`,
 *   `pref_first_given_name`, `middle_name`, `middlename`,
 *   `second_given_name`, `pref_second_given_name`, `family_name`,
 *   `pref_family_name`, `surname`, `last_name`, `lastname`, `othernames`,
 *   `initials`.
 * - Address: `address`, `addresses`, `address1`, `address2`,
 *   `mailing_address`, `billing_address`, `street`, `street1`, `street2`,
 *   `city`, `county`, `post_code`, `postal_code`, `postcode`, `zip`,
 *   `zipcode`, `zip_code`.
 * - Birth date: `dob`, `dateofbirth`, `date_of_birth`, `birth_date`,
 *   `birthdate`, `birthday`.
 * - Circulation quasi-identifiers: `checkout_date`, `fine_amount`.
 *
 * Decisions:
 * - `name` is included: a patron name leaking is worse than a branch or
 *   location `name` being stripped, which the gate reports as a stripped
 *   count and, when the schema requires it, as a rejection. Drop it with
 *   `keys: DEFAULT_PII_KEYS.filter((k) => k !== "name")`.
 * - `state` and `country` are excluded: in ILS exports `state` mostly names a
 *   workflow state (hold, circulation, copy), and neither identifies a patron
 *   on its own. A whole `address` object is stripped anyway.
 *
 * @example Extend the defaults
 * ```ts
 * import { DEFAULT_PII_KEYS, stripPii } from "./pii.ts";
 * const { value } = stripPii({ PatronId: 7, nickname: "x", title: "Emma" }, {
 *   keys: [...DEFAULT_PII_KEYS, "nickname"],
 * });
 * // value is { title: "Emma" }
 * ```
 */
export const DEFAULT_PII_KEYS: readonly string[] = Object.freeze([
  // Patron identifiers
  "patron_id",
  "patron",
  "borrowernumber",
  "borrower",
  "usr",
  "user_id",
  "userid",
  "card",
  "cardnumber",
  "card_number",
  "barcode",
  "barcodes",
  "patron_barcode",
  "item_barcode",
  "ident_value",
  "ident_value2",
  "external_system_id",
  "usrname",
  "username",
  "user_name",
  // Credentials
  "passwd",
  "password",
  // Contact
  "email",
  "emails",
  "email_address",
  "emailpro",
  "phone",
  "phones",
  "phone_number",
  "phonepro",
  "day_phone",
  "evening_phone",
  "other_phone",
  "home_phone",
  "work_phone",
  "mobile",
  "mobile_phone",
  "fax",
  // Names
  "name",
  "names",
  "full_name",
  "display_name",
  "first_name",
  "firstname",
  "first_given_name",
  "given_name",
  "preferred_first_name",
  "pref_first_given_name",
  "middle_name",
  "middlename",
  "second_given_name",
  "pref_second_given_name",
  "family_name",
  "pref_family_name",
  "surname",
  "last_name",
  "lastname",
  "othernames",
  "initials",
  // Address
  "address",
  "addresses",
  "address1",
  "address2",
  "mailing_address",
  "billing_address",
  "street",
  "street1",
  "street2",
  "city",
  "county",
  "post_code",
  "postal_code",
  "postcode",
  "zip",
  "zipcode",
  "zip_code",
  // Birth date
  "dob",
  "dateofbirth",
  "date_of_birth",
  "birth_date",
  "birthdate",
  "birthday",
  // Circulation quasi-identifiers
  "checkout_date",
  "fine_amount",
]);

/**
 * Normalizes a key for PII matching: lower case, without `_` and `-`.
 *
 * @example
 * ```ts
 * import { normalizeKey } from "./pii.ts";
 * normalizeKey("Patron-ID"); // "patronid"
 * ```
 */
export function normalizeKey(key: string): string {
  return key.toLowerCase().replace(/[_-]/g, "");
}

/**
 * A predicate for the PII-key list: {@link DEFAULT_PII_KEYS}, plus `keys` and
 * `extraKeys` when given, matched like the stripper matches (case-insensitive,
 * `_` and `-` ignored). For naming keys in messages: every key on any of these
 * lists is a word, not data.
 *
 * @example
 * ```ts
 * import { piiKeyMatcher } from "./pii.ts";
 * const isPii = piiKeyMatcher({ extraKeys: ["nickname"] });
 * isPii("Patron-ID"); // true
 * isPii("ZZ9SENTINEL42"); // false
 * ```
 */
export function piiKeyMatcher(options: PiiKeyOptions = {}): (key: string) => boolean {
  const normalized = new Set<string>();
  for (const key of DEFAULT_PII_KEYS) normalized.add(normalizeKey(key));
  for (const key of options.keys ?? []) normalized.add(normalizeKey(key));
  for (const key of options.extraKeys ?? []) normalized.add(normalizeKey(key));
  return (key) => normalized.has(normalizeKey(key));
}

/**
 * A namer that knows the PII-key list only (and `knownKeys`): what this
 * module's functions use when the caller gives none.
 *
 * @example
 * ```ts
 * import { piiFieldNamer } from "./pii.ts";
 * piiFieldNamer({}, ["title"]).segment("title", 1); // "title"
 * piiFieldNamer().segment("ZZ9SENTINEL42", 2); // "{key 2}"
 * ```
 */
export function piiFieldNamer(
  options: PiiKeyOptions = {},
  knownKeys: Iterable<string> = [],
): FieldNamer {
  return createFieldNamer({ knownKeys, isPiiKey: piiKeyMatcher(options) });
}

/**
 * Joins a parent path and a child segment.
 *
 * @example
 * ```ts
 * import { joinPath } from "./pii.ts";
 * joinPath("holds[]", "patron_id"); // "holds[].patron_id"
 * ```
 */
export function joinPath(parent: string, segment: string): string {
  return parent === "" ? segment : `${parent}.${segment}`;
}

/**
 * Whether `value` is a plain object (`{}` literal, `Object.create(null)`),
 * as opposed to an array, a class instance or a primitive.
 *
 * @example
 * ```ts
 * import { isPlainObject } from "./pii.ts";
 * isPlainObject({ a: 1 }); // true
 * isPlainObject([1]); // false
 * ```
 */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Maximum object nesting accepted by the walkers of this module. */
export const MAX_DEPTH = 128;

/** Options selecting which keys count as PII. */
export interface PiiKeyOptions {
  /** Replaces {@link DEFAULT_PII_KEYS}. */
  keys?: readonly string[];
  /** Added to `keys` (or to the defaults). */
  extraKeys?: readonly string[];
}

/** The result of stripping PII keys from one record. */
export interface StripResult<T = unknown> {
  /** A copy of the record without PII keys. Plain objects and arrays are copied. */
  value: T;
  /** Stripped key counts by path, e.g. `{ "patron_id": 1, "holds[].email": 2 }`. */
  stripped: Record<string, number>;
  /** Total number of keys stripped. */
  total: number;
}

/** A reusable PII stripper built once from a key list. */
export interface PiiStripper {
  /** Strips PII keys at any depth from `record`. */
  strip<T = unknown>(record: T): StripResult<T>;
  /** Whether `key` is a PII key under this stripper's key list. */
  isPiiKey(key: string): boolean;
  /**
   * False only when `strip` would remove nothing from `record` (no PII key at any depth, nested no
   * deeper than a few levels): its copy would then hold the same keys and values.
   */
  mayStrip(record: unknown): boolean;
}

interface KeyInfo {
  pii: boolean;
  /** The key when its name may be shown, else `undefined` (shown by position). */
  name: string | undefined;
}

const KEY_CACHE_LIMIT = 4096;

// Inside `for...in`, V8 answers `hasOwnProperty.call(object, key)` from the enumeration itself
// (about 4x faster per key than `Object.hasOwn`, which it does not special-case there).
const hasOwnProperty = Object.prototype.hasOwnProperty;

/**
 * Builds a PII stripper. The key list is normalized once; per-key decisions
 * are cached (bounded), so stripping a stream of same-shaped records does not
 * re-normalize key names. `namer` decides which keys the reported paths name
 * (default: the PII-key list only; any other key by position).
 *
 * Throws when a record nests deeper than {@link MAX_DEPTH}, which also stops
 * cyclic structures.
 *
 * @example
 * ```ts
 * import { createPiiStripper, piiFieldNamer } from "./pii.ts";
 * const stripper = createPiiStripper({ extraKeys: ["nickname"] }, piiFieldNamer({}, ["n"]));
 * const { value, stripped } = stripper.strip({ Email: "x", n: [{ nickname: "y" }] });
 * // value is { n: [{}] }; stripped is { Email: 1, "n[].nickname": 1 }
 * ```
 */
export function createPiiStripper(options: PiiKeyOptions = {}, namer?: FieldNamer): PiiStripper {
  const normalized = new Set<string>();
  for (const key of options.keys ?? DEFAULT_PII_KEYS) normalized.add(normalizeKey(key));
  for (const key of options.extraKeys ?? []) normalized.add(normalizeKey(key));
  const names = namer ?? piiFieldNamer(options);
  const cache = new Map<string, KeyInfo>();

  function info(key: string): KeyInfo {
    let found = cache.get(key);
    if (found === undefined) {
      const pii = normalized.has(normalizeKey(key));
      found = { pii, name: pii || names.known(key) ? key : undefined };
      if (cache.size >= KEY_CACHE_LIMIT) cache.clear();
      cache.set(key, found);
    }
    return found;
  }

  let strippedTotal = 0;

  // Paths are only built for stripped keys and nested containers, so flat
  // records pay for one cached lookup per key.
  function walk(
    value: unknown,
    path: string,
    depth: number,
    stripped: Record<string, number>,
  ): unknown {
    if (Array.isArray(value)) {
      if (depth >= MAX_DEPTH) throw depthError(path);
      const elementPath = `${path}[]`;
      const out = new Array<unknown>(value.length);
      for (let i = 0; i < value.length; i++) {
        const element: unknown = value[i];
        out[i] = typeof element === "object" && element !== null
          ? walk(element, elementPath, depth + 1, stripped)
          : element;
      }
      return out;
    }
    if (!isPlainObject(value)) return value;
    if (depth >= MAX_DEPTH) throw depthError(path);
    const out: Record<string, unknown> = {};
    let position = 0;
    for (const key in value) {
      if (!hasOwnProperty.call(value, key)) continue;
      position++;
      const keyInfo = info(key);
      if (keyInfo.pii) {
        const child = joinPath(path, key);
        stripped[child] = (stripped[child] ?? 0) + 1;
        strippedTotal++;
        continue;
      }
      const inner = value[key];
      out[key] = typeof inner === "object" && inner !== null
        ? walk(inner, joinPath(path, keyInfo.name ?? unnamedKey(position)), depth + 1, stripped)
        : inner;
    }
    return out;
  }

  return {
    strip<T>(record: T): StripResult<T> {
      const stripped: Record<string, number> = {};
      strippedTotal = 0;
      const value = walk(record, "", 0, stripped) as T;
      return { value, stripped, total: strippedTotal };
    },
    isPiiKey(key: string): boolean {
      return info(key).pii;
    },
    mayStrip(record: unknown): boolean {
      return holdsPiiKey(record, 0);
    },
  };

  // Shallow records are answered exactly; deep ones (and nesting past MAX_DEPTH, which `strip`
  // refuses) are left to `strip`.
  function holdsPiiKey(value: unknown, depth: number): boolean {
    if (typeof value !== "object" || value === null) return false;
    if (depth >= 8) return true;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) if (holdsPiiKey(value[i], depth + 1)) return true;
      return false;
    }
    if (!isPlainObject(value)) return false;
    for (const key in value) {
      if (!hasOwnProperty.call(value, key)) continue;
      if (info(key).pii) return true;
      const inner = value[key];
      if (typeof inner === "object" && inner !== null && holdsPiiKey(inner, depth + 1)) return true;
    }
    return false;
  }
}

function depthError(path: string): Error {
  return new RangeError(
    `PII strip failed: record nests deeper than ${MAX_DEPTH} levels at "${path || "(record)"}"`,
  );
}

let defaultStripper: PiiStripper | undefined;

/**
 * Returns a copy of `record` with PII keys removed at any depth (nested
 * objects and arrays of objects), plus stripped counts by path. For a stream
 * of records prefer {@link createPiiStripper}, which reuses its key cache;
 * calls without options here share one default stripper.
 *
 * @example
 * ```ts
 * import { stripPii } from "./pii.ts";
 * const { value, stripped } = stripPii({ title: "Emma", PATRON_ID: 12 });
 * // value is { title: "Emma" }; stripped is { PATRON_ID: 1 }
 * ```
 */
export function stripPii<T = unknown>(record: T, options?: PiiKeyOptions): StripResult<T> {
  if (options === undefined || (options.keys === undefined && options.extraKeys === undefined)) {
    defaultStripper ??= createPiiStripper();
    return defaultStripper.strip(record);
  }
  return createPiiStripper(options).strip(record);
}

// ---------------------------------------------------------------------------
// Detectors
// ---------------------------------------------------------------------------

/** A scanner that flags string values. */
export interface ValueDetector {
  /** Detector name, e.g. `email`; reported as `detector:<name>` by checkpoints. */
  readonly name: string;
  /** Kind discriminator. */
  readonly kind: "value";
  /** Whether `value` contains what this detector looks for. */
  test(value: string): boolean;
}

/** A scanner that flags field names, whatever their (non-null) value. */
export interface KeyDetector {
  /** Detector name, e.g. `birth_date_field`. */
  readonly name: string;
  /** Kind discriminator. */
  readonly kind: "key";
  /** Whether the normalized key (see {@link normalizeKey}) is flagged. */
  test(normalizedKey: string): boolean;
}

/** A value or key detector. */
export type Detector = ValueDetector | KeyDetector;

/** One detector hit: where and which detector, never the value. */
export interface Finding {
  /** Field path of the hit. */
  path: string;
  /** Name of the detector that fired. */
  detector: string;
}

const EMAIL_PATTERN =
  /[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}/;

/**
 * Detects e-mail addresses anywhere in a string: a local part, `@`, and a
 * dotted domain ending in a label of two or more letters.
 *
 * @example
 * ```ts
 * import { emailDetector } from "./pii.ts";
 * emailDetector.test("mail jo@example.org today"); // true
 * emailDetector.test("@librarian on social media"); // false
 * ```
 */
export const emailDetector: ValueDetector = Object.freeze({
  name: "email",
  kind: "value" as const,
  test(value: string): boolean {
    return value.includes("@") && EMAIL_PATTERN.test(value);
  },
});

// North American: optional +1/1 prefix, area code [2-9]xx (bare or in
// parentheses), then 3 and 4 digits, with a separator (space, "-" or ".")
// between the groups. Not glued to other digits, "-" or "." on either side.
const NANP_PATTERN =
  /(?<![\d.\-+])(?:(?:\+1|1)[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}(?![\d\-]|\.\d)/;
/**
 * Detects phone numbers.
 *
 * Heuristics, chosen so ISBNs, dates, years and counts do not fire:
 * - North American numbers need separators between the 3-3-4 groups:
 *   `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `+1 555 123 4567`,
 *   `1-555-123-4567`. The area code must start with 2-9. A bare run of ten
 *   digits is NOT flagged (ISBN-10s and ids look the same); bare phone numbers
 *   are caught by key stripping (`phone`, `mobile`, ...), not by this scanner.
 * - The match may not touch another digit, `-`, `+` or `.` before it, nor a
 *   digit or `-` after it, so hyphenated ISBN-13s (`978-0-306-40615-7`),
 *   ISO dates (`2024-01-15`) and dotted call numbers do not fire.
 * - International numbers must start with `+` and a country code starting
 *   with 2-9 (e.g. `+44 20 7946 0958`, `+33 1 23 45 67 89`,
 *   `+44 (0)20 7946 0958`, `+442079460958`), and hold 8 to 15 digits in total
 *   (the E.164 maximum is 15).
 *
 * @example
 * ```ts
 * import { phoneDetector } from "./pii.ts";
 * phoneDetector.test("call (555) 123-4567"); // true
 * phoneDetector.test("ISBN 978-0-306-40615-7"); // false
 * ```
 */
export const phoneDetector: ValueDetector = Object.freeze({
  name: "phone",
  kind: "value" as const,
  test(value: string): boolean {
    if (value.length < 9 || !hasDigits(value, 8)) return false;
    return (hasNanpCore(value) && NANP_PATTERN.test(value)) || hasInternationalPhone(value);
  },
});

// Every North American match ends in 3 digits, a separator (space, "-" or ".") and 4 digits: a
// string without that run cannot match, and most dates and ids have none (no regex run then).
function hasNanpCore(value: string): boolean {
  for (let i = 3; i + 4 < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code !== 32 && code !== 45 && code !== 46) continue;
    if (
      isDigitCode(value.charCodeAt(i - 3)) && isDigitCode(value.charCodeAt(i - 2)) &&
      isDigitCode(value.charCodeAt(i - 1)) && isDigitCode(value.charCodeAt(i + 1)) &&
      isDigitCode(value.charCodeAt(i + 2)) && isDigitCode(value.charCodeAt(i + 3)) &&
      isDigitCode(value.charCodeAt(i + 4))
    ) {
      return true;
    }
  }
  return false;
}

function isDigitCode(code: number): boolean {
  return code >= 48 && code <= 57;
}

function hasDigits(value: string, wanted: number): boolean {
  let found = 0;
  for (let i = 0; i < value.length; i++) {
    if (isDigitCode(value.charCodeAt(i)) && ++found >= wanted) return true;
  }
  return false;
}

function isWordCode(code: number): boolean {
  return isDigitCode(code) || (code >= 65 && code <= 90) || (code >= 97 && code <= 122) ||
    code === 95;
}

// A linear scan rather than a regular expression with nested repetition, so
// long digit runs cannot cause catastrophic backtracking. From each "+" that
// does not follow a word character or another "+": a country code starting
// with 2-9, then digits with single separators (space, "-", ".") between them
// and at most one "(0)" trunk prefix. Fires on 8 to 15 digits in total.
function hasInternationalPhone(value: string): boolean {
  let from = 0;
  for (;;) {
    const plus = value.indexOf("+", from);
    if (plus < 0) return false;
    from = plus + 1;
    if (plus > 0) {
      const before = value.charCodeAt(plus - 1);
      if (isWordCode(before) || before === 43) continue;
    }
    const first = value.charCodeAt(plus + 1);
    if (!(first >= 50 && first <= 57)) continue;
    let i = plus + 1;
    let digits = 0;
    let afterSeparator = false;
    let trunkSeen = false;
    while (i < value.length && digits <= 15) {
      const code = value.charCodeAt(i);
      if (isDigitCode(code)) {
        digits++;
        afterSeparator = false;
        i++;
      } else if (!afterSeparator && (code === 32 || code === 45 || code === 46)) {
        afterSeparator = true;
        i++;
      } else if (!trunkSeen && value.startsWith("(0)", i)) {
        trunkSeen = true;
        afterSeparator = false;
        i += 3;
      } else {
        break;
      }
    }
    if (digits >= 8 && digits <= 15) return true;
  }
}

/**
 * Detects 14-digit library barcodes (Codabar-style: a leading `2` for patron
 * cards or `3` for items, then a 4-digit institution code, then the piece
 * number and check digit), standing alone or inside text.
 *
 * Heuristic: a 14-digit run that also reads as a valid `YYYYMMDDhhmmss`
 * timestamp between the years 1900 and 2099 is not flagged, so compact
 * timestamps such as `20240115123045` pass. ISBN-13s are 13 digits and never
 * match.
 *
 * @example
 * ```ts
 * import { barcodeDetector } from "./pii.ts";
 * barcodeDetector.test("21234000567890"); // true
 * barcodeDetector.test("20240115123045"); // false (timestamp)
 * ```
 */
export const barcodeDetector: ValueDetector = Object.freeze({
  name: "barcode",
  kind: "value" as const,
  test(value: string): boolean {
    const length = value.length;
    if (length < 14) return false;
    // Find maximal digit runs; only a run of exactly 14 starting with 2 or 3 counts.
    let i = 0;
    while (i <= length - 14) {
      if (!isDigitCode(value.charCodeAt(i))) {
        i++;
        continue;
      }
      let end = i + 1;
      while (end < length && isDigitCode(value.charCodeAt(end))) end++;
      if (end - i === 14) {
        const first = value.charCodeAt(i);
        if ((first === 50 || first === 51) && !isCompactTimestamp(value.slice(i, end))) {
          return true;
        }
      }
      i = end;
    }
    return false;
  },
});

function isCompactTimestamp(digits: string): boolean {
  const year = Number(digits.slice(0, 4));
  const month = Number(digits.slice(4, 6));
  const day = Number(digits.slice(6, 8));
  const hour = Number(digits.slice(8, 10));
  const minute = Number(digits.slice(10, 12));
  const second = Number(digits.slice(12, 14));
  return year >= 1900 && year <= 2099 && month >= 1 && month <= 12 && day >= 1 &&
    day <= 31 && hour <= 23 && minute <= 59 && second <= 60;
}

/**
 * Builds a detector named `patron_id` that fires when any of `patterns`
 * matches a string. `g` and `y` flags are dropped so matching is stateless.
 *
 * @example
 * ```ts
 * import { createPatronIdDetector } from "./pii.ts";
 * const detector = createPatronIdDetector([/\bP\d{7}\b/]);
 * detector.test("renewed by P1234567"); // true
 * ```
 */
export function createPatronIdDetector(
  patterns: readonly RegExp[],
  name = "patron_id",
): ValueDetector {
  const compiled = patterns.map((p) => new RegExp(p.source, p.flags.replace(/[gy]/g, "")));
  return Object.freeze({
    name,
    kind: "value" as const,
    test(value: string): boolean {
      for (const pattern of compiled) if (pattern.test(value)) return true;
      return false;
    },
  });
}

const BIRTH_DATE_KEYS = new Set(
  ["dob", "birth_date", "birthdate", "date_of_birth", "dateofbirth", "birthday", "birth_day"]
    .map(normalizeKey),
);

/**
 * Flags birth-date fields by name (`dob`, `birth_date`, `birthdate`,
 * `date_of_birth`, `dateOfBirth`, `birthday`, any case, `_`/`-` ignored)
 * whenever they hold a non-null value.
 *
 * @example
 * ```ts
 * import { birthDateFieldDetector, normalizeKey } from "./pii.ts";
 * birthDateFieldDetector.test(normalizeKey("DateOfBirth")); // true
 * ```
 */
export const birthDateFieldDetector: KeyDetector = Object.freeze({
  name: "birth_date_field",
  kind: "key" as const,
  test(normalizedKey: string): boolean {
    return BIRTH_DATE_KEYS.has(normalizedKey);
  },
});

/** Selects detectors for {@link createDetectors}. Everything defaults to on. */
export interface DetectorOptions {
  /** E-mail addresses. Default `true`. */
  email?: boolean;
  /** Phone numbers. Default `true`. */
  phone?: boolean;
  /** 14-digit library barcodes. Default `true`. */
  barcode?: boolean;
  /** Birth-date field names. Default `true`. */
  birthDateFields?: boolean;
  /** Site-specific patron-id patterns, reported as `patron_id`. Default none. */
  patronIdPatterns?: readonly RegExp[];
}

/**
 * Builds the detector list from options.
 *
 * @example
 * ```ts
 * import { createDetectors } from "./pii.ts";
 * const detectors = createDetectors({ barcode: false, patronIdPatterns: [/^P\d{7}$/] });
 * detectors.map((d) => d.name); // ["email", "phone", "birth_date_field", "patron_id"]
 * ```
 */
export function createDetectors(options: DetectorOptions = {}): Detector[] {
  const detectors: Detector[] = [];
  if (options.email ?? true) detectors.push(emailDetector);
  if (options.phone ?? true) detectors.push(phoneDetector);
  if (options.barcode ?? true) detectors.push(barcodeDetector);
  if (options.birthDateFields ?? true) detectors.push(birthDateFieldDetector);
  if (options.patronIdPatterns !== undefined && options.patronIdPatterns.length > 0) {
    detectors.push(createPatronIdDetector(options.patronIdPatterns));
  }
  return detectors;
}

/**
 * The default detectors: e-mail, phone, barcode and birth-date fields.
 *
 * @example
 * ```ts
 * import { DEFAULT_DETECTORS, scanRecord } from "./pii.ts";
 * scanRecord({ note: "jo@example.org" }, DEFAULT_DETECTORS);
 * // [{ path: "note", detector: "email" }]
 * ```
 */
export const DEFAULT_DETECTORS: readonly Detector[] = Object.freeze(createDetectors());

/**
 * Runs the value detectors on one string and returns the names of those that
 * fire (no positions, no excerpts).
 *
 * @example
 * ```ts
 * import { detectPii } from "./pii.ts";
 * detectPii("Call 555-123-4567 or write jo@example.org"); // ["email", "phone"]
 * ```
 */
export function detectPii(
  value: string,
  detectors: readonly Detector[] = DEFAULT_DETECTORS,
): string[] {
  const names: string[] = [];
  for (const detector of detectors) {
    if (detector.kind === "value" && detector.test(value)) names.push(detector.name);
  }
  return names;
}

/** A reusable record scanner built once from a detector list. */
export interface RecordScanner {
  /** Scans one record; see {@link scanRecord}. */
  scan(record: unknown): Finding[];
}

interface ScanKeyInfo {
  /** The key when its name may be shown, else `undefined` (shown by position). */
  name: string | undefined;
  /** Names of detectors that fire on the key itself or on its name. */
  keyValueHits: readonly string[];
  keyNameHits: readonly string[];
}

const NO_HITS: readonly string[] = Object.freeze([]);

/**
 * Builds a scanner for a stream of records. Per-key work (naming, key
 * detectors) is cached (bounded), so same-shaped records only pay for their
 * string values. `namer` decides which keys the reported paths name (default:
 * the PII-key list only; any other key by position). A key on which a value
 * detector fires is always shown by position.
 *
 * @example
 * ```ts
 * import { createRecordScanner, DEFAULT_DETECTORS, piiFieldNamer } from "./pii.ts";
 * const scanner = createRecordScanner(DEFAULT_DETECTORS, piiFieldNamer({}, ["note"]));
 * scanner.scan({ note: "jo@example.org" }); // [{ path: "note", detector: "email" }]
 * scanner.scan({ id: 1, memo: "jo@example.org" }); // [{ path: "{key 2}", detector: "email" }]
 * ```
 */
export function createRecordScanner(
  detectors: readonly Detector[],
  namer: FieldNamer = piiFieldNamer(),
): RecordScanner {
  const valueDetectors = detectors.filter((d): d is ValueDetector => d.kind === "value");
  const keyDetectors = detectors.filter((d): d is KeyDetector => d.kind === "key");
  const cache = new Map<string, ScanKeyInfo>();

  function keyInfo(key: string): ScanKeyInfo {
    let found = cache.get(key);
    if (found === undefined) {
      const keyValueHits = valueDetectors.filter((d) => d.test(key)).map((d) => d.name);
      const normalized = normalizeKey(key);
      const keyNameHits = keyDetectors.filter((d) => d.test(normalized)).map((d) => d.name);
      found = {
        name: keyValueHits.length > 0 || !namer.known(key) ? undefined : key,
        keyValueHits: keyValueHits.length > 0 ? keyValueHits : NO_HITS,
        keyNameHits: keyNameHits.length > 0 ? keyNameHits : NO_HITS,
      };
      if (cache.size >= KEY_CACHE_LIMIT) cache.clear();
      cache.set(key, found);
    }
    return found;
  }

  // The keys of the last object seen at each position, and what they are: records of one shape
  // find their keys here without a map lookup (JSON.parse hands out the same key strings).
  const lastKeys: string[] = [];
  const lastInfos: ScanKeyInfo[] = [];

  function positionInfo(key: string, position: number): ScanKeyInfo {
    if (position < 64) {
      if (lastKeys[position] === key) return lastInfos[position]!;
      const info = keyInfo(key);
      lastKeys[position] = key;
      lastInfos[position] = info;
      return info;
    }
    return keyInfo(key);
  }

  /** The value detectors that fire on a string (none for a token), in detector order. */
  function scanString(value: string, path: string, findings: Finding[]): void {
    // A token is a keyed hash: its hex digits can look like a barcode by chance.
    if (value.length === 64 && isHex64(value)) return;
    for (const detector of valueDetectors) {
      if (detector.test(value)) findings.push({ path, detector: detector.name });
    }
  }

  function walk(value: unknown, path: string, depth: number, findings: Finding[]): void {
    if (typeof value === "string") {
      scanString(value, path, findings);
      return;
    }
    if (typeof value !== "object" || value === null) return;
    if (depth >= MAX_DEPTH) {
      throw new RangeError(
        `PII scan failed: record nests deeper than ${MAX_DEPTH} levels at "${path || "(record)"}"`,
      );
    }
    if (Array.isArray(value)) {
      const elementPath = `${path}[]`;
      for (const element of value) walk(element, elementPath, depth + 1, findings);
      return;
    }
    if (!isPlainObject(value)) return;
    let position = 0;
    for (const key in value) {
      if (!hasOwnProperty.call(value, key)) continue;
      position++;
      const info = positionInfo(key, position);
      const inner = value[key];
      // A key that trips no detector, holding a number, boolean or nothing: nothing to scan.
      const plain = info.keyValueHits === NO_HITS && info.keyNameHits === NO_HITS;
      if (plain && (typeof inner !== "object" || inner === null) && typeof inner !== "string") {
        continue;
      }
      const child = joinPath(path, info.name ?? unnamedKey(position));
      for (const name of info.keyValueHits) findings.push({ path: child, detector: name });
      if (inner !== null && inner !== undefined) {
        for (const name of info.keyNameHits) findings.push({ path: child, detector: name });
      }
      if (typeof inner === "string") scanString(inner, child, findings);
      else walk(inner, child, depth + 1, findings);
    }
  }

  return {
    scan(record: unknown): Finding[] {
      const findings: Finding[] = [];
      walk(record, "", 0, findings);
      return findings;
    },
  };
}

/**
 * Scans a record at any depth. Value detectors run on every string value
 * (except tokens, see {@link isToken}) and on every object key (a key that
 * trips one is reported by position, `parent.{key 2}`); key detectors run on
 * every key whose value is not `null`/`undefined`. Findings carry the path and
 * the detector name, never the value; paths name keys only as `namer` allows.
 * For a stream of records prefer {@link createRecordScanner}.
 *
 * Throws when the record nests deeper than {@link MAX_DEPTH}.
 *
 * @example
 * ```ts
 * import { DEFAULT_DETECTORS, piiFieldNamer, scanRecord } from "./pii.ts";
 * const namer = piiFieldNamer({}, ["notes"]);
 * scanRecord({ notes: ["ok", "call 555-123-4567"], dob: "1990-01-01" }, DEFAULT_DETECTORS, namer);
 * // [{ path: "notes[]", detector: "phone" }, { path: "dob", detector: "birth_date_field" }]
 * ```
 */
export function scanRecord(
  record: unknown,
  detectors: readonly Detector[] = DEFAULT_DETECTORS,
  namer?: FieldNamer,
): Finding[] {
  return createRecordScanner(detectors, namer).scan(record);
}

/** What {@link isToken} says of a string, by its character codes (no regular expression). */
function isHex64(value: string): boolean {
  if (value.length !== 64) return false;
  for (let i = 0; i < 64; i++) {
    const code = value.charCodeAt(i);
    if (!((code >= 48 && code <= 57) || (code >= 97 && code <= 102))) return false;
  }
  return true;
}

/**
 * Whether `value` is a token: a 64-character lowercase hex string (e.g. a
 * hex-encoded HMAC-SHA-256).
 *
 * @example
 * ```ts
 * import { isToken } from "./pii.ts";
 * isToken("a".repeat(64)); // true
 * isToken("A".repeat(64)); // false
 * ```
 */
export function isToken(value: unknown): value is string {
  return typeof value === "string" && isHex64(value);
}
