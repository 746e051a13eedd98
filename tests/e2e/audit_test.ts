/**
 * The audit trail through the CLI, as an operator and an auditor use it: runs leave signed
 * checkpoints; `audit export --checkpoints` and `--public-key` give an auditor what they need to
 * verify from outside; deleting the newest entries (head moved, triggers off), or the whole state
 * store, fails `audit verify` and the compliance report, also when it happens during a run.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { BACKENDS, notePostgresSkipped, TEST_DATABASE_URL } from "../test_utils.ts";
import {
  assertExit,
  oneJson,
  query,
  spawn,
  waitForFile,
  type World,
  world,
  writeDag,
} from "./helpers.ts";

notePostgresSkipped();

const KEY = "carrel-audit-e2e-key-0123456789abcdef0123";

async function seed(w: World): Promise<void> {
  await writeDag(
    w,
    "aud",
    `export default defineDag({
  id: "aud",
  schedule: "@daily",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    a: task({ run: async (ctx) => { await mark(ctx); return 1; } }),
    b: task({ after: ["a"], run: async (ctx) => { await mark(ctx); return 2; } }),
  },
});`,
  );
  for (const date of ["2026-01-05", "2026-01-06"]) {
    assertExit(await w.run(["dags", "run", "aud", "--date", date]), 0);
  }
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

/** Deletes the global chain's newest entries and moves its head to match, triggers off. */
async function truncateGlobal(w: World, keep: number): Promise<void> {
  const statements = [
    "ALTER TABLE audit_log DISABLE TRIGGER USER",
    "ALTER TABLE audit_chains DISABLE TRIGGER USER",
    `DELETE FROM audit_log WHERE chain = 'global' AND pos > ${keep}`,
    `UPDATE audit_chains SET pos = ${keep},
       hash = (SELECT hash FROM audit_log WHERE chain = 'global' AND pos = ${keep})
     WHERE chain = 'global'`,
    "ALTER TABLE audit_log ENABLE TRIGGER USER",
    "ALTER TABLE audit_chains ENABLE TRIGGER USER",
  ];
  for (const s of statements) await query(w, s);
}

for (const backend of BACKENDS) {
  Deno.test(`audit cli: runs leave signed checkpoints; an auditor verifies with the exported ones; a truncated tail fails [${backend}]`, async () => {
    await using w = await world(backend, "audit_cli");
    await seed(w);
    const verify = await w.run(["audit", "verify"]);
    assertExit(verify, 0);
    assert.match(verify.stdout, /Audit chain intact: \d+ entries in 3 chains/);
    assert.match(verify.stdout, /signed checkpoints? verified, the latest of/);
    assert.ok(!verify.stdout.includes("Warning"), verify.stdout);

    // What an auditor takes away.
    const exported = await w.run(["audit", "export", "--checkpoints"]);
    assertExit(exported, 0);
    const checkpoints = lines(exported.stdout).map((l) => JSON.parse(l));
    assert.ok(checkpoints.length >= 2, exported.stdout);
    assert.ok(checkpoints.every((c) => c.type === "carrel.audit.checkpoint" && c.sig));
    const pub = await w.run(["audit", "export", "--public-key"]);
    assertExit(pub, 0);
    const jwk = JSON.parse(pub.stdout);
    assert.equal(jwk.crv, "Ed25519");
    assert.ok(!("d" in jwk), "the private key is not exported");
    assert.equal(jwk.kid, checkpoints[0].keyId);
    const cpFile = join(w.dir, "auditor-checkpoints.jsonl");
    const keyFile = join(w.dir, "auditor-key.jwk");
    await Deno.writeTextFile(cpFile, exported.stdout);
    await Deno.writeTextFile(keyFile, pub.stdout);
    // The key on disk is private to its owner.
    const info = await Deno.stat(join(w.home, "audit", "signing_key.jwk"));
    assert.equal(info.mode! & 0o777, 0o600);
    assertExit(
      await w.run(["audit", "verify", "--checkpoints", cpFile, "--public-key", keyFile]),
      0,
    );
    assertExit(await w.run(["audit", "verify", "--checkpoints", cpFile]), 2);

    // The newest global entries go, the head moved to match: caught by the checkpoints.
    const latest = checkpoints.reduce((a, c) => c.global.pos > a.global.pos ? c : a);
    await truncateGlobal(w, latest.global.pos - 2);
    const after = await w.run(["audit", "verify", "--json"]);
    assertExit(after, 1);
    const verdict = oneJson(after);
    assert.equal(verdict.ok, false);
    assert.equal(verdict.chain, "global");
    assert.equal(verdict.pos, latest.global.pos - 1, "the first missing entry is named");
    const text = await w.run(["audit", "verify"]);
    assertExit(text, 1);
    assert.match(
      text.stdout,
      new RegExp(`Audit chain broken at the global chain, position ${latest.global.pos - 1}: `),
    );
    // The auditor's copy says the same, and the compliance report fails AU-9.
    assertExit(
      await w.run(["audit", "verify", "--checkpoints", cpFile, "--public-key", keyFile]),
      1,
    );
    const report = await w.run(["compliance", "report", "--json"], {
      PII_HMAC_KEY: KEY,
      CARREL_RETENTION: "90d",
    });
    assertExit(report, 1);
    const failed = oneJson(report).items.filter((i: { required: boolean; status: string }) =>
      i.required && i.status === "fail"
    ).map((i: { id: string }) => i.id);
    assert.deepEqual(failed, ["audit.chain", "audit.checkpoints"]);
    // A later command does not sign over the hole.
    const next = await w.run(["dags", "run", "aud", "--date", "2026-01-07"]);
    assertExit(next, 0);
    assertExit(await w.run(["audit", "verify"]), 1);
  });
}

Deno.test("audit cli: a deleted embedded store fails audit verify and the compliance report; a deliberate restart is possible [pglite]", async () => {
  await using w = await world("pglite", "audit_vanished");
  await seed(w);
  const good = { PII_HMAC_KEY: KEY, CARREL_RETENTION: "90d" };
  assertExit(await w.run(["compliance", "report"], good), 0);
  await Deno.remove(join(w.home, "state"), { recursive: true });

  const verify = await w.run(["audit", "verify"]);
  assertExit(verify, 1);
  assert.match(verify.stdout, /the state store was replaced, deleted or re-created since/);
  const report = await w.run(["compliance", "report", "--json"], good);
  assertExit(report, 1);
  const chain = oneJson(report).items.find((i: { id: string }) => i.id === "audit.chain");
  assert.equal(chain.status, "fail");
  assert.match(chain.detail, /replaced, deleted or re-created/);
  // Nothing else signs over it until someone decides to.
  assertExit(await w.run(["runs", "list"]), 0);
  assertExit(await w.run(["audit", "verify"]), 1);
  const restart = await w.run(["audit", "checkpoint", "--restart"]);
  assertExit(restart, 0);
  assert.match(restart.stdout, /Audit checkpoint signed/);
  assertExit(await w.run(["audit", "verify"]), 0);
});

Deno.test("audit cli: the embedded store deleted during a run is noticed [pglite]", async () => {
  await using w = await world("pglite", "audit_midrun");
  const started = join(w.dir, "started");
  const release = join(w.dir, "release");
  await writeDag(
    w,
    "slow",
    `export default defineDag({
  id: "slow",
  schedule: null,
  tasks: {
    wait: task({ run: async (ctx) => {
      touch(${JSON.stringify(started)});
      while (!exists(${JSON.stringify(release)})) await sleep(20, ctx.signal);
      return 1;
    } }),
    after: task({ after: ["wait"], run: () => 2 }),
  },
});`,
  );
  const run = spawn(w, ["dags", "run", "slow"]);
  await waitForFile(run, started);
  await Deno.remove(join(w.home, "state"), { recursive: true });
  await Deno.writeTextFile(release, "go");
  await run.output;
  const verify = await w.run(["audit", "verify"]);
  assertExit(verify, 1);
  assert.match(verify.stdout, /replaced, deleted or re-created/);
});

Deno.test({
  name:
    "audit cli: a PostgreSQL store dropped and re-created under the same name fails audit verify [postgres]",
  ignore: !TEST_DATABASE_URL,
  fn: async () => {
    await using w = await world("postgres", "audit_recreated");
    await seed(w);
    assertExit(await w.run(["audit", "verify"]), 0);
    const name = new URL(w.dbUrl!).pathname.slice(1);
    const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`DROP DATABASE ${name} WITH (FORCE)`);
      await admin.unsafe(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    const verify = await w.run(["audit", "verify"]);
    assertExit(verify, 1);
    assert.match(verify.stdout, /replaced, deleted or re-created/);
  },
});
