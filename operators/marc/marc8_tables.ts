/**
 * MARC-8 graphic character sets, written from the Library of Congress
 * "MARC 21 Specifications for Record Structure, Character Sets, and Exchange
 * Media", Part 5 (code tables). Each set maps 7-bit positions (0x21-0x7E;
 * a G1 byte is looked up with its high bit cleared) to Unicode code points.
 *
 * EACC (East Asian, final `1`) is generated from LC's tables into `marc8_eacc_table.ts` by
 * `scripts/gen_marc8_tables.ts`; {@linkcode eaccCodePoint} looks a character up there.
 *
 * @module
 */

import { EACC_COUNT, EACC_PACKED } from "./marc8_eacc_table.ts";

/** One single-byte MARC-8 graphic set. */
export interface Marc8CharacterSet {
  /** Set name as in the LC code tables. */
  name: string;
  /** Final character of the designating escape sequence (e.g. 0x42 for ASCII). */
  final: number;
  /** 7-bit position (0x20-0x7F) to Unicode code point; 0 when undefined. */
  codes: Uint32Array;
  /** 7-bit positions whose character is combining (precedes its base in MARC-8). */
  combining: Uint8Array;
}

function build(
  name: string,
  final: number,
  entries: Array<[number, number]>,
  combining: number[] = [],
): Marc8CharacterSet {
  const codes = new Uint32Array(128);
  for (const [pos, cp] of entries) codes[pos & 0x7f] = cp;
  const comb = new Uint8Array(128);
  for (const pos of combining) comb[pos & 0x7f] = 1;
  return { name, final, codes, combining: comb };
}

/** Consecutive positions `from..from+n-1` mapped to `cp..cp+n-1`. */
function run(from: number, cp: number, n: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) out.push([from + i, cp + i]);
  return out;
}

/** Positions mapped to the listed code points in order. */
function seq(from: number, cps: number[]): Array<[number, number]> {
  return cps.map((cp, i) => [from + i, cp] as [number, number]);
}

/** ASCII digits and punctuation 0x21-0x3F, shared by several non-Latin sets. */
const ASCII_21_3F = run(0x21, 0x21, 0x1f);

/** Basic Latin (ASCII), final `B`. */
export const BASIC_LATIN: Marc8CharacterSet = build("Basic Latin", 0x42, run(0x21, 0x21, 0x5e));

/** Extended Latin (ANSEL), final `E`. Positions are given as G1 bytes. */
export const EXTENDED_LATIN: Marc8CharacterSet = build(
  "Extended Latin (ANSEL)",
  0x45,
  [
    [0xa1, 0x0141], // L with stroke
    [0xa2, 0x00d8], // O with stroke
    [0xa3, 0x0110], // D with stroke
    [0xa4, 0x00de], // thorn
    [0xa5, 0x00c6], // AE
    [0xa6, 0x0152], // OE
    [0xa7, 0x02b9], // soft sign, prime
    [0xa8, 0x00b7], // middle dot
    [0xa9, 0x266d], // music flat
    [0xaa, 0x00ae], // registered
    [0xab, 0x00b1], // plus-minus
    [0xac, 0x01a0], // O with horn
    [0xad, 0x01af], // U with horn
    [0xae, 0x02bc], // alif
    [0xb0, 0x02bb], // ayn
    [0xb1, 0x0142], // l with stroke
    [0xb2, 0x00f8], // o with stroke
    [0xb3, 0x0111], // d with stroke
    [0xb4, 0x00fe], // thorn
    [0xb5, 0x00e6], // ae
    [0xb6, 0x0153], // oe
    [0xb7, 0x02ba], // hard sign, double prime
    [0xb8, 0x0131], // dotless i
    [0xb9, 0x00a3], // pound
    [0xba, 0x00f0], // eth
    [0xbc, 0x01a1], // o with horn
    [0xbd, 0x01b0], // u with horn
    [0xc0, 0x00b0], // degree
    [0xc1, 0x2113], // script l
    [0xc2, 0x2117], // sound recording copyright
    [0xc3, 0x00a9], // copyright
    [0xc4, 0x266f], // music sharp
    [0xc5, 0x00bf], // inverted question mark
    [0xc6, 0x00a1], // inverted exclamation mark
    [0xc7, 0x00df], // eszett
    [0xc8, 0x20ac], // euro
    [0xe0, 0x0309], // hook above
    [0xe1, 0x0300], // grave
    [0xe2, 0x0301], // acute
    [0xe3, 0x0302], // circumflex
    [0xe4, 0x0303], // tilde
    [0xe5, 0x0304], // macron
    [0xe6, 0x0306], // breve
    [0xe7, 0x0307], // dot above
    [0xe8, 0x0308], // diaeresis (umlaut)
    [0xe9, 0x030c], // caron (hacek)
    [0xea, 0x030a], // ring above
    [0xeb, 0x0361], // ligature, first half: the double diacritic spans both letters
    [0xec, 0xfe21], // ligature, second half: written on encoding; dropped when decoding
    [0xed, 0x0315], // comma above right
    [0xee, 0x030b], // double acute
    [0xef, 0x0310], // candrabindu
    [0xf0, 0x0327], // cedilla
    [0xf1, 0x0328], // ogonek (right hook)
    [0xf2, 0x0323], // dot below
    [0xf3, 0x0324], // double dot below
    [0xf4, 0x0325], // ring below
    [0xf5, 0x0333], // double underscore
    [0xf6, 0x0332], // underscore
    [0xf7, 0x0326], // comma below (left hook)
    [0xf8, 0x031c], // right cedilla
    [0xf9, 0x032e], // breve below (upadhmaniya)
    [0xfa, 0x0360], // double tilde, first half: the double diacritic spans both letters
    [0xfb, 0xfe23], // double tilde, second half: written on encoding; dropped when decoding
    [0xfe, 0x0313], // comma above (high comma, centred)
  ],
  [
    0xe0,
    0xe1,
    0xe2,
    0xe3,
    0xe4,
    0xe5,
    0xe6,
    0xe7,
    0xe8,
    0xe9,
    0xea,
    0xeb,
    0xec,
    0xed,
    0xee,
    0xef,
    0xf0,
    0xf1,
    0xf2,
    0xf3,
    0xf4,
    0xf5,
    0xf6,
    0xf7,
    0xf8,
    0xf9,
    0xfa,
    0xfb,
    0xfe,
  ],
);

/** Basic Hebrew, final `2`. */
export const BASIC_HEBREW: Marc8CharacterSet = build(
  "Basic Hebrew",
  0x32,
  [
    ...ASCII_21_3F,
    [0x22, 0x05f4], // gershayim (not ASCII quotation mark)
    [0x27, 0x05f3], // geresh (not ASCII apostrophe)
    [0x2d, 0x05be], // maqaf (not ASCII hyphen)
    ...seq(0x40, [
      0x05b7, // patah
      0x05b8, // qamats
      0x05b6, // segol
      0x05b5, // tsere
      0x05b4, // hiriq
      0x05b9, // holam
      0x05bb, // qubuts
      0x05b0, // sheva
      0x05b2, // hataf patah
      0x05b3, // hataf qamats
      0x05b1, // hataf segol
      0x05bc, // dagesh
      0x05bf, // rafe
      0x05c1, // shin dot
      0xfb1e, // varika
    ]),
    [0x5b, 0x5b],
    [0x5d, 0x5d],
    ...run(0x60, 0x05d0, 27), // alef .. tav, finals in Unicode order
    [0x7b, 0x05f0],
    [0x7c, 0x05f1],
    [0x7d, 0x05f2],
  ],
  [0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e],
);

/** Basic Cyrillic, final `N`. Lower case 0x40-0x5F, upper case 0x60-0x7E. */
const CYRILLIC_ORDER = [
  0x044e,
  0x0430,
  0x0431,
  0x0446,
  0x0434,
  0x0435,
  0x0444,
  0x0433,
  0x0445,
  0x0438,
  0x0439,
  0x043a,
  0x043b,
  0x043c,
  0x043d,
  0x043e,
  0x043f,
  0x044f,
  0x0440,
  0x0441,
  0x0442,
  0x0443,
  0x0436,
  0x0432,
  0x044c,
  0x044b,
  0x0437,
  0x0448,
  0x044d,
  0x0449,
  0x0447,
];
export const BASIC_CYRILLIC: Marc8CharacterSet = build("Basic Cyrillic", 0x4e, [
  ...ASCII_21_3F,
  ...seq(0x40, [...CYRILLIC_ORDER, 0x044a]),
  ...seq(0x60, CYRILLIC_ORDER.map((cp) => cp - 0x20)),
]);

/** Extended Cyrillic, final `Q` (letters only: LC defines nothing below 0x40). */
export const EXTENDED_CYRILLIC: Marc8CharacterSet = build("Extended Cyrillic", 0x51, [
  ...seq(0x40, [
    0x0491,
    0x0452,
    0x0453,
    0x0454,
    0x0451,
    0x0455,
    0x0456,
    0x0457,
    0x0458,
    0x0459,
    0x045a,
    0x045b,
    0x045c,
    0x045e,
    0x045f,
  ]),
  [0x50, 0x0463],
  [0x51, 0x0473],
  [0x52, 0x0475],
  [0x53, 0x046b],
  [0x5b, 0x5b],
  [0x5d, 0x5d],
  [0x5f, 0x5f],
  ...seq(0x60, [
    0x0490,
    0x0402,
    0x0403,
    0x0404,
    0x0401,
    0x0405,
    0x0406,
    0x0407,
    0x0408,
    0x0409,
    0x040a,
    0x040b,
    0x040c,
    0x040e,
    0x040f,
    0x042a,
    0x0462,
    0x0472,
    0x0474,
    0x046a,
  ]),
]);

/** Basic Arabic, final `3`. */
export const BASIC_ARABIC: Marc8CharacterSet = build(
  "Basic Arabic",
  0x33,
  [
    ...ASCII_21_3F,
    [0x25, 0x066a],
    [0x2a, 0x066d],
    [0x2c, 0x060c],
    ...run(0x30, 0x0660, 10),
    [0x3b, 0x061b],
    [0x3f, 0x061f],
    ...run(0x41, 0x0621, 26), // hamza .. ghain
    [0x5b, 0x5b],
    [0x5d, 0x5d],
    ...run(0x60, 0x0640, 19), // tatweel .. sukun
    [0x73, 0x0671],
    [0x74, 0x0670],
    [0x78, 0x066c],
    [0x79, 0x201d],
    [0x7a, 0x201c],
  ],
  [0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72],
);

/** Extended Arabic, final `4`. */
export const EXTENDED_ARABIC: Marc8CharacterSet = build(
  "Extended Arabic",
  0x34,
  [
    ...seq(0x21, [
      0x06fd,
      0x0672,
      0x0673,
      0x0679,
      0x067a,
      0x067b,
      0x067c,
      0x067d,
      0x067e,
      0x067f,
      0x0680,
      0x0681,
      0x0682,
      0x0683,
      0x0684,
      0x0685,
      0x0686,
      0x06bf,
      0x0687,
      0x0688,
      0x0689,
      0x068a,
      0x068b,
      0x068c,
      0x068d,
      0x068e,
      0x068f,
      0x0690,
      0x0691,
      0x0692,
      0x0693,
      0x0694,
      0x0695,
      0x0696,
      0x0697,
      0x0698,
      0x0699,
      0x069a,
      0x069b,
      0x069c,
      0x06fa,
      0x069d,
      0x069e,
      0x06fb,
      0x069f,
      0x06a0,
      0x06fc,
      0x06a1,
      0x06a2,
      0x06a3,
      0x06a4,
      0x06a5,
      0x06a6,
      0x06a7,
      0x06a8,
      0x06a9,
      0x06aa,
      0x06ab,
      0x06ac,
      0x06ad,
      0x06ae,
      0x06af,
      0x06b0,
      0x06b1,
      0x06b2,
      0x06b3,
      0x06b4,
      0x06b5,
      0x06b6,
      0x06b7,
      0x06b8,
      0x06ba,
      0x06bb,
      0x06bc,
      0x06bd,
      0x06b9,
      0x06be,
      0x06c0,
      0x06c4,
      0x06c5,
      0x06c6,
      0x06ca,
      0x06cb,
      0x06cd,
      0x06ce,
      0x06d0,
      0x06d2,
      0x06d3,
    ]),
    [0x7d, 0x0306],
    [0x7e, 0x030c],
  ],
  [0x7d, 0x7e],
);

/** Basic Greek, final `S`. */
export const BASIC_GREEK: Marc8CharacterSet = build(
  "Basic Greek",
  0x53,
  [
    ...seq(0x21, [0x0300, 0x0301, 0x0308, 0x0342, 0x0313, 0x0314, 0x0345]),
    ...seq(0x30, [0x00ab, 0x00bb, 0x201c, 0x201d, 0x0374, 0x0375]),
    [0x3b, 0x0387],
    [0x3f, 0x037e],
    [0x41, 0x0391],
    [0x42, 0x0392],
    ...seq(0x44, [0x0393, 0x0394, 0x0395, 0x03da, 0x03dc, 0x0396, 0x0397, 0x0398, 0x0399]),
    ...seq(0x4d, [0x039a, 0x039b, 0x039c, 0x039d, 0x039e, 0x039f, 0x03a0, 0x03de, 0x03a1]),
    [0x56, 0x03a3],
    ...seq(0x58, [0x03a4, 0x03a5, 0x03a6, 0x03a7, 0x03a8, 0x03a9, 0x03e0]),
    ...seq(0x61, [
      0x03b1,
      0x03b2,
      0x03d0,
      0x03b3,
      0x03b4,
      0x03b5,
      0x03db,
      0x03dd,
      0x03b6,
      0x03b7,
      0x03b8,
      0x03b9,
      0x03ba,
      0x03bb,
      0x03bc,
      0x03bd,
      0x03be,
      0x03bf,
      0x03c0,
      0x03df,
      0x03c1,
      0x03c3,
      0x03c2,
      0x03c4,
      0x03c5,
      0x03c6,
      0x03c7,
      0x03c8,
      0x03c9,
      0x03e1,
    ]),
  ],
  [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27],
);

/** Greek symbols (technique 1, `ESC g`). */
export const GREEK_SYMBOLS: Marc8CharacterSet = build("Greek Symbols", 0x67, [
  [0x61, 0x03b1],
  [0x62, 0x03b2],
  [0x63, 0x03b3],
]);

/** Subscripts (technique 1, `ESC b`). */
export const SUBSCRIPTS: Marc8CharacterSet = build("Subscripts", 0x62, [
  [0x28, 0x208d],
  [0x29, 0x208e],
  [0x2b, 0x208a],
  [0x2d, 0x208b],
  ...run(0x30, 0x2080, 10),
]);

/** Superscripts (technique 1, `ESC p`). */
export const SUPERSCRIPTS: Marc8CharacterSet = build("Superscripts", 0x70, [
  [0x28, 0x207d],
  [0x29, 0x207e],
  [0x2b, 0x207a],
  [0x2d, 0x207b],
  [0x30, 0x2070],
  [0x31, 0x00b9],
  [0x32, 0x00b2],
  [0x33, 0x00b3],
  ...run(0x34, 0x2074, 6),
]);

/** Sets designated with technique 2 (`ESC ( F`, `ESC ) F` ...), by final byte. */
export const SETS_BY_FINAL: ReadonlyMap<number, Marc8CharacterSet> = new Map(
  [
    BASIC_LATIN,
    EXTENDED_LATIN,
    BASIC_HEBREW,
    BASIC_CYRILLIC,
    EXTENDED_CYRILLIC,
    BASIC_ARABIC,
    EXTENDED_ARABIC,
    BASIC_GREEK,
  ].map((s) => [s.final, s]),
);

/** Sets selected into G0 with technique 1 (`ESC g`, `ESC b`, `ESC p`), by the byte after ESC. */
export const TECHNIQUE1_SETS: ReadonlyMap<number, Marc8CharacterSet> = new Map(
  [GREEK_SYMBOLS, SUBSCRIPTS, SUPERSCRIPTS].map((s) => [s.final, s]),
);

/** Final byte of the EACC (CJK) multibyte set. */
export const EACC_FINAL = 0x31;

/** Right halves of the ANSEL double diacritics (ligature, double tilde): dropped when decoding. */
export const RIGHT_HALVES: ReadonlySet<number> = new Set([0xfe21, 0xfe23]);

/** Left-half double diacritic (as decoded) to the ANSEL G1 byte of its right half. */
export const DOUBLE_DIACRITIC_RIGHT_HALF: ReadonlyMap<number, number> = new Map([
  [0x0361, 0xec],
  [0x0360, 0xfb],
]);

let eacc: Map<number, number> | undefined;

/**
 * The Unicode code point of an EACC character (three bytes `b1 b2 b3`, 7-bit, as one number
 * `b1 << 16 | b2 << 8 | b3`), or `undefined`. The table is expanded on first use.
 *
 * @example
 * ```ts
 * import { eaccCodePoint } from "./marc8_tables.ts";
 * eaccCodePoint(0x213021)?.toString(16); // "4e00" (CJK ideograph one)
 * ```
 */
export function eaccCodePoint(code: number): number | undefined {
  if (eacc === undefined) {
    const map = new Map<number, number>();
    const bin = atob(EACC_PACKED);
    let i = 0;
    while (i < bin.length) {
      const start = (bin.charCodeAt(i) << 16) | (bin.charCodeAt(i + 1) << 8) |
        bin.charCodeAt(i + 2);
      const n = bin.charCodeAt(i + 3);
      i += 4;
      for (let k = 0; k < n; k++, i += 3) {
        const cp = (bin.charCodeAt(i) << 16) | (bin.charCodeAt(i + 1) << 8) | bin.charCodeAt(i + 2);
        map.set(start + k, cp);
      }
    }
    if (map.size !== EACC_COUNT) {
      throw new Error(`Cannot load the EACC table: ${map.size} of ${EACC_COUNT} characters`);
    }
    eacc = map;
  }
  return eacc.get(code);
}
