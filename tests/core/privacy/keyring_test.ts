import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { HmacTokenizer, type Tokenizer } from "../../../core/privacy/hmac_sha256.ts";
import {
  activeKey,
  crosswalk,
  initKeyring,
  keyById,
  keyFingerprint,
  KEYRING_FORMAT,
  KeyVersion,
  loadKeyring,
  readKeyringFile,
  rotateKeyring,
} from "../../../core/privacy/keyring.ts";

const SECRET_A = "secret-a-0123456789abcdef0123456789";
const SECRET_B = "secret-b-0123456789abcdef0123456789";
const ENV_KEY = "env-key-for-tests-0123456789abcdef";

const POSIX = Deno.build.os !== "windows";

function expected(secret: string, raw: string): string {
  return createHmac("sha256", secret).update(raw, "utf8").digest("hex");
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "carrel-keyring-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function writeKeyring(path: string, content: unknown, mode = 0o600): Promise<void> {
  const text = typeof content === "string" ? content : JSON.stringify(content);
  await Deno.writeTextFile(path, text, { mode });
  if (POSIX) await Deno.chmod(path, mode);
}

function validFile(): {
  format: string;
  active: string;
  keys: { id: string; created: string; secret: string }[];
} {
  return {
    format: KEYRING_FORMAT,
    active: "k2",
    keys: [
      { id: "k1", created: "2025-01-06T09:00:00.000Z", secret: SECRET_A },
      { id: "k2", created: "2025-07-01T09:00:00Z", secret: SECRET_B },
    ],
  };
}

/** Asserts that `promise` rejects with a message matching `pattern` and containing no secret. */
async function rejectsWithout(
  promise: Promise<unknown>,
  pattern: RegExp,
  secrets: readonly string[] = [SECRET_A, SECRET_B, ENV_KEY],
): Promise<string> {
  let message = "";
  await assert.rejects(promise, (e: Error) => {
    message = e.message;
    return true;
  });
  assert.match(message, pattern);
  for (const s of secrets) assert.ok(!message.includes(s), `message reveals a secret: ${message}`);
  return message;
}

Deno.test("loadKeyring uses PII_HMAC_KEY when CARREL_KEYRING is not set", async () => {
  const keyring = await loadKeyring({ PII_HMAC_KEY: ENV_KEY });
  assert.equal(keyring.source, "env");
  assert.equal(keyring.path, null);
  const key = activeKey(keyring);
  assert.match(key.id, /^env-[0-9a-f]{8}$/);
  assert.equal(key.id, `env-${keyFingerprint(ENV_KEY)}`);
  assert.equal(key.created, null);
  assert.equal(key.ageDays(), null);
  assert.equal(key.tokenizer().token("P000123456"), expected(ENV_KEY, "P000123456"));
  // The fingerprint is stable, depends on the key, and is not a plain hash or HMAC of it.
  assert.equal(keyFingerprint(ENV_KEY), keyFingerprint(ENV_KEY));
  assert.notEqual(keyFingerprint(ENV_KEY), keyFingerprint(ENV_KEY + "!"));
  assert.ok(!expected(ENV_KEY, "").startsWith(keyFingerprint(ENV_KEY)));
});

Deno.test("loadKeyring reads Deno.env-like sources", async () => {
  const env = new Map([["PII_HMAC_KEY", ENV_KEY]]);
  const keyring = await loadKeyring({ get: (name: string) => env.get(name) });
  assert.equal(activeKey(keyring).tokenizer().token("x"), expected(ENV_KEY, "x"));
});

Deno.test("a missing PII_HMAC_KEY gives a message naming it", async () => {
  for (const env of [{}, { PII_HMAC_KEY: "" }, { CARREL_KEYRING: "" }]) {
    const message = await rejectsWithout(loadKeyring(env), /PII_HMAC_KEY is not set/);
    assert.match(message, /^Cannot load the tokenization key: /);
    assert.match(message, /CARREL_KEYRING/);
  }
});

Deno.test("a short PII_HMAC_KEY is refused without revealing it", async () => {
  const short = "short-secret-value";
  const message = await rejectsWithout(
    loadKeyring({ PII_HMAC_KEY: short }),
    /PII_HMAC_KEY.*18 bytes long, at least 32/,
    [short],
  );
  assert.ok(!message.includes(short));
});

Deno.test("loadKeyring reads the keyring file named by CARREL_KEYRING", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/keyring.json`;
    await writeKeyring(path, validFile());
    // The keyring takes precedence over PII_HMAC_KEY.
    const keyring = await loadKeyring({ CARREL_KEYRING: path, PII_HMAC_KEY: ENV_KEY });
    assert.equal(keyring.source, "file");
    assert.equal(keyring.path, path);
    assert.equal(keyring.activeId, "k2");
    assert.deepEqual(keyring.keys.map((k) => k.id), ["k1", "k2"]);
    const active = activeKey(keyring);
    assert.equal(active.id, "k2");
    assert.equal(active.tokenizer().token("P1"), expected(SECRET_B, "P1"));
    assert.equal(keyById(keyring, "k1").tokenizer().token("P1"), expected(SECRET_A, "P1"));
    assert.equal(active.tokenizer(), active.tokenizer(), "tokenizer is cached");
    // Key age, for the rotation compliance check.
    const k1 = keyById(keyring, "k1");
    assert.equal(k1.created?.toISOString(), "2025-01-06T09:00:00.000Z");
    assert.equal(k1.ageDays(new Date("2025-02-05T09:00:00.000Z")), 30);
    assert.equal(active.ageDays(new Date("2025-07-01T21:00:00.000Z")), 0.5);
  });
});

Deno.test("keyById names the known versions for an unknown id", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/keyring.json`;
    await writeKeyring(path, validFile());
    const keyring = await readKeyringFile(path);
    assert.throws(
      () => keyById(keyring, "k9"),
      (e: Error) => {
        assert.equal(
          e.message,
          `Cannot find key version "k9" in keyring "${path}": the known versions are "k1", "k2"`,
        );
        return true;
      },
    );
  });
});

Deno.test("keyring validation names the field and never the secret", async () => {
  const cases: [string, unknown, RegExp][] = [
    ["wrong format", { ...validFile(), format: "v0" }, /format must be "carrel-keyring\/1"/],
    [
      "unknown active",
      { ...validFile(), active: "k7" },
      /active must be the id of one of the keys, got "k7"/,
    ],
    [
      "secret in active",
      { ...validFile(), active: SECRET_A },
      /active must be the id of one of the keys$/,
    ],
    ["no keys", { ...validFile(), keys: [] }, /keys must not be empty/],
    ["keys not an array", { ...validFile(), keys: {} }, /keys must be an array/],
    [
      "short secret",
      (() => {
        const f = validFile();
        f.keys[1]!.secret = "short-one";
        return f;
      })(),
      /keys\[1\]\.secret must be valid text of at least 32 bytes/,
    ],
    [
      "secret not a string",
      (() => {
        const f = validFile() as { keys: Record<string, unknown>[] };
        f.keys[0]!.secret = 42;
        return f;
      })(),
      /keys\[0\]\.secret must be a string/,
    ],
    [
      "bad id",
      (() => {
        const f = validFile();
        f.keys[0]!.id = "k 1";
        return f;
      })(),
      /keys\[0\]\.id must be 1-64 characters/,
    ],
    [
      "bad created",
      (() => {
        const f = validFile();
        f.keys[0]!.created = "last tuesday";
        return f;
      })(),
      /keys\[0\]\.created must be an ISO 8601 date-time/,
    ],
    [
      "duplicate id",
      (() => {
        const f = validFile();
        f.keys[1]!.id = "k1";
        f.active = "k1";
        return f;
      })(),
      /keys\[1\]\.id duplicates keys\[0\]\.id "k1"/,
    ],
    [
      "reused secret",
      (() => {
        const f = validFile();
        f.keys[1]!.secret = SECRET_A;
        return f;
      })(),
      /keys\[1\]\.secret is the same as keys\[0\]\.secret/,
    ],
    [
      "unexpected field",
      { ...validFile(), comment: "hi" },
      /\(top level\) unexpected field "comment"/,
    ],
    [
      "secret pasted as a field name",
      { ...validFile(), [SECRET_B + "x"]: true },
      /unexpected field \(a long name\)/,
    ],
    ["not JSON", `{"format": "x", "secret": "${SECRET_A}"`, /is not valid JSON/],
    ["JSON array", [SECRET_A], /\(top level\) must be a JSON object$/],
  ];
  await withTempDir(async (dir) => {
    for (const [label, content, pattern] of cases) {
      const path = `${dir}/${label.replaceAll(" ", "_")}.json`;
      await writeKeyring(path, content);
      const message = await rejectsWithout(readKeyringFile(path), pattern);
      assert.ok(message.startsWith(`Cannot load keyring "${path}": `), label);
      assert.ok(!message.includes("short-one"), label);
    }
  });
});

Deno.test({
  name: "a keyring file readable by group or others is refused",
  ignore: !POSIX,
  async fn() {
    await withTempDir(async (dir) => {
      const path = `${dir}/keyring.json`;
      for (const mode of [0o644, 0o640, 0o604, 0o660, 0o602, 0o610]) {
        await writeKeyring(path, validFile(), mode);
        const message = await rejectsWithout(
          loadKeyring({ CARREL_KEYRING: path }),
          /group or others can access it; run chmod 600/,
        );
        assert.match(message, new RegExp(`its mode is 0${mode.toString(8)}`));
      }
      await writeKeyring(path, validFile(), 0o400);
      assert.equal((await readKeyringFile(path)).activeId, "k2");
    });
  },
});

Deno.test("a missing or non-file keyring path is refused", async () => {
  await withTempDir(async (dir) => {
    await rejectsWithout(
      loadKeyring({ CARREL_KEYRING: `${dir}/nope.json` }),
      /^Cannot load keyring ".*nope\.json": the file does not exist$/,
    );
    await rejectsWithout(readKeyringFile(dir), /it is not a regular file$/);
  });
});

Deno.test("initKeyring creates a 0600 keyring and refuses to overwrite it", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/keyring.json`;
    const result = await initKeyring(path, { now: new Date("2025-03-01T00:00:00Z") });
    assert.deepEqual(result, { id: "k1" });
    if (POSIX) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const keyring = await readKeyringFile(path);
    const k1 = activeKey(keyring);
    assert.equal(k1.id, "k1");
    assert.equal(k1.created?.toISOString(), "2025-03-01T00:00:00.000Z");
    const raw = JSON.parse(await Deno.readTextFile(path));
    assert.match(raw.keys[0].secret, /^[0-9a-f]{64}$/);
    assert.equal(k1.tokenizer().token("P1"), expected(raw.keys[0].secret, "P1"));
    await rejectsWithout(
      initKeyring(path),
      /^Cannot create keyring ".*": the file already exists$/,
    );
    assert.deepEqual(await Deno.readTextFile(path).then(JSON.parse), raw, "file unchanged");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["keyring.json"]);
  });
});

Deno.test("rotateKeyring keeps the old key, activates a new random one, and writes 0600", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/keyring.json`;
    await writeKeyring(path, validFile());
    const before = await readKeyringFile(path);
    const oldToken = activeKey(before).tokenizer().token("P000123456");

    const result = await rotateKeyring(path, { now: new Date("2025-09-01T00:00:00Z") });
    assert.deepEqual(result, { oldId: "k2", newId: "k3" });
    assert.ok(!JSON.stringify(result).includes("secret"));
    if (POSIX) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);

    const after = await loadKeyring({ CARREL_KEYRING: path });
    assert.equal(after.activeId, "k3");
    assert.deepEqual(after.keys.map((k) => k.id), ["k1", "k2", "k3"]);
    // Old versions are kept unchanged: they still produce the same tokens.
    assert.equal(keyById(after, "k2").tokenizer().token("P000123456"), oldToken);
    assert.equal(keyById(after, "k1").tokenizer().token("P1"), expected(SECRET_A, "P1"));
    const raw = JSON.parse(await Deno.readTextFile(path));
    const newSecret: string = raw.keys[2].secret;
    assert.match(newSecret, /^[0-9a-f]{64}$/);
    assert.equal(raw.keys[2].created, "2025-09-01T00:00:00.000Z");
    assert.equal(
      activeKey(after).tokenizer().token("P000123456"),
      expected(newSecret, "P000123456"),
    );
    assert.notEqual(activeKey(after).tokenizer().token("P000123456"), oldToken);

    // A second rotation gets a different random secret.
    assert.deepEqual(await rotateKeyring(path), { oldId: "k3", newId: "k4" });
    const raw2 = JSON.parse(await Deno.readTextFile(path));
    assert.notEqual(raw2.keys[3].secret, newSecret);
    // No temporary or lock files are left behind.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["keyring.json"]);
  });
});

Deno.test("rotateKeyring with a given id and secret, and its refusals", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/keyring.json`;
    await writeKeyring(path, validFile());
    const secret = "operator-chosen-secret-0123456789abcdef";
    assert.deepEqual(await rotateKeyring(path, { newId: "2025-q3", secret }), {
      oldId: "k2",
      newId: "2025-q3",
    });
    const keyring = await readKeyringFile(path);
    assert.equal(activeKey(keyring).tokenizer().token("x"), expected(secret, "x"));

    const unchanged = await Deno.readTextFile(path);
    const secrets = [SECRET_A, SECRET_B, secret, "too-short"];
    await rejectsWithout(
      rotateKeyring(path, { newId: "k1" }),
      /a version with id "k1" already exists/,
      secrets,
    );
    await rejectsWithout(rotateKeyring(path, { newId: "bad id!" }), /newId must be/, secrets);
    await rejectsWithout(
      rotateKeyring(path, { secret: SECRET_A }),
      /the new secret is already used by another version/,
      secrets,
    );
    await rejectsWithout(
      rotateKeyring(path, { secret: "too-short" }),
      /the new secret.*9 bytes long, at least 32/,
      secrets,
    );
    await Deno.writeTextFile(`${path}.lock`, "");
    await rejectsWithout(rotateKeyring(path), /is locked by another change; .*\.lock/, secrets);
    await Deno.remove(`${path}.lock`);
    assert.equal(await Deno.readTextFile(path), unchanged);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["keyring.json"]);
  });
});

Deno.test({
  name: "rotateKeyring refuses a keyring readable by others and leaves it untouched",
  ignore: !POSIX,
  async fn() {
    await withTempDir(async (dir) => {
      const path = `${dir}/keyring.json`;
      await writeKeyring(path, validFile(), 0o644);
      const before = await Deno.readTextFile(path);
      await rejectsWithout(rotateKeyring(path), /group or others can access it/);
      assert.equal(await Deno.readTextFile(path), before);
    });
  },
});

Deno.test("key objects never show their secret", async () => {
  const keyring = await loadKeyring({ PII_HMAC_KEY: ENV_KEY });
  const key = activeKey(keyring);
  for (const shown of [JSON.stringify(keyring), Deno.inspect(keyring), Deno.inspect(key)]) {
    assert.ok(!shown.includes(ENV_KEY), shown);
    assert.ok(shown.includes(key.id), shown);
  }
  assert.ok(!Object.values(key).includes(ENV_KEY));
  assert.ok(key.hasSecret(ENV_KEY));
  assert.ok(!key.hasSecret(SECRET_A));
});

Deno.test("crosswalk pairs old and new tokens for each distinct raw value", () => {
  const oldT = new KeyVersion("k1", SECRET_A, new Date(), "test").tokenizer();
  const newT = new HmacTokenizer(SECRET_B);
  const raws = ["P1", "P2", "Zoë", "P1", "", "P2"];
  const pairs = crosswalk(oldT, newT, raws);
  assert.deepEqual(pairs, [
    { old_token: expected(SECRET_A, "P1"), new_token: expected(SECRET_B, "P1") },
    { old_token: expected(SECRET_A, "P2"), new_token: expected(SECRET_B, "P2") },
    { old_token: expected(SECRET_A, "Zoë"), new_token: expected(SECRET_B, "Zoë") },
    { old_token: expected(SECRET_A, ""), new_token: expected(SECRET_B, "") },
  ]);
  // Works with any iterable and any tokenizer.
  const upper: Tokenizer = { token: (raw) => raw.toUpperCase() };
  const fromGenerator = crosswalk(
    upper,
    newT,
    (function* () {
      yield "a";
      yield "b";
    })(),
  );
  assert.deepEqual(fromGenerator.map((p) => p.old_token), ["A", "B"]);
});
