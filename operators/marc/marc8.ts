/**
 * MARC-8 to Unicode decoding and Unicode to MARC-8 encoding.
 *
 * Decoding handles the default sets (ASCII in G0, ANSEL in G1), the
 * technique 1 escapes (Greek symbols, subscripts, superscripts) and the
 * technique 2 designations of Basic/Extended Hebrew, Cyrillic, Arabic and
 * Basic Greek into G0 or G1, and EACC (East Asian Character Code, CJK: three
 * bytes per character) into G0 or G1. MARC-8 places combining marks before
 * their base character; they are moved after it and the result is
 * NFC-normalized. The ANSEL double diacritics (ligature, double tilde) decode
 * to U+0361 / U+0360 after their first letter; their right halves are dropped.
 *
 * @module
 */

import {
  BASIC_LATIN,
  DOUBLE_DIACRITIC_RIGHT_HALF,
  EACC_FINAL,
  eaccCodePoint,
  EXTENDED_LATIN,
  type Marc8CharacterSet,
  RIGHT_HALVES,
  SETS_BY_FINAL,
  TECHNIQUE1_SETS,
} from "./marc8_tables.ts";
import { latin1String } from "./utf8.ts";

const ESC = 0x1b;
const SUBFIELD_DELIMITER = 0x1f;
const REPLACEMENT = 0xfffd;

/** Result of {@linkcode decodeMarc8}. */
export interface Marc8DecodeResult {
  /** Decoded Unicode text (NFC unless `normalize: false`). */
  text: string;
  /** Decoding problems with byte offsets (no content); empty when clean. */
  problems: string[];
}

/** Options for {@linkcode decodeMarc8}. */
export interface Marc8DecodeOptions {
  /** NFC-normalize the output (default `true`). */
  normalize?: boolean;
  /**
   * Treat the byte after each subfield delimiter (0x1F) as a literal ASCII
   * subfield code, whatever set is in G0 (default `true`).
   */
  subfieldCodes?: boolean;
}

interface G0State {
  set: Marc8CharacterSet | null; // null = EACC (three bytes per character)
}

function isPlainAscii(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b >= 0x80 || b === ESC) return false;
  }
  return true;
}

const MAX_PROBLEMS = 8;

/**
 * Decode MARC-8 bytes (one field, escapes reset at the start) to Unicode.
 *
 * @example
 * ```ts
 * import { decodeMarc8 } from "./marc8.ts";
 * // "Montr" + ANSEL acute (0xE2) + "eal"
 * const bytes = new Uint8Array([0x4d, 0x6f, 0x6e, 0x74, 0x72, 0xe2, 0x65, 0x61, 0x6c]);
 * decodeMarc8(bytes).text; // "Montréal"
 * ```
 */
export function decodeMarc8(bytes: Uint8Array, opts: Marc8DecodeOptions = {}): Marc8DecodeResult {
  const problems: string[] = [];
  if (isPlainAscii(bytes)) return { text: latin1String(bytes, 0, bytes.length), problems };
  const report = (msg: string) => {
    if (problems.length < MAX_PROBLEMS) problems.push(msg);
    else if (problems.length === MAX_PROBLEMS) problems.push("Further MARC-8 problems omitted");
  };
  const subfieldCodes = opts.subfieldCodes ?? true;
  const out: number[] = [];
  let pending: number[] = [];
  const g0: G0State = { set: BASIC_LATIN };
  let g1: Marc8CharacterSet | null = EXTENDED_LATIN;
  let i = 0;
  const n = bytes.length;

  const flushPending = (at: number) => {
    if (pending.length > 0) {
      report(`Combining mark without a base character at byte ${at}`);
      for (const m of pending) out.push(m);
      pending = [];
    }
  };
  const emit = (set: Marc8CharacterSet, pos: number, at: number) => {
    const cp = set.codes[pos]!;
    if (cp === 0) {
      report(`Byte 0x${pos.toString(16)} at ${at} is not defined in ${set.name}`);
      out.push(REPLACEMENT);
      for (const m of pending) out.push(m);
      pending = [];
    } else if (set.combining[pos] === 1) {
      if (!RIGHT_HALVES.has(cp)) pending.push(cp);
    } else {
      out.push(cp);
      for (const m of pending) out.push(m);
      pending = [];
    }
  };

  /** One EACC character at `i` (three bytes, high bits ignored); returns the bytes consumed. */
  const emitEacc = (at: number): number => {
    if (at + 3 > n) {
      report(`EACC character at byte ${at} is cut short`);
      out.push(REPLACEMENT);
      return n - at;
    }
    const code = ((bytes[at]! & 0x7f) << 16) | ((bytes[at + 1]! & 0x7f) << 8) |
      (bytes[at + 2]! & 0x7f);
    const cp = eaccCodePoint(code);
    if (cp === undefined) {
      report(`EACC character 0x${code.toString(16)} at byte ${at} is not defined`);
      out.push(REPLACEMENT);
    } else if (cp > 0xffff) {
      out.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
    } else out.push(cp);
    for (const m of pending) out.push(m);
    pending = [];
    return 3;
  };

  while (i < n) {
    const b = bytes[i]!;
    if (b === ESC) {
      const consumed = parseEscape(bytes, i, g0, (s) => (g1 = s));
      if (consumed === 0) {
        report(`Unrecognised escape sequence at byte ${i}`);
        i++;
      } else i += consumed;
      continue;
    }
    if (b < 0x20) {
      flushPending(i);
      out.push(b);
      i++;
      if (
        b === SUBFIELD_DELIMITER && subfieldCodes && i < n && bytes[i]! >= 0x20
      ) {
        out.push(bytes[i]!);
        i++;
      }
      continue;
    }
    if (b === 0x20) {
      out.push(0x20);
      for (const m of pending) out.push(m);
      pending = [];
      i++;
      continue;
    }
    if (g0.set === null && b <= 0x7f) {
      i += emitEacc(i); // EACC: three bytes per character (0x7F starts some of them)
      continue;
    }
    if (b < 0x7f) {
      emit(g0.set!, b, i);
      i++;
      continue;
    }
    if (b === 0x7f || b === 0xa0 || b === 0xff) {
      report(`Byte 0x${b.toString(16)} at ${i} is not a MARC-8 graphic character`);
      i++;
      continue;
    }
    if (b < 0xa0) {
      // C1 controls: joiners are kept, non-sort markers are dropped.
      if (b === 0x8d) out.push(0x200d);
      else if (b === 0x8e) out.push(0x200c);
      else if (b !== 0x88 && b !== 0x89) report(`Control byte 0x${b.toString(16)} at ${i} dropped`);
      i++;
      continue;
    }
    if (g1 === null) {
      i += emitEacc(i);
      continue;
    }
    emit(g1, b & 0x7f, i);
    i++;
  }
  flushPending(n);
  let text = "";
  for (let k = 0; k < out.length; k += 4096) {
    text += String.fromCharCode(...out.slice(k, k + 4096));
  }
  if (opts.normalize ?? true) text = text.normalize("NFC");
  return { text, problems };
}

/**
 * Parse an escape sequence at `i`. Returns the number of bytes consumed, or
 * 0 when the sequence is not recognised. Designations update `g0` / `setG1`.
 */
function parseEscape(
  bytes: Uint8Array,
  i: number,
  g0: G0State,
  setG1: (s: Marc8CharacterSet | null) => void,
): number {
  const a = bytes[i + 1];
  if (a === undefined) return 0;
  // Technique 1: ESC g / ESC b / ESC p select into G0, ESC s returns to ASCII.
  const t1 = TECHNIQUE1_SETS.get(a);
  if (t1) {
    g0.set = t1;
    return 2;
  }
  if (a === 0x73) {
    g0.set = BASIC_LATIN;
    return 2;
  }
  const b = bytes[i + 2];
  if (b === undefined) return 0;
  if (a === 0x28 || a === 0x2c || a === 0x29 || a === 0x2d) {
    const set = SETS_BY_FINAL.get(b);
    if (!set) return 0;
    if (a === 0x28 || a === 0x2c) g0.set = set;
    else setG1(set);
    return 3;
  }
  if (a === 0x24) {
    // Multibyte: ESC $ F, ESC $ ( F, ESC $ , F (G0), ESC $ ) F, ESC $ - F (G1).
    if (b === EACC_FINAL) {
      g0.set = null;
      return 3;
    }
    const c = bytes[i + 3];
    if (c === EACC_FINAL) {
      if (b === 0x28 || b === 0x2c) {
        g0.set = null;
        return 4;
      }
      if (b === 0x29 || b === 0x2d) {
        setG1(null);
        return 4;
      }
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Encoding

interface Placement {
  set: Marc8CharacterSet;
  /** Byte to emit: 7-bit for G0 sets, with the high bit for ANSEL in G1. */
  byte: number;
  combining: boolean;
}

const ENCODE_ORDER: Marc8CharacterSet[] = [
  BASIC_LATIN,
  EXTENDED_LATIN,
  ...[...SETS_BY_FINAL.values()].filter((s) => s !== BASIC_LATIN && s !== EXTENDED_LATIN),
  ...TECHNIQUE1_SETS.values(),
];

/** Code point to the placements that can encode it, preferred first. */
const REVERSE: Map<number, Placement[]> = (() => {
  const m = new Map<number, Placement[]>();
  for (const set of ENCODE_ORDER) {
    for (let pos = 0x21; pos < 0x7f; pos++) {
      const cp = set.codes[pos]!;
      if (cp === 0) continue;
      const p: Placement = {
        set,
        byte: set === EXTENDED_LATIN ? pos | 0x80 : pos,
        combining: set.combining[pos] === 1,
      };
      const list = m.get(cp);
      if (list) list.push(p);
      else m.set(cp, [p]);
    }
  }
  // Unicode's half marks encode as the ANSEL halves too.
  for (const [alias, cp] of [[0xfe20, 0x0361], [0xfe22, 0x0360]] as const) {
    m.set(alias, m.get(cp)!);
  }
  return m;
})();

/** Error thrown when text cannot be represented in MARC-8. */
export class Marc8EncodeError extends Error {
  /** UTF-16 index of the offending character in the input. */
  readonly index: number;
  /** Create the error for the character at `index`. */
  constructor(index: number) {
    super(`Cannot encode text as MARC-8: character at index ${index} has no MARC-8 mapping`);
    this.name = "Marc8EncodeError";
    this.index = index;
  }
}

const NON_ASCII = /[\u0080-\uffff]/;
const asciiEncoder = new TextEncoder();

function escapeTo(set: Marc8CharacterSet): number[] {
  if (TECHNIQUE1_SETS.get(set.final) === set) return [ESC, set.final];
  return [ESC, 0x28, set.final];
}

/**
 * Encode Unicode text as MARC-8 (G0 starts and ends as ASCII, G1 stays
 * ANSEL). Combining marks are written before their base character.
 * Throws {@linkcode Marc8EncodeError} for characters outside the supported
 * MARC-8 repertoire (including CJK).
 *
 * @example
 * ```ts
 * import { encodeMarc8 } from "./marc8.ts";
 * encodeMarc8("é"); // Uint8Array [0xe2, 0x65]
 * ```
 */
export function encodeMarc8(text: string): Uint8Array {
  if (!NON_ASCII.test(text)) return asciiEncoder.encode(text);
  const out: number[] = [];
  let g0: Marc8CharacterSet = BASIC_LATIN;
  let rightHalf = 0; // ANSEL right half owed before the next base character
  const nfd = text.normalize("NFD");
  const cps = Array.from(nfd, (c) => c.codePointAt(0)!);
  let i = 0;
  while (i < cps.length) {
    const base = cps[i]!;
    let j = i + 1;
    const marks: number[] = [];
    while (j < cps.length && isMark(cps[j]!)) marks.push(cps[j++]!);
    if (base < 0x20 || base === 0x20) {
      // Controls and space exist in every set.
      for (const m of marks) {
        const p = pickMark(m, g0);
        if (!p) throw new Marc8EncodeError(indexOfCodePoint(nfd, j - marks.length));
      }
      for (const m of marks) out.push(pickMark(m, g0)!.byte);
      out.push(base);
      i = j;
      continue;
    }
    let baseCp = base;
    let rest = marks;
    let bp = pickBase(baseCp, g0);
    // Letters with a horn (O, U) are precomposed in ANSEL but decompose in NFD.
    if (rest.length > 0 && rest.some((m) => !pickMark(m, bp?.set ?? g0))) {
      const composed = String.fromCodePoint(baseCp, rest[0]!).normalize("NFC");
      if (composed.length === 1 && REVERSE.has(composed.codePointAt(0)!)) {
        baseCp = composed.codePointAt(0)!;
        rest = rest.slice(1);
        bp = pickBase(baseCp, g0);
      }
    }
    if (!bp) throw new Marc8EncodeError(indexOfCodePoint(nfd, i));
    if (bp.set !== EXTENDED_LATIN && bp.set !== g0) {
      out.push(...escapeTo(bp.set));
      g0 = bp.set;
    }
    if (rightHalf !== 0) out.push(rightHalf);
    rightHalf = 0;
    for (let k = 0; k < rest.length; k++) {
      const p = pickMark(rest[k]!, g0);
      if (!p) throw new Marc8EncodeError(indexOfCodePoint(nfd, j - rest.length + k));
      out.push(p.byte);
      rightHalf = DOUBLE_DIACRITIC_RIGHT_HALF.get(rest[k]!) ??
        (rest[k] === 0xfe20 ? 0xec : rest[k] === 0xfe22 ? 0xfb : rightHalf);
    }
    out.push(bp.byte);
    i = j;
  }
  if (g0 !== BASIC_LATIN) out.push(ESC, 0x28, BASIC_LATIN.final);
  return Uint8Array.from(out);
}

const BASES = new Map<number, Placement[]>();
const MARKS = new Map<number, Placement[]>();
for (const [cp, list] of REVERSE) {
  const bases = list.filter((p) => !p.combining);
  const marks = list.filter((p) => p.combining);
  if (bases.length > 0) BASES.set(cp, bases);
  if (marks.length > 0) MARKS.set(cp, marks);
}

function isMark(cp: number): boolean {
  if (MARKS.has(cp)) return true;
  if (cp < 0x300 || BASES.has(cp)) return false;
  return /\p{M}/u.test(String.fromCodePoint(cp));
}

function pickBase(cp: number, g0: Marc8CharacterSet): Placement | undefined {
  const bases = BASES.get(cp);
  if (!bases) return undefined;
  if (bases.length === 1) return bases[0];
  return bases.find((p) => p.set === g0) ?? bases.find((p) => p.set === EXTENDED_LATIN) ??
    bases[0];
}

function pickMark(cp: number, g0: Marc8CharacterSet): Placement | undefined {
  const marks = MARKS.get(cp);
  if (!marks) return undefined;
  return marks.find((p) => p.set === g0) ?? marks.find((p) => p.set === EXTENDED_LATIN);
}

function indexOfCodePoint(s: string, cpIndex: number): number {
  let idx = 0;
  let k = 0;
  for (const ch of s) {
    if (k === cpIndex) return idx;
    idx += ch.length;
    k++;
  }
  return idx;
}
