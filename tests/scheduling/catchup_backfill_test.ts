import assert from "node:assert/strict";
import { defineDag, resolveDag, task } from "../../core/mod.ts";
import { paramsHash } from "../../core/run/plan.ts";
import { runIdFor } from "../../core/job_key.ts";
import type { LoadedDags } from "../../core/loader.ts";
import { schedulerPass } from "../../core/scheduler.ts";
import { BACKENDS, testStore } from "../test_utils.ts";

for (const backend of BACKENDS) {
  Deno.test(`scheduler: a backfill ahead of the schedule leaves no gap for catchup [${backend}]`, async () => {
    const store = await testStore(backend, "catchup_backfill");
    try {
      const now = new Date("2026-03-01T05:30:00Z");
      const dag = resolveDag(defineDag({
        id: "gapless",
        schedule: "0 * * * *",
        start: "2026-03-01T00:00:00Z",
        catchup: true,
        maxActiveRuns: 1,
        tasks: { a: task({ run: () => 1 }) },
      }));
      // Someone backfilled 04:00 before the scheduler ever ran.
      const late = new Date("2026-03-01T04:00:00Z");
      await store.createRun({
        runId: runIdFor(dag.id, late),
        dagId: dag.id,
        logicalDate: late,
        intervalStart: late,
        intervalEnd: new Date("2026-03-01T05:00:00Z"),
        params: {},
        paramsHash: paramsHash({}),
        runType: "backfill",
        state: "success",
      });
      const loaded: LoadedDags = { dir: "-", dags: new Map([[dag.id, dag]]), errors: [] };
      const report = await schedulerPass(loaded, {
        store,
        home: store.home,
        mode: "local",
        now,
        wait: true,
      });
      assert.deepEqual(report.created, [0, 1, 2, 3].map((h) => `gapless@2026-03-01T0${h}:00:00Z`));
      const runs = await store.listRuns({ dagId: dag.id });
      assert.equal(runs.length, 5);
    } finally {
      await store.close();
    }
  });
}
