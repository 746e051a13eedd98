import assert from "node:assert/strict";
import {
  isAscii,
  isValidUtf8,
  latin1String,
  utf8Length,
  writeUtf8,
} from "../../../operators/marc/utf8.ts";
import { encodeIso2709, parseIso2709Record, toMarcXml } from "../../../operators/marc/mod.ts";

/** A small deterministic generator (the cases are reproducible). */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const fatal = new TextDecoder("utf-8", { fatal: true });

function validByDecoder(bytes: Uint8Array): boolean {
  try {
    fatal.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

Deno.test("isValidUtf8 agrees with a fatal TextDecoder on edge and random byte strings", () => {
  const edges = [
    [0xc0, 0x80], // overlong
    [0xc1, 0xbf],
    [0xc2, 0x80],
    [0xe0, 0x9f, 0xbf], // overlong
    [0xe0, 0xa0, 0x80],
    [0xed, 0x9f, 0xbf],
    [0xed, 0xa0, 0x80], // surrogate
    [0xef, 0xbf, 0xbf],
    [0xf0, 0x8f, 0xbf, 0xbf], // overlong
    [0xf0, 0x90, 0x80, 0x80],
    [0xf4, 0x8f, 0xbf, 0xbf],
    [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    [0xf5, 0x80, 0x80, 0x80],
    [0xe2, 0x82], // truncated
    [0x80],
    [0x61, 0xe2, 0x65], // MARC-8 acute before e
  ].map((b) => new Uint8Array(b));
  const next = random(9);
  const randoms = Array.from({ length: 20_000 }, () => {
    const bytes = new Uint8Array(1 + Math.floor(next() * 6));
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = next() < 0.3 ? Math.floor(next() * 0x80) : 0x80 + Math.floor(next() * 0x80);
    }
    return bytes;
  });
  for (const bytes of [...edges, ...randoms]) {
    assert.equal(isValidUtf8(bytes), validByDecoder(bytes), `bytes ${[...bytes]}`);
  }
  assert.equal(isValidUtf8(new Uint8Array([0x61, 0xc3, 0xa9, 0xff]), 0, 3), true);
});

Deno.test("utf8Length and writeUtf8 give TextEncoder's bytes, lone surrogates included", () => {
  const encoder = new TextEncoder();
  const next = random(4);
  const units = [0x41, 0x7f, 0x80, 0xe9, 0x7ff, 0x800, 0x20ac, 0xd83d, 0xde00, 0xdbff, 0xdc00];
  const samples = ["", "ascii", "Dvořák", "日本語", "😀", "\ud83d", "\ude00x", "a\ud83d\ude00b"];
  for (let k = 0; k < 5_000; k++) {
    let s = "";
    const n = Math.floor(next() * 8);
    for (let i = 0; i < n; i++) s += String.fromCharCode(units[Math.floor(next() * units.length)]!);
    samples.push(s);
  }
  for (const s of samples) {
    const expected = encoder.encode(s);
    assert.equal(utf8Length(s), expected.length, JSON.stringify(s));
    const out = new Uint8Array(expected.length + 2);
    assert.equal(writeUtf8(s, out, 1), expected.length + 1);
    assert.deepEqual(out.subarray(1, expected.length + 1), expected, JSON.stringify(s));
  }
});

Deno.test("isAscii and latin1String read byte ranges, long ones included", () => {
  const bytes = new Uint8Array(20_000).map((_, i) => 0x20 + (i % 90));
  assert.equal(isAscii(bytes), true);
  assert.equal(latin1String(bytes, 3, bytes.length), new TextDecoder().decode(bytes.subarray(3)));
  bytes[100] = 0x80;
  assert.equal(isAscii(bytes), false);
  assert.equal(isAscii(bytes, 101, bytes.length), true);
});

Deno.test("toMarcXml indent equals indenting every line of the unindented element", () => {
  const record = {
    leader: "00000nam a2200000   4500",
    fields: [
      { tag: "001", value: "b1\nb2" },
      {
        tag: "500",
        ind1: " ",
        ind2: " ",
        subfields: [{ code: "a", value: "line\r\nbreaks\u2028and\u2029more $& <x>" }],
      },
    ],
  };
  const plain = toMarcXml(record, { namespace: false });
  assert.equal(toMarcXml(record, { namespace: false, indent: "  " }), plain.replace(/^/gm, "  "));
  assert.equal(toMarcXml(record, { indent: "$&" }), toMarcXml(record).replace(/^/gm, () => "$&"));
});

Deno.test("encodeIso2709 writes non-ASCII and lone surrogates as TextEncoder would", () => {
  const record = {
    leader: "00000nam a2200000   4500",
    fields: [
      { tag: "001", value: "x😀" },
      {
        tag: "245",
        ind1: "1",
        ind2: "0",
        subfields: [{ code: "a", value: "Dvořák \ud800 日本" }, { code: "b", value: "" }],
      },
    ],
  };
  const bytes = encodeIso2709(record);
  const r = parseIso2709Record(bytes, { index: 1, offset: 0 });
  assert.ok(r.ok);
  assert.deepEqual(r.record.fields, [
    { tag: "001", value: "x😀" },
    {
      tag: "245",
      ind1: "1",
      ind2: "0",
      subfields: [{ code: "a", value: "Dvořák \ufffd 日本" }, { code: "b", value: "" }],
    },
  ]);
  assert.equal(bytes.length, Number(new TextDecoder().decode(bytes.subarray(0, 5))));
});
