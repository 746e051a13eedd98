/**
 * Privacy operations through the CLI, as an operator runs them: retention (`purge`, with
 * `--dry-run` and audit anchors, then `audit verify`, and tampering caught), the keyring
 * (`keys init|status|rotate`, secrets never printed) and `compliance report`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type World, world as e2eWorld } from "../e2e/helpers.ts";
import { join } from "node:path";
import postgres from "postgres";
import { defineDag, executeRun, resolveDag, task } from "../../core/mod.ts";
import { openStore } from "../../core/state/open.ts";
import { PgliteClient } from "../../core/state/sql_client.ts";
import { privacyCheckpoint } from "../../operators/mod.ts";
import {
  BACKENDS,
  cli,
  type CliResult,
  CORE_MOD,
  notePostgresSkipped,
  OPERATORS_MOD,
} from "../test_utils.ts";

notePostgresSkipped();

const KEY = "carrel-ops-test-key-SENTINEL-0123456789abcdef";

/** A world whose key, keyring and retention never leak in from the environment the tests run in. */
function world(backend: "pglite" | "postgres", label: string) {
  return e2eWorld(backend, `privacy-${label}`, {
    env: { PII_HMAC_KEY: "", CARREL_KEYRING: "", CARREL_RETENTION: "", CARREL_DATABASE_URL: "" },
  });
}

function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

function assertExit(r: CliResult, code: number): void {
  assert.equal(r.code, code, show(r));
  assert.ok(!/^\s+at /m.test(r.stderr), `stack trace in stderr:\n${r.stderr}`);
}

// deno-lint-ignore no-explicit-any
function oneJson(r: CliResult): any {
  try {
    return JSON.parse(r.stdout);
  } catch (error) {
    throw new Error(`stdout is not one JSON document (${error}):\n${show(r)}`);
  }
}

// deno-lint-ignore no-explicit-any
function jsonLines(r: CliResult): any[] {
  return r.stdout.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** Runs SQL on the world's store while no CLI process holds it. */
async function withSql(
  w: World,
  fn: (query: (text: string) => Promise<Record<string, unknown>[]>) => Promise<void>,
): Promise<void> {
  if (w.dbUrl) {
    const sql = postgres(w.dbUrl, { max: 1, onnotice: () => {} });
    try {
      await fn((text) => sql.unsafe(text) as Promise<Record<string, unknown>[]>);
    } finally {
      await sql.end();
    }
  } else {
    const client = await PgliteClient.open(join(w.home, "state"));
    try {
      await fn((text) => client.query(text));
    } finally {
      await client.close();
    }
  }
}

const RET_DAG = () =>
  defineDag({
    id: "ret",
    tasks: {
      extract: task({
        zone: "enclave",
        run: (ctx) => [{ item: "i1", day: ctx.logicalDate.toISOString() }],
      }),
      cp: privacyCheckpoint({ after: ["extract"], allowFields: ["item", "day"] }),
      load: task({
        after: ["cp"],
        run: async (ctx) => {
          const out = await ctx.dataset("out");
          await out.writeAll(ctx.inputs.cp as unknown[]);
          return await out.close();
        },
      }),
    },
  });

/** Two finished runs of `ret` (2026-01-05 and 2026-01-06) through the store, in-process. */
async function seedRuns(w: World): Promise<string[]> {
  const store = await openStore({ get: (k) => w.env[k] || undefined });
  const ids: string[] = [];
  try {
    const dag = resolveDag(RET_DAG());
    for (const day of ["2026-01-05", "2026-01-06"]) {
      const start = new Date(`${day}T00:00:00Z`);
      const r = await executeRun({
        dag,
        interval: { start, end: new Date(start.getTime() + 86_400_000) },
        params: {},
        home: w.home,
        store,
      });
      assert.equal(r.state, "success", JSON.stringify(r.tasks));
      ids.push(r.runId);
    }
  } finally {
    await store.close();
  }
  return ids;
}

/** A file or folder under home with an mtime an hour ago (or ahead). */
async function oldEntry(path: string, dir: boolean, offsetMs = -3_600_000): Promise<string> {
  if (dir) {
    await Deno.mkdir(path, { recursive: true });
    await Deno.writeTextFile(join(path, "scratch.bin"), "x");
  } else {
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeTextFile(path, "old log line\n");
  }
  const t = new Date(Date.now() + offsetMs);
  await Deno.utime(path, t, t);
  return path;
}

// ---------------------------------------------------------------------------------------------
// purge

for (const backend of BACKENDS) {
  Deno.test(`purge: --dry-run deletes nothing, then purge deletes runs, workspaces, scratch, tmp and old logs; audit entries go with an anchor; audit verify passes [${backend}]`, async () => {
    await using w = await world(backend, "purge");
    const runIds = await seedRuns(w);
    const runDirs = [
      join(w.home, "runs", "ret", "2026-01-05T00_00_00Z"),
      join(w.home, "runs", "ret", "2026-01-06T00_00_00Z"),
    ];
    for (const d of runDirs) assert.ok(await exists(join(d, "load", "out.jsonl")), d);
    const staleEnclave = await oldEntry(
      join(w.home, "enclave", "ret", "2025-12-01T00_00_00Z", "deadbeef0000"),
      true,
    );
    // Its parent (the stale run's folder) is what retention removes.
    const staleEnclaveRun = join(staleEnclave, "..");
    await Deno.utime(
      staleEnclaveRun,
      new Date(Date.now() - 3_600_000),
      new Date(Date.now() - 3_600_000),
    );
    const oldTmp = await oldEntry(join(w.home, "tmp", "carrel-tmp-old"), true);
    const oldLog = await oldEntry(join(w.home, "logs", "carrel.2025-12-01.log"), false);
    const newLog = await oldEntry(join(w.home, "logs", "recent.log"), false, 3_600_000);
    // Let the cutoff of "1ms" pass the workspaces' own mtimes.
    await new Promise((r) => setTimeout(r, 20));

    // Dry run: reports, deletes nothing.
    const dry = await w.run(["purge", "--older-than", "1ms", "--dry-run", "--json"]);
    assertExit(dry, 0);
    const planned = oneJson(dry);
    assert.equal(planned.dryRun, true);
    assert.equal(planned.runs, 2);
    assert.equal(planned.taskInstances, 6);
    assert.deepEqual(planned.files, { workspaces: 2, enclave: 1, tmp: 1, logs: 1 });
    assert.equal(planned.auditEntries, null);
    const listed = await w.run(["runs", "list", "--json"]);
    assertExit(listed, 0);
    assert.deepEqual(oneJson(listed).map((r: { runId: string }) => r.runId).sort(), runIds);
    for (const p of [...runDirs, staleEnclaveRun, oldTmp, oldLog, newLog]) {
      assert.ok(await exists(p), `dry run deleted ${p}`);
    }

    // The purge itself.
    const real = await w.run(["purge", "--older-than", "1ms", "--json"]);
    assertExit(real, 0);
    const done = oneJson(real);
    assert.equal(done.dryRun, false);
    assert.equal(done.runs, 2);
    assert.equal(done.taskInstances, 6);
    assert.deepEqual(done.files, planned.files, "the dry run reported what the purge did");
    const after = await w.run(["runs", "list", "--json"]);
    assertExit(after, 0);
    assert.deepEqual(oneJson(after), []);
    for (const p of [...runDirs, staleEnclaveRun, oldTmp, oldLog]) {
      assert.ok(!(await exists(p)), `purge left ${p}`);
    }
    assert.ok(await exists(newLog), "a log newer than the cutoff is kept");
    assert.ok(await exists(join(w.home, "state")) || backend === "postgres", "the store is kept");
    const verify = await w.run(["audit", "verify", "--json"]);
    assertExit(verify, 0);
    assert.equal(oneJson(verify).ok, true);

    // Audit retention: entries go, an anchor keeps the chain verifiable.
    const before = oneJson(verify).entries as number;
    await new Promise((r) => setTimeout(r, 20));
    const auditPurge = await w.run([
      "purge",
      "--older-than",
      "1ms",
      "--audit-older-than",
      "1ms",
      "--json",
    ]);
    assertExit(auditPurge, 0);
    const ap = oneJson(auditPurge);
    assert.ok(ap.auditEntries >= before, `deleted ${ap.auditEntries} of ${before} audit entries`);
    const exported = await w.run(["audit", "export"]);
    assertExit(exported, 0);
    const entries = jsonLines(exported);
    const anchor = entries.find((e) => e.operation === "audit:anchor");
    assert.ok(anchor, `no audit:anchor in\n${exported.stdout}`);
    assert.equal(anchor.record_count, ap.auditEntries);
    // The oldest remaining entry of each chain is vouched for by the anchor.
    for (const cut of anchor.detail.chains) {
      const first = entries.find((e) => e.chain === cut.chain);
      if (!first) continue;
      assert.equal(first.pos, cut.pos + 1);
      assert.equal(first.prev_hash, cut.hash);
    }
    assert.ok(anchor.detail.chains.some((c: { chain: string }) => c.chain === "global"));
    assert.ok(entries.length < 5, `only the newest entries remain: ${entries.length}`);
    assert.ok(!entries.some((e) => e.correlation_id === runIds[0]), "the runs' entries are gone");
    const verify2 = await w.run(["audit", "verify"]);
    assertExit(verify2, 0);
    assert.match(verify2.stdout, /Audit chain intact/);
  });

  Deno.test(`audit verify: a tampered audit row (trigger disabled) exits 1 naming that entry [${backend}]`, async () => {
    await using w = await world(backend, "tamper");
    await seedRuns(w);
    let target = 0;
    await withSql(w, async (query) => {
      const rows = await query("SELECT seq FROM audit_log ORDER BY seq");
      assert.ok(rows.length > 6, `few audit rows: ${rows.length}`);
      target = Number(rows[Math.floor(rows.length / 2)]!.seq);
      await query("ALTER TABLE audit_log DISABLE TRIGGER USER");
      await query(`UPDATE audit_log SET status = 'x' WHERE seq = ${target}`);
      await query("ALTER TABLE audit_log ENABLE TRIGGER USER");
    });
    const r = await w.run(["audit", "verify"]);
    assertExit(r, 1);
    assert.match(r.stdout, new RegExp(`broken at entry ${target}\\b`));
    const j = await w.run(["audit", "verify", "--json"]);
    assertExit(j, 1);
    const verdict = oneJson(j);
    assert.equal(verdict.ok, false);
    assert.equal(verdict.seq, target);
  });
}

// ---------------------------------------------------------------------------------------------
// keys

for (const backend of BACKENDS) {
  Deno.test(`keys: init makes a 0600 keyring, status never shows a secret, rotate adds the active version and audits its id only [${backend}]`, async () => {
    await using w = await world(backend, "keys");
    const path = join(w.dir, "vault", "keyring.json");
    await Deno.mkdir(join(w.dir, "vault"), { mode: 0o700 });
    const init = await w.run(["keys", "init", path]);
    assertExit(init, 0);
    const info = await Deno.stat(path);
    assert.equal(info.mode! & 0o777, 0o600, `mode ${(info.mode! & 0o777).toString(8)}`);
    const file1 = JSON.parse(await Deno.readTextFile(path));
    assert.equal(file1.active, "k1");
    const secret1 = file1.keys[0].secret as string;
    assert.ok(secret1.length >= 32);
    assert.ok(!init.stdout.includes(secret1) && !init.stderr.includes(secret1));

    const ring = { CARREL_KEYRING: path };
    const status = await w.run(["keys", "status", "--json"], ring);
    assertExit(status, 0);
    assert.ok(!status.stdout.includes(secret1), `the secret is printed:\n${status.stdout}`);
    assert.ok(!/"secret"/i.test(status.stdout), status.stdout);
    const s = oneJson(status);
    assert.equal(s.source, "file");
    assert.equal(s.active, "k1");
    assert.deepEqual(s.keys.map((k: { id: string; active: boolean }) => [k.id, k.active]), [
      ["k1", true],
    ]);

    const rotate = await w.run(["keys", "rotate", "--json"], ring);
    assertExit(rotate, 0);
    assert.deepEqual(oneJson(rotate), { oldId: "k1", newId: "k2" });
    const file2 = JSON.parse(await Deno.readTextFile(path));
    assert.equal(file2.active, "k2");
    assert.deepEqual(file2.keys.map((k: { id: string }) => k.id), ["k1", "k2"]);
    assert.equal(file2.keys[0].secret, secret1, "the old version is kept");
    const secret2 = file2.keys[1].secret as string;
    assert.notEqual(secret2, secret1);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, "still 0600 after rotation");
    for (const out of [rotate.stdout, rotate.stderr]) {
      assert.ok(!out.includes(secret1) && !out.includes(secret2), out);
    }

    const exported = await w.run(["audit", "export"]);
    assertExit(exported, 0);
    const entries = jsonLines(exported);
    const rot = entries.filter((e) => e.operation === "keys:rotate");
    assert.equal(rot.length, 1, exported.stdout);
    assert.equal(rot[0].key_version, "k2");
    assert.deepEqual(rot[0].detail, { from: "k1", to: "k2" });
    assert.ok(entries.some((e) => e.operation === "keys:init" && e.key_version === "k1"));
    for (const secret of [secret1, secret2]) {
      assert.ok(!exported.stdout.includes(secret), "a secret is in the audit trail");
    }

    const noRing = await w.run(["keys", "rotate"], { PII_HMAC_KEY: KEY });
    assertExit(noRing, 2);
    assert.match(noRing.stderr, /CARREL_KEYRING/);
    assert.ok(!noRing.stderr.includes(KEY) && !noRing.stdout.includes(KEY));
    const file3 = JSON.parse(await Deno.readTextFile(path));
    assert.equal(file3.keys.length, 2, "nothing rotated");
  });
}

// ---------------------------------------------------------------------------------------------
// compliance report

const GOOD_DAG = `
import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
import { privacyCheckpoint, tokenize } from ${JSON.stringify(OPERATORS_MOD)};
export default defineDag({
  id: "circ_ok",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    extract: task({ zone: "enclave", run: () => [{ patron_id: "P1" }] }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"] }),
    checkpoint: privacyCheckpoint({
      after: ["tokens"],
      tokenized: ["patron_id"],
      allowFields: ["patron_id"],
    }),
    load: task({ after: ["checkpoint"], run: (ctx) => ctx.inputs.checkpoint }),
  },
});
`;

interface Item {
  id: string;
  control: string;
  status: string;
  required: boolean;
  detail: string;
}

function item(report: { items: Item[] }, control: string): Item {
  const found = report.items.find((i) => i.control === control);
  assert.ok(found, `no ${control} item in ${JSON.stringify(report.items)}`);
  return found;
}

/** The required items that fail, by control. */
function failing(report: { items: Item[] }): string[] {
  return report.items.filter((i) => i.required && i.status === "fail").map((i) => i.control);
}

for (const backend of BACKENDS) {
  Deno.test(`compliance report: passes with a key, retention, a private home and valid DAGs; fails SC-12 without a key and AC-4 with a broken DAG [${backend}]`, async () => {
    await using w = await world(backend, "compliance");
    await Deno.writeTextFile(join(w.dags, "circ_ok.ts"), GOOD_DAG);
    const good = { PII_HMAC_KEY: KEY, CARREL_RETENTION: "90d" };

    const ok = await w.run(["compliance", "report", "--json"], good);
    assertExit(ok, 0);
    const report = oneJson(ok);
    assert.equal(report.passed, true, JSON.stringify(report, null, 2));
    assert.deepEqual(failing(report), []);
    assert.equal(item(report, "SC-12").status, "pass");
    assert.equal(item(report, "SC-8").status, "pass");
    assert.equal(item(report, "AC-4").status, "pass");
    assert.equal(item(report, "SI-12").status, "pass");
    assert.equal(item(report, "AC-3, AC-6").status, "pass");
    assert.equal(item(report, "AU-9, AU-10").status, "pass");
    assert.ok(!ok.stdout.includes(KEY), "the key is printed");

    const noKey = await w.run(["compliance", "report", "--json"], { CARREL_RETENTION: "90d" });
    assertExit(noKey, 1);
    const nk = oneJson(noKey);
    assert.equal(nk.passed, false);
    assert.deepEqual(failing(nk), ["SC-12"]);
    assert.match(item(nk, "SC-12").detail, /PII_HMAC_KEY/);

    await Deno.writeTextFile(
      join(w.dags, "broken.ts"),
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({ id: "broken", tasks: { a: task({ retries: -1, run: () => 1 }) } });
`,
    );
    const broken = await w.run(["compliance", "report", "--json"], good);
    assertExit(broken, 1);
    const br = oneJson(broken);
    assert.equal(br.passed, false);
    assert.deepEqual(failing(br), ["AC-4"]);
    assert.match(item(br, "AC-4").detail, /broken\.ts/);
  });
}

Deno.test("compliance report: a remote CARREL_DATABASE_URL without sslmode fails SC-8 at once, never printing the password", async () => {
  await using w = await world("pglite", "compliance_remote");
  await Deno.writeTextFile(join(w.dags, "circ_ok.ts"), GOOD_DAG);
  // A name that does not resolve, and an address where nothing may answer: neither may hang the
  // report, and the report must not send credentials over an unprotected connection.
  for (
    const url of [
      "postgres://u:secretpw@db.example.net/x",
      "postgres://u:secretpw@203.0.113.7:5432/x",
    ]
  ) {
    const r = await cli(["compliance", "report", "--json"], {
      cwd: w.dir,
      env: { ...w.env, PII_HMAC_KEY: KEY, CARREL_RETENTION: "90d", CARREL_DATABASE_URL: url },
      signal: AbortSignal.timeout(30_000),
    });
    assertExit(r, 1);
    assert.ok(!r.stdout.includes("secretpw") && !r.stderr.includes("secretpw"), show(r));
    const report = oneJson(r);
    assert.equal(report.passed, false);
    assert.equal(item(report, "SC-8").status, "fail");
    assert.match(item(report, "SC-8").detail, /sslmode/);
    assert.ok(failing(report).includes("SC-8"));
  }
  // With TLS required, the same remote URL passes SC-8.
  const tls = await cli(["compliance", "report", "--json"], {
    cwd: w.dir,
    env: {
      ...w.env,
      PII_HMAC_KEY: KEY,
      CARREL_RETENTION: "90d",
      CARREL_DATABASE_URL: "postgres://u:secretpw@db.example.net/x?sslmode=verify-full",
    },
    signal: AbortSignal.timeout(30_000),
  });
  assert.ok(!tls.stdout.includes("secretpw") && !tls.stderr.includes("secretpw"), show(tls));
  assert.equal(item(oneJson(tls), "SC-8").status, "pass");
});
