/**
 * ISO 2709 (MARC 21 exchange format) streaming reader and writer.
 *
 * The reader frames records from a byte stream with bounded memory (the
 * buffer holds at most one record plus one input chunk), decodes UTF-8 or
 * MARC-8 according to leader/09, and recovers from common real-world
 * defects with warnings. Chunks that cannot be recovered are yielded as
 * `{ ok: false }` and reading continues with the next record.
 *
 * @module
 */

import { decodeMarc8, encodeMarc8 } from "./marc8.ts";
import { isAscii, isValidUtf8, latin1String, utf8Length, writeUtf8 } from "./utf8.ts";
import {
  type DataField,
  isControlField,
  isControlTag,
  type MarcDefect,
  type MarcField,
  type MarcPosition,
  type MarcReadResult,
  type MarcRecord,
  type MarcWarning,
  type Subfield,
} from "./record.ts";

const RECORD_TERMINATOR = 0x1d;
const FIELD_TERMINATOR = 0x1e;
const SUBFIELD_DELIMITER = 0x1f;
const LEADER_LENGTH = 24;
const DIRECTORY_ENTRY_LENGTH = 12;

/** Character encoding of record content. */
export type MarcEncoding = "utf-8" | "marc-8";

/** Options for {@linkcode readIso2709}. */
export interface ReadIso2709Options {
  /**
   * How to choose the encoding: `"auto"` (default) follows leader/09
   * (`a` = UTF-8, anything else = MARC-8); otherwise force one.
   */
  encoding?: "auto" | MarcEncoding;
  /** NFC-normalize decoded text (default `true`). */
  normalize?: boolean;
  /**
   * Largest chunk accepted while looking for a record terminator, in bytes
   * (default 1 MiB). Longer runs are quarantined without being buffered.
   */
  maxRecordBytes?: number;
}

/** A byte source: an async iterable of chunks or a web stream. */
export type ByteSource =
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>
  | ReadableStream<Uint8Array>;

/** The non-empty chunks of a byte source, from a stream or any (async) iterable. */
export async function* chunksOf(source: ByteSource): AsyncGenerator<Uint8Array> {
  if (source instanceof ReadableStream) {
    const reader = source.getReader();
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) return;
        if (value && value.length > 0) yield value;
      }
    } finally {
      reader.releaseLock();
    }
  } else {
    for await (const chunk of source as AsyncIterable<Uint8Array>) {
      if (chunk.length > 0) yield chunk;
    }
  }
}

/** Growable byte window over the stream. */
class Window {
  buf = new Uint8Array(1 << 16);
  start = 0;
  end = 0;
  /** Stream offset of `buf[0]`. */
  base = 0;
  eof = false;
  #it: AsyncGenerator<Uint8Array>;
  constructor(it: AsyncGenerator<Uint8Array>) {
    this.#it = it;
  }
  get available(): number {
    return this.end - this.start;
  }
  /** Read one more chunk; returns false at end of stream. */
  async more(): Promise<boolean> {
    if (this.eof) return false;
    const next = await this.#it.next();
    if (next.done) {
      this.eof = true;
      return false;
    }
    const chunk = next.value;
    const live = this.end - this.start;
    if (this.end + chunk.length > this.buf.length) {
      if (live + chunk.length <= this.buf.length && this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        let size = this.buf.length;
        while (size < live + chunk.length) size *= 2;
        const grown = new Uint8Array(size);
        grown.set(this.buf.subarray(this.start, this.end));
        this.buf = grown;
      }
      this.base += this.start;
      this.start = 0;
      this.end = live;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
    return true;
  }
  /** Ensure at least `n` bytes are buffered (fewer only at end of stream). */
  async need(n: number): Promise<void> {
    while (this.available < n && await this.more()) { /* keep reading */ }
  }
  /** Drop bytes; when the window is empty, shrink an oversized buffer. */
  consume(n: number): void {
    this.start += n;
    if (this.start === this.end) {
      this.base += this.start;
      this.start = 0;
      this.end = 0;
      if (this.buf.length > (1 << 20)) this.buf = new Uint8Array(1 << 16);
    }
  }
}

function parseDigits(bytes: Uint8Array, from: number, len: number): number {
  let v = 0;
  for (let i = from; i < from + len; i++) {
    const b = bytes[i];
    if (b === undefined || b < 0x30 || b > 0x39) return NaN;
    v = v * 10 + (b - 0x30);
  }
  return v;
}

function looksLikeLeaderStart(bytes: Uint8Array, at: number, end: number): boolean {
  if (at + 5 > end) return at >= end; // end of data also counts as a boundary
  return !Number.isNaN(parseDigits(bytes, at, 5));
}

/**
 * Whether a full leader starts at `at`: record length and base address numeric, indicator and
 * subfield code counts numeric, the rest printable ASCII, and a base address inside the record.
 */
function plausibleLeaderAt(bytes: Uint8Array, at: number, end: number): boolean {
  if (at + LEADER_LENGTH > end) return false;
  const length = parseDigits(bytes, at, 5);
  const base = parseDigits(bytes, at + 12, 5);
  if (Number.isNaN(length) || Number.isNaN(base) || Number.isNaN(parseDigits(bytes, at + 10, 2))) {
    return false;
  }
  for (const i of [5, 6, 7, 8, 9, 17, 18, 19, 20, 21, 22, 23]) {
    const b = bytes[at + i]!;
    if (b < 0x20 || b > 0x7e) return false;
  }
  return base > LEADER_LENGTH && length > base;
}

function isInterRecordJunk(b: number): boolean {
  return b === 0x0a || b === 0x0d || b === 0x00 || b === 0x1a || b === 0x20;
}

/**
 * Read MARC 21 records from ISO 2709 bytes, one result per record.
 *
 * @example
 * ```ts
 * import { readIso2709 } from "./iso2709.ts";
 * const file = await Deno.open("records.mrc");
 * for await (const r of readIso2709(file.readable)) {
 *   if (r.ok) console.log(r.position.index, r.record.fields.length);
 *   else console.warn(r.position.index, r.reason);
 * }
 * ```
 */
export async function* readIso2709(
  source: ByteSource,
  opts: ReadIso2709Options = {},
): AsyncGenerator<MarcReadResult> {
  const maxRecordBytes = opts.maxRecordBytes ?? (1 << 20);
  const w = new Window(chunksOf(source));
  let index = 0;
  while (true) {
    // Skip line breaks and padding between records.
    while (true) {
      if (w.available === 0 && !(await w.more())) return;
      while (w.available > 0 && isInterRecordJunk(w.buf[w.start]!)) w.consume(1);
      if (w.available > 0) break;
    }
    index++;
    const position: MarcPosition = { index, offset: w.base + w.start };
    const frameWarnings: MarcWarning[] = [];
    await w.need(5);
    const declared = parseDigits(w.buf, w.start, 5);
    let length = -1;
    if (!Number.isNaN(declared) && declared >= LEADER_LENGTH + 2 && declared <= maxRecordBytes) {
      await w.need(declared + 5);
      if (w.available >= declared) {
        const last = w.buf[w.start + declared - 1];
        if (last === RECORD_TERMINATOR) {
          length = declared;
        } else if (
          last === FIELD_TERMINATOR &&
          looksLikeLeaderStart(w.buf, w.start + declared, w.end)
        ) {
          length = declared;
          frameWarnings.push({
            defect: "record-terminator",
            message: `Record ${index} has no record terminator at its declared length ${declared}`,
          });
        }
      }
    }
    let unterminated = false;
    if (length < 0) {
      // Resynchronise: the record ends at the first record terminator, or at a field terminator
      // directly followed by a leader (a record whose terminator is missing: the next one is
      // intact and must not be swallowed).
      let rel = 0;
      let end = -1; // relative end (exclusive) of the record
      while (end < 0) {
        let needMore = false;
        while (rel < w.available) {
          const b = w.buf[w.start + rel]!;
          if (b === RECORD_TERMINATOR) {
            end = rel + 1;
            break;
          }
          if (b === FIELD_TERMINATOR) {
            if (w.available - rel - 1 < LEADER_LENGTH && !w.eof) {
              needMore = true;
              break;
            }
            if (plausibleLeaderAt(w.buf, w.start + rel + 1, w.start + w.available)) {
              end = rel + 1;
              unterminated = true;
              break;
            }
          }
          rel++;
        }
        if (end >= 0) break;
        if (w.available > maxRecordBytes) break;
        if (!(await w.more()) && !needMore) break;
      }
      if (end < 0 && w.available > maxRecordBytes) {
        // Too long: discard up to (and including) the next terminator, unbuffered.
        let skipped = 0;
        while (true) {
          const at = w.buf.subarray(w.start, w.end).indexOf(RECORD_TERMINATOR);
          if (at >= 0) {
            skipped += at + 1;
            w.consume(at + 1);
            break;
          }
          skipped += w.available;
          w.consume(w.available);
          if (!(await w.more())) break;
        }
        yield {
          ok: false,
          position,
          defect: "record-length",
          reason:
            `Cannot read MARC record ${index}: no record terminator within ${maxRecordBytes} bytes (${skipped} bytes skipped)`,
        };
        continue;
      }
      const found = end >= 0 && !unterminated ? w.start + end - 1 : -1;
      if (unterminated) {
        frameWarnings.push({
          defect: "record-terminator",
          message:
            `Record ${index} has no record terminator; it ends at its last field terminator, where the next record starts`,
        });
      }
      length = end >= 0 ? end : w.available;
      if (Number.isNaN(declared)) {
        frameWarnings.push({
          defect: "record-length",
          message:
            `Record ${index} leader record length is not numeric; framed by record terminator`,
        });
      } else if (declared !== length) {
        frameWarnings.push({
          defect: "record-length",
          message:
            `Record ${index} leader record length ${declared} does not match actual length ${length}`,
        });
      }
      if (found < 0 && !unterminated) {
        frameWarnings.push({
          defect: "record-terminator",
          message: `Record ${index} has no record terminator before end of stream`,
        });
      }
    }
    const bytes = w.buf.subarray(w.start, w.start + length);
    const result = parseIso2709Record(bytes, position, opts, frameWarnings);
    w.consume(length);
    yield result;
  }
}

const utf8Lenient = new TextDecoder("utf-8");

function decodeAscii(bytes: Uint8Array, from: number, to: number): string {
  let s = "";
  for (let i = from; i < to; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/**
 * True when bytes have no MARC-8 escapes, contain at least one multibyte
 * UTF-8 sequence and are valid UTF-8 throughout: such data labelled MARC-8
 * is almost certainly mislabelled UTF-8.
 */
function looksLikeUtf8(data: Uint8Array): boolean {
  let high = false;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === 0x1b) return false;
    if (b >= 0x80) high = true;
  }
  return high && isValidUtf8(data);
}

const VALID_TAG = /^[0-9A-Za-z]{3}$/;
const NON_ASCII = /[\u0080-\uffff]/;
const VALID_INDICATOR = /^[0-9a-z ]$/;
const VALID_CODE = /^[0-9a-z]$/;

/**
 * Parse one framed ISO 2709 record (leader through record terminator).
 * Exposed for callers that frame records themselves; most callers want
 * {@linkcode readIso2709}.
 *
 * @example
 * ```ts
 * import { encodeIso2709, parseIso2709Record } from "./iso2709.ts";
 * const bytes = encodeIso2709({ leader: "00000nam a2200000   4500", fields: [{ tag: "001", value: "x" }] });
 * const r = parseIso2709Record(bytes, { index: 1, offset: 0 });
 * ```
 */
export function parseIso2709Record(
  bytes: Uint8Array,
  position: MarcPosition,
  opts: ReadIso2709Options = {},
  initialWarnings: MarcWarning[] = [],
): MarcReadResult {
  const index = position.index;
  const warnings: MarcWarning[] = [...initialWarnings];
  const warn = (defect: MarcDefect, message: string) => warnings.push({ defect, message });
  const fail = (defect: MarcDefect, detail: string): MarcReadResult => ({
    ok: false,
    position,
    defect,
    reason: `Cannot read MARC record ${index}: ${detail}`,
  });
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === RECORD_TERMINATOR) end--;
  if (end < LEADER_LENGTH) {
    return fail("leader", `record is ${bytes.length} bytes, shorter than the 24-byte leader`);
  }
  // Leader
  let leader = "";
  let badLeader = 0;
  for (let i = 0; i < LEADER_LENGTH; i++) {
    const b = bytes[i]!;
    if (b < 0x20 || b > 0x7e) {
      badLeader++;
      leader += " ";
    } else leader += String.fromCharCode(b);
  }
  if (badLeader > 0) {
    warn(
      "leader",
      `Record ${index} leader has ${badLeader} non-printable bytes (replaced by blanks)`,
    );
  }
  // Directory and base address
  let dirEnd = bytes.subarray(LEADER_LENGTH, end).indexOf(FIELD_TERMINATOR);
  dirEnd = dirEnd >= 0 ? dirEnd + LEADER_LENGTH : -1;
  const declaredBase = parseDigits(bytes, 12, 5);
  let base: number;
  if (dirEnd >= 0) {
    base = dirEnd + 1;
    if (declaredBase !== base) {
      warn(
        "base-address",
        Number.isNaN(declaredBase)
          ? `Record ${index} base address is not numeric; using ${base}`
          : `Record ${index} base address ${declaredBase} does not match directory end ${base}`,
      );
    }
  } else if (!Number.isNaN(declaredBase) && declaredBase > LEADER_LENGTH && declaredBase <= end) {
    base = declaredBase;
    dirEnd = base - 1;
    warn("directory", `Record ${index} directory has no field terminator; using base address`);
  } else {
    return fail("directory", "no directory terminator and no usable base address");
  }
  const dirLength = dirEnd - LEADER_LENGTH;
  if (dirLength % DIRECTORY_ENTRY_LENGTH !== 0) {
    warn(
      "directory",
      `Record ${index} directory length ${dirLength} is not a multiple of 12; ${
        dirLength % DIRECTORY_ENTRY_LENGTH
      } trailing bytes ignored`,
    );
  }
  const entries = Math.floor(dirLength / DIRECTORY_ENTRY_LENGTH);
  if (entries === 0) return fail("directory", "directory has no entries");
  const dataLength = end - base;
  let encoding: MarcEncoding = opts.encoding && opts.encoding !== "auto"
    ? opts.encoding
    : leader[9] === "a"
    ? "utf-8"
    : "marc-8";
  if ((opts.encoding ?? "auto") === "auto" && encoding === "marc-8") {
    if (looksLikeUtf8(bytes.subarray(base, end))) {
      encoding = "utf-8";
      warn(
        "leader",
        `Record ${index} leader/09 declares MARC-8 but the data is valid UTF-8; decoded as UTF-8`,
      );
    } else if (leader[9] !== " ") {
      warn("leader", `Record ${index} leader/09 is not 'a' or blank; decoded as MARC-8`);
    }
  }
  const normalize = opts.normalize ?? true;

  const decode = (from: number, to: number, tag: string): string => {
    if (encoding === "utf-8") {
      // Most fields are ASCII: one character per byte, nothing to validate or normalize.
      if (isAscii(bytes, from, to)) return latin1String(bytes, from, to);
      const text = utf8Lenient.decode(bytes.subarray(from, to));
      if (!isValidUtf8(bytes, from, to)) {
        warn("utf8", `Record ${index} field ${tag} has invalid UTF-8 (replaced by U+FFFD)`);
      }
      return normalize && NON_ASCII.test(text) ? text.normalize("NFC") : text;
    }
    const { text, problems } = decodeMarc8(bytes.subarray(from, to), { normalize });
    for (const p of problems) warn("marc8", `Record ${index} field ${tag}: ${p}`);
    return text;
  };

  const fields: MarcField[] = [];
  let cursor = 0; // relative to base: end of the previous field
  let badTags = 0;
  let keptBadTags = 0;
  let realigned = 0;
  for (let e = 0; e < entries; e++) {
    const at = LEADER_LENGTH + e * DIRECTORY_ENTRY_LENGTH;
    const rawTag = decodeAscii(bytes, at, at + 3);
    const fieldLength = parseDigits(bytes, at + 3, 4);
    const fieldStart = parseDigits(bytes, at + 7, 5);
    const tagOk = VALID_TAG.test(rawTag);
    const tag = tagOk ? rawTag : `entry ${e + 1}`;
    let from: number;
    let to: number;
    if (Number.isNaN(fieldLength) || Number.isNaN(fieldStart)) {
      from = Number.isNaN(fieldStart) ? cursor : fieldStart;
      const term = from < dataLength
        ? bytes.subarray(base + from, base + dataLength).indexOf(FIELD_TERMINATOR)
        : -1;
      to = term >= 0 ? from + term + 1 : dataLength;
      warn(
        "directory",
        `Record ${index} directory entry ${
          e + 1
        } (${tag}) is not numeric; field located by field terminator`,
      );
    } else if (fieldStart + fieldLength <= dataLength) {
      from = fieldStart;
      to = fieldStart + fieldLength;
      // A length one byte short: this field then lacks its terminator, and each later field
      // starts on the terminator before it. Realign on the terminators instead of emptying them.
      let moved = false;
      if (to - from > 1 && bytes[base + from] === FIELD_TERMINATOR) {
        from++;
        moved = true;
      }
      if (
        bytes[base + to - 1] !== FIELD_TERMINATOR && to < dataLength &&
        bytes[base + to] === FIELD_TERMINATOR
      ) {
        to++;
        moved = true;
      }
      if (moved) realigned++;
    } else {
      from = fieldStart < dataLength ? fieldStart : cursor;
      const term = from < dataLength
        ? bytes.subarray(base + from, base + dataLength).indexOf(FIELD_TERMINATOR)
        : -1;
      to = term >= 0 ? from + term + 1 : dataLength;
      warn(
        "field-bounds",
        `Record ${index} directory entry ${
          e + 1
        } (${tag}) points past the end of the data (start ${fieldStart}, length ${fieldLength}, data ${dataLength})`,
      );
    }
    if (from >= dataLength || to <= from) {
      warn(
        "field-bounds",
        `Record ${index} field ${tag} (entry ${e + 1}) could not be located; dropped`,
      );
      continue;
    }
    cursor = to;
    let fieldTag = tag;
    if (!tagOk) {
      // Keep the data under its raw tag when the tag is printable (e.g. "0 2"): the sanitizer
      // decides what is published. Tags with control or non-ASCII bytes cannot be kept.
      if (!/^[\x20-\x7e]{3}$/.test(rawTag)) {
        badTags++;
        continue;
      }
      keptBadTags++;
      fieldTag = rawTag;
    }
    // Field content without its terminator; a terminator inside means a wrong length.
    let contentEnd = base + to;
    const inner = bytes.subarray(base + from, contentEnd).indexOf(FIELD_TERMINATOR);
    if (inner >= 0 && base + from + inner < contentEnd - 1) {
      warn(
        "field-bounds",
        `Record ${index} field ${tag} (entry ${e + 1}) length ${
          to - from
        } runs past its field terminator at ${inner + 1}`,
      );
      contentEnd = base + from + inner + 1;
    }
    if (bytes[contentEnd - 1] === FIELD_TERMINATOR) {
      contentEnd--;
    } else {
      warn(
        "field-terminator",
        `Record ${index} field ${tag} (entry ${e + 1}) has no field terminator`,
      );
    }
    const contentStart = base + from;
    if (isControlTag(fieldTag)) {
      fields.push({ tag: fieldTag, value: decode(contentStart, contentEnd, tag) });
      continue;
    }
    fields.push(
      parseDataField(bytes, contentStart, contentEnd, fieldTag, tag, index, decode, warn),
    );
  }
  if (realigned > 0) {
    warn(
      "directory",
      `Record ${index} directory has ${realigned} field lengths or starts one byte off; fields realigned on their terminators (their content was at risk: check them)`,
    );
  }
  if (keptBadTags > 0) {
    warn(
      "tag",
      `Record ${index} has ${keptBadTags} fields with invalid tags; kept for the sanitizer to decide`,
    );
  }
  if (badTags > 0) {
    warn(
      "tag",
      `Record ${index} has ${badTags} directory entries with unprintable tags; fields dropped`,
    );
  }
  if (fields.length === 0) {
    return fail("directory", `none of ${entries} directory entries could be read`);
  }
  if (encoding === "marc-8") leader = leader.slice(0, 9) + "a" + leader.slice(10);
  return { ok: true, position, record: { leader, fields }, warnings };
}

function parseDataField(
  bytes: Uint8Array,
  from: number,
  to: number,
  fieldTag: string,
  tag: string, // how messages name the field (never a raw invalid tag)
  index: number,
  decode: (from: number, to: number, tag: string) => string,
  warn: (defect: MarcDefect, message: string) => void,
): DataField {
  let ind1 = " ";
  let ind2 = " ";
  let pos = from;
  if (bytes[from] === SUBFIELD_DELIMITER || to - from < 2) {
    warn("indicator", `Record ${index} field ${tag} has no indicators; blanks assumed`);
  } else {
    const i1 = String.fromCharCode(bytes[from]!);
    const i2 = String.fromCharCode(bytes[from + 1]!);
    if (bytes[from + 1] === SUBFIELD_DELIMITER) {
      // Only one indicator present.
      warn("indicator", `Record ${index} field ${tag} has one indicator; second assumed blank`);
      ind1 = VALID_INDICATOR.test(i1) ? i1 : " ";
      pos = from + 1;
    } else {
      if (VALID_INDICATOR.test(i1)) ind1 = i1;
      else {warn(
          "indicator",
          `Record ${index} field ${tag} first indicator is invalid; blank assumed`,
        );}
      if (VALID_INDICATOR.test(i2)) ind2 = i2;
      else {warn(
          "indicator",
          `Record ${index} field ${tag} second indicator is invalid; blank assumed`,
        );}
      pos = from + 2;
    }
  }
  const text = decode(pos, to, tag);
  const parts = text.split("\x1f");
  const subfields: Subfield[] = [];
  if (parts[0]!.length > 0) {
    warn(
      "subfield-code",
      `Record ${index} field ${tag} has ${
        parts[0]!.length
      } characters before the first subfield delimiter; dropped`,
    );
  }
  let empty = 0;
  for (let k = 1; k < parts.length; k++) {
    const part = parts[k]!;
    if (part.length === 0) {
      empty++;
      continue;
    }
    const code = String.fromCodePoint(part.codePointAt(0)!);
    if (!VALID_CODE.test(code)) {
      const c = code.codePointAt(0)!;
      warn(
        "subfield-code",
        c > 0x20 && c < 0x7f
          ? `Record ${index} field ${tag} subfield ${k} has a non-standard code`
          : `Record ${index} field ${tag} subfield ${k} has a blank, control or non-ASCII code; kept for the sanitizer to decide`,
      );
    }
    subfields.push({ code, value: part.slice(code.length) });
  }
  if (empty > 0) {
    warn(
      "subfield-code",
      `Record ${index} field ${tag} has ${empty} empty subfields (no code, no data); dropped`,
    );
  }
  return { tag: fieldTag, ind1, ind2, subfields };
}

// ---------------------------------------------------------------------------
// Writer

/** Options for {@linkcode encodeIso2709} and {@linkcode writeIso2709}. */
export interface WriteIso2709Options {
  /** Output encoding (default `"utf-8"`, leader/09 = `a`; `"marc-8"` sets it blank). */
  encoding?: MarcEncoding;
}

const textEncoder = new TextEncoder();

function checkNoStructural(value: string, tag: string, what: string): void {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x1d || c === 0x1e || c === 0x1f) {
      throw new Error(
        `Cannot write MARC field ${tag}: ${what} contains a structural control character at ${i}`,
      );
    }
  }
}

function checkIndicators(field: DataField): void {
  if (field.ind1.length !== 1 || field.ind2.length !== 1) {
    throw new Error(`Cannot write MARC field ${field.tag}: indicators must be one character each`);
  }
}

/** Checks the `k`-th subfield (0-based) of a field with `tag` before it is written. */
function checkSubfield(tag: string, sf: Subfield, k: number): void {
  if (sf.code.length !== 1 || sf.code.charCodeAt(0) < 0x21 || sf.code.charCodeAt(0) > 0x7e) {
    throw new Error(
      `Cannot write MARC field ${tag}: subfield ${
        k + 1
      } code must be one printable ASCII character`,
    );
  }
  checkNoStructural(sf.value, tag, `subfield ${k + 1}`);
}

function encodeText(value: string, encoding: MarcEncoding): Uint8Array {
  return encoding === "utf-8" ? textEncoder.encode(value) : encodeMarc8(value);
}

function encodeField(field: MarcField, encoding: MarcEncoding): Uint8Array {
  if (isControlField(field)) {
    checkNoStructural(field.value, field.tag, "value");
    const body = encodeText(field.value, encoding);
    const out = new Uint8Array(body.length + 1);
    out.set(body);
    out[body.length] = FIELD_TERMINATOR;
    return out;
  }
  checkIndicators(field);
  const parts: Uint8Array[] = [textEncoder.encode(field.ind1 + field.ind2)];
  let size = parts[0]!.length;
  for (let k = 0; k < field.subfields.length; k++) {
    const sf = field.subfields[k]!;
    checkSubfield(field.tag, sf, k);
    const head = new Uint8Array([SUBFIELD_DELIMITER, sf.code.charCodeAt(0)]);
    const body = encodeText(sf.value, encoding);
    parts.push(head, body);
    size += 2 + body.length;
  }
  const out = new Uint8Array(size + 1);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  out[at] = FIELD_TERMINATOR;
  return out;
}

/** Writes `n` as `width` ASCII digits (zero-padded) into `out` at `at`. */
function putDigits(out: Uint8Array, at: number, n: number, width: number): void {
  for (let i = at + width - 1; i >= at; i--) {
    out[i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
}

/**
 * The UTF-8 length of a field's body with its terminator, checking it as `encodeField` does
 * (same checks, same order, same messages); the fast path of {@linkcode encodeIso2709}.
 */
function utf8FieldLength(field: MarcField): number {
  if (isControlField(field)) {
    checkNoStructural(field.value, field.tag, "value");
    return utf8Length(field.value) + 1;
  }
  checkIndicators(field);
  let size = utf8Length(field.ind1 + field.ind2);
  for (let k = 0; k < field.subfields.length; k++) {
    const sf = field.subfields[k]!;
    checkSubfield(field.tag, sf, k);
    size += 2 + utf8Length(sf.value);
  }
  return size + 1;
}

/** Writes a field checked by {@linkcode utf8FieldLength} at `at`; returns the offset after it. */
function writeUtf8Field(field: MarcField, out: Uint8Array, at: number): number {
  if (isControlField(field)) {
    at = writeUtf8(field.value, out, at);
  } else {
    at = writeUtf8(field.ind1 + field.ind2, out, at);
    for (const sf of field.subfields) {
      out[at++] = SUBFIELD_DELIMITER;
      out[at++] = sf.code.charCodeAt(0);
      at = writeUtf8(sf.value, out, at);
    }
  }
  out[at++] = FIELD_TERMINATOR;
  return at;
}

/**
 * Encode one record as ISO 2709 bytes. Record length, base address,
 * directory, leader/09 (`a` for UTF-8, blank for MARC-8) and leader/10-11,
 * 20-23 are computed; the rest of the leader is kept.
 *
 * @example
 * ```ts
 * import { encodeIso2709 } from "./iso2709.ts";
 * const bytes = encodeIso2709({
 *   leader: "00000nam a2200000   4500",
 *   fields: [{ tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "Dvořák" }] }],
 * });
 * ```
 */
export function encodeIso2709(record: MarcRecord, opts: WriteIso2709Options = {}): Uint8Array {
  const encoding = opts.encoding ?? "utf-8";
  if (record.leader.length !== LEADER_LENGTH) {
    throw new Error(
      `Cannot write MARC record: leader is ${record.leader.length} characters, expected 24`,
    );
  }
  const fields = record.fields;
  // UTF-8 (the common case) is measured first and written once into the record's buffer;
  // MARC-8 goes through the per-field encoder.
  const bodies: Uint8Array[] = [];
  const lengths: number[] = new Array(fields.length);
  let offset = 0;
  for (let k = 0; k < fields.length; k++) {
    const field = fields[k]!;
    if (!VALID_TAG.test(field.tag)) {
      throw new Error(`Cannot write MARC record: field ${k + 1} has an invalid tag`);
    }
    let length: number;
    if (encoding === "utf-8") length = utf8FieldLength(field);
    else {
      const body = encodeField(field, encoding);
      bodies.push(body);
      length = body.length;
    }
    if (length > 9999) {
      throw new Error(`Cannot write MARC field ${field.tag}: length ${length} exceeds 9999`);
    }
    if (offset > 99999) {
      throw new Error(`Cannot write MARC field ${field.tag}: start ${offset} exceeds 99999`);
    }
    lengths[k] = length;
    offset += length;
  }
  const base = LEADER_LENGTH + fields.length * DIRECTORY_ENTRY_LENGTH + 1;
  const total = base + offset + 1;
  if (total > 99999) {
    throw new Error(`Cannot write MARC record: record length ${total} exceeds 99999`);
  }
  const out = new Uint8Array(total);
  const l = record.leader;
  putDigits(out, 0, total, 5);
  for (let i = 5; i < 9; i++) out[i] = l.charCodeAt(i) & 0x7f;
  out[9] = encoding === "utf-8" ? 0x61 : 0x20;
  out[10] = 0x32;
  out[11] = 0x32;
  putDigits(out, 12, base, 5);
  for (let i = 17; i < 20; i++) out[i] = l.charCodeAt(i) & 0x7f;
  out[20] = 0x34;
  out[21] = 0x35;
  out[22] = 0x30;
  out[23] = 0x30;
  let entry = LEADER_LENGTH;
  let start = 0;
  for (let k = 0; k < fields.length; k++) {
    const tag = fields[k]!.tag;
    out[entry] = tag.charCodeAt(0);
    out[entry + 1] = tag.charCodeAt(1);
    out[entry + 2] = tag.charCodeAt(2);
    putDigits(out, entry + 3, lengths[k]!, 4);
    putDigits(out, entry + 7, start, 5);
    entry += DIRECTORY_ENTRY_LENGTH;
    start += lengths[k]!;
  }
  out[base - 1] = FIELD_TERMINATOR;
  let at = base;
  if (encoding === "utf-8") {
    for (const field of fields) at = writeUtf8Field(field, out, at);
  } else {
    for (const b of bodies) {
      out.set(b, at);
      at += b.length;
    }
  }
  out[total - 1] = RECORD_TERMINATOR;
  return out;
}

/**
 * Encode a stream of records as ISO 2709, one chunk per record.
 *
 * @example
 * ```ts
 * import { writeIso2709 } from "./iso2709.ts";
 * const records = [{ leader: "00000nam a2200000   4500", fields: [{ tag: "001", value: "1" }] }];
 * const file = await Deno.create("out.mrc");
 * for await (const chunk of writeIso2709(records)) await file.write(chunk);
 * file.close();
 * ```
 */
export async function* writeIso2709(
  records: AsyncIterable<MarcRecord> | Iterable<MarcRecord>,
  opts: WriteIso2709Options = {},
): AsyncGenerator<Uint8Array> {
  for await (const record of records) yield encodeIso2709(record, opts);
}
