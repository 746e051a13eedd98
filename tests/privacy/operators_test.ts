/**
 * Privacy operators inside real runs (`executeRun`, in-process; a store only where persistence is
 * the point): `tokenize` (tokens checked against `openssl dgst -sha256 -hmac`, rename, numbers,
 * nulls, missing and short keys, datasets, audit counts, the rotation crosswalk), `schemaGate`
 * (stripping, rejection, quarantine) and `privacyCheckpoint` (every check fails closed, names the
 * check, the field and the count, never a value; enclave outputs are never stored).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import { Dataset, task } from "../../core/mod.ts";
import {
  assertNone,
  auditOf,
  hmac,
  KEY,
  KEY_ENV,
  run,
  sink,
  taskOf,
  TOKEN,
} from "./run_helpers.ts";
import { keyFingerprint, KEYRING_FORMAT } from "../../core/privacy/keyring.ts";
import { privacyCheckpoint, schemaGate, tokenize } from "../../operators/mod.ts";
import {
  BACKENDS,
  notePostgresSkipped,
  opensslHmac,
  testStore,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

// ---------------------------------------------------------------------------------------------
// tokenize

Deno.test("tokenize: tokens equal `openssl dgst -sha256 -hmac KEY` of the raw values", async () => {
  await using dir = await withTmpDir();
  const raws = ["P100234", "21234000567890", "Zoë Ångström-7"];
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => raws.map((p, i) => ({ patron_id: p, n: i })) }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], env: KEY_ENV }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const out = r.outputs.get("tokens") as { patron_id: string; n: number }[];
  assert.equal(out.length, 3);
  for (const [i, raw] of raws.entries()) {
    assert.equal(out[i]!.patron_id, await opensslHmac(KEY, raw), `token of ${raw}`);
    assert.equal(out[i]!.n, i, "other fields pass through unchanged");
  }
});

Deno.test("tokenize: rename moves the token to the new field and drops the raw field", async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [{ patron_id: "P555001", cardnumber: "C-77", item: "i1" }],
    }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id", "cardnumber"],
      rename: { patron_id: "patron_token" },
      env: KEY_ENV,
    }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const [row] = r.outputs.get("tokens") as Record<string, unknown>[];
  assert.deepEqual(Object.keys(row!).sort(), ["cardnumber", "item", "patron_token"]);
  assert.equal(row!.patron_token, hmac(KEY, "P555001"));
  assert.ok(!("patron_id" in row!), "the raw field is dropped");
  assert.equal(row!.cardnumber, hmac(KEY, "C-77"), "a field without rename is replaced in place");
  assert.equal(row!.item, "i1");
});

Deno.test("tokenize: numbers are tokenized as their decimal text", async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [{ borrowernumber: 12345 }, { borrowernumber: 7 }, { borrowernumber: "12345" }],
    }),
    tokens: tokenize({ after: ["extract"], fields: ["borrowernumber"], env: KEY_ENV }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const out = r.outputs.get("tokens") as { borrowernumber: string }[];
  assert.equal(out[0]!.borrowernumber, await opensslHmac(KEY, "12345"));
  assert.equal(out[1]!.borrowernumber, hmac(KEY, "7"));
  assert.equal(out[0]!.borrowernumber, out[2]!.borrowernumber, "12345 and '12345' match");
});

Deno.test('tokenize: onNull "keep" gives null for null, missing and empty values', async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [{ patron_id: null }, {}, { patron_id: "" }, { patron_id: "P1" }],
    }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
      onNull: "keep",
      env: KEY_ENV,
    }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const out = r.outputs.get("tokens") as Record<string, unknown>[];
  assert.deepEqual(out.map((o) => o.patron_token), [null, null, null, hmac(KEY, "P1")]);
  for (const o of out) assert.ok(!("patron_id" in o));
  const [count] = auditOf(r, "tokenize:count");
  assert.equal(count?.recordCount, 1, "one value tokenized");
  assert.equal(count?.detail?.nulls, 3);
});

Deno.test('tokenize: onNull "fail" fails naming the field and count, never a value', async () => {
  await using dir = await withTmpDir();
  const loads: unknown[] = [];
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [
        { patron_id: "SENTINEL-P-991", card: null },
        { patron_id: null, card: "SENTINEL-C-992" },
        { patron_id: "", card: "SENTINEL-C-993" },
      ],
    }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id", "card"],
      onNull: "fail",
      env: KEY_ENV,
    }),
    cp: privacyCheckpoint({
      after: ["tokens"],
      tokenized: ["patron_id", "card"],
      allowFields: ["patron_id", "card"],
    }),
    load: task({ after: ["cp"], run: (ctx) => loads.push(ctx.inputs.cp) }),
  });
  const t = taskOf(r, "tokens");
  assert.equal(t.state, "failed");
  assert.equal(t.attempts, 1, "a fatal error: no retries");
  assert.match(t.error!, /patron_id \(2\)/);
  assert.match(t.error!, /card \(1\)/);
  assert.match(t.error!, /3 null or empty/);
  assertNone(t.error!, ["SENTINEL"], "the error");
  assertNone(JSON.stringify(r.audit), ["SENTINEL"], "the audit entries");
  assert.equal(taskOf(r, "load").state, "upstream_failed");
  assert.equal(loads.length, 0);
});

Deno.test("tokenize: a missing key fails the task naming PII_HMAC_KEY", async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => [{ patron_id: "SENTINEL-P-1" }] }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], env: { get: () => undefined } }),
  });
  const t = taskOf(r, "tokens");
  assert.equal(t.state, "failed");
  assert.match(t.error!, /PII_HMAC_KEY/);
  assert.doesNotMatch(t.error!, /message withheld/, "the operator's message is vouched for");
  assertNone(t.error!, ["SENTINEL"], "the error");
  assertNone(JSON.stringify(r.audit), ["SENTINEL"], "the audit entries");
});

Deno.test("tokenize: a key shorter than 32 bytes is refused, and never echoed", async () => {
  await using dir = await withTmpDir();
  const short = "short-key-SECRET-31-bytes-xxxxx"; // 31 bytes
  assert.equal(new TextEncoder().encode(short).length, 31);
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => [{ patron_id: "P1" }] }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      env: { get: (n) => (n === "PII_HMAC_KEY" ? short : undefined) },
    }),
  });
  const t = taskOf(r, "tokens");
  assert.equal(t.state, "failed");
  assert.match(t.error!, /PII_HMAC_KEY/);
  assert.match(t.error!, /31 bytes/);
  assert.match(t.error!, /32/);
  assertNone(t.error!, [short, "SECRET"], "the error");
  // Exactly 32 bytes is enough.
  const ok = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => [{ patron_id: "P1" }] }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      env: { get: (n) => (n === "PII_HMAC_KEY" ? short + "y" : undefined) },
    }),
  });
  assert.equal(ok.state, "success", JSON.stringify(ok.tasks));
});

Deno.test("tokenize: works on datasets (5,000 records from an async generator)", async () => {
  await using dir = await withTmpDir();
  const N = 5_000;
  const seen: { count: number; tokens: number; first?: Record<string, unknown> } = {
    count: 0,
    tokens: 0,
  };
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: async function* () {
        for (let i = 0; i < N; i++) yield { patron_id: `P${100000 + i}`, item: `i${i}` };
      },
    }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
      env: KEY_ENV,
    }),
    check: task({
      zone: "enclave",
      after: ["tokens"],
      run: async (ctx) => {
        const input = ctx.inputs.tokens;
        assert.ok(input instanceof Dataset, "the tokenized output is a dataset");
        assert.equal(input.records, N);
        assert.equal(input.ref.$dataset.encrypted, true, "an enclave dataset is encrypted");
        for await (const rec of input as AsyncIterable<Record<string, unknown>>) {
          if (seen.count === 0) seen.first = rec;
          seen.count++;
          if (typeof rec.patron_token === "string" && TOKEN.test(rec.patron_token)) seen.tokens++;
          assert.ok(!("patron_id" in rec));
        }
        return null;
      },
    }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  assert.equal(seen.count, N);
  assert.equal(seen.tokens, N);
  assert.deepEqual(seen.first, { patron_token: hmac(KEY, "P100000"), item: "i0" });
  const [count] = auditOf(r, "tokenize:count");
  assert.equal(count?.recordCount, N);
  assert.equal(count?.detail?.records, N);
});

Deno.test("tokenize: the audit entry tokenize:count carries the key version id and the counts, never a value or the key", async () => {
  await using dir = await withTmpDir();
  const raws = ["SENTINEL-P-1001", "SENTINEL-P-1002", "SENTINEL-P-1003"];
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [...raws.map((p) => ({ patron_id: p })), { patron_id: null }],
    }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], env: KEY_ENV }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const entries = auditOf(r, "tokenize:count", "tokens");
  assert.equal(entries.length, 1, JSON.stringify(r.audit));
  const e = entries[0]!;
  assert.equal(e.keyVersion, `env-${keyFingerprint(KEY)}`);
  assert.equal(e.recordCount, 3, "values tokenized");
  assert.equal(e.detail?.records, 4, "records seen");
  assert.equal(e.detail?.nulls, 1);
  assert.equal(e.correlationId, r.runId);
  const text = JSON.stringify(r.audit);
  assertNone(text, ["SENTINEL", KEY, ...raws.map((p) => hmac(KEY, p))], "the audit entries");
});

Deno.test("tokenize: crosswalk: true writes {field, old_token, new_token} from k1 to the active k2, one per distinct raw value, no raw value", async () => {
  await using dir = await withTmpDir();
  const k1 = "k1-secret-SENTINEL-0123456789abcdefghij";
  const k2 = "k2-secret-SENTINEL-0123456789abcdefghij";
  const path = join(dir.path, "keyring.json");
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      format: KEYRING_FORMAT,
      active: "k2",
      keys: [
        { id: "k1", created: "2025-01-06T09:00:00.000Z", secret: k1 },
        { id: "k2", created: "2025-07-01T09:00:00.000Z", secret: k2 },
      ],
    }),
    { mode: 0o600 },
  );
  await Deno.chmod(path, 0o600);
  const raws = ["RAW-P-7001", "RAW-P-7002", "RAW-P-7001", "RAW-P-7003", "RAW-P-7002"];
  const home = join(dir.path, "home");
  const r = await run(home, {
    extract: task({ zone: "enclave", run: () => raws.map((p) => ({ patron_id: p })) }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
      crosswalk: true,
      env: { get: (n) => (n === "CARREL_KEYRING" ? path : undefined) },
    }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const out = r.outputs.get("tokens") as { patron_token: string }[];
  assert.deepEqual(out.map((o) => o.patron_token), raws.map((p) => hmac(k2, p)));
  const [cw] = auditOf(r, "tokenize:crosswalk");
  assert.ok(cw, `no tokenize:crosswalk entry in ${JSON.stringify(r.audit)}`);
  assert.equal(cw.keyVersion, "k2");
  assert.equal(cw.detail?.from, "k1");
  assert.equal(cw.recordCount, 3);
  const [count] = auditOf(r, "tokenize:count");
  assert.equal(count?.keyVersion, "k2");
  const rel = cw.detail?.dataset as string;
  assert.equal(typeof rel, "string");
  const file = join(home, rel);
  assert.ok(file.startsWith(join(home, "runs")), `the crosswalk is in the run workspace: ${rel}`);
  const text = await Deno.readTextFile(file);
  assertNone(text, ["RAW-P-", k1, k2, "SENTINEL"], "the crosswalk file");
  const rows = text.trim().split("\n").map((l) => JSON.parse(l));
  const distinct = [...new Set(raws)];
  assert.deepEqual(
    rows,
    distinct.map((p) => ({
      field: "patron_token",
      old_token: hmac(k1, p),
      new_token: hmac(k2, p),
    })),
  );
  assertNone(JSON.stringify(r.audit), ["RAW-P-", "SENTINEL"], "the audit entries");
});

// ---------------------------------------------------------------------------------------------
// schemaGate

const Checkout = z.object({
  patron_token: z.string(),
  item_id: z.string(),
  loan: z.object({ due: z.string(), branch: z.string() }),
});

Deno.test("schemaGate: strips PII keys at any depth, case-insensitively", async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [{
        patron_token: "t1",
        item_id: "i1",
        EMAIL: "SENTINEL@example.org",
        Patron_ID: "SENTINEL-P",
        loan: { due: "2026-01-20", branch: "east", BorrowerNumber: 5, Phone: "SENTINEL-555" },
      }, {
        patron_token: "t2",
        item_id: "i2",
        loan: { due: "2026-01-21", branch: "west", CardNumber: "SENTINEL-C" },
      }],
    }),
    gate: schemaGate({ after: ["extract"], schema: Checkout }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  assert.deepEqual(r.outputs.get("gate"), [
    { patron_token: "t1", item_id: "i1", loan: { due: "2026-01-20", branch: "east" } },
    { patron_token: "t2", item_id: "i2", loan: { due: "2026-01-21", branch: "west" } },
  ]);
  const [checked] = auditOf(r, "gate:checked");
  assert.equal(checked?.recordCount, 2);
  assert.equal(checked?.detail?.passed, 2);
  assert.equal(checked?.detail?.rejected, 0);
  assert.equal(checked?.detail?.stripped, 5);
  assertNone(JSON.stringify(r.audit), ["SENTINEL"], "the audit entries");
});

Deno.test("schemaGate: an unknown key rejects the record (fail), by position: neither the key nor the value", async () => {
  await using dir = await withTmpDir();
  const loads: unknown[] = [];
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [{
        patron_token: "t1",
        item_id: "i1",
        loan: { due: "d", branch: "b", shelf_note: "SENTINEL-N" },
        extra_note: "SENTINEL-X",
      }],
    }),
    gate: schemaGate({ after: ["extract"], schema: Checkout }),
    cp: privacyCheckpoint({ after: ["gate"] }),
    load: task({ after: ["cp"], run: (ctx) => loads.push(ctx.inputs.cp) }),
  });
  const t = taskOf(r, "gate");
  assert.equal(t.state, "failed");
  assert.match(t.error!, /\{key 4\}: unexpected field \(1\)/);
  assert.match(t.error!, /loan\.\{key 3\}: unexpected field \(1\)/);
  assertNone(t.error!, ["SENTINEL", "extra_note", "shelf_note"], "the error");
  assertNone(JSON.stringify(r.audit), ["SENTINEL", "extra_note", "shelf_note"], "the audit");
  assert.equal(taskOf(r, "load").state, "upstream_failed");
  assert.equal(loads.length, 0);
});

Deno.test('schemaGate: onInvalid "fail" fails with counts per field and reason, no values', async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [
        { patron_token: "t1", item_id: "i1", loan: { due: "d", branch: "b" } },
        { patron_token: "t2", loan: { due: "d", branch: "b" } },
        { patron_token: "t3", loan: { due: "d", branch: "b" } },
        { patron_token: "t4", item_id: 90210, loan: { due: "SENTINEL-D", branch: 7 } },
      ],
    }),
    gate: schemaGate({ after: ["extract"], schema: Checkout, onInvalid: "fail" }),
  });
  const t = taskOf(r, "gate");
  assert.equal(t.state, "failed");
  assert.match(t.error!, /rejected 3 of 4 records/);
  assert.match(t.error!, /item_id: required \(2\)/);
  assert.match(t.error!, /item_id: expected string, received number \(1\)/);
  assert.match(t.error!, /loan\.branch: expected string, received number \(1\)/);
  assertNone(t.error!, ["SENTINEL", "90210"], "the error");
  const [checked] = auditOf(r, "gate:checked");
  assert.equal(checked?.detail?.rejected, 3);
  assertNone(JSON.stringify(r.audit), ["SENTINEL", "90210"], "the audit entries");
});

Deno.test('schemaGate: onInvalid "quarantine" passes valid records on and writes a value-free quarantine dataset', async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      run: () => [
        { patron_token: "t1", item_id: "i1", loan: { due: "d1", branch: "b" } },
        { patron_token: "t2", item_id: "i2", loan: { due: "d2", branch: "b" }, x: "SENTINEL-1" },
        { patron_token: "t3", item_id: "i3", loan: { due: "d3", branch: "b" } },
        { patron_token: "SENTINEL-2", item_id: 4, loan: { due: "d4", branch: "b" } },
        { patron_token: "t5", item_id: "i5", email: "SENTINEL@example.org", loan: { due: "d5" } },
      ],
    }),
    gate: schemaGate({ after: ["extract"], schema: Checkout, onInvalid: "quarantine" }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  assert.deepEqual(
    (r.outputs.get("gate") as { item_id: string }[]).map((o) => o.item_id),
    ["i1", "i3"],
  );
  const [checked] = auditOf(r, "gate:checked");
  assert.equal(checked?.recordCount, 5);
  assert.equal(checked?.detail?.passed, 2);
  assert.equal(checked?.detail?.rejected, 3);
  assert.equal(checked?.detail?.stripped, 1);
  const [q] = auditOf(r, "gate:quarantined");
  assert.equal(q?.recordCount, 3);
  const file = join(dir.path, q!.detail!.dataset as string);
  const bytes = await Deno.readFile(file);
  const text = new TextDecoder().decode(bytes);
  assertNone(text, ["SENTINEL", "example.org", "d2", "d4", "d5"], "the quarantine file");
  const rows = text.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(rows, [
    { position: 2, issues: [{ path: "{key 4}", reason: "unexpected field" }] },
    { position: 4, issues: [{ path: "item_id", reason: "expected string, received number" }] },
    { position: 5, issues: [{ path: "loan.branch", reason: "required" }] },
  ]);
  assertNone(JSON.stringify(r.audit), ["SENTINEL", "example.org"], "the audit entries");
});

// ---------------------------------------------------------------------------------------------
// privacyCheckpoint

Deno.test("privacyCheckpoint: passes clean tokenized records on to the shared side", async () => {
  await using dir = await withTmpDir();
  const load = sink(["cp"]);
  const r = await run(dir.path, {
    extract: task({
      zone: "enclave",
      outputTags: ["pii:raw"],
      run: () => [
        { patron_id: "P100234", item_id: "i1", note: "returned late", due: "2026-01-20" },
        { patron_id: "P100235", item_id: "i2", note: null, due: "2026-01-21" },
      ],
    }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
      env: KEY_ENV,
    }),
    cp: privacyCheckpoint({
      after: ["tokens"],
      tokenized: ["patron_token"],
      allowFields: ["patron_token", "item_id", "note", "due"],
      detectors: { patronIdPatterns: [/\bP\d{6}\b/] },
    }),
    load: load.spec,
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  assert.deepEqual(load.calls, [[
    { patron_token: hmac(KEY, "P100234"), item_id: "i1", note: "returned late", due: "2026-01-20" },
    { patron_token: hmac(KEY, "P100235"), item_id: "i2", note: null, due: "2026-01-21" },
  ]]);
  const [verdict] = auditOf(r, "checkpoint:verdict");
  assert.equal(verdict?.recordCount, 2);
  assert.equal(verdict?.detail?.passed, true);
});

interface Leak {
  name: string;
  records: Record<string, unknown>[];
  options?: Parameters<typeof privacyCheckpoint>[0];
  tags?: string[];
  /** The check and field the message must name, with the count. */
  expect: RegExp;
  /** Values that must appear nowhere. */
  values: string[];
}

const SAFE_TOKEN = "a".repeat(64);
const LEAKS: Leak[] = [
  {
    name: "a raw value in a tokenized field",
    records: [{ patron_token: SAFE_TOKEN }, { patron_token: "RAWPATRON77" }],
    options: { tokenized: ["patron_token"] },
    expect: /tokenized: patron_token \(1\)/,
    values: ["RAWPATRON77"],
  },
  {
    name: "a field outside allowFields",
    records: [{ item_id: "i1", shelf: "SHELF-SENTINEL" }, { item_id: "i2", shelf: "x" }],
    options: { allowFields: ["item_id"] },
    // "shelf" is declared nowhere: reported by position, never by name.
    expect: /allowed_fields: \{key 2\} \(2\)/,
    values: ["SHELF-SENTINEL"],
  },
  {
    name: "an e-mail address in a note",
    records: [{ note: "write to jo.sentinel@example.org please" }, { note: "fine" }],
    expect: /detector:email: note \(1\)/,
    values: ["jo.sentinel", "example.org"],
  },
  {
    name: "a phone number",
    records: [{ note: "call (555) 867-5309 after 5" }],
    expect: /detector:phone: note \(1\)/,
    values: ["867-5309", "555"],
  },
  {
    name: "a 14-digit library barcode",
    records: [{ ref: "card 21234000567890" }, { ref: "31234000567891" }],
    expect: /detector:barcode: ref \(2\)/,
    values: ["21234000567890", "31234000567891"],
  },
  {
    name: "a configured patron-id pattern",
    records: [{ note: "renewed by P123456 at desk" }],
    options: { detectors: { patronIdPatterns: [/\bP\d{6}\b/] } },
    expect: /detector:patron_id: note \(1\)/,
    values: ["P123456"],
  },
  {
    name: "a dob field",
    records: [{ item_id: "i1", dob: "1987-03-14" }],
    expect: /detector:birth_date_field: dob \(1\)/,
    values: ["1987-03-14"],
  },
  {
    name: "an upstream output tagged pii:raw",
    records: [{ item_id: "i1" }],
    tags: ["pii:raw"],
    expect: /upstream_tag: pii:raw \(1\)/,
    values: [],
  },
];

for (const leak of LEAKS) {
  Deno.test(`privacyCheckpoint: ${leak.name} fails the checkpoint; downstream upstream_failed and never run`, async () => {
    await using dir = await withTmpDir();
    const load = sink(["cp"]);
    const r = await run(dir.path, {
      extract: task({
        zone: "enclave",
        ...(leak.tags ? { outputTags: leak.tags } : {}),
        run: () => leak.records,
      }),
      cp: privacyCheckpoint({
        after: ["extract"],
        allowFields: [...new Set(leak.records.flatMap((r) => Object.keys(r)))],
        ...(leak.options ?? {}),
      }),
      load: load.spec,
    });
    assert.equal(r.state, "failed");
    const cp = taskOf(r, "cp");
    assert.equal(cp.state, "failed");
    assert.equal(cp.attempts, 1, "fails closed at once, no retry");
    assert.match(cp.error!, /^Privacy checkpoint failed: /);
    assert.match(cp.error!, leak.expect);
    assertNone(cp.error!, leak.values, "the error");
    assert.equal(taskOf(r, "load").state, "upstream_failed");
    assert.equal(load.calls.length, 0, "the downstream run was never called");
    assert.ok(!r.outputs.has("cp"), "the checkpoint has no output");
    const [verdict] = auditOf(r, "checkpoint:verdict", "cp");
    assert.equal(verdict?.detail?.passed, false);
    const violations = verdict?.detail?.violations as { check: string; field: string }[];
    assert.ok(violations.length > 0);
    assertNone(JSON.stringify(r.audit), leak.values, "the audit entries");
  });
}

Deno.test("privacyCheckpoint: a tokenize output tagged pii:raw upstream of the checkpoint is refused even when the records are clean", async () => {
  await using dir = await withTmpDir();
  const load = sink(["cp"]);
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => [{ patron_id: "P1" }] }),
    tokens: {
      ...tokenize({ after: ["extract"], fields: ["patron_id"], env: KEY_ENV }),
      outputTags: ["PII:RAW"],
    },
    cp: privacyCheckpoint({
      after: ["tokens"],
      tokenized: ["patron_id"],
      allowFields: ["patron_id"],
    }),
    load: load.spec,
  });
  assert.equal(taskOf(r, "cp").state, "failed");
  assert.match(taskOf(r, "cp").error!, /upstream_tag: pii:raw/);
  assert.equal(load.calls.length, 0);
});

for (const backend of BACKENDS) {
  Deno.test(`privacyCheckpoint: the checkpoint's output is stored, enclave outputs are not [${backend}]`, async () => {
    const store = await testStore(backend, "privacy_ops");
    try {
      const raws = ["SENTINEL-P-4401", "SENTINEL-P-4402"];
      const r = await run(store.home, {
        extract: task({
          zone: "enclave",
          outputTags: ["pii:raw"],
          run: () => raws.map((p, i) => ({ patron_id: p, item_id: `i${i}`, email: `${p}@x.org` })),
        }),
        tokens: tokenize({
          after: ["extract"],
          fields: ["patron_id"],
          rename: { patron_id: "patron_token" },
          env: KEY_ENV,
        }),
        gate: schemaGate({
          after: ["tokens"],
          schema: z.object({ patron_token: z.string(), item_id: z.string() }),
        }),
        cp: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),
        load: task({ after: ["cp"], run: (ctx) => ({ n: (ctx.inputs.cp as unknown[]).length }) }),
      }, { store });
      assert.equal(r.state, "success", JSON.stringify(r.tasks));
      const rows = await store.client.query<
        { task_id: string; zone: string; output_kind: string | null; output: unknown }
      >(
        "SELECT task_id, zone, output_kind, output FROM task_instances WHERE run_id = $1",
        [r.runId],
      );
      const by = Object.fromEntries(rows.map((row) => [row.task_id, row]));
      for (const id of ["extract", "tokens", "gate"]) {
        assert.equal(by[id]?.zone, "enclave", id);
        assert.equal(by[id]?.output_kind, "enclave", id);
        assert.equal(by[id]?.output, null, id);
      }
      assert.equal(by.cp?.output_kind, "json");
      const stored = typeof by.cp?.output === "string"
        ? JSON.parse(by.cp.output as string)
        : by.cp?.output;
      assert.deepEqual(
        stored,
        raws.map((p, i) => ({
          patron_token: hmac(KEY, p),
          item_id: `i${i}`,
        })),
      );
      assert.equal(by.load?.output_kind, "json");
      const dump = JSON.stringify(
        await store.client.query("SELECT * FROM task_instances"),
      ) + JSON.stringify(await store.client.query("SELECT * FROM audit_log")) +
        JSON.stringify(await store.client.query("SELECT * FROM dag_runs"));
      assertNone(dump, ["SENTINEL", "x.org"], "the state store");
    } finally {
      await store.close();
    }
  });
}
