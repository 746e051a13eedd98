/**
 * MARC-8 conformance: a generated corpus covering every MARC-8 character set (every position of
 * Basic/Extended Latin, Hebrew, Cyrillic, Arabic, Greek, the technique-1 sets in G0 and G1, every
 * EACC character) plus realistic mixed strings is decoded by Carrel and by `MARC::Charset`
 * (Debian's libmarc-charset-perl, run as a perl subprocess), and the NFC strings are compared.
 *
 * Also checks that the committed EACC table is what `scripts/gen_marc8_tables.ts` generates from
 * the installed module. Skipped, saying so, when perl or the module is missing (`.ci/run`
 * installs libmarc-charset-perl).
 *
 * @module
 */
import assert from "node:assert/strict";
import { decodeMarc8 } from "../../../operators/marc/marc8.ts";
import {
  EXTENDED_LATIN,
  type Marc8CharacterSet,
  SETS_BY_FINAL,
  TECHNIQUE1_SETS,
} from "../../../operators/marc/marc8_tables.ts";
import { EACC_PACKED } from "../../../operators/marc/marc8_eacc_table.ts";
import { readEaccFromMarcCharset, renderEaccModule } from "../../../scripts/gen_marc8_tables.ts";

const ESC = 0x1b;

async function marcCharsetAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command("perl", {
      args: ["-MMARC::Charset", "-e", "1"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.code === 0;
  } catch {
    return false;
  }
}

const AVAILABLE = await marcCharsetAvailable();
if (!AVAILABLE) {
  console.warn(
    "MARC-8 conformance tests skipped: perl's MARC::Charset is missing " +
      "(apt-get install libmarc-charset-perl; .ci/run installs it)",
  );
}

/** Decodes each line with MARC::Charset (errors ignored: an unknown byte is skipped). */
const ORACLE = String.raw`
use strict; use warnings; no warnings 'utf8';
use MARC::Charset qw(marc8_to_utf8);
use Encode qw(encode_utf8);
MARC::Charset->ignore_errors(1);
$SIG{__WARN__} = sub {};
binmode STDOUT;
while (my $line = <STDIN>) {
  chomp $line;
  my $utf8 = marc8_to_utf8(pack("H*", $line));
  print defined $utf8 ? unpack("H*", encode_utf8($utf8)) : "ERR", "\n";
}
`;

async function oracle(lines: Uint8Array[]): Promise<string[]> {
  const child = new Deno.Command("perl", {
    args: ["-e", ORACLE],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(lines.map(hex).join("\n") + "\n"));
  await writer.close();
  const out = await child.output();
  assert.equal(out.code, 0, "perl oracle failed");
  const decoder = new TextDecoder();
  return decoder.decode(out.stdout).trimEnd().split("\n").map((h) => {
    if (h === "ERR") return "ERR";
    const bytes = new Uint8Array(h.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
    return decoder.decode(bytes);
  });
}

interface Case {
  label: string;
  bytes: Uint8Array;
}

function bytes(...parts: Array<string | number | number[]>): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else if (Array.isArray(p)) out.push(...p);
    else for (const c of p) out.push(c.charCodeAt(0));
  }
  return Uint8Array.from(out);
}

/** A non-combining position of `set`, to carry a combining mark. */
function baseOf(set: Marc8CharacterSet): number {
  for (let pos = 0x41; pos < 0x7f; pos++) if (set.codes[pos] && !set.combining[pos]) return pos;
  return 0x21;
}

/** Every position 0x21-0x7E of every set, designated into G0 and (technique 2) into G1. */
function setCases(): Case[] {
  const cases: Case[] = [];
  const designations: Array<{ set: Marc8CharacterSet; g0: number[] | null; g1: number[] | null }> =
    [];
  for (const set of SETS_BY_FINAL.values()) {
    designations.push({ set, g0: [ESC, 0x28, set.final], g1: [ESC, 0x29, set.final] });
  }
  for (const set of TECHNIQUE1_SETS.values()) {
    designations.push({ set, g0: [ESC, set.final], g1: null });
  }
  for (const { set, g0, g1 } of designations) {
    for (let pos = 0x21; pos < 0x7f; pos++) {
      const combining = set.combining[pos] === 1;
      for (const [where, esc] of [["G0", g0], ["G1", g1]] as const) {
        if (!esc) continue;
        const byte = where === "G0" ? pos : pos | 0x80;
        const base = where === "G0" ? baseOf(set) : baseOf(set) | 0x80;
        // In G1 the G0 set stays ASCII; in G0 a mark needs a base from the same set.
        const line = combining ? [byte, base] : [byte];
        cases.push({
          label: `${set.name} ${where} 0x${pos.toString(16)}`,
          bytes: bytes(esc, line, ESC, 0x28, 0x42, " end"),
        });
      }
    }
  }
  // ANSEL in its default G1 place, no escape.
  for (let pos = 0x21; pos < 0x7f; pos++) {
    const line = EXTENDED_LATIN.combining[pos] === 1 ? [pos | 0x80, 0x61] : [pos | 0x80];
    cases.push({ label: `ANSEL default G1 0x${pos.toString(16)}`, bytes: bytes("x", line, "y") });
  }
  return cases;
}

/** Every EACC character of Carrel's table, 40 to a line, in G0 (and a few in G1). */
function eaccCases(): Case[] {
  const bin = atob(EACC_PACKED);
  const codes: number[] = [];
  for (let i = 0; i < bin.length;) {
    const start = (bin.charCodeAt(i) << 16) | (bin.charCodeAt(i + 1) << 8) | bin.charCodeAt(i + 2);
    const n = bin.charCodeAt(i + 3);
    for (let k = 0; k < n; k++) codes.push(start + k);
    i += 4 + 3 * n;
  }
  const cases: Case[] = [];
  for (let i = 0; i < codes.length; i += 40) {
    const chunk = codes.slice(i, i + 40).flatMap((c) => [c >> 16, (c >> 8) & 0xff, c & 0xff]);
    cases.push({
      label: `EACC 0x${codes[i]!.toString(16)}..`,
      bytes: bytes("(", ESC, 0x24, 0x31, chunk, ESC, 0x28, 0x42, ")"),
    });
  }
  return cases;
}

/** Realistic strings: several marks per letter, double diacritics, escapes back and forth. */
const MIXED: Case[] = [
  { label: "French", bytes: bytes("Montr", 0xe2, "eal, ", 0xe2, "Etudes") },
  { label: "Vietnamese", bytes: bytes("Vi", 0xe3, 0xf2, "et Nam") },
  { label: "ligature", bytes: bytes("Gra", 0xeb, "t", 0xec, "sii") },
  { label: "double tilde", bytes: bytes(0xfa, "n", 0xfb, "g") },
  {
    label: "Hebrew with gershayim",
    bytes: bytes(ESC, 0x28, 0x32, 0x60, 0x22, 0x74, ESC, 0x28, 0x42),
  },
  {
    label: "Hebrew maqaf geresh",
    bytes: bytes(ESC, 0x28, 0x32, 0x62, 0x2d, 0x6b, 0x27, ESC, 0x28, 0x42),
  },
  {
    label: "Cyrillic G0 and back",
    bytes: bytes("Moskva = ", ESC, 0x28, 0x4e, 0x6d, 0x4f, 0x53, 0x4b, 0x57, 0x41, ESC, 0x28, 0x42),
  },
  { label: "Cyrillic G1", bytes: bytes(ESC, 0x29, 0x4e, 0xed, 0xc9, 0xd2, " 1917") },
  {
    label: "Greek with breathing",
    bytes: bytes(ESC, 0x28, 0x53, 0x25, 0x41, 0x6b, 0x24, 0x6a, 0x70, 0x61, 0x6c, ESC, 0x28, 0x42),
  },
  { label: "Arabic", bytes: bytes(ESC, 0x28, 0x33, 0x63, 0x4a, 0x47, 0x48, ESC, 0x28, 0x42) },
  { label: "subscript", bytes: bytes("H", ESC, 0x62, "2", ESC, 0x73, "O") },
  { label: "superscript", bytes: bytes("E=mc", ESC, 0x70, "2", ESC, 0x73) },
  { label: "Greek symbol", bytes: bytes(ESC, 0x67, "a", ESC, 0x73, "-rays") },
  {
    label: "EACC between Latin",
    bytes: bytes(
      "Tokyo ",
      ESC,
      0x24,
      0x31,
      0x21,
      0x30,
      0x64,
      0x21,
      0x23,
      0x20,
      ESC,
      0x28,
      0x42,
      "!",
    ),
  },
  { label: "joiners", bytes: bytes("a", 0x8d, "b", 0x8e, "c") },
];

Deno.test({
  name: "MARC-8 corpus over every character set decodes as MARC::Charset does (NFC)",
  ignore: !AVAILABLE,
  fn: async () => {
    const cases = [...setCases(), ...eaccCases(), ...MIXED];
    const expected = await oracle(cases.map((c) => c.bytes));
    assert.equal(expected.length, cases.length);
    const mismatches: string[] = [];
    let undefinedBoth = 0;
    let compared = 0; // characters

    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const carrel = decodeMarc8(c.bytes);
      const theirs = expected[i]!;
      if (carrel.problems.some((p) => /is not defined in/.test(p))) {
        // A position Carrel leaves undefined must be one MARC::Charset does not know either
        // (it skips the byte, Carrel writes U+FFFD).
        const stripped = carrel.text.replaceAll("\ufffd", "");
        if (stripped.normalize("NFC") !== theirs.normalize("NFC")) {
          mismatches.push(`${c.label}: undefined in Carrel, MARC::Charset knows it`);
        }
        undefinedBoth++;
        continue;
      }
      compared += Array.from(carrel.text).length;
      assert.deepEqual(carrel.problems, [], `${c.label}: ${carrel.problems.join("; ")}`);
      if (carrel.text.normalize("NFC") !== theirs.normalize("NFC")) {
        const cps = (s: string) =>
          Array.from(s.normalize("NFC"), (ch) => ch.codePointAt(0)!.toString(16)).join(" ");
        mismatches.push(`${c.label}: carrel [${cps(carrel.text)}] marc-charset [${cps(theirs)}]`);
      }
    }
    assert.deepEqual(mismatches, []);
    assert.ok(compared > 20_000, `compared ${compared} characters`);
    assert.ok(undefinedBoth < 600, `${undefinedBoth} undefined positions`);
  },
});

Deno.test({
  name: "the committed EACC table is what scripts/gen_marc8_tables.ts generates",
  ignore: !AVAILABLE,
  fn: async () => {
    const entries = await readEaccFromMarcCharset();
    const committed = await Deno.readTextFile(
      new URL("../../../operators/marc/marc8_eacc_table.ts", import.meta.url),
    );
    assert.equal(committed, renderEaccModule(entries));
  },
});
