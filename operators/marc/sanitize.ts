/**
 * Privacy sanitizer for records published to discovery systems: removes
 * local fields, item fields that carry barcodes and staff notes, and
 * private provenance/action notes. Reports what was removed as counts per
 * tag, never values.
 *
 * @module
 */

import {
  cloneRecord,
  type DataField,
  isControlField,
  type MarcField,
  type MarcRecord,
} from "./record.ts";

/** Rules for {@linkcode sanitizeRecord}. Every property is optional. */
export interface SanitizeRules {
  /** Drop local `9XX` fields (default `true`). */
  dropLocalFields?: boolean;
  /** `9XX` tags to keep when `dropLocalFields` is on (default none). Item tags are still dropped. */
  keepLocalTags?: readonly string[];
  /**
   * Item fields dropped whole (default `876`, `877`, `878`, Koha `952`,
   * III `945`, `949`). These are dropped even if listed in `keepLocalTags`.
   */
  itemTags?: readonly string[];
  /** Subfields removed per tag (default `852` `$p` `$x`, `583` `$x`). */
  dropSubfields?: Readonly<Record<string, readonly string[]>>;
  /** Tags dropped when the first indicator is `0` = private (default `541`, `561`, `583`). */
  privateWhenInd1Zero?: readonly string[];
  /** Drop `590` local notes (default `false`). */
  drop590?: boolean;
  /** Extra tags to drop whole (added by a DAG). */
  dropTags?: readonly string[];
  /** Extra subfields to remove, merged with `dropSubfields`. */
  extraDropSubfields?: Readonly<Record<string, readonly string[]>>;
  /** Extra predicate: return `true` to drop a field. */
  dropField?: (field: MarcField, record: MarcRecord) => boolean;
  /**
   * Drop what the readers kept but MARC 21 cannot carry (default `true`): fields whose tag is not
   * three letters or digits (counted under {@linkcode INVALID_TAG_KEY}) and subfields whose code is
   * blank, a control character or not ASCII (counted under their field's tag). With `false` they
   * reach the writers, which refuse such records (quarantined at the write stage).
   */
  dropInvalid?: boolean;
}

/** The `stripped` key under which fields with invalid tags are counted. */
export const INVALID_TAG_KEY = "(invalid tag)";

const VALID_TAG = /^[0-9A-Za-z]{3}$/;
/** Subfield codes a writer can emit: one printable ASCII character other than space. */
const WRITABLE_CODE = /^[\x21-\x7e]$/;

/**
 * The tag an `880` (alternate graphic representation) stands for, from its `$6` linkage
 * (`245-01/(2/r` -> `245`), or `undefined`.
 *
 * @example
 * ```ts
 * import { linkedTag } from "./sanitize.ts";
 * linkedTag({ tag: "880", ind1: "1", ind2: "0", subfields: [{ code: "6", value: "245-01/(2/r" }] }); // "245"
 * ```
 */
export function linkedTag(field: DataField): string | undefined {
  const six = field.subfields.find((s) => s.code === "6")?.value;
  const m = six === undefined ? null : /^\s*([0-9A-Za-z]{3})-/.exec(six);
  return m ? m[1] : undefined;
}

/** Result of {@linkcode sanitizeRecord}. */
export interface SanitizeResult {
  /** A sanitized copy; the input record is not modified. */
  record: MarcRecord;
  /**
   * Fields dropped or redacted, counted per tag (each field counts once,
   * whether removed whole or only some of its subfields).
   */
  stripped: Record<string, number>;
}

/** Default item tags dropped whole. */
export const DEFAULT_ITEM_TAGS: readonly string[] = ["876", "877", "878", "945", "949", "952"];

/** Default subfields removed per tag. */
export const DEFAULT_DROP_SUBFIELDS: Readonly<Record<string, readonly string[]>> = {
  "852": ["p", "x"],
  "583": ["x"],
};

/** Default tags that are private when the first indicator is `0`. */
export const DEFAULT_PRIVATE_TAGS: readonly string[] = ["541", "561", "583"];

/**
 * Remove private and local data from a record for discovery.
 *
 * Default rules: drop `9XX` (unless kept), drop item fields `876`-`878`,
 * `945`, `949`, `952`, remove `852` `$p` (barcode) and `$x` (staff note),
 * drop `541`/`561`/`583` with first indicator `0`, remove `583` `$x`
 * always, drop `590` when `drop590` is set. An `880` (vernacular form) is
 * judged as the field its `$6` links it to: the vernacular of a private `541`
 * or of a local `9XX` goes with it. Fields with invalid tags and subfields
 * with unwritable codes are dropped (see `dropInvalid`). A data field left
 * without subfields is dropped.
 *
 * @example
 * ```ts
 * import { sanitizeRecord } from "./sanitize.ts";
 * const { record, stripped } = sanitizeRecord({
 *   leader: "00000nam a2200000   4500",
 *   fields: [
 *     { tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "Title" }] },
 *     { tag: "952", ind1: " ", ind2: " ", subfields: [{ code: "p", value: "39999000000001" }] },
 *   ],
 * });
 * // record.fields.length === 1, stripped === { "952": 1 }
 * ```
 */
export function sanitizeRecord(record: MarcRecord, rules: SanitizeRules = {}): SanitizeResult {
  const dropLocal = rules.dropLocalFields ?? true;
  const keepLocal = new Set(rules.keepLocalTags ?? []);
  const itemTags = new Set(rules.itemTags ?? DEFAULT_ITEM_TAGS);
  const privateTags = new Set(rules.privateWhenInd1Zero ?? DEFAULT_PRIVATE_TAGS);
  const dropTags = new Set(rules.dropTags ?? []);
  if (rules.drop590) dropTags.add("590");
  const subfieldRules = new Map<string, Set<string>>();
  for (
    const src of [rules.dropSubfields ?? DEFAULT_DROP_SUBFIELDS, rules.extraDropSubfields ?? {}]
  ) {
    for (const [tag, codes] of Object.entries(src)) {
      const set = subfieldRules.get(tag) ?? new Set<string>();
      for (const c of codes) set.add(c);
      subfieldRules.set(tag, set);
    }
  }

  const dropInvalid = rules.dropInvalid ?? true;
  const copy = cloneRecord(record);
  const stripped: Record<string, number> = {};
  const count = (tag: string) => (stripped[tag] = (stripped[tag] ?? 0) + 1);
  const kept: MarcField[] = [];
  for (const field of copy.fields) {
    const control = isControlField(field);
    if (dropInvalid && !VALID_TAG.test(field.tag)) {
      count(INVALID_TAG_KEY);
      continue;
    }
    // An 880 is judged as the field it stands for; it is counted as an 880.
    const tag = !control && field.tag === "880"
      ? linkedTag(field as DataField) ?? field.tag
      : field.tag;
    let drop = itemTags.has(tag) || dropTags.has(tag) ||
      (dropLocal && tag[0] === "9" && !keepLocal.has(tag)) ||
      (!control && privateTags.has(tag) && (field as DataField).ind1 === "0");
    if (!drop && rules.dropField) drop = rules.dropField(field, record);
    if (drop) {
      count(field.tag);
      continue;
    }
    if (!control) {
      const codes = subfieldRules.get(tag);
      const df = field as DataField;
      const before = df.subfields.length;
      df.subfields = df.subfields.filter((s) =>
        !(codes?.has(s.code) || (dropInvalid && !WRITABLE_CODE.test(s.code)))
      );
      if (df.subfields.length !== before) {
        count(field.tag);
        if (df.subfields.length === 0) continue;
      }
    }
    kept.push(field);
  }
  copy.fields = kept;
  return { record: copy, stripped };
}
