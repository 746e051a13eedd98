/**
 * HMAC-SHA256 patron tokenization.
 *
 * A token is the lowercase hex HMAC-SHA256 (RFC 2104, FIPS 180-4) of the raw
 * value's UTF-8 bytes, keyed with the UTF-8 bytes of the key text. It is
 * byte-for-byte the same as Python's
 * `hmac.new(key.encode(), raw.encode(), hashlib.sha256).hexdigest()`.
 *
 * The SHA-256 compression function is implemented here in plain TypeScript so
 * that the HMAC inner and outer states can be computed once per key: each token
 * then costs only the inner message block(s) plus one outer block, with no
 * per-call allocation besides the returned string.
 *
 * @module
 */

/** Minimum key length in bytes (UTF-8) accepted for tokenization. */
export const MIN_KEY_BYTES = 32;

/** SHA-256 block size in bytes. */
const BLOCK_BYTES = 64;

/** Largest message (bytes) that fits, with padding, into one block after the ipad block. */
const SINGLE_BLOCK_MAX = 55;

/** FIPS 180-4 section 4.2.2: first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
const K = new Int32Array(64);

/** FIPS 180-4 section 5.3.3: first 32 bits of the fractional parts of the square roots of the first 8 primes. */
const H0 = new Int32Array(8);

function initConstants(): void {
  const primes: number[] = [];
  for (let n = 2; primes.length < 64; n++) {
    let isPrime = true;
    for (const p of primes) {
      if (p * p > n) break;
      if (n % p === 0) {
        isPrime = false;
        break;
      }
    }
    if (isPrime) primes.push(n);
  }
  // The fractional parts are derived with exact integer roots (BigInt) so that no
  // floating-point rounding can creep into the constants.
  const frac32 = (p: number, k: bigint): number => {
    // floor(p^(1/k) * 2^32) mod 2^32 == floor((p * 2^(32k))^(1/k)) mod 2^32
    const target = BigInt(p) << (32n * k);
    let lo = 0n;
    let hi = 1n << 40n;
    while (lo < hi) {
      const mid = (lo + hi + 1n) >> 1n;
      if (mid ** k <= target) lo = mid;
      else hi = mid - 1n;
    }
    return Number(lo & 0xffffffffn) | 0;
  };
  for (let i = 0; i < 64; i++) K[i] = frac32(primes[i]!, 3n);
  for (let i = 0; i < 8; i++) H0[i] = frac32(primes[i]!, 2n);
}
initConstants();

/**
 * SHA-256 compression (FIPS 180-4 section 6.2.2) of one block.
 *
 * `w` holds the 16 big-endian message words in `w[0..15]`; `w[16..63]` is
 * used as scratch for the message schedule. `st` is updated in place.
 */
function compress(st: Int32Array, w: Int32Array): void {
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15]!;
    const y = w[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = st[0]!;
  let b = st[1]!;
  let c = st[2]!;
  let d = st[3]!;
  let e = st[4]!;
  let f = st[5]!;
  let g = st[6]!;
  let h = st[7]!;
  // Eight rounds per iteration. Instead of shifting the eight working variables
  // down every round (h = g, g = f, ...), each round writes its two new values
  // into the variables that the shift would have discarded, so the roles of the
  // names rotate by one position per round and line up again after eight.
  // Per round: T1 = h + Σ1(e) + Ch(e, f, g) + K[t] + W[t]; d += T1; h = T1 + Σ0(a) + Maj(a, b, c),
  // with Ch(e, f, g) = g ^ (e & (f ^ g)) and Maj(a, b, c) = (a & b) | (c & (a | b)).
  let t = 0;
  for (let i = 0; i < 64; i += 8) {
    t = (h + ((e >>> 6 | e << 26) ^ (e >>> 11 | e << 21) ^ (e >>> 25 | e << 7)) +
      (g ^ (e & (f ^ g))) + K[i]! + w[i]!) | 0;
    d = (d + t) | 0;
    h = (t + ((a >>> 2 | a << 30) ^ (a >>> 13 | a << 19) ^ (a >>> 22 | a << 10)) +
      ((a & b) | (c & (a | b)))) | 0;
    t = (g + ((d >>> 6 | d << 26) ^ (d >>> 11 | d << 21) ^ (d >>> 25 | d << 7)) +
      (f ^ (d & (e ^ f))) + K[i + 1]! + w[i + 1]!) | 0;
    c = (c + t) | 0;
    g = (t + ((h >>> 2 | h << 30) ^ (h >>> 13 | h << 19) ^ (h >>> 22 | h << 10)) +
      ((h & a) | (b & (h | a)))) | 0;
    t = (f + ((c >>> 6 | c << 26) ^ (c >>> 11 | c << 21) ^ (c >>> 25 | c << 7)) +
      (e ^ (c & (d ^ e))) + K[i + 2]! + w[i + 2]!) | 0;
    b = (b + t) | 0;
    f = (t + ((g >>> 2 | g << 30) ^ (g >>> 13 | g << 19) ^ (g >>> 22 | g << 10)) +
      ((g & h) | (a & (g | h)))) | 0;
    t = (e + ((b >>> 6 | b << 26) ^ (b >>> 11 | b << 21) ^ (b >>> 25 | b << 7)) +
      (d ^ (b & (c ^ d))) + K[i + 3]! + w[i + 3]!) | 0;
    a = (a + t) | 0;
    e = (t + ((f >>> 2 | f << 30) ^ (f >>> 13 | f << 19) ^ (f >>> 22 | f << 10)) +
      ((f & g) | (h & (f | g)))) | 0;
    t = (d + ((a >>> 6 | a << 26) ^ (a >>> 11 | a << 21) ^ (a >>> 25 | a << 7)) +
      (c ^ (a & (b ^ c))) + K[i + 4]! + w[i + 4]!) | 0;
    h = (h + t) | 0;
    d = (t + ((e >>> 2 | e << 30) ^ (e >>> 13 | e << 19) ^ (e >>> 22 | e << 10)) +
      ((e & f) | (g & (e | f)))) | 0;
    t = (c + ((h >>> 6 | h << 26) ^ (h >>> 11 | h << 21) ^ (h >>> 25 | h << 7)) +
      (b ^ (h & (a ^ b))) + K[i + 5]! + w[i + 5]!) | 0;
    g = (g + t) | 0;
    c = (t + ((d >>> 2 | d << 30) ^ (d >>> 13 | d << 19) ^ (d >>> 22 | d << 10)) +
      ((d & e) | (f & (d | e)))) | 0;
    t = (b + ((g >>> 6 | g << 26) ^ (g >>> 11 | g << 21) ^ (g >>> 25 | g << 7)) +
      (a ^ (g & (h ^ a))) + K[i + 6]! + w[i + 6]!) | 0;
    f = (f + t) | 0;
    b = (t + ((c >>> 2 | c << 30) ^ (c >>> 13 | c << 19) ^ (c >>> 22 | c << 10)) +
      ((c & d) | (e & (c | d)))) | 0;
    t = (a + ((f >>> 6 | f << 26) ^ (f >>> 11 | f << 21) ^ (f >>> 25 | f << 7)) +
      (h ^ (f & (g ^ h))) + K[i + 7]! + w[i + 7]!) | 0;
    e = (e + t) | 0;
    a = (t + ((b >>> 2 | b << 30) ^ (b >>> 13 | b << 19) ^ (b >>> 22 | b << 10)) +
      ((b & c) | (d & (b | c)))) | 0;
  }
  st[0] = (st[0]! + a) | 0;
  st[1] = (st[1]! + b) | 0;
  st[2] = (st[2]! + c) | 0;
  st[3] = (st[3]! + d) | 0;
  st[4] = (st[4]! + e) | 0;
  st[5] = (st[5]! + f) | 0;
  st[6] = (st[6]! + g) | 0;
  st[7] = (st[7]! + h) | 0;
}

/** Loads 64 bytes of `bytes` starting at `offset` into `w[0..15]` as big-endian words. */
function loadBlock(w: Int32Array, bytes: Uint8Array, offset: number): void {
  for (let i = 0; i < 16; i++) {
    const o = offset + i * 4;
    w[i] = (bytes[o]! << 24) | (bytes[o + 1]! << 16) | (bytes[o + 2]! << 8) | bytes[o + 3]!;
  }
}

/**
 * Absorbs `bytes[0..n)` into `st`, where `prefixBytes` bytes were already
 * absorbed (a whole number of blocks), and applies the final padding.
 */
function absorbFinal(
  st: Int32Array,
  w: Int32Array,
  bytes: Uint8Array,
  n: number,
  prefixBytes: number,
): void {
  let off = 0;
  for (; off + BLOCK_BYTES <= n; off += BLOCK_BYTES) {
    loadBlock(w, bytes, off);
    compress(st, w);
  }
  const tail = new Uint8Array(BLOCK_BYTES * 2);
  const rest = n - off;
  tail.set(bytes.subarray(off, n));
  tail[rest] = 0x80;
  const tailLen = rest + 9 <= BLOCK_BYTES ? BLOCK_BYTES : BLOCK_BYTES * 2;
  // The message length in bits, as a 64-bit big-endian integer.
  const bits = (prefixBytes + n) * 8;
  const hiBits = Math.floor(bits / 0x100000000);
  const view = new DataView(tail.buffer);
  view.setUint32(tailLen - 8, hiBits);
  view.setUint32(tailLen - 4, bits >>> 0);
  for (let t = 0; t < tailLen; t += BLOCK_BYTES) {
    loadBlock(w, tail, t);
    compress(st, w);
  }
}

/** Writes the 8 state words of `st` as 32 big-endian bytes. */
function stateBytes(st: Int32Array): Uint8Array {
  const out = new Uint8Array(32);
  const view = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) view.setInt32(i * 4, st[i]!);
  return out;
}

/**
 * Computes the SHA-256 digest (FIPS 180-4) of `data`.
 *
 * Strings are hashed as their UTF-8 bytes.
 *
 * @example Hash a string
 * ```ts
 * import { sha256, toHex } from "./hmac_sha256.ts";
 * toHex(sha256("abc"));
 * // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 */
export function sha256(data: Uint8Array | string): Uint8Array {
  const bytes = typeof data === "string" ? utf8Bytes(data, "data") : data;
  const st = H0.slice();
  absorbFinal(st, new Int32Array(64), bytes, bytes.length, 0);
  return stateBytes(st);
}

/** Two lowercase hex characters for every byte value. */
const HEX_PAIRS: readonly string[] = Array.from(
  { length: 256 },
  (_, i) => i.toString(16).padStart(2, "0"),
);

/**
 * Formats bytes as lowercase hexadecimal.
 *
 * @example
 * ```ts
 * import { toHex } from "./hmac_sha256.ts";
 * toHex(new Uint8Array([0, 171, 255])); // "00abff"
 * ```
 */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += HEX_PAIRS[bytes[i]!]!;
  return s;
}

/**
 * Encodes a string as UTF-8, refusing lone UTF-16 surrogates (which have no
 * UTF-8 form; Python's `str.encode()` refuses them too, so silently replacing
 * them would break the contract and make distinct values collide).
 *
 * Writes into `buf` when it is large enough, otherwise into a new buffer.
 * Returns the buffer used and the number of bytes written.
 */
function encodeUtf8Into(
  s: string,
  buf: Uint8Array,
  what: string,
): { buf: Uint8Array; n: number } {
  // A UTF-16 code unit never needs more than 3 UTF-8 bytes (pairs need 4 for 2 units).
  if (buf.length < s.length * 3) buf = new Uint8Array(s.length * 3);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[n++] = c;
    } else if (c < 0x800) {
      buf[n++] = 0xc0 | (c >> 6);
      buf[n++] = 0x80 | (c & 0x3f);
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const lo = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c > 0xdbff || lo < 0xdc00 || lo > 0xdfff) {
        throw new TypeError(
          `Cannot encode ${what} as UTF-8: it contains a lone UTF-16 surrogate at index ${i}`,
        );
      }
      c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
      i++;
      buf[n++] = 0xf0 | (c >> 18);
      buf[n++] = 0x80 | ((c >> 12) & 0x3f);
      buf[n++] = 0x80 | ((c >> 6) & 0x3f);
      buf[n++] = 0x80 | (c & 0x3f);
    } else {
      buf[n++] = 0xe0 | (c >> 12);
      buf[n++] = 0x80 | ((c >> 6) & 0x3f);
      buf[n++] = 0x80 | (c & 0x3f);
    }
  }
  return { buf, n };
}

/** Encodes a string as UTF-8 (strict: lone surrogates are refused). */
function utf8Bytes(s: string, what: string): Uint8Array {
  const { buf, n } = encodeUtf8Into(s, new Uint8Array(s.length * 3), what);
  return buf.slice(0, n);
}

/**
 * Returns the UTF-8 byte length of a key given as text, or the length of a byte key.
 *
 * @example
 * ```ts
 * import { keyByteLength } from "./hmac_sha256.ts";
 * keyByteLength("Zoë"); // 4
 * ```
 */
export function keyByteLength(key: Uint8Array | string): number {
  return typeof key === "string" ? utf8Bytes(key, "key").length : key.length;
}

/**
 * Checks that a tokenization key is present and at least {@link MIN_KEY_BYTES}
 * bytes long (UTF-8 bytes for text keys). The error names `source` (the
 * environment variable or keyring field the key came from) and never contains
 * the key itself.
 *
 * @example Refuse a short key
 * ```ts
 * import { assertKeyStrength } from "./hmac_sha256.ts";
 * try {
 *   assertKeyStrength("too-short");
 * } catch (e) {
 *   // Cannot use PII_HMAC_KEY as an HMAC key: it is 9 bytes long, at least 32 are required
 * }
 * ```
 */
export function assertKeyStrength(
  key: Uint8Array | string | undefined | null,
  source = "PII_HMAC_KEY",
): asserts key is Uint8Array | string {
  if (key === undefined || key === null || key.length === 0) {
    throw new Error(`Cannot tokenize: ${source} is not set`);
  }
  if (typeof key !== "string" && !(key instanceof Uint8Array)) {
    throw new TypeError(
      `Cannot use ${source} as an HMAC key: expected a string or Uint8Array, got ${typeof key}`,
    );
  }
  const len = keyByteLength(key);
  if (len < MIN_KEY_BYTES) {
    throw new Error(
      `Cannot use ${source} as an HMAC key: it is ${len} bytes long, at least ${MIN_KEY_BYTES} are required`,
    );
  }
}

/** The HMAC inner and outer SHA-256 states after absorbing key XOR ipad / opad. */
interface HmacStates {
  inner: Int32Array;
  outer: Int32Array;
}

/** RFC 2104: pad/hash the key to one block, then absorb K XOR ipad and K XOR opad. */
function hmacStates(key: Uint8Array): HmacStates {
  const k0 = new Uint8Array(BLOCK_BYTES);
  k0.set(key.length > BLOCK_BYTES ? sha256(key) : key);
  const w = new Int32Array(64);
  const pad = new Uint8Array(BLOCK_BYTES);
  const inner = H0.slice();
  for (let i = 0; i < BLOCK_BYTES; i++) pad[i] = k0[i]! ^ 0x36;
  loadBlock(w, pad, 0);
  compress(inner, w);
  const outer = H0.slice();
  for (let i = 0; i < BLOCK_BYTES; i++) pad[i] = k0[i]! ^ 0x5c;
  loadBlock(w, pad, 0);
  compress(outer, w);
  k0.fill(0);
  pad.fill(0);
  w.fill(0);
  return { inner, outer };
}

/** Finishes an HMAC: hashes the 32-byte inner digest held in `st` under the outer state. */
function finishOuter(st: Int32Array, outer: Int32Array, w: Int32Array): void {
  for (let i = 0; i < 8; i++) w[i] = st[i]!;
  w[8] = 0x80000000 | 0;
  w[9] = 0;
  w[10] = 0;
  w[11] = 0;
  w[12] = 0;
  w[13] = 0;
  w[14] = 0;
  w[15] = (BLOCK_BYTES + 32) * 8;
  st.set(outer);
  compress(st, w);
}

/**
 * Computes HMAC-SHA256 (RFC 2104) of `data` under `key`, returning the 32-byte
 * MAC. Strings are taken as their UTF-8 bytes. This is the general primitive
 * and does not enforce a minimum key length; use {@link HmacTokenizer} for
 * patron tokens.
 *
 * @example RFC 4231 test case 2
 * ```ts
 * import { hmacSha256, toHex } from "./hmac_sha256.ts";
 * toHex(hmacSha256("Jefe", "what do ya want for nothing?"));
 * // "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
 * ```
 */
export function hmacSha256(key: Uint8Array | string, data: Uint8Array | string): Uint8Array {
  const { inner, outer } = hmacStates(typeof key === "string" ? utf8Bytes(key, "key") : key);
  const bytes = typeof data === "string" ? utf8Bytes(data, "data") : data;
  const w = new Int32Array(64);
  absorbFinal(inner, w, bytes, bytes.length, BLOCK_BYTES);
  finishOuter(inner, outer, w);
  return stateBytes(inner);
}

/** Anything that turns a raw identifier into a token. */
export interface Tokenizer {
  /** Returns the token for `raw`. */
  token(raw: string): string;
}

/**
 * Fast HMAC-SHA256 tokenizer for one key.
 *
 * The key is validated ({@link assertKeyStrength}) and reduced to the HMAC
 * inner/outer states once; the key bytes themselves are not retained. Each
 * {@link HmacTokenizer.token} call then costs the inner message block(s) plus one
 * outer block. Instances keep scratch buffers, so one instance must not be used
 * re-entrantly (JavaScript is single-threaded, so this only matters for workers,
 * which get their own instances anyway).
 *
 * @example Tokenize a patron id
 * ```ts
 * import { HmacTokenizer } from "./hmac_sha256.ts";
 * const tokenizer = new HmacTokenizer("a-secret-of-at-least-thirty-two-bytes!!");
 * const token = tokenizer.token("P000123456"); // 64 lowercase hex characters
 * ```
 */
export class HmacTokenizer implements Tokenizer {
  #inner: Int32Array;
  #outer: Int32Array;
  #st = new Int32Array(8);
  #w = new Int32Array(64);
  #buf: Uint8Array = new Uint8Array(256);

  /**
   * Creates a tokenizer for `key` (text is used as its UTF-8 bytes).
   *
   * @param key The secret key, at least 32 bytes.
   * @param source Name of where the key came from, used in error messages.
   */
  constructor(key: Uint8Array | string, source = "PII_HMAC_KEY") {
    assertKeyStrength(key, source);
    const bytes = typeof key === "string" ? utf8Bytes(key, source) : key;
    const { inner, outer } = hmacStates(bytes);
    if (bytes !== key) bytes.fill(0);
    this.#inner = inner;
    this.#outer = outer;
  }

  /**
   * Returns the lowercase hex HMAC-SHA256 of the UTF-8 bytes of `raw`.
   *
   * @throws {TypeError} If `raw` is not a string or contains a lone surrogate.
   */
  token(raw: string): string {
    if (typeof raw !== "string") {
      throw new TypeError(`Cannot tokenize value: expected a string, got ${typeof raw}`);
    }
    const st = this.#st;
    const w = this.#w;
    st.set(this.#inner);
    const len = raw.length;
    let ascii = len <= SINGLE_BLOCK_MAX;
    if (ascii) {
      // Fast path: ASCII that fits in one block is packed straight into
      // big-endian words, followed by the 0x80 pad byte, zeros and the bit length.
      let word = 0;
      let wi = 0;
      for (let i = 0; i < len; i++) {
        const c = raw.charCodeAt(i);
        if (c > 0x7f) {
          ascii = false;
          break;
        }
        word = (word << 8) | c;
        if ((i & 3) === 3) {
          w[wi++] = word;
          word = 0;
        }
      }
      if (ascii) {
        w[wi++] = ((word << 8) | 0x80) << ((3 - (len & 3)) << 3);
        while (wi < 15) w[wi++] = 0;
        // The ipad block (64 bytes) precedes the message; len <= 55 keeps this below 2^32.
        w[15] = (BLOCK_BYTES + len) * 8;
        compress(st, w);
      }
    }
    if (!ascii) {
      const { buf, n } = encodeUtf8Into(raw, this.#buf, "value");
      if (buf.length <= 4096) this.#buf = buf;
      absorbFinal(st, w, buf, n, BLOCK_BYTES);
      buf.fill(0, 0, n);
    }
    finishOuter(st, this.#outer, w);
    return this.#hexOfState(st);
  }

  /**
   * Returns the token of each value of `raws`, in order: the batch form of
   * {@link HmacTokenizer.token} for chunked record streams and for a worker
   * that receives a batch of values (by structured clone, memory only) and
   * hands the tokens back. `out` is filled and returned when given, so a
   * caller can reuse one array per chunk.
   *
   * @throws {TypeError} If a value is not a string or contains a lone surrogate
   *   (the message names its index in the batch, never the value).
   *
   * @example Tokenize a chunk of patron ids
   * ```ts
   * import { HmacTokenizer } from "./hmac_sha256.ts";
   * const tokenizer = new HmacTokenizer("a-secret-of-at-least-thirty-two-bytes!!");
   * const [a, b] = tokenizer.tokens(["P000123456", "P000123457"]);
   * console.log(a === tokenizer.token("P000123456") && a !== b); // true
   * ```
   */
  tokens(raws: readonly string[], out: string[] = new Array(raws.length)): string[] {
    out.length = raws.length;
    for (let i = 0; i < raws.length; i++) {
      try {
        out[i] = this.token(raws[i]!);
      } catch (error) {
        throw new TypeError(
          `Cannot tokenize value ${i + 1} of a batch of ${raws.length}: ${
            (error as Error).message.replace(
              /^Cannot tokenize value: |^Cannot encode value as UTF-8: /,
              "",
            )
          }`,
        );
      }
    }
    return out;
  }

  #hexOfState(st: Int32Array): string {
    let s = "";
    for (let i = 0; i < 8; i++) {
      const v = st[i]!;
      s += HEX_PAIRS[v >>> 24]! + HEX_PAIRS[(v >>> 16) & 0xff]! + HEX_PAIRS[(v >>> 8) & 0xff]! +
        HEX_PAIRS[v & 0xff]!;
    }
    return s;
  }
}

/**
 * Creates a {@link HmacTokenizer} for `key` after checking its strength.
 *
 * @example
 * ```ts
 * import { createTokenizer } from "./hmac_sha256.ts";
 * const tokenize = createTokenizer(Deno.env.get("PII_HMAC_KEY"));
 * tokenize.token("P000123456");
 * ```
 */
export function createTokenizer(
  key: Uint8Array | string | undefined | null,
  source = "PII_HMAC_KEY",
): HmacTokenizer {
  assertKeyStrength(key, source);
  return new HmacTokenizer(key, source);
}
