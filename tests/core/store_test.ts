import assert from "node:assert/strict";
import { type AuditInput, GLOBAL_CHAIN } from "../../core/audit.ts";
import { verifyAudit } from "../../core/audit_verify.ts";
import { jobKey, runIdFor } from "../../core/job_key.ts";
import { migrationFiles } from "../../core/state/migrate.ts";
import type { NewRun, NewTaskInstance } from "../../core/state/store.ts";
import { BACKENDS, notePostgresSkipped, testStore } from "../test_utils.ts";

notePostgresSkipped();

type Store = Awaited<ReturnType<typeof testStore>>;

const day = (d: number) => new Date(Date.UTC(2026, 0, d));

function newRun(dagId: string, date: Date, runId = runIdFor(dagId, date)): NewRun {
  return {
    runId,
    dagId,
    logicalDate: date,
    intervalStart: date,
    intervalEnd: new Date(date.getTime() + 86_400_000),
    params: { since: "x" },
    paramsHash: "h",
    runType: "manual",
    state: "queued",
  };
}

function newTis(run: NewRun, taskIds: string[]): NewTaskInstance[] {
  return taskIds.map((taskId) => ({
    jobKey: jobKey({
      dag: run.dagId,
      task: taskId,
      interval: { start: run.intervalStart, end: run.intervalEnd },
      params: run.params,
    }),
    runId: run.runId,
    dagId: run.dagId,
    taskId,
    mapIndex: -1,
    zone: "shared",
    pool: null,
    state: "scheduled",
    maxTries: 1,
  }));
}

const entry = (operation: string, extra: Partial<AuditInput> = {}): AuditInput => ({
  correlationId: "store-test",
  dagId: "store_test",
  operation,
  status: "ok",
  ...extra,
});

async function auditCount(store: Store): Promise<number> {
  const [row] = await store.client.query<{ n: string }>(
    "SELECT count(*)::text AS n FROM audit_log",
  );
  return Number(row!.n);
}

async function lastEntries(store: Store, n: number) {
  const all = [];
  for await (const e of store.iterateAudit()) all.push(e);
  return all.slice(-n);
}

for (const backend of BACKENDS) {
  // One store per backend for the whole file: tests use distinct DAG ids.
  let shared: Promise<Store> | undefined;
  const storeFor = () => (shared ??= testStore(backend, "store"));
  const test = (name: string, fn: (store: Store) => Promise<void>) =>
    Deno.test({
      name: `store: ${name} [${backend}]`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => fn(await storeFor()),
    });

  test("migrations are idempotent", async (store) => {
    await store.migrate();
    await store.migrate();
    const rows = await store.client.query<{ version: number; n: string }>(
      "SELECT version, count(*)::text AS n FROM carrel_migrations GROUP BY version ORDER BY version",
    );
    const files = await migrationFiles();
    assert.ok(files.length >= 1);
    assert.deepEqual(
      rows.map((r) => [Number(r.version), Number(r.n)]),
      files.map((f) => [f.version, 1]),
    );
    // The global chain's head row and the triggers exist once.
    const [head] = await store.client.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM audit_chains WHERE chain = 'global'",
    );
    assert.equal(head!.n, "1");
    const triggers = await store.client.query<{ tgname: string }>(
      `SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal
       ORDER BY tgname`,
    );
    assert.deepEqual(triggers.map((t) => t.tgname), [
      "audit_log_append_only",
      "audit_log_no_truncate",
    ]);
  });

  test("createRun is unique on (dag, logical date)", async (store) => {
    const run = newRun("s_unique", day(1));
    const first = await store.createRun(run, entry("run:create"));
    assert.equal(first.created, true);
    assert.equal(first.run.runId, run.runId);
    assert.equal(first.run.state, "queued");
    assert.deepEqual(first.run.params, { since: "x" });
    assert.equal(first.run.logicalDate.getTime(), day(1).getTime());
    const head = await store.auditHead();
    // Same DAG and date under another run id: not created, the stored run comes back.
    const second = await store.createRun(
      { ...newRun("s_unique", day(1), "s_unique@other"), params: { since: "y" } },
      entry("run:create"),
    );
    assert.equal(second.created, false);
    assert.equal(second.run.runId, run.runId);
    assert.deepEqual(second.run.params, { since: "x" });
    assert.deepEqual(await store.auditHead(), head, "no audit entry for a run not created");
    // Another date is another run.
    assert.equal((await store.createRun(newRun("s_unique", day(2)))).created, true);
    const runs = await store.listRuns({ dagId: "s_unique" });
    assert.deepEqual(runs.map((r) => r.runId), [runIdFor("s_unique", day(2)), run.runId]);
    assert.equal(await store.getRun("s_unique@other"), undefined);
  });

  test("task instances are unique on job key", async (store) => {
    const run = newRun("s_tis", day(1));
    await store.createRun(run);
    const rows = newTis(run, ["extract", "load"]);
    await store.ensureTaskInstances(rows);
    await store.ensureTaskInstances(rows.map((r) => ({ ...r, maxTries: 9 })));
    const tis = await store.listTaskInstances(run.runId);
    assert.equal(tis.length, 2);
    assert.deepEqual(tis.map((t) => [t.taskId, t.state, t.maxTries, t.tryNumber]), [
      ["extract", "scheduled", 1, 0],
      ["load", "scheduled", 1, 0],
    ]);
    const [row] = await store.client.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM task_instances WHERE job_key = $1",
      [rows[0]!.jobKey],
    );
    assert.equal(row!.n, "1");
    // The table refuses a second row with the same key outright.
    await assert.rejects(
      store.client.query(
        `INSERT INTO task_instances (job_key, run_id, dag_id, task_id, zone, state)
         VALUES ($1, $2, 's_tis', 'other', 'shared', 'scheduled')`,
        [rows[0]!.jobKey, run.runId],
      ),
    );
  });

  test("updateTaskInstance is compare-and-set; a mismatch adds no audit entry", async (store) => {
    const run = newRun("s_cas", day(1));
    await store.createRun(run);
    const [ti] = newTis(run, ["work"]);
    await store.ensureTaskInstances([ti!]);
    const head = await store.auditHead();

    assert.equal(
      await store.updateTaskInstance(ti!.jobKey, { state: "success" }, {
        expect: { states: ["running"] },
        audit: [entry("task:success", { taskId: "work" })],
      }),
      false,
    );
    assert.deepEqual(await store.auditHead(), head);
    assert.equal((await store.getTaskInstance(ti!.jobKey))!.state, "scheduled");

    assert.equal(
      await store.updateTaskInstance(ti!.jobKey, { state: "running", owner: "me" }, {
        expect: { states: ["scheduled", "up_for_retry"], owner: null },
        audit: [entry("task:start", { taskId: "work" })],
      }),
      true,
    );
    assert.equal((await store.auditHead()).seq, head.seq + 1);
    // Owner expectations: someone else's, then ours.
    assert.equal(
      await store.updateTaskInstance(ti!.jobKey, { state: "success" }, {
        expect: { owner: "someone-else" },
        audit: [entry("task:success")],
      }),
      false,
    );
    assert.equal((await store.auditHead()).seq, head.seq + 1);
    assert.equal(
      await store.updateTaskInstance(ti!.jobKey, { state: "success", owner: null }, {
        expect: { owner: "me", states: ["running"] },
      }),
      true,
    );
    const stored = await store.getTaskInstance(ti!.jobKey);
    assert.equal(stored!.state, "success");
    assert.equal(stored!.owner, null);
    // An unknown job key updates nothing.
    assert.equal(await store.updateTaskInstance("0".repeat(64), { state: "failed" }), false);
    // Runs too.
    assert.equal(
      await store.updateRun(run.runId, { state: "running" }, { expect: { states: ["success"] } }),
      false,
    );
    assert.equal((await store.getRun(run.runId))!.state, "queued");
  });

  test("each transition appends its audit entries in the same transaction", async (store) => {
    const run = newRun("s_tx", day(1));
    const created = await store.createRun(run, entry("run:create", { correlationId: run.runId }));
    assert.equal(created.created, true);
    const [ti] = newTis(run, ["work"]);
    await store.ensureTaskInstances([ti!]);
    const head = await store.auditHead();

    await store.updateTaskInstance(ti!.jobKey, { state: "running", tryNumber: 1 }, {
      audit: [
        entry("task:start", { correlationId: run.runId, taskId: "work" }),
        entry("rows:count", { correlationId: run.runId, taskId: "work", recordCount: 12 }),
      ],
    });
    const after = await store.auditHead();
    assert.equal(after.seq, head.seq + 2);
    const last = await lastEntries(store, 2);
    assert.deepEqual(last.map((e) => [e.seq, e.operation, e.recordCount, e.taskId]), [
      [head.seq + 1, "task:start", null, "work"],
      [head.seq + 2, "rows:count", 12, "work"],
    ]);
    assert.equal(last[1]!.hash, after.hash);
    assert.equal(last[0]!.prevHash, head.hash);

    // When the audit entry cannot be written, the state change rolls back with it.
    const broken = { ...entry("task:success"), operation: null } as unknown as AuditInput;
    await assert.rejects(
      store.updateTaskInstance(ti!.jobKey, { state: "success" }, { audit: [broken] }),
    );
    assert.equal((await store.getTaskInstance(ti!.jobKey))!.state, "running");
    assert.deepEqual(await store.auditHead(), after);
    await assert.rejects(store.updateRun(run.runId, { state: "failed" }, { audit: [broken] }));
    assert.equal((await store.getRun(run.runId))!.state, "queued");
    await assert.rejects(store.createRun(newRun("s_tx", day(2)), broken));
    assert.equal(await store.getRun(runIdFor("s_tx", day(2))), undefined);
    assert.deepEqual(await store.auditHead(), after);
  });

  test("the audit chain verifies against its head", async (store) => {
    await store.appendAudit([entry("check:a"), entry("check:b", { detail: { fields: ["x"] } })]);
    const head = await store.auditHead();
    const verdict = await verifyAudit(store);
    assert.equal(verdict.ok, true, JSON.stringify(verdict));
    assert.equal(verdict.head, head.hash);
    assert.equal(verdict.entries, await auditCount(store));
  });

  test("UPDATE, DELETE and TRUNCATE on audit_log are rejected", async (store) => {
    await store.appendAudit([entry("guarded")]);
    const before = await auditCount(store);
    const head = await store.auditHead();
    await assert.rejects(
      store.client.query("UPDATE audit_log SET status = 'changed' WHERE seq = $1", [head.seq]),
      /audit_log is append-only: UPDATE rejected/,
    );
    await assert.rejects(
      store.client.query("DELETE FROM audit_log WHERE seq = $1", [head.seq]),
      /audit_log is append-only: DELETE rejected/,
    );
    await assert.rejects(
      store.client.query("TRUNCATE audit_log"),
      /audit_log is append-only: TRUNCATE rejected/,
    );
    assert.equal(await auditCount(store), before);
    assert.deepEqual(await lastEntries(store, 1).then((e) => e[0]!.status), "ok");
    assert.equal((await verifyAudit(store)).ok, true);
  });

  test("purgeRuns deletes old finished runs with their task instances; dry-run deletes nothing", async (store) => {
    const oldDone = newRun("s_purge", day(1));
    const oldRunning = newRun("s_purge", day(2));
    const newDone = newRun("s_purge", day(3));
    for (const r of [oldDone, oldRunning, newDone]) {
      await store.createRun(r);
      await store.ensureTaskInstances(newTis(r, ["a", "b"]));
    }
    await store.updateRun(oldDone.runId, { state: "success" });
    await store.updateRun(oldRunning.runId, { state: "running" });
    await store.updateRun(newDone.runId, { state: "failed" });
    await store.client.query(
      "UPDATE dag_runs SET created_at = '2000-01-01T00:00:00Z' WHERE run_id = ANY($1::text[])",
      [[oldDone.runId, oldRunning.runId]],
    );
    const cutoff = new Date("2001-01-01T00:00:00Z");
    const head = await store.auditHead();

    const dry = await store.purgeRuns(cutoff, {
      dryRun: true,
      audit: entry("purge", { correlationId: "purge:dry" }),
    });
    assert.deepEqual(dry, { runs: [oldDone.runId], taskInstances: 2, auditEntries: 0 });
    assert.ok(await store.getRun(oldDone.runId));
    assert.equal((await store.listTaskInstances(oldDone.runId)).length, 2);
    assert.deepEqual(await store.auditHead(), head);

    const real = await store.purgeRuns(cutoff, {
      dryRun: false,
      audit: entry("purge", { correlationId: "purge:real" }),
    });
    assert.deepEqual(real.runs, [oldDone.runId]);
    assert.equal(real.taskInstances, 2);
    assert.equal(await store.getRun(oldDone.runId), undefined);
    assert.equal((await store.listTaskInstances(oldDone.runId)).length, 0);
    for (const ti of newTis(oldDone, ["a", "b"])) {
      assert.equal(await store.getTaskInstance(ti.jobKey), undefined);
    }
    assert.ok(await store.getRun(oldRunning.runId), "a running run is kept");
    assert.ok(await store.getRun(newDone.runId), "a recent run is kept");
    assert.equal((await store.listTaskInstances(newDone.runId)).length, 2);
    const [purge] = await lastEntries(store, 1);
    assert.equal(purge!.operation, "purge");
    assert.equal(purge!.recordCount, 1);
    assert.deepEqual(purge!.detail, { taskInstances: 2 });
    assert.equal((await store.auditHead()).seq, head.seq + 1);
  });

  test("pause flags are stored per DAG", async (store) => {
    assert.equal((await store.pausedDags()).get("s_pause"), undefined);
    const head = await store.auditHead();
    await store.setPaused("s_pause", true, entry("dag:pause", { dagId: "s_pause" }));
    await store.setPaused("s_pause_other", false);
    let flags = await store.pausedDags();
    assert.equal(flags.get("s_pause"), true);
    assert.equal(flags.get("s_pause_other"), false);
    assert.equal((await store.auditHead()).seq, head.seq + 1);
    await store.setPaused("s_pause", false);
    flags = await store.pausedDags();
    assert.equal(flags.get("s_pause"), false);
  });

  test("purgeAudit leaves an anchor and the chain still verifies", async (store) => {
    await store.appendAudit([entry("old:1"), entry("old:2")]);
    await new Promise((r) => setTimeout(r, 20));
    const cut = new Date();
    await new Promise((r) => setTimeout(r, 20));
    await store.appendAudit([entry("new:1"), entry("new:2")]);
    const before = await store.auditHead();
    const total = await auditCount(store);

    const wouldDelete = await store.purgeAudit(cut, { dryRun: true, correlationId: "purge:audit" });
    assert.equal(wouldDelete, total - 2);
    assert.equal(await auditCount(store), total);
    assert.deepEqual(await store.auditHead(), before);

    const deleted = await store.purgeAudit(cut, { dryRun: false, correlationId: "purge:audit" });
    assert.equal(deleted, total - 2);
    const remaining = [];
    for await (const e of store.iterateAudit()) remaining.push(e);
    assert.deepEqual(remaining.map((e) => e.operation), ["new:1", "new:2", "audit:anchor"]);
    const anchor = remaining[2]!;
    assert.equal(anchor.seq, before.seq + 1);
    assert.equal(anchor.recordCount, total - 2);
    assert.deepEqual(anchor.detail!.chains, [{
      chain: GLOBAL_CHAIN,
      pos: remaining[0]!.pos - 1,
      hash: remaining[0]!.prevHash,
    }]);
    const verdict = await verifyAudit(store);
    assert.equal(verdict.ok, true, JSON.stringify(verdict));
    assert.equal(verdict.entries, 3);
    assert.equal(verdict.head, anchor.hash);
    // Deleting is off again after the purge.
    await assert.rejects(
      store.client.query("DELETE FROM audit_log WHERE seq = $1", [anchor.seq]),
      /append-only/,
    );
    // Nothing old enough: nothing deleted, no anchor added.
    assert.equal(
      await store.purgeAudit(new Date(0), { dryRun: false, correlationId: "purge:audit" }),
      0,
    );
    assert.equal((await store.auditHead()).seq, anchor.seq);
  });

  // Last test of the backend: it breaks the chain on purpose, then closes the store. The kinds of
  // tampering, and the signed checkpoints, are tested one by one in audit_test.ts.
  test("tampering with audit_log is detected, naming the entry", async (store) => {
    try {
      await store.appendAudit([entry("t:1"), entry("t:2"), entry("t:3"), entry("t:4")]);
      const head = await store.auditHead();
      assert.equal((await verifyAudit(store)).ok, true);
      const target = head.seq - 2;
      // A superuser can switch the triggers off (PGlite runs as one).
      await store.client.exec("ALTER TABLE audit_log DISABLE TRIGGER USER");
      const [original] = await store.client.query<{ status: string }>(
        "SELECT status FROM audit_log WHERE seq = $1",
        [target],
      );
      await store.client.query("UPDATE audit_log SET status = 'tampered' WHERE seq = $1", [target]);
      const tampered = await verifyAudit(store);
      assert.equal(tampered.ok, false);
      assert.equal(!tampered.ok && tampered.seq, target);
      assert.equal(!tampered.ok && tampered.reason, "its hash does not match its content");
      // Restored: fine again.
      await store.client.query("UPDATE audit_log SET status = $1 WHERE seq = $2", [
        original!.status,
        target,
      ]);
      assert.equal((await verifyAudit(store)).ok, true);

      // Removing the newest entry is caught by the head.
      await store.client.query("DELETE FROM audit_log WHERE seq = $1", [head.seq]);
      const tail = await verifyAudit(store);
      assert.equal(tail.ok, false);
      assert.equal(!tail.ok && tail.seq, null);
      assert.match(
        !tail.ok ? tail.reason : "",
        /were removed: the chain does not reach its recorded head/,
      );

      // Removing one in the middle is caught at the next entry.
      const [gone] = await store.client.query<{ pos: string }>(
        "SELECT pos::text AS pos FROM audit_log WHERE seq = $1",
        [target],
      );
      await store.client.query("DELETE FROM audit_log WHERE seq = $1", [target]);
      const gap = await verifyAudit(store);
      assert.equal(gap.ok, false);
      assert.equal(!gap.ok && gap.seq, target + 1);
      assert.equal(!gap.ok && gap.reason, `entries ${gone!.pos} to ${gone!.pos} are missing`);
    } finally {
      await store.client.exec("ALTER TABLE audit_log ENABLE TRIGGER USER").catch(() => {});
      await store.close();
    }
  });
}
