/**
 * The audit trail under attack, on PGlite and PostgreSQL: per-run hash chains sealed into the
 * global chain, signed checkpoints outside the database, retention anchors. Every kind of
 * tampering (with the triggers disabled, as a superuser can) is caught and named; the trail that
 * was not tampered with verifies. On PostgreSQL, appends of different runs do not wait on each
 * other.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { type AuditEntry, auditHash, GENESIS_HASH, GLOBAL_CHAIN } from "../../core/audit.ts";
import { checkpointPaths, CheckpointSigner } from "../../core/audit_checkpoint.ts";
import { writeCheckpoint } from "../../core/audit_checkpointer.ts";
import { type AuditVerdict, verifyAudit } from "../../core/audit_verify.ts";
import { migrationFiles } from "../../core/state/migrate.ts";
import { auditPayload } from "../../core/state/audit_log.ts";
import { legacyAuditPayload } from "../../fixtures/legacy_audit.ts";
import { PgliteClient } from "../../core/state/sql_client.ts";
import { SqlStateStore } from "../../core/state/sql_store.ts";
import {
  BACKENDS,
  notePostgresSkipped,
  TEST_DATABASE_URL,
  testStore,
  waitFor,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

type Store = Awaited<ReturnType<typeof testStore>>;

const RUN_A = "aud@2026-01-01T00:00:00Z";
const RUN_B = "aud@2026-01-02T00:00:00Z";
const RUN_OPEN = "aud@2026-01-03T00:00:00Z";

const runEntry = (runId: string, operation: string, status: string, taskId?: string) => ({
  correlationId: runId,
  dagId: "aud",
  ...(taskId ? { taskId } : {}),
  operation,
  status,
});

/** Two finished runs (sealed when they ended), one still running, and a few global entries. */
async function seed(store: Store): Promise<void> {
  await store.appendAudit([{ correlationId: "keys", operation: "keys:init", status: "success" }]);
  for (const run of [RUN_A, RUN_B]) {
    await store.appendAudit([runEntry(run, "run:start", "running")]);
    for (const t of ["extract", "load"]) {
      await store.appendAudit([runEntry(run, "task:start", "running", t)]);
      await store.appendAudit([runEntry(run, "task:success", "success", t)]);
    }
    await store.appendAudit([runEntry(run, "run:end", "success")]);
  }
  await store.appendAudit([{
    correlationId: "dag:aud",
    dagId: "aud",
    operation: "dag:pause",
    status: "success",
  }]);
  await store.appendAudit([
    runEntry(RUN_OPEN, "run:start", "running"),
    runEntry(RUN_OPEN, "task:start", "running", "extract"),
  ]);
}

async function entries(store: Store, chain: string): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of store.iterateAuditChains({ chain })) out.push(e);
  return out;
}

async function at(store: Store, chain: string, pos: number): Promise<AuditEntry> {
  const found = (await entries(store, chain)).find((e) => e.pos === pos);
  assert.ok(found, `no entry ${pos} in ${chain}`);
  return found;
}

/** Runs SQL with the audit triggers off, as a superuser can. */
async function tamper(store: Store, statements: [string, unknown[]?][]): Promise<void> {
  await store.client.transaction(async (tx) => {
    await tx.exec("ALTER TABLE audit_log DISABLE TRIGGER USER");
    await tx.exec("ALTER TABLE audit_chains DISABLE TRIGGER USER");
    await tx.exec("ALTER TABLE audit_store DISABLE TRIGGER USER");
    for (const [text, params] of statements) await tx.query(text, params ?? []);
    await tx.exec("ALTER TABLE audit_log ENABLE TRIGGER USER");
    await tx.exec("ALTER TABLE audit_chains ENABLE TRIGGER USER");
    await tx.exec("ALTER TABLE audit_store ENABLE TRIGGER USER");
  });
}

/** Rewrites a chain from `fromPos` on, so that every hash recomputes and the head matches. */
async function rewrite(
  store: Store,
  chain: string,
  fromPos: number,
  change: (e: AuditEntry) => AuditEntry,
): Promise<void> {
  const all = await entries(store, chain);
  const statements: [string, unknown[]][] = [];
  let prev = all.find((e) => e.pos === fromPos - 1)?.hash ?? GENESIS_HASH;
  for (const original of all.filter((e) => e.pos >= fromPos)) {
    const e = { ...change(original), prevHash: prev };
    const hash = auditHash(e);
    statements.push([
      "UPDATE audit_log SET status = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
      [e.status, prev, hash, e.seq],
    ]);
    prev = hash;
  }
  statements.push(["UPDATE audit_chains SET hash = $1 WHERE chain = $2", [prev, chain]]);
  await tamper(store, statements);
}

function broken(verdict: AuditVerdict) {
  assert.equal(verdict.ok, false, `expected a break: ${JSON.stringify(verdict)}`);
  return verdict as Extract<AuditVerdict, { ok: false }>;
}

function intact(verdict: AuditVerdict) {
  assert.equal(verdict.ok, true, `expected intact: ${JSON.stringify(verdict)}`);
  return verdict as Extract<AuditVerdict, { ok: true }>;
}

for (const backend of BACKENDS) {
  const test = (name: string, fn: (store: Store, home: string) => Promise<void>) =>
    Deno.test({
      name: `audit: ${name} [${backend}]`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        await using home = await withTmpDir("carrel-audit-home-");
        const store = await testStore(backend, "audit");
        try {
          await fn(store, home.path);
        } finally {
          await store.close();
        }
      },
    });

  test("runs get their own chains; a run's end seals it into the global chain", async (store) => {
    await seed(store);
    const a = await entries(store, RUN_A);
    assert.deepEqual(a.map((e) => [e.pos, e.operation]), [
      [1, "run:start"],
      [2, "task:start"],
      [3, "task:success"],
      [4, "task:start"],
      [5, "task:success"],
      [6, "run:end"],
    ]);
    assert.equal(a[0]!.prevHash, GENESIS_HASH);
    const global = await entries(store, GLOBAL_CHAIN);
    assert.deepEqual(global.map((e) => e.operation), [
      "keys:init",
      "audit:seal",
      "audit:seal",
      "dag:pause",
    ]);
    assert.deepEqual(global[1]!.detail, { chains: [{ chain: RUN_A, pos: 6, hash: a[5]!.hash }] });
    assert.equal(global[1]!.correlationId, RUN_A, "the seal is exported with its run");
    // The head rows match the chains; the open run is not sealed yet.
    const heads = new Map((await store.auditHeads()).map((h) => [h.chain, h]));
    assert.deepEqual([...heads.keys()].sort(), [RUN_A, RUN_B, RUN_OPEN, GLOBAL_CHAIN].sort());
    assert.equal(heads.get(RUN_A)!.hash, a[5]!.hash);
    const verdict = intact(await verifyAudit(store));
    assert.equal(verdict.entries, 6 + 6 + 4 + 2);
    assert.equal(verdict.chains, 4);
    assert.equal(verdict.head, global[3]!.hash);
    // Row numbers follow append order within each chain.
    for (const chain of [RUN_A, GLOBAL_CHAIN]) {
      const seqs = (await entries(store, chain)).map((e) => e.seq);
      assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
    }
  });

  test("an edited entry is named", async (store) => {
    await seed(store);
    const target = await at(store, RUN_A, 3);
    await tamper(store, [["UPDATE audit_log SET status = 'failed' WHERE seq = $1", [target.seq]]]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [target.seq, RUN_A, 3]);
    assert.equal(v.reason, "its hash does not match its content");
  });

  test("an edited chain with every hash recomputed is caught by the run's seal", async (store) => {
    await seed(store);
    await rewrite(store, RUN_A, 3, (e) => e.pos === 3 ? { ...e, status: "failed" } : e);
    const v = broken(await verifyAudit(store));
    const sealed = await at(store, RUN_A, 6);
    assert.deepEqual([v.seq, v.chain, v.pos], [sealed.seq, RUN_A, 6]);
    assert.match(v.reason, /does not match the seal in global entry \d+: rewritten/);
  });

  test("an entry moved to another chain is named", async (store) => {
    await seed(store);
    const target = await at(store, RUN_B, 2);
    await tamper(store, [[
      "UPDATE audit_log SET correlation_id = $1 WHERE seq = $2",
      [RUN_A, target.seq],
    ]]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [target.seq, RUN_B, 2]);
    assert.match(v.reason, /correlation id puts it in chain/);
  });

  test("a deleted entry is named at the next one", async (store) => {
    await seed(store);
    const gone = await at(store, RUN_A, 2);
    const next = await at(store, RUN_A, 3);
    await tamper(store, [["DELETE FROM audit_log WHERE seq = $1", [gone.seq]]]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [next.seq, RUN_A, 3]);
    assert.equal(v.reason, "entries 2 to 2 are missing");
  });

  test("two entries swapped in their chain are named", async (store) => {
    await seed(store);
    const two = await at(store, RUN_B, 2);
    const three = await at(store, RUN_B, 3);
    await tamper(store, [
      ["UPDATE audit_log SET pos = -1 WHERE seq = $1", [two.seq]],
      ["UPDATE audit_log SET pos = 2 WHERE seq = $1", [three.seq]],
      ["UPDATE audit_log SET pos = 3 WHERE seq = $1", [two.seq]],
    ]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [three.seq, RUN_B, 2]);
    assert.equal(v.reason, "its hash does not match its content");
  });

  test("two entries swapped in append order (row numbers) are named", async (store) => {
    await seed(store);
    const two = await at(store, RUN_B, 2);
    const three = await at(store, RUN_B, 3);
    await tamper(store, [
      ["UPDATE audit_log SET seq = -1 WHERE seq = $1", [two.seq]],
      ["UPDATE audit_log SET seq = $1 WHERE seq = $2", [two.seq, three.seq]],
      ["UPDATE audit_log SET seq = $1 WHERE seq = -1", [three.seq]],
    ]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [two.seq, RUN_B, 3]);
    assert.match(v.reason, /out of order/);
  });

  test("a run chain's tail deleted with its head moved is caught by the seal", async (store) => {
    await seed(store);
    const five = await at(store, RUN_A, 5);
    await tamper(store, [
      ["DELETE FROM audit_log WHERE chain = $1 AND pos = 6", [RUN_A]],
      ["UPDATE audit_chains SET pos = 5, hash = $1 WHERE chain = $2", [five.hash, RUN_A]],
    ]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [null, RUN_A, 6]);
    assert.match(v.reason, /entry 6 is missing: global entry \d+ sealed the chain there/);
  });

  test("a whole sealed run deleted, head row and all, is caught by its seal", async (store) => {
    await seed(store);
    await tamper(store, [
      ["DELETE FROM audit_log WHERE chain = $1", [RUN_B]],
      ["DELETE FROM audit_chains WHERE chain = $1", [RUN_B]],
    ]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.chain, v.pos], [RUN_B, 6]);
  });

  test("a tail deleted without moving the head is caught by the head", async (store) => {
    await seed(store);
    await tamper(store, [["DELETE FROM audit_log WHERE chain = $1 AND pos = 2", [RUN_OPEN]]]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [null, RUN_OPEN, 2]);
    assert.match(
      v.reason,
      /entries 2 to 2 were removed: the chain does not reach its recorded head/,
    );
  });

  test("a deleted prefix without a retention anchor is named", async (store) => {
    await seed(store);
    const first = await at(store, RUN_A, 3);
    await tamper(store, [["DELETE FROM audit_log WHERE chain = $1 AND pos <= 2", [RUN_A]]]);
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [first.seq, RUN_A, 3]);
    assert.equal(v.reason, "entries before it were deleted without an audit:anchor entry");
  });

  test("the retention switch deletes only what is older than its cutoff, and never silently", async (store) => {
    await seed(store);
    const oldest = await at(store, RUN_A, 1);
    // The old switch of the single-chain design no longer opens anything.
    await assert.rejects(
      store.client.transaction(async (tx) => {
        await tx.query("SELECT set_config('carrel.audit_retention', 'on', true)");
        await tx.query("DELETE FROM audit_log WHERE seq = $1", [oldest.seq]);
      }),
      /append-only: DELETE rejected/,
    );
    // A cutoff before the entry, or in the future, does not let it go.
    for (const cutoff of ["2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z"]) {
      await assert.rejects(
        store.client.transaction(async (tx) => {
          await tx.query("SELECT set_config('carrel.audit_retention_before', $1, true)", [cutoff]);
          await tx.query("DELETE FROM audit_log WHERE seq = $1", [oldest.seq]);
        }),
        /append-only: DELETE rejected/,
      );
    }
    // Heads only move forward, even for a role with UPDATE on them.
    await assert.rejects(
      store.client.query("UPDATE audit_chains SET pos = pos - 1 WHERE chain = $1", [RUN_A]),
      /heads only move forward/,
    );
    await assert.rejects(
      store.client.query("DELETE FROM audit_chains WHERE chain = $1", [RUN_A]),
      /heads only move forward/,
    );
    // Someone who turns the switch on by hand (entries older than now) leaves no anchor: caught.
    await store.client.transaction(async (tx) => {
      await tx.query("SELECT set_config('carrel.audit_retention_before', now()::text, true)");
      await tx.query("DELETE FROM audit_log WHERE chain = $1 AND pos = 1", [RUN_A]);
    });
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.chain, v.pos], [RUN_A, 2]);
    assert.equal(v.reason, "entries before it were deleted without an audit:anchor entry");
  });

  test(
    "retention leaves anchors the trail still verifies by, purge after purge",
    async (store, home) => {
      await seed(store);
      assert.ok("written" in await writeCheckpoint(store, home));
      const firstCut = new Date(Date.now() + 1);
      await waitFor(
        () => Date.now() > firstCut.getTime() + 1,
        5_000,
        "the clock to pass the cutoff",
      );
      // The open run goes on after the cutoff: its chain is cut, not emptied.
      await store.appendAudit([runEntry(RUN_OPEN, "task:success", "success", "extract")]);
      const deleted = await store.purgeAudit(firstCut, { dryRun: false, correlationId: "purge:1" });
      assert.ok(deleted > 10, `deleted ${deleted}`);
      assert.deepEqual((await entries(store, RUN_OPEN)).map((e) => e.pos), [3]);
      assert.deepEqual(await entries(store, RUN_A), []);
      intact(await verifyAudit(store, { home }));
      // More entries, a second purge that deletes the first anchor: still intact, and the open
      // run's cut is carried into the new anchor.
      await store.appendAudit([runEntry(RUN_OPEN, "task:start", "running", "load")]);
      assert.ok("written" in await writeCheckpoint(store, home));
      const [firstAnchor] = (await entries(store, GLOBAL_CHAIN)).filter((e) =>
        e.operation === "audit:anchor"
      );
      const secondCut = new Date(Date.now() + 1);
      await waitFor(
        () => Date.now() > secondCut.getTime() + 1,
        5_000,
        "the clock to pass the cutoff",
      );
      await store.appendAudit([runEntry(RUN_OPEN, "task:success", "success", "load")]);
      await store.purgeAudit(secondCut, { dryRun: false, correlationId: "purge:2" });
      const global = await entries(store, GLOBAL_CHAIN);
      assert.ok(!global.some((e) => e.seq === firstAnchor!.seq), "the first anchor was purged");
      const anchor = global.find((e) => e.operation === "audit:anchor")!;
      assert.deepEqual(
        (anchor.detail!.chains as { chain: string }[]).map((c) => c.chain).sort(),
        [GLOBAL_CHAIN, RUN_OPEN].sort(),
      );
      const v = intact(await verifyAudit(store, { home }));
      assert.equal(v.checkpoints.verified, 2);
    },
  );

  test(
    "the global chain's tail deleted with its head moved is caught by the signed checkpoint",
    async (store, home) => {
      await seed(store);
      assert.ok("written" in await writeCheckpoint(store, home));
      const before = intact(await verifyAudit(store, { home }));
      assert.equal(before.checkpoints.verified, 1);
      const global = await entries(store, GLOBAL_CHAIN);
      const keep = global[global.length - 3]!;
      await tamper(store, [
        ["DELETE FROM audit_log WHERE chain = 'global' AND pos > $1", [keep.pos]],
        ["UPDATE audit_chains SET pos = $1, hash = $2 WHERE chain = 'global'", [
          keep.pos,
          keep.hash,
        ]],
      ]);
      // The chains alone look fine now; only the checkpoint outside the database tells.
      intact(await verifyAudit(store));
      const v = broken(await verifyAudit(store, { home }));
      assert.deepEqual([v.seq, v.chain, v.pos], [null, GLOBAL_CHAIN, keep.pos + 1]);
      assert.match(
        v.reason,
        new RegExp(
          `entries ${
            keep.pos + 1
          } to ${global.length} are missing, but the signed checkpoint of .* recorded them`,
        ),
      );
      // And a checkpoint writer refuses to sign over the hole.
      const outcome = await writeCheckpoint(store, home);
      assert.ok("refused" in outcome);
      assert.match(outcome.refused, /broken at the global chain, position \d+/);
    },
  );

  test("a rewritten global chain does not match the signed checkpoint", async (store, home) => {
    await seed(store);
    assert.ok("written" in await writeCheckpoint(store, home));
    await rewrite(store, GLOBAL_CHAIN, 1, (e) => e.pos === 1 ? { ...e, status: "failed" } : e);
    intact(await verifyAudit(store));
    const v = broken(await verifyAudit(store, { home }));
    assert.equal(v.chain, GLOBAL_CHAIN);
    assert.match(v.reason, /does not match the signed checkpoint of .*: the chain was rewritten/);
  });

  test("a forged or altered checkpoint is refused", async (store, home) => {
    await seed(store);
    const outcome = await writeCheckpoint(store, home);
    assert.ok("written" in outcome);
    const file = checkpointPaths(home).file;
    const good = await Deno.readTextFile(file);
    // Altered: a later position under the old signature.
    const altered = { ...outcome.written, global: { ...outcome.written.global, pos: 99 } };
    await Deno.writeTextFile(file, good + JSON.stringify(altered) + "\n");
    let v = broken(await verifyAudit(store, { home }));
    assert.match(v.reason, /line 2 .*: its signature does not verify: it was altered or forged/);
    // Forged: signed by a key the verifier does not trust.
    await using other = await withTmpDir("carrel-audit-other-");
    const rogue = (await CheckpointSigner.open(checkpointPaths(other.path).key, { create: true }))!;
    const { sig: _sig, keyId: _keyId, type: _type, v: _v, ...body } = outcome.written;
    const forged = await rogue.sign({ ...body, global: { ...body.global, pos: 99 } });
    await Deno.writeTextFile(file, good + JSON.stringify(forged) + "\n");
    v = broken(await verifyAudit(store, { home }));
    assert.match(v.reason, /signed by key [0-9a-f]{16}, which is not a trusted key/);
    // Not a checkpoint at all.
    await Deno.writeTextFile(file, good + '{"hello":1}\n');
    v = broken(await verifyAudit(store, { home }));
    assert.match(v.reason, /line 2 of .* is not a checkpoint/);
    await Deno.writeTextFile(file, good);
    intact(await verifyAudit(store, { home }));
  });

  test(
    "an auditor verifies with an exported checkpoint file and public key",
    async (store, home) => {
      await seed(store);
      const outcome = await writeCheckpoint(store, home);
      assert.ok("written" in outcome);
      await using auditor = await withTmpDir("carrel-auditor-");
      const signer = (await CheckpointSigner.open(checkpointPaths(home).key, { create: false }))!;
      const publicKey = join(auditor.path, "carrel.pub.jwk");
      const checkpoints = join(auditor.path, "checkpoints.jsonl");
      await Deno.writeTextFile(publicKey, JSON.stringify(signer.publicJwk));
      await Deno.copyFile(outcome.file, checkpoints);
      assert.ok(!(await Deno.readTextFile(publicKey)).includes('"d"'), "no private part exported");
      const v = intact(await verifyAudit(store, { checkpoints, publicKey }));
      assert.equal(v.checkpoints.verified, 1);
      // Someone with the machine deletes the local checkpoints and the newest entries: the
      // auditor's copy still tells.
      await Deno.remove(outcome.file);
      const global = await entries(store, GLOBAL_CHAIN);
      const keep = global[0]!;
      await tamper(store, [
        ["DELETE FROM audit_log WHERE chain = 'global' AND pos > 1"],
        ["UPDATE audit_chains SET pos = 1, hash = $1 WHERE chain = 'global'", [keep.hash]],
      ]);
      broken(await verifyAudit(store, { checkpoints, publicKey }));
    },
  );

  test(
    "a deleted checkpoint file is noticed while the store remembers checkpoints",
    async (store, home) => {
      await seed(store);
      assert.ok("written" in await writeCheckpoint(store, home));
      await Deno.remove(checkpointPaths(home).file);
      const v = broken(await verifyAudit(store, { home }));
      assert.match(
        v.reason,
        /holds no checkpoint of this store, but the store records checkpoints/,
      );
      // The writer does not paper over it either.
      const outcome = await writeCheckpoint(store, home);
      assert.ok("refused" in outcome, JSON.stringify(outcome));
      // A deliberate restart starts a new file.
      assert.ok("written" in await writeCheckpoint(store, home, { restart: true }));
      intact(await verifyAudit(store, { home }));
    },
  );

  test("an emptied store fails against its checkpoints", async (store, home) => {
    await seed(store);
    assert.ok("written" in await writeCheckpoint(store, home));
    await tamper(store, [["DELETE FROM audit_log"], ["DELETE FROM audit_chains"]]);
    intact(await verifyAudit(store));
    const v = broken(await verifyAudit(store, { home }));
    assert.match(
      v.reason,
      /the store holds no audit entries, but the signed checkpoint of .* recorded \d+: the store was emptied/,
    );
  });

  test(
    "a replaced store fails against the checkpoints of the one it replaced",
    async (store, home) => {
      await seed(store);
      assert.ok("written" in await writeCheckpoint(store, home));
      // Another store where this one was (same location), with its own identity and a trail of
      // its own that is intact in itself.
      await tamper(store, [
        ["DELETE FROM audit_log"],
        ["DELETE FROM audit_chains"],
        ["DELETE FROM audit_seals"],
        ["UPDATE audit_store SET store_id = $1", [crypto.randomUUID()]],
      ]);
      await store.appendAudit([runEntry(RUN_A, "run:start", "running")]);
      intact(await verifyAudit(store));
      const v = broken(await verifyAudit(store, { home }));
      assert.deepEqual([v.seq, v.chain, v.pos], [null, null, null]);
      assert.match(v.reason, /is of store .* but this store is .*: the state store was replaced/);
      const refused = await writeCheckpoint(store, home);
      assert.ok("refused" in refused);
      assert.match(refused.refused, /audit checkpoint --restart/);
      // After a deliberate replacement, a restart keeps the old file aside and starts anew.
      assert.ok("written" in await writeCheckpoint(store, home, { restart: true }));
      intact(await verifyAudit(store, { home }));
      const kept = [...Deno.readDirSync(join(home, "audit"))].map((e) => e.name).sort();
      assert.equal(kept.filter((n) => /^checkpoints\..+\.jsonl$/.test(n)).length, 1, kept.join());
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Entries written before per-run chains still verify after the migration.

Deno.test("audit: a trail written by the single-chain design migrates and verifies", async () => {
  await using dir = await withTmpDir();
  const client = await PgliteClient.open(join(dir.path, "state"));
  const store = new SqlStateStore(client, join(dir.path, "state"));
  try {
    const files = await migrationFiles();
    await client.exec(`CREATE TABLE carrel_migrations (version integer PRIMARY KEY, name text NOT
      NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    for (const f of files.filter((f) => f.version < 10)) {
      await client.exec(f.sql);
      await client.query("INSERT INTO carrel_migrations (version, name) VALUES ($1, $2)", [
        f.version,
        f.name,
      ]);
    }
    // The version-3 append: one chain, fragments around prev_hash and seq.
    await client.query("SELECT * FROM carrel_audit_append($1::text::jsonb)", [
      legacyAuditPayload([
        runEntry(RUN_A, "run:start", "running"),
        runEntry(RUN_A, "run:end", "success"),
        { correlationId: "keys", operation: "keys:rotate", status: "success", keyVersion: "k2" },
      ]).json,
    ]);
    await store.migrate();
    const migrated = await entries(store as Store, GLOBAL_CHAIN);
    assert.deepEqual(migrated.map((e) => [e.seq, e.pos]), [[1, 1], [2, 2], [3, 3]]);
    intact(await verifyAudit(store));
    // New entries continue: the run's new entries start its own chain, the global chain goes on.
    await store.appendAudit([runEntry(RUN_B, "run:start", "running")]);
    await store.appendAudit([{
      correlationId: "keys",
      operation: "keys:rotate",
      status: "success",
    }]);
    const next = await entries(store as Store, GLOBAL_CHAIN);
    assert.deepEqual(next.map((e) => [e.seq, e.pos]), [[1, 1], [2, 2], [3, 3], [5, 4]]);
    intact(await verifyAudit(store));
    // The old entries are still protected.
    await (store as Store).client.exec("ALTER TABLE audit_log DISABLE TRIGGER USER");
    await client.query("UPDATE audit_log SET status = 'x' WHERE seq = 2");
    const v = broken(await verifyAudit(store));
    assert.deepEqual([v.seq, v.chain, v.pos], [2, GLOBAL_CHAIN, 2]);
  } finally {
    await store.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Concurrency on PostgreSQL: a run's append does not wait for another run's open transaction.

Deno.test({
  name:
    "audit: appends of different runs do not wait on each other; of one run, they do [postgres]",
  ignore: !TEST_DATABASE_URL,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const store = await testStore("postgres", "audit_lock");
    const [{ db }] = await store.client.query<{ db: string }>(
      "SELECT current_database() AS db",
    ) as [{ db: string }];
    const base = new URL(TEST_DATABASE_URL!);
    base.pathname = `/${db}`;
    const holder = postgres(base.toString(), { max: 1, onnotice: () => {} });
    const watcher = postgres(base.toString(), { max: 1, onnotice: () => {} });
    let release!: () => void;
    const released = new Promise<void>((r) => release = r);
    let holding!: () => void;
    const held = new Promise<void>((r) => holding = r);
    try {
      await store.appendAudit([runEntry(RUN_A, "run:start", "running")]);
      await store.appendAudit([runEntry(RUN_B, "run:start", "running")]);
      // A transaction appends to run A and stays open, holding run A's head.
      const open = holder.begin(async (tx) => {
        await tx.unsafe("SELECT * FROM carrel_audit_append($1::text::jsonb)", [
          auditPayload([runEntry(RUN_A, "task:start", "running", "slow")]).json,
        ]);
        holding();
        await released;
      });
      await held;
      const waiting = async () => {
        const [row] = await watcher.unsafe(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        return Number((row as unknown as { n: number }).n) > 0;
      };
      /** Whether `append` completes before any backend is seen waiting for a lock. */
      const race = async (append: Promise<void>) => {
        let settled = false;
        const done = append.then(() => (settled = true, "completed" as const));
        const blocked = waitFor(async () => settled || await waiting(), 20_000, "a lock wait")
          .then(() => settled ? "completed" as const : "blocked" as const);
        return await Promise.race([done, blocked]);
      };
      // Run B's append completes while run A's transaction is open.
      assert.equal(
        await race(store.appendAudit([runEntry(RUN_B, "task:start", "running", "b")])),
        "completed",
      );
      // Run A's own append waits (this is what a single global chain did to every run).
      const sameRun = store.appendAudit([runEntry(RUN_A, "task:start", "running", "a2")]);
      assert.equal(await race(sameRun), "blocked");
      release();
      await open;
      await sameRun;
      intact(await verifyAudit(store));
      assert.deepEqual((await entries(store, RUN_A)).map((e) => e.taskId), [null, "slow", "a2"]);
    } finally {
      release();
      await holder.end();
      await watcher.end();
      await store.close();
    }
  },
});
