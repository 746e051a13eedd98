/**
 * UTF-8 in plain JavaScript for the MARC codec's hot paths: validating, decoding short ASCII
 * runs and encoding into a caller's buffer without a call into the runtime (a `TextDecoder` or
 * `TextEncoder` call per field costs more than the field) and without exceptions for control
 * flow. The results are exactly those of the WHATWG encoding standard (`TextDecoder` with
 * `fatal: true` for validity, `TextEncoder` for encoding: a lone surrogate becomes U+FFFD).
 *
 * @module
 */

/**
 * Whether `bytes[from, to)` is well-formed UTF-8 (what a fatal `TextDecoder` accepts: no overlong
 * forms, no surrogates, nothing above U+10FFFF, no truncated sequence).
 *
 * @example
 * ```ts
 * import { isValidUtf8 } from "./utf8.ts";
 * isValidUtf8(new Uint8Array([0xc3, 0xa9])); // true
 * isValidUtf8(new Uint8Array([0xe2, 0x65])); // false
 * ```
 */
export function isValidUtf8(bytes: Uint8Array, from = 0, to = bytes.length): boolean {
  let i = from;
  while (i < to) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    if (b >= 0xc2 && b <= 0xdf) {
      if (i + 1 >= to || (bytes[i + 1]! & 0xc0) !== 0x80) return false;
      i += 2;
      continue;
    }
    if (b >= 0xe0 && b <= 0xef) {
      if (i + 2 >= to) return false;
      const b1 = bytes[i + 1]!;
      const lo = b === 0xe0 ? 0xa0 : 0x80;
      const hi = b === 0xed ? 0x9f : 0xbf;
      if (b1 < lo || b1 > hi || (bytes[i + 2]! & 0xc0) !== 0x80) return false;
      i += 3;
      continue;
    }
    if (b >= 0xf0 && b <= 0xf4) {
      if (i + 3 >= to) return false;
      const b1 = bytes[i + 1]!;
      const lo = b === 0xf0 ? 0x90 : 0x80;
      const hi = b === 0xf4 ? 0x8f : 0xbf;
      if (
        b1 < lo || b1 > hi || (bytes[i + 2]! & 0xc0) !== 0x80 || (bytes[i + 3]! & 0xc0) !== 0x80
      ) {
        return false;
      }
      i += 4;
      continue;
    }
    return false;
  }
  return true;
}

/** Whether every byte of `bytes[from, to)` is below 0x80. */
export function isAscii(bytes: Uint8Array, from = 0, to = bytes.length): boolean {
  for (let i = from; i < to; i++) if (bytes[i]! >= 0x80) return false;
  return true;
}

/** Longest run decoded with one `String.fromCharCode` call (well below engines' argument limits). */
const CHUNK = 8192;

/**
 * The string of the ASCII (or Latin-1) bytes `bytes[from, to)`, one character per byte.
 *
 * @example
 * ```ts
 * import { latin1String } from "./utf8.ts";
 * latin1String(new Uint8Array([0x61, 0x62]), 0, 2); // "ab"
 * ```
 */
export function latin1String(bytes: Uint8Array, from: number, to: number): string {
  if (to - from <= CHUNK) {
    return String.fromCharCode.apply(null, bytes.subarray(from, to) as unknown as number[]);
  }
  let s = "";
  for (let at = from; at < to; at += CHUNK) {
    s += String.fromCharCode.apply(
      null,
      bytes.subarray(at, Math.min(to, at + CHUNK)) as unknown as number[],
    );
  }
  return s;
}

/**
 * The number of bytes `TextEncoder` writes for `s` (a lone surrogate counts as U+FFFD, 3 bytes).
 *
 * @example
 * ```ts
 * import { utf8Length } from "./utf8.ts";
 * utf8Length("é€😀"); // 9
 * ```
 */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        // A pair: two UTF-16 units, four bytes.
        n += 2;
        i++;
      } else n += 2;
    } else n += 2;
  }
  return n;
}

/**
 * Writes `s` as UTF-8 (as `TextEncoder` would) into `out` at `at`; returns the offset after it.
 * `out` must have room for {@linkcode utf8Length}`(s)` bytes.
 *
 * @example
 * ```ts
 * import { utf8Length, writeUtf8 } from "./utf8.ts";
 * const out = new Uint8Array(utf8Length("é"));
 * writeUtf8("é", out, 0); // 2; out = [0xc3, 0xa9]
 * ```
 */
export function writeUtf8(s: string, out: Uint8Array, at: number): number {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[at++] = c;
      continue;
    }
    if (c < 0x800) {
      out[at++] = 0xc0 | (c >> 6);
      out[at++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        out[at++] = 0xf0 | (cp >> 18);
        out[at++] = 0x80 | ((cp >> 12) & 0x3f);
        out[at++] = 0x80 | ((cp >> 6) & 0x3f);
        out[at++] = 0x80 | (cp & 0x3f);
        i++;
        continue;
      }
      c = 0xfffd; // a lone surrogate
    }
    out[at++] = 0xe0 | (c >> 12);
    out[at++] = 0x80 | ((c >> 6) & 0x3f);
    out[at++] = 0x80 | (c & 0x3f);
  }
  return at;
}
