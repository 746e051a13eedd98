/**
 * Alerts are sent at least once, on PGlite and (with CARREL_TEST_DATABASE_URL) PostgreSQL: a
 * `dags run` process that dies inside a task's `onFailure` callback (after the failure was
 * recorded) leaves the alert without its receipt, and the next scheduler pass past the callback
 * time limit calls it again with the same alert id, once; an alert whose callback ended is never
 * sent again; an alert tried three times, or older than a day, is left alone.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { MAX_RESENDS } from "../../core/alerts/recover.ts";
import type { AuditEntry } from "../../core/audit.ts";
import { runIdFor } from "../../core/job_key.ts";
import { loadDags } from "../../core/loader.ts";
import { schedulerPass } from "../../core/scheduler.ts";
import { openStore } from "../../core/state/open.ts";
import type { StateStore } from "../../core/state/store.ts";
import {
  BACKENDS,
  cli,
  CORE_MOD,
  freshDatabase,
  notePostgresSkipped,
  seedHome,
  testStore,
} from "../test_utils.ts";

notePostgresSkipped();

const opts = { sanitizeResources: false, sanitizeOps: false };
/** What the failing task's onFailure callback does when this file is absent: end its process. */
const EXIT_CODE = 7;

function dagSource(calls: string, survive: string): string {
  return `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const exists = (p) => Deno.stat(p).then(() => true, () => false);
// Appends the alert's id, then ends the whole process unless told to survive: a crash after the
// failure was recorded and before the alert's receipt.
const page = async (alert) => {
  await Deno.writeTextFile(${
    JSON.stringify(calls)
  }, alert.id + " " + alert.taskId + " " + alert.attempt + "\\n", { append: true });
  if (!(await exists(${JSON.stringify(survive)}))) Deno.exit(${EXIT_CODE});
};
export default defineDag({
  id: "paged",
  schedule: null,
  callbackTimeout: "2s",
  tasks: {
    boom: task({ retries: 0, onFailure: page, run: () => { throw new Error("the ILS did not answer"); } }),
  },
});
`;
}

async function lines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

async function entries(store: StateStore, runId: string, operation: string) {
  const out: AuditEntry[] = [];
  for await (const e of store.iterateAudit({ correlationId: runId })) {
    if (e.operation === operation) out.push(e);
  }
  return out;
}

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `alerts: one cut short by its process's end is sent again once by the scheduler, with its id [${backend}]`,
    ...opts,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "carrel-resend-" });
      await using db = backend === "postgres" ? await freshDatabase("resend") : undefined;
      try {
        const dags = join(dir, "dags");
        const home = join(dir, "home");
        await Deno.mkdir(dags);
        await Deno.mkdir(home);
        const calls = join(dir, "calls.txt");
        const survive = join(dir, "survive");
        await Deno.writeTextFile(join(dags, "paged.ts"), dagSource(calls, survive));
        if (backend === "pglite") await seedHome(home);
        const env: Record<string, string> = {
          CARREL_DAGS_DIR: dags,
          CARREL_HOME: home,
          ...(db ? { CARREL_DATABASE_URL: db.url } : {}),
        };
        const day = (d: string) => ["dags", "run", "paged", "--date", `${d}T02:00:00Z`];

        // 1. The process dies in the callback: the failure is recorded, the alert has no receipt.
        const crashed = await cli(day("2026-03-01"), { cwd: dir, env });
        assert.equal(crashed.code, EXIT_CODE, crashed.stderr);
        const first = await lines(calls);
        assert.equal(first.length, 1);
        const runId = runIdFor("paged", new Date("2026-03-01T02:00:00Z"));

        // 2. A run whose callback ends: its receipt is written by the process itself.
        await Deno.writeTextFile(survive, "");
        const fine = await cli(day("2026-03-02"), { cwd: dir, env });
        assert.equal(fine.code, 1, fine.stderr);
        assert.equal((await lines(calls)).length, 2);
        await Deno.remove(survive);

        // 3. Another crash, for the limits below.
        const again = await cli(day("2026-03-03"), { cwd: dir, env });
        assert.equal(again.code, EXIT_CODE, again.stderr);
        assert.equal((await lines(calls)).length, 3);
        const third = runIdFor("paged", new Date("2026-03-03T02:00:00Z"));

        const store = await openStore(new Map(Object.entries(env)));
        try {
          const failed = await entries(store, runId, "task:failed");
          assert.equal(failed.length, 1);
          assert.equal(failed[0]!.detail?.alerts, 1, "the failure says it owes one callback");
          assert.equal((await entries(store, runId, "alert:sent")).length, 0);
          const fineRun = runIdFor("paged", new Date("2026-03-02T02:00:00Z"));
          const receipt = await entries(store, fineRun, "alert:sent");
          assert.equal(receipt.length, 1);
          assert.equal(receipt[0]!.status, "sent");
          assert.equal(receipt[0]!.detail?.recovered, undefined);

          const loaded = await loadDags(dags, { fresh: true });
          assert.deepEqual(loaded.errors, []);
          const pass = (at: Date) =>
            schedulerPass(loaded, { store, home, mode: "local", now: at, wait: true });
          // Times are the entries' own, not the test's: a slow machine changes nothing.
          const failedAt = new Date(failed[0]!.at).getTime();
          const thirdAt = new Date((await entries(store, third, "task:failed"))[0]!.at).getTime();
          const soon = new Date(failedAt + 5 * 60_000);

          // Older than a day: left alone, whatever else holds.
          await pass(new Date(thirdAt + 25 * 3_600_000));
          assert.equal((await lines(calls)).length, 3);

          // The third run's alert has had its tries already: left alone.
          for (let i = 0; i < MAX_RESENDS; i++) {
            await store.appendAudit([{
              correlationId: third,
              dagId: "paged",
              taskId: "boom",
              operation: "alert:resend",
              status: "sending",
              detail: { event: "task_failure", attempt: 1, hook: "onFailure", try: i + 1 },
            }]);
          }

          // Within the time limit and its margin: the process may still be sending it.
          await pass(new Date(failedAt + 5_000));
          assert.equal((await lines(calls)).length, 3);

          // Past them: the first run's alert is sent again, once, with the same id.
          await Deno.writeTextFile(survive, "");
          const report = await pass(soon);
          assert.deepEqual(report.errors, []);
          const after = await lines(calls);
          assert.equal(after.length, 4);
          assert.equal(after[3], first[0], "the same alert: same id, task and attempt");
          const resent = await entries(store, runId, "alert:sent");
          assert.equal(resent.length, 1);
          assert.equal(resent[0]!.detail?.recovered, true);
          assert.equal(resent[0]!.detail?.id, first[0]!.split(" ")[0]);
          const noted = await entries(store, runId, "alert:resend");
          assert.equal(noted.length, 1);
          assert.equal(noted[0]!.detail?.id, first[0]!.split(" ")[0], "the note names the id sent");

          // Received once: a later pass sends nothing.
          await pass(new Date(soon.getTime() + 60_000));
          assert.equal((await lines(calls)).length, 4);
        } finally {
          await store.close();
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `alerts: the owing entries are read in pages, by time then row, and only those [${backend}]`,
    ...opts,
    fn: async () => {
      await using store = await testStore(backend, "owed_alerts");
      // Five owing entries appended at once (one time: the row number orders them), one that
      // owes nothing.
      await store.appendAudit(["a", "b", "c", "d", "e", "quiet"].map((taskId) => ({
        correlationId: "r@2026-03-01T02:00:00Z",
        dagId: "d",
        taskId,
        operation: "task:failed",
        status: "failed",
        detail: taskId === "quiet" ? { attempt: 1 } : { attempt: 1, alerts: 1 },
      })));
      const since = new Date(Date.now() - 60_000);
      const until = new Date(Date.now() + 60_000);
      const read: string[] = [];
      let after: { at: string; seq: number } | null = null;
      for (let page = 0; page < 10; page++) {
        const got = await store.owedAlerts(since, until, after, 2);
        if (got.length === 0) break;
        read.push(...got.map((e) => e.taskId!));
        after = { at: got[got.length - 1]!.at, seq: got[got.length - 1]!.seq };
      }
      assert.deepEqual(read, ["a", "b", "c", "d", "e"]);
      // Outside the window: nothing.
      assert.deepEqual(
        await store.owedAlerts(until, new Date(until.getTime() + 60_000), null, 9),
        [],
      );
    },
  });
}
