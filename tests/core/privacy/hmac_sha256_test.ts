import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { opensslHmac } from "../../test_utils.ts";
import {
  assertKeyStrength,
  createTokenizer,
  hmacSha256,
  HmacTokenizer,
  keyByteLength,
  sha256,
  toHex,
} from "../../../core/privacy/hmac_sha256.ts";

const MODULE_URL = new URL("../../../core/privacy/hmac_sha256.ts", import.meta.url).href;

const KEY_32 = "carrel-test-key-0123456789abcdef"; // exactly 32 ASCII bytes
const KEY_NON_ASCII = "clé-secrète-für-Zoë-Ørsted-τεστ-ключ"; // non-ASCII, > 32 bytes
const KEY_64 = "k".repeat(64); // exactly one block: used as is
const KEY_65 = "0123456789".repeat(6) + "ABCDE"; // one byte over a block: hashed first
const KEY_100 = "long-key-".repeat(11) + "x"; // 100 bytes: hashed first

const OPENSSL_INPUTS: readonly string[] = [
  "P000123456",
  "12345678",
  "ABCDEFGHIJKLMNOPQRST",
  "patron:00042",
  "",
  "Zoë",
  "Ørsted, Søren — 中文 😀",
  "x".repeat(55), // largest single-block message after the ipad block
  "x".repeat(56), // first length that needs a second padding block
  "y".repeat(64),
  "z".repeat(119),
  "z".repeat(120),
  "0123456789abcdefghij".repeat(10), // 200 characters
  "é".repeat(28), // 56 bytes, 28 characters: non-ASCII across the boundary
];

for (
  const [label, key] of [
    ["32-byte key", KEY_32],
    ["non-ASCII key", KEY_NON_ASCII],
    ["64-byte key", KEY_64],
    ["65-byte key", KEY_65],
    ["100-byte key", KEY_100],
  ] as const
) {
  Deno.test(`HmacTokenizer matches openssl dgst -hmac (${label})`, async () => {
    const tokenizer = new HmacTokenizer(key);
    for (const input of OPENSSL_INPUTS) {
      assert.equal(
        tokenizer.token(input),
        await opensslHmac(key, input),
        `input of ${input.length}`,
      );
    }
  });
}

Deno.test("HmacTokenizer matches openssl for a known pair", async () => {
  // Fixed expectation, checked once more against openssl so both sides are pinned.
  const expected = "44b01ee0940fb4a6543f8acfa76c83c449cf92cde39667d9fbfd7a9ec670b06d";
  const key = "keykeykeykeykeykeykeykeykeykeykey";
  assert.equal(new HmacTokenizer(key).token("abc"), expected);
  assert.equal(await opensslHmac(key, "abc"), expected);
});

const bytes = (n: number, v: number) => new Uint8Array(n).fill(v);
const ascii = (s: string) => new TextEncoder().encode(s);
const fromHex = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

/** RFC 4231 section 4: key, data, HMAC-SHA-256 (case 5 is truncated to 128 bits). */
const RFC4231: ReadonlyArray<readonly [number, Uint8Array, Uint8Array, string]> = [
  [
    1,
    bytes(20, 0x0b),
    ascii("Hi There"),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  ],
  [
    2,
    ascii("Jefe"),
    ascii("what do ya want for nothing?"),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  ],
  [
    3,
    bytes(20, 0xaa),
    bytes(50, 0xdd),
    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
  ],
  [
    4,
    fromHex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
    bytes(50, 0xcd),
    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
  ],
  [5, bytes(20, 0x0c), ascii("Test With Truncation"), "a3b6167473100ee06e0c796c2955552b"],
  [
    6,
    bytes(131, 0xaa),
    ascii("Test Using Larger Than Block-Size Key - Hash Key First"),
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  ],
  [
    7,
    bytes(131, 0xaa),
    ascii(
      "This is a test using a larger than block-size key and a larger than block-size data. " +
        "The key needs to be hashed before being used by the HMAC algorithm.",
    ),
    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
  ],
];

Deno.test("hmacSha256 matches the RFC 4231 test vectors", () => {
  for (const [n, key, data, expected] of RFC4231) {
    const mac = toHex(hmacSha256(key, data));
    assert.equal(mac.slice(0, expected.length), expected, `RFC 4231 test case ${n}`);
  }
});

Deno.test("HmacTokenizer matches RFC 4231 test cases 6 and 7 (131-byte key)", () => {
  const tokenizer = new HmacTokenizer(bytes(131, 0xaa));
  for (const [n, , data, expected] of RFC4231.slice(5)) {
    assert.equal(tokenizer.token(new TextDecoder().decode(data)), expected, `case ${n}`);
  }
});

Deno.test("sha256 matches the FIPS 180-4 examples", () => {
  assert.equal(
    toHex(sha256("")),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    toHex(sha256("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    toHex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
  assert.equal(
    toHex(sha256(new Uint8Array(1_000_000).fill(0x61))),
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
  );
});

/** Deterministic PRNG (mulberry32) so that failures are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("HmacTokenizer matches node:crypto on random strings of many lengths", () => {
  const rand = prng(20250101);
  const pools = ["a", "Z", "0", "-", "é", "ß", "中", "€", "😀", "𝄞", "\u0000", "\u007f", "\u0080"];
  const key = KEY_NON_ASCII;
  const tokenizer = new HmacTokenizer(key);
  for (let i = 0; i < 3000; i++) {
    const len = i < 300 ? i : Math.floor(rand() * (rand() < 0.05 ? 6000 : 140));
    const asciiOnly = rand() < 0.5;
    let s = "";
    while (s.length < len) {
      s += asciiOnly
        ? String.fromCharCode(32 + Math.floor(rand() * 95))
        : pools[Math.floor(rand() * pools.length)]!;
    }
    const expected = createHmac("sha256", key).update(s, "utf8").digest("hex");
    assert.equal(tokenizer.token(s), expected, `string ${i} of length ${s.length}`);
  }
});

Deno.test("HmacTokenizer gives the same token in another process", async () => {
  const ids = ["P000123456", "", "Zoë", "x".repeat(200), "中文😀"];
  const code = `
    import { createTokenizer } from ${JSON.stringify(MODULE_URL)};
    const t = createTokenizer(Deno.env.get("PII_HMAC_KEY"));
    const ids = JSON.parse(Deno.env.get("IDS"));
    console.log(JSON.stringify(ids.map((id) => t.token(id))));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", code],
    env: { PII_HMAC_KEY: KEY_NON_ASCII, IDS: JSON.stringify(ids) },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const theirs: string[] = JSON.parse(new TextDecoder().decode(out.stdout));
  const mine = createTokenizer(KEY_NON_ASCII);
  assert.deepEqual(theirs, ids.map((id) => mine.token(id)));
});

function pythonAvailable(): boolean {
  try {
    return new Deno.Command("python3", { args: ["-c", "pass"] }).outputSync().success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "HmacTokenizer equals Python's hmac.new(key.encode(), raw.encode(), sha256).hexdigest()",
  ignore: !pythonAvailable(),
  async fn() {
    const ids = ["P000123456", "", "Zoë", "x".repeat(200), "中文😀"];
    const code = "import hmac, hashlib, json, os, sys\n" +
      "key = os.environ['PII_HMAC_KEY']\n" +
      "ids = json.loads(os.environ['IDS'])\n" +
      "print(json.dumps([hmac.new(key.encode(), i.encode(), hashlib.sha256).hexdigest() " +
      "for i in ids]))\n";
    const out = await new Deno.Command("python3", {
      args: ["-c", code],
      env: { PII_HMAC_KEY: KEY_100, IDS: JSON.stringify(ids) },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const expected: string[] = JSON.parse(new TextDecoder().decode(out.stdout));
    const tokenizer = new HmacTokenizer(KEY_100);
    assert.deepEqual(ids.map((id) => tokenizer.token(id)), expected);
  },
});

Deno.test("a key shorter than 32 bytes is refused without revealing it", () => {
  const short = "only-thirty-one-bytes-long-key!";
  assert.equal(short.length, 31);
  for (const make of [() => new HmacTokenizer(short), () => createTokenizer(short)]) {
    assert.throws(make, (e: Error) => {
      assert.equal(
        e.message,
        "Cannot use PII_HMAC_KEY as an HMAC key: it is 31 bytes long, at least 32 are required",
      );
      assert.ok(!e.message.includes(short));
      return true;
    });
  }
  assert.throws(() => new HmacTokenizer(new Uint8Array(31)), /31 bytes long/);
  assert.doesNotThrow(() => new HmacTokenizer(KEY_32));
});

Deno.test("key length is counted in UTF-8 bytes", () => {
  const key = "é".repeat(16); // 16 characters, 32 bytes
  assert.equal(keyByteLength(key), 32);
  assert.doesNotThrow(() => assertKeyStrength(key));
  assert.throws(() => assertKeyStrength("é".repeat(15) + "x"), /31 bytes long/);
});

Deno.test("a missing key gives a message naming PII_HMAC_KEY", () => {
  for (const missing of [undefined, null, ""]) {
    assert.throws(() => createTokenizer(missing), (e: Error) => {
      assert.equal(e.message, "Cannot tokenize: PII_HMAC_KEY is not set");
      return true;
    });
  }
  assert.throws(
    () => createTokenizer(undefined, "keyring keys[0].secret"),
    /^Error: Cannot tokenize: keyring keys\[0\]\.secret is not set$/,
  );
});

Deno.test("values that have no UTF-8 form are refused without revealing them", () => {
  const tokenizer = new HmacTokenizer(KEY_32);
  for (const bad of ["P12\uD800", "\uDC00abc", "abc\uDBFFx"]) {
    assert.throws(() => tokenizer.token(bad), (e: Error) => {
      assert.ok(e instanceof TypeError);
      assert.match(e.message, /^Cannot encode value as UTF-8: it contains a lone UTF-16 surrogate/);
      assert.ok(!e.message.includes(bad));
      return true;
    });
  }
  // The tokenizer is still usable and correct afterwards.
  assert.equal(
    tokenizer.token("P12"),
    createHmac("sha256", KEY_32).update("P12").digest("hex"),
  );
});

Deno.test("non-string values are refused", () => {
  const tokenizer = new HmacTokenizer(KEY_32);
  assert.throws(
    () => tokenizer.token(12345 as unknown as string),
    /^TypeError: Cannot tokenize value: expected a string, got number$/,
  );
});

Deno.test("different keys give different tokens", () => {
  const a = new HmacTokenizer(KEY_32).token("P000123456");
  const b = new HmacTokenizer(KEY_32 + "x").token("P000123456");
  assert.notEqual(a, b);
  assert.match(a, /^[0-9a-f]{64}$/);
});

Deno.test("HmacTokenizer.tokens equals token() value by value, and names a bad value by index only", () => {
  const key = "a-secret-of-at-least-thirty-two-bytes!!";
  const tokenizer = new HmacTokenizer(key);
  const values = ["P000123456", "", "Zoë", "😀".repeat(40), "x".repeat(300), "P000123456"];
  const batch = tokenizer.tokens(values);
  assert.deepEqual(
    batch,
    values.map((v) => createHmac("sha256", key).update(v, "utf8").digest("hex")),
  );
  const reused = ["stale", "stale", "stale", "stale", "stale", "stale", "stale", "stale"];
  assert.equal(tokenizer.tokens(values, reused), reused);
  assert.deepEqual(reused, batch);
  assert.deepEqual(tokenizer.tokens([]), []);
  const secret = "Sentinel-Patron-77";
  assert.throws(() => tokenizer.tokens([secret, `${secret}\ud800`]), (err: Error) => {
    assert.ok(err instanceof TypeError);
    assert.match(err.message, /^Cannot tokenize value 2 of a batch of 2: /);
    assert.ok(!err.message.includes(secret));
    return true;
  });
});
