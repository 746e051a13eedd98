/**
 * Sensors on workers (in-process workers on PGlite, and on PostgreSQL when configured), with pool
 * slot accounting: a `poke` sensor holds its pool slot while it waits (another run's task in the
 * pool waits for it); a `reschedule` sensor frees it between checks (`up_for_reschedule`, claimed
 * again after its interval) so the other task runs meanwhile.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { DataInterval } from "../../core/dag.ts";
import { startRun } from "../../core/run/worker.ts";
import { type PokeEvent, sensorPokes } from "../../operators/sensors/sensor.ts";
import {
  BACKENDS,
  CORE_MOD,
  notePostgresSkipped,
  OPERATORS_MOD,
  waitFor,
  withTmpDir,
} from "../test_utils.ts";
import { workerWorld } from "./worker_world.ts";

notePostgresSkipped();

const opts = { sanitizeResources: false, sanitizeOps: false };
const interval: DataInterval = {
  start: new Date("2026-05-01T00:00:00Z"),
  end: new Date("2026-05-02T00:00:00Z"),
};

function nthPoke(dagId: string, n: number): Promise<PokeEvent> {
  return new Promise((resolve) => {
    let seen = 0;
    const on = (e: Event) => {
      const d = (e as CustomEvent<PokeEvent>).detail;
      if (d.dagId !== dagId || ++seen < n) return;
      sensorPokes.removeEventListener("poke", on);
      resolve(d);
    };
    sensorPokes.addEventListener("poke", on);
  });
}

function sensorDag(id: string, mode: string, path: string): string {
  return `import { defineDag } from ${JSON.stringify(CORE_MOD)};
import { fileSensor } from ${JSON.stringify(OPERATORS_MOD)};
export default defineDag({
  id: ${JSON.stringify(id)},
  schedule: null,
  tasks: {
    wait: fileSensor({ path: ${JSON.stringify(path)}, mode: ${JSON.stringify(mode)},
      pokeInterval: "40ms", timeout: "2m", pool: "ils" }),
  },
});
`;
}

const OTHER = `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "other",
  schedule: null,
  tasks: { use_ils: task({ pool: "ils", run: () => 1 }) },
});
`;

for (const backend of BACKENDS) {
  for (const mode of ["poke", "reschedule"] as const) {
    Deno.test({
      name: `sensors (workers): ${mode} mode and a pool of one slot [${backend}]`,
      ...opts,
      fn: async () => {
        await using w = await workerWorld(backend, "sensorworkers");
        await using drop = await withTmpDir();
        await w.store.setPool("ils", 1);
        const id = `wait_${mode}`;
        await w.write(id, sensorDag(id, mode, join(drop.path, "*.mrc")));
        await w.write("other", OTHER);
        const workers = w.workers(2, 2);
        try {
          const first = nthPoke(id, 1);
          const sensorRun = await startRun(w.store, await w.dag(id), interval, {}, "triggered");
          assert.equal((await first).met, false);
          const otherRun = await startRun(w.store, await w.dag("other"), interval, {}, "triggered");
          const state = async (runId: string, taskId: string) =>
            (await w.store.listTaskInstances(runId)).find((r) => r.taskId === taskId)!.state;
          if (mode === "poke") {
            // The sensor keeps the pool's one slot through its checks: the other task waits.
            await nthPoke(id, 3);
            assert.equal(await state(sensorRun.runId, "wait"), "running");
            assert.equal(await state(otherRun.runId, "use_ils"), "queued");
            assert.deepEqual(await w.store.listPools(), [{ name: "ils", slots: 1, running: 1 }]);
          } else {
            // Between checks the slot is free: the other run's task takes it and ends.
            assert.equal(await w.ended(otherRun.runId), "success");
            await waitFor(
              async () => (await state(sensorRun.runId, "wait")) === "up_for_reschedule",
              20_000,
              "the sensor to wait up for reschedule",
            );
          }
          await Deno.writeTextFile(join(drop.path, "vendor.mrc"), "00000");
          assert.equal(await w.ended(sensorRun.runId), "success");
          assert.equal(await w.ended(otherRun.runId), "success");
          const rows = await w.store.listTaskInstances(sensorRun.runId);
          assert.equal(rows[0]!.tryNumber, 1, "pokes are not tries");
          assert.deepEqual(rows[0]!.output, { files: [join(drop.path, "vendor.mrc")] });
          assert.deepEqual(await w.store.listPools(), [{ name: "ils", slots: 1, running: 0 }]);
          if (mode === "reschedule") {
            let reschedules = 0;
            for await (const e of w.store.iterateAudit({ correlationId: sensorRun.runId })) {
              if (e.operation === "task:reschedule") reschedules++;
            }
            assert.ok(reschedules >= 1);
          }
        } finally {
          await workers.stop();
        }
      },
    });
  }
}
