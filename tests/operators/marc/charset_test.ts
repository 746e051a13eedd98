import assert from "node:assert/strict";
import { decodeMarc8, encodeMarc8, Marc8EncodeError } from "../../../operators/marc/mod.ts";

/** Bytes from a mix of ASCII strings and byte values. */
function b(...parts: Array<string | number>): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else for (const c of p) out.push(c.charCodeAt(0));
  }
  return Uint8Array.from(out);
}

const ESC = 0x1b;

Deno.test("MARC-8 Latin diacritics precede their base and come out NFC", () => {
  const cases: Array<[Uint8Array, string]> = [
    [b("Montr", 0xe2, "eal"), "Montréal"],
    [b("Fran", 0xf0, "cais"), "Français"],
    [b("Dvo", 0xe9, "r", 0xe2, "ak"), "Dvořák"],
    [b("S", 0xe4, "ao Paulo"), "São Paulo"],
    [b(0xe2, "Etudes"), "Études"],
    [b("Bront", 0xe8, "e"), "Brontë"],
    [b(0xa1, 0xf2, "od", 0xe2, "z"), "Łọdź"],
    [b(0xa5, "r", 0xb2, "sk", 0xb2, "bing"), "Ærøskøbing"],
    [b(0xa4, "ingvellir ", 0xc3, " 1999"), "Þingvellir © 1999"],
    [b("Vi", 0xe3, 0xf2, "et"), "Việt"], // two marks on one base, MARC-8 order
    [b(0xac, "n ", 0xbd), "Ơn ư"],
  ];
  for (const [bytes, expected] of cases) {
    const r = decodeMarc8(bytes);
    assert.equal(r.text, expected);
    assert.equal(r.text, r.text.normalize("NFC"));
    assert.deepEqual(r.problems, []);
  }
});

Deno.test("MARC-8 escape sequences: Cyrillic, Greek, Hebrew, Arabic in G0 and G1", () => {
  // ESC ( N : Basic Cyrillic into G0, ESC ( B back to ASCII.
  assert.equal(
    decodeMarc8(
      b("Moskva = ", ESC, 0x28, "N", 0x6d, 0x4f, 0x53, 0x4b, 0x57, 0x41, ESC, 0x28, "B", "!"),
    )
      .text,
    "Moskva = Москва!",
  );
  // ESC ) N : Basic Cyrillic into G1 (high bytes), ASCII stays in G0.
  assert.equal(decodeMarc8(b(ESC, 0x29, "N", 0xed, 0xc9, 0xd2, " 1917")).text, "Мир 1917");
  // Extended Cyrillic: Ukrainian capital IE and small yi.
  assert.equal(decodeMarc8(b(ESC, 0x28, "Q", 0x63, 0x47)).text, "Єї");
  // Basic Greek with breathing and perispomeni (combining, preceding the base).
  assert.equal(
    decodeMarc8(b(ESC, 0x28, "S", 0x25, 0x41, 0x6b, 0x24, 0x6a, 0x70, 0x61, 0x6c)).text,
    "Ἀθῆναι",
  );
  // Basic Hebrew.
  assert.equal(decodeMarc8(b(ESC, 0x28, "2", 0x79, 0x6c, 0x65, 0x6d)).text, "שלום");
  // Basic Arabic: kitab with Arabic-Indic digits.
  assert.equal(
    decodeMarc8(b(ESC, 0x28, "3", 0x63, 0x4a, 0x47, 0x48, " ", 0x31, 0x32)).text,
    "كتاب ١٢",
  );
  // Technique 1: subscript, superscript, Greek symbols, ESC s returns to ASCII.
  assert.equal(decodeMarc8(b("H", ESC, "b", "2", ESC, "s", "O")).text, "H₂O");
  assert.equal(decodeMarc8(b("E=mc", ESC, "p", "2", ESC, "s")).text, "E=mc²");
  assert.equal(decodeMarc8(b(ESC, "g", "a", ESC, "s", "-rays")).text, "α-rays");
});

Deno.test("subfield codes stay ASCII while another set is in G0", () => {
  const r = decodeMarc8(b(ESC, 0x28, "N", 0x41, 0x1f, "a", 0x42, ESC, 0x28, "B"));
  assert.equal(r.text, "а\x1faб");
});

Deno.test("MARC-8 problems are reported without content", () => {
  const dangling = decodeMarc8(b("abc", 0xe2));
  assert.equal(dangling.text, "abc\u0301".normalize("NFC"));
  assert.deepEqual(dangling.problems, ["Combining mark without a base character at byte 4"]);
  const undefinedByte = decodeMarc8(b("x", 0xbe, "y"));
  assert.equal(undefinedByte.text, "x\ufffdy");
  assert.match(undefinedByte.problems[0]!, /^Byte 0x3e at 1 is not defined in Extended Latin/);
  const unknownEscape = decodeMarc8(b("a", ESC, 0x28, "Z", "b"));
  assert.match(unknownEscape.problems[0]!, /^Unrecognised escape sequence at byte 1$/);
  const eacc = decodeMarc8(b(ESC, 0x24, 0x31, 0x21, 0x30, 0x64, 0x7e, 0x7e, 0x7e, ESC, 0x28, "B"));
  assert.equal(eacc.text, "人\ufffd");
  assert.deepEqual(eacc.problems, ["EACC character 0x7e7e7e at byte 6 is not defined"]);
  const cut = decodeMarc8(b(ESC, 0x24, 0x31, 0x21, 0x30));
  assert.deepEqual(cut.problems, ["EACC character at byte 3 is cut short"]);
});

Deno.test("encodeMarc8 writes marks before bases and escapes for other scripts", () => {
  assert.deepEqual(encodeMarc8("Montréal"), b("Montr", 0xe2, "eal"));
  assert.deepEqual(encodeMarc8("Dvořák"), b("Dvo", 0xe9, "r", 0xe2, "ak"));
  assert.deepEqual(encodeMarc8("Łódź"), b(0xa1, 0xe2, "od", 0xe2, "z"));
  assert.deepEqual(encodeMarc8("Ơn"), b(0xac, "n"));
  assert.deepEqual(
    encodeMarc8("Москва 1917"),
    b(ESC, 0x28, "N", 0x6d, 0x4f, 0x53, 0x4b, 0x57, 0x41, " 1917", ESC, 0x28, "B"),
  );
  for (
    const s of [
      "Việt Nam",
      "Ἀθῆναι и Москва, São Paulo",
      "שלום Ærø",
      "كتاب ١٢",
      "H₂O E=mc² α",
      "Ґанок Ѣ",
    ]
  ) {
    const back = decodeMarc8(encodeMarc8(s));
    assert.equal(back.text, s.normalize("NFC"));
    assert.deepEqual(back.problems, []);
  }
});

Deno.test("encodeMarc8 rejects characters outside MARC-8", () => {
  assert.throws(() => encodeMarc8("ok 中文"), (e: unknown) => {
    assert.ok(e instanceof Marc8EncodeError);
    assert.equal(e.index, 3);
    assert.equal(
      e.message,
      "Cannot encode text as MARC-8: character at index 3 has no MARC-8 mapping",
    );
    return true;
  });
});
