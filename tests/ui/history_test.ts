/**
 * The console's read side (`core/state/history.ts`): keyset pages of runs, the grid, the named
 * queries served by indexes with 10,000 runs in the store, and per-attempt log lines written by
 * the store log sink (redacted, batched, dropped for unknown runs, purged with their run).
 *
 * @module
 */
import assert from "node:assert/strict";
import { seedRunHistory } from "../../fixtures/run_history.ts";
import { resetLogging, runLogger, setupLogging, storeLogs } from "../../core/log.ts";
import { SqlHistory } from "../../core/state/history.ts";
import type { SqlClient } from "../../core/state/sql_client.ts";
import { BACKENDS, notePostgresSkipped, testStore } from "../test_utils.ts";

notePostgresSkipped();

const tasks = (n: number) => Array.from({ length: n }, (_, i) => `t${String(i).padStart(2, "0")}`);

for (const backend of BACKENDS) {
  Deno.test(`history: keyset pages of runs, filters, the grid, latest runs [${backend}]`, async () => {
    await using store = await testStore(backend, "history_pages");
    await seedRunHistory(store.client, {
      dagId: "a",
      tasks: tasks(3),
      runs: 120,
      start: new Date("2026-01-01T00:00:00Z"),
    });
    await seedRunHistory(store.client, {
      dagId: "b",
      tasks: tasks(2),
      runs: 30,
      start: new Date("2026-01-01T00:30:00Z"),
    });
    const h = new SqlHistory(store.client);
    const seen: string[] = [];
    let before: string | undefined;
    let pages = 0;
    do {
      const page = await h.runsPage({ limit: 50, ...(before ? { before } : {}) });
      seen.push(...page.runs.map((r) => r.runId));
      before = page.next ?? undefined;
      pages++;
    } while (before);
    assert.equal(pages, 3);
    assert.equal(seen.length, 150);
    assert.equal(new Set(seen).size, 150, "no run twice across pages");
    const all = await store.listRuns({ limit: 1000 });
    assert.deepEqual(seen, all.map((r) => r.runId), "newest first, as `runs list`");

    const b = await h.runsPage({ dagId: "b", limit: 100 });
    assert.equal(b.runs.length, 30);
    assert.equal(b.next, null);
    const failed = await h.runsPage({ dagId: "a", states: ["failed"], limit: 100 });
    assert.equal(failed.runs.length, 8, "every 17th run of 120 (0, 17, ..., 119) failed");
    assert.ok(failed.runs.every((r) => r.state === "failed"));
    await assert.rejects(() => h.runsPage({ limit: 5, before: "!!" }), RangeError);

    const latest = await h.latestRuns(["a", "b", "none"], 4);
    assert.deepEqual(
      latest.get("a")!.map((r) => r.runId),
      all.filter((r) => r.dagId === "a")
        .slice(0, 4).map((r) => r.runId),
    );
    assert.equal(latest.get("b")!.length, 4);
    assert.deepEqual(latest.get("none"), []);

    const page = await h.runsPage({ dagId: "a", limit: 10 });
    const cells = await h.gridCells(page.runs.map((r) => r.runId));
    assert.equal(cells.length, 30);
    const counts = await h.runCounts();
    assert.deepEqual(counts, [
      { dagId: "a", state: "failed", count: 8 },
      { dagId: "a", state: "success", count: 112 },
      { dagId: "b", state: "failed", count: 2 },
      { dagId: "b", state: "success", count: 28 },
    ]);
  });

  Deno.test(
    `history: with 10,000 runs every page query is served by an index [${backend}]`,
    async () => {
      await using store = await testStore(backend, "history_indexes");
      await seedRunHistory(store.client, {
        dagId: "grid50",
        tasks: tasks(50),
        runs: 100,
        start: new Date("2026-01-01T00:00:00Z"),
        audit: true,
        logLines: 5,
      });
      await seedRunHistory(store.client, {
        dagId: "other",
        tasks: tasks(3),
        runs: 9_900,
        start: new Date("2025-01-01T00:00:00Z"),
        stepMs: 600_000,
        audit: true,
      });
      const [{ n }] = await store.client.query<{ n: string }>(
        "SELECT count(*)::text AS n FROM dag_runs",
      ) as [{ n: string }];
      assert.equal(Number(n), 10_000);

      // Record the statements the history runs, then ask the planner how it runs each.
      const recorded: { text: string; params: readonly unknown[] }[] = [];
      const recording: SqlClient = {
        ...store.client,
        kind: store.client.kind,
        query: <T>(text: string, params: readonly unknown[] = []) => {
          recorded.push({ text, params });
          return store.client.query<T>(text, params);
        },
      } as SqlClient;
      const h = new SqlHistory(recording);
      const page = await h.runsPage({ dagId: "grid50", limit: 25 });
      const second = await h.runsPage({ dagId: "grid50", limit: 25, before: page.next! });
      assert.equal(second.runs.length, 25);
      const everything = await h.runsPage({ limit: 50 });
      await h.runsPage({ limit: 50, before: everything.next! });
      await h.latestRuns(["grid50", "other"], 10);
      await h.gridCells(page.runs.map((r) => r.runId));
      const runId = page.runs[0]!.runId;
      assert.equal((await h.runAudit(runId)).length, 100);
      await h.auditPage({ correlationId: runId, limit: 100 });
      await h.auditPage({ limit: 100 });
      const lines = await h.logs({ runId, taskId: "t07", limit: 200 });
      assert.equal(lines.lines.length, 5);
      await h.taskRecords(page.runs.map((r) => r.runId));

      const tables = /Seq Scan on (dag_runs|task_instances|audit_log|task_logs)\b/;
      for (const q of recorded) {
        const plan = (await store.client.query<Record<string, string>>(
          `EXPLAIN ${q.text}`,
          q.params,
        )).map((r) => Object.values(r)[0]).join("\n");
        assert.doesNotMatch(plan, tables, `a full scan for:\n${q.text}\n${plan}`);
      }
    },
  );

  Deno.test(`history: the store log sink writes redacted lines per attempt [${backend}]`, async () => {
    await using store = await testStore(backend, "history_logs");
    await seedRunHistory(store.client, {
      dagId: "logged",
      tasks: ["load"],
      runs: 1,
      start: new Date("2026-01-01T00:00:00Z"),
    });
    const runId = "logged@2026-01-01T00:00:00Z";
    setupLogging({ console: false });
    try {
      const logs = storeLogs(store);
      const log = runLogger({ runId, dagId: "logged", taskId: "load", attempt: 1 });
      log.info("Loaded {n} rows for {email}", { n: 3, email: "someone@example.org" });
      log.warn("Note mentions reader@example.org in free text");
      runLogger({ runId: "ghost@2026-01-01T00:00:00Z", dagId: "ghost", taskId: "x" })
        .info("no such run");
      await logs[Symbol.asyncDispose]();
    } finally {
      resetLogging();
    }
    const h = new SqlHistory(store.client);
    const read = await h.logs({ runId, taskId: "load", attempt: 1, limit: 10 });
    assert.deepEqual(read.lines.map((l) => [l.level, l.message]), [
      ["info", "Loaded 3 rows for [REDACTED]"],
      ["warning", "Note mentions REDACTED@EMAIL.ADDRESS in free text"],
    ]);
    assert.deepEqual(read.lines[0]!.properties, { n: 3, email: "[REDACTED]" });
    const [{ n }] = await store.client.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM task_logs WHERE run_id LIKE 'ghost@%'",
    ) as [{ n: string }];
    assert.equal(n, "0", "lines of runs the store does not hold are dropped");

    await store.purgeRuns(new Date("2100-01-01"), {
      dryRun: false,
      audit: { correlationId: "purge:test", operation: "purge:runs", status: "success" },
    });
    assert.equal((await h.logs({ runId, taskId: "load", limit: 10 })).lines.length, 0);
  });
}
