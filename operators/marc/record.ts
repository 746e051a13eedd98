/**
 * In-memory model of a MARC 21 record, shared by the ISO 2709 and MARCXML
 * codecs, the sanitizer and the discovery mapper.
 *
 * Text held in a {@linkcode MarcRecord} is always Unicode (NFC by default):
 * the readers decode MARC-8 and UTF-8 on the way in, and the writers encode
 * on the way out.
 *
 * @module
 */

/** One subfield of a data field: a one-character code and its text. */
export interface Subfield {
  /** Subfield code, normally `a`-`z` or `0`-`9`. */
  code: string;
  /** Subfield text (Unicode). */
  value: string;
}

/**
 * A control field (tags `001`-`009`): a tag and an unstructured value.
 *
 * @example
 * ```ts
 * import type { ControlField } from "./record.ts";
 * const f: ControlField = { tag: "001", value: "ocm12345" };
 * ```
 */
export interface ControlField {
  /** Three-character tag, `001`-`009`. */
  tag: string;
  /** Field text (Unicode). */
  value: string;
}

/**
 * A data field (tags `010` and up): two indicators and ordered subfields.
 *
 * @example
 * ```ts
 * import type { DataField } from "./record.ts";
 * const f: DataField = {
 *   tag: "245",
 *   ind1: "1",
 *   ind2: "0",
 *   subfields: [{ code: "a", value: "Sur mer et sur terre" }],
 * };
 * ```
 */
export interface DataField {
  /** Three-character tag. */
  tag: string;
  /** First indicator: one character, blank when undefined. */
  ind1: string;
  /** Second indicator: one character, blank when undefined. */
  ind2: string;
  /** Subfields in record order. */
  subfields: Subfield[];
}

/** Either kind of variable field. */
export type MarcField = ControlField | DataField;

/**
 * A MARC 21 record: a 24-character leader and fields in record order.
 *
 * @example
 * ```ts
 * import type { MarcRecord } from "./record.ts";
 * const record: MarcRecord = {
 *   leader: "00000nam a2200000 i 4500",
 *   fields: [{ tag: "001", value: "b1" }],
 * };
 * ```
 */
export interface MarcRecord {
  /** Leader, 24 characters. Lengths and base address are recomputed on write. */
  leader: string;
  /** Control and data fields in record order. */
  fields: MarcField[];
}

/**
 * Where a record sits in its source: 1-based record index and the byte
 * offset of its first byte.
 */
export interface MarcPosition {
  /** 1-based index of the record (or unreadable chunk) in the stream. */
  index: number;
  /** Byte offset of the record's first byte in the stream. */
  offset: number;
}

/**
 * Classes of real-world defects the readers recognise. Each warning and
 * each failure names one of these.
 */
export type MarcDefect =
  | "record-length"
  | "record-terminator"
  | "leader"
  | "base-address"
  | "directory"
  | "field-bounds"
  | "field-terminator"
  | "tag"
  | "indicator"
  | "subfield-code"
  | "utf8"
  | "marc8"
  | "xml";

/**
 * A recovered defect. The message names tags, positions and counts only,
 * never record content.
 */
export interface MarcWarning {
  /** Defect class. */
  defect: MarcDefect;
  /** Human-readable description without record values. */
  message: string;
}

/** A record that was read, possibly after recovering from defects. */
export interface MarcReadOk {
  /** Always `true`. */
  ok: true;
  /** Where the record starts. */
  position: MarcPosition;
  /** The decoded record. */
  record: MarcRecord;
  /** Defects recovered while reading this record (empty when clean). */
  warnings: MarcWarning[];
}

/** A chunk of the stream that could not be turned into a record. */
export interface MarcReadFailure {
  /** Always `false`. */
  ok: false;
  /** Where the unreadable chunk starts. */
  position: MarcPosition;
  /** Defect class that made the chunk unreadable. */
  defect: MarcDefect;
  /** Why the chunk was quarantined (no record content). */
  reason: string;
}

/**
 * What a streaming reader yields per record: either a record or a
 * quarantined failure. The stream continues after a failure.
 *
 * @example
 * ```ts
 * import type { MarcReadResult } from "./record.ts";
 * function describe(r: MarcReadResult): string {
 *   return r.ok ? `record ${r.position.index}` : `failed: ${r.reason}`;
 * }
 * ```
 */
export type MarcReadResult = MarcReadOk | MarcReadFailure;

/**
 * Whether a field is a control field (has a `value` and no subfields).
 *
 * @example
 * ```ts
 * import { isControlField } from "./record.ts";
 * isControlField({ tag: "001", value: "x" }); // true
 * ```
 */
export function isControlField(field: MarcField): field is ControlField {
  return (field as ControlField).value !== undefined &&
    (field as DataField).subfields === undefined;
}

/**
 * Whether a tag denotes a control field (`001`-`009`, also `000`).
 *
 * @example
 * ```ts
 * import { isControlTag } from "./record.ts";
 * isControlTag("008"); // true
 * isControlTag("245"); // false
 * ```
 */
export function isControlTag(tag: string): boolean {
  return tag.length === 3 && tag.charCodeAt(0) === 0x30 && tag.charCodeAt(1) === 0x30 &&
    tag.charCodeAt(2) >= 0x30 && tag.charCodeAt(2) <= 0x39;
}

/**
 * The fields of a record whose tag is one of `tags`, in record order.
 *
 * @example
 * ```ts
 * import { fieldsByTag } from "./record.ts";
 * const rec = { leader: "", fields: [{ tag: "020", ind1: " ", ind2: " ", subfields: [] }] };
 * fieldsByTag(rec, "020").length; // 1
 * ```
 */
export function fieldsByTag(record: MarcRecord, ...tags: string[]): MarcField[] {
  return record.fields.filter((f) => tags.includes(f.tag));
}

/**
 * The data fields of a record whose tag is one of `tags`.
 *
 * @example
 * ```ts
 * import { dataFields } from "./record.ts";
 * const rec = { leader: "", fields: [{ tag: "650", ind1: " ", ind2: "0", subfields: [] }] };
 * dataFields(rec, "650").length; // 1
 * ```
 */
export function dataFields(record: MarcRecord, ...tags: string[]): DataField[] {
  const out: DataField[] = [];
  for (const f of record.fields) {
    if (!isControlField(f) && (tags.length === 0 || tags.includes(f.tag))) out.push(f);
  }
  return out;
}

/** A record's data fields, in record order, with lookups by tag (see {@linkcode indexDataFields}). */
export interface DataFieldIndex {
  /** Every data field, in record order. */
  readonly all: readonly DataField[];
  /** The data fields with `tag`, in record order. */
  tagged(tag: string): readonly DataField[];
  /** The data fields whose tag is one of `tags`, in record order. */
  anyOf(tags: readonly string[]): DataField[];
}

/**
 * A record's data fields gathered once, for mappings that look up many tags (one pass over the
 * record instead of one per tag); the same fields, in the same order, as {@linkcode dataFields}.
 *
 * @example
 * ```ts
 * import { indexDataFields } from "./record.ts";
 * const rec = { leader: "", fields: [{ tag: "650", ind1: " ", ind2: "0", subfields: [] }] };
 * indexDataFields(rec).tagged("650").length; // 1
 * ```
 */
export function indexDataFields(record: MarcRecord): DataFieldIndex {
  const all = dataFields(record);
  const byTag = new Map<string, DataField[]>();
  for (const f of all) {
    const same = byTag.get(f.tag);
    if (same) same.push(f);
    else byTag.set(f.tag, [f]);
  }
  return {
    all,
    tagged: (tag) => byTag.get(tag) ?? [],
    anyOf: (tags) => all.filter((f) => tags.includes(f.tag)),
  };
}

/**
 * The value of the first control field with `tag`, or `undefined`.
 *
 * @example
 * ```ts
 * import { controlValue } from "./record.ts";
 * controlValue({ leader: "", fields: [{ tag: "001", value: "b7" }] }, "001"); // "b7"
 * ```
 */
export function controlValue(record: MarcRecord, tag: string): string | undefined {
  for (const f of record.fields) {
    if (f.tag === tag && isControlField(f)) return f.value;
  }
  return undefined;
}

/**
 * The values of the subfields with `code` in a data field, in order.
 *
 * @example
 * ```ts
 * import { subfieldValues } from "./record.ts";
 * subfieldValues({ tag: "020", ind1: " ", ind2: " ", subfields: [{ code: "a", value: "x" }] }, "a");
 * // ["x"]
 * ```
 */
export function subfieldValues(field: DataField, code: string): string[] {
  const out: string[] = [];
  for (const s of field.subfields) if (s.code === code) out.push(s.value);
  return out;
}

/**
 * A deep copy of a record (fields and subfields are new objects).
 *
 * @example
 * ```ts
 * import { cloneRecord } from "./record.ts";
 * const copy = cloneRecord({ leader: "00000nam a2200000   4500", fields: [] });
 * ```
 */
export function cloneRecord(record: MarcRecord): MarcRecord {
  return {
    leader: record.leader,
    fields: record.fields.map((f) =>
      isControlField(f) ? { tag: f.tag, value: f.value } : {
        tag: f.tag,
        ind1: f.ind1,
        ind2: f.ind2,
        subfields: f.subfields.map((s) => ({ code: s.code, value: s.value })),
      }
    ),
  };
}
