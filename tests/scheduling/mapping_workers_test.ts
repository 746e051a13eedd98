/**
 * Dynamic task mapping on workers (in-process workers on PGlite, and on PostgreSQL when
 * configured): zero, one and 1,000 items, a resume that re-runs only the failed indexes, results
 * collected in order, pool slots held per instance, and a mapped enclave task refused (it runs
 * locally).
 */
import assert from "node:assert/strict";
import type { DataInterval } from "../../core/dag.ts";
import { startRun } from "../../core/run/worker.ts";
import { BACKENDS, CORE_MOD, notePostgresSkipped } from "../test_utils.ts";
import { workerWorld as world } from "./worker_world.ts";

notePostgresSkipped();

const opts = { sanitizeResources: false, sanitizeOps: false };
const interval: DataInterval = {
  start: new Date("2026-03-01T00:00:00Z"),
  end: new Date("2026-03-02T00:00:00Z"),
};

interface Probe {
  ran: number[];
  failing: number[];
  active: number;
  max: number;
}

/** A DAG file mapping over `n` items, recording into `globalThis[key]`. */
function mappedSource(id: string, n: number, key: string, extra = ""): string {
  return `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const probe = () => globalThis[${JSON.stringify(key)}];
export default defineDag({
  id: ${JSON.stringify(id)},
  schedule: null,
  maxActiveTasks: 16,
  tasks: {
    list: task({ run: () => Array.from({ length: ${n} }, (_, i) => "ZZSENTINEL-" + i) }),
    load: task({
      expand: "list",
      ${extra}
      run: async (ctx) => {
        const p = probe();
        p.ran.push(ctx.mapIndex);
        p.active++;
        p.max = Math.max(p.max, p.active);
        await new Promise((r) => setTimeout(r, p.pause ?? 0));
        p.active--;
        if (p.failing.includes(ctx.mapIndex)) throw new Error("index failed");
        return ctx.mapIndex * 2;
      },
    }),
    report: task({ after: ["load"], run: (ctx) => ctx.inputs.load }),
  },
});
`;
}

function probe(key: string): Probe {
  const p: Probe = { ran: [], failing: [], active: 0, max: 0 };
  (globalThis as unknown as Record<string, Probe>)[key] = p;
  return p;
}

for (const backend of BACKENDS) {
  Deno.test({
    name: `mapping (workers): zero and one item [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const key = `__carrel_map_${crypto.randomUUID().slice(0, 8)}`;
      const p = probe(key);
      await w.write("map_zero", mappedSource("map_zero", 0, key));
      await w.write("map_one", mappedSource("map_one", 1, key));
      const zero = await startRun(w.store, await w.dag("map_zero"), interval, {}, "triggered");
      assert.equal(await w.drain(zero.runId), "success");
      const zeroRows = await w.store.listTaskInstances(zero.runId);
      assert.deepEqual(
        zeroRows.map((r) => `${r.taskId}:${r.state}`).sort(),
        ["list:success", "load:skipped", "report:skipped"],
      );
      assert.deepEqual(p.ran, []);

      const one = await startRun(w.store, await w.dag("map_one"), interval, {}, "triggered");
      assert.equal(await w.drain(one.runId), "success");
      const rows = await w.store.listTaskInstances(one.runId);
      const inst = rows.find((r) => r.taskId === "load[0]")!;
      assert.equal(inst.mapIndex, 0);
      assert.equal(inst.state, "success");
      assert.deepEqual(rows.find((r) => r.taskId === "report")!.output, [0]);
      assert.deepEqual(p.ran, [0]);
    },
  });

  Deno.test({
    name: `mapping (workers): 1,000 items, resume re-runs only the failed indexes [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const key = `__carrel_map_${crypto.randomUUID().slice(0, 8)}`;
      const p = probe(key);
      p.failing = [7, 640];
      await w.write("map_many", mappedSource("map_many", 1000, key));
      const dag = await w.dag("map_many");
      const run = await startRun(w.store, dag, interval, {}, "triggered");
      assert.equal(await w.drain(run.runId, 2, 4), "failed");
      assert.equal(p.ran.length, 1000);
      assert.equal(new Set(p.ran).size, 1000, "each index ran exactly once");
      const rows = await w.store.listTaskInstances(run.runId);
      assert.equal(rows.filter((r) => r.mapIndex >= 0).length, 1000);
      assert.deepEqual(
        rows.filter((r) => r.state === "failed").map((r) => r.taskId).sort(),
        ["load[640]", "load[7]"],
      );
      assert.equal(new Set(rows.map((r) => r.jobKey)).size, rows.length);

      p.failing = [];
      p.ran = [];
      await startRun(w.store, dag, interval, {}, "triggered");
      assert.equal(await w.drain(run.runId, 2, 4), "success");
      assert.deepEqual(p.ran.sort((a, b) => a - b), [7, 640]);
      const after = await w.store.listTaskInstances(run.runId);
      assert.deepEqual(
        after.find((r) => r.taskId === "report")!.output,
        Array.from({ length: 1000 }, (_, i) => i * 2),
      );
      let audit = "";
      for await (const e of w.store.iterateAudit({ correlationId: run.runId })) {
        audit += JSON.stringify(e);
      }
      assert.ok(!audit.includes("ZZSENTINEL"), "items never reach the audit trail");
      assert.match(audit, /"taskId":"load\[640\]","operation":"task:reset"/);
    },
  });

  Deno.test({
    name: `mapping (workers): instances hold pool slots, a pool of 2 across workers [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.store.setPool("ils", 2);
      const key = `__carrel_map_${crypto.randomUUID().slice(0, 8)}`;
      const p = probe(key) as Probe & { pause?: number };
      p.pause = 40;
      await w.write("map_pool", mappedSource("map_pool", 8, key, 'pool: "ils",'));
      const run = await startRun(w.store, await w.dag("map_pool"), interval, {}, "triggered");
      assert.equal(await w.drain(run.runId, 3, 4), "success");
      assert.equal(p.ran.length, 8);
      assert.ok(p.max <= 2, `pool exceeded: ${p.max}`);
      assert.equal(p.max, 2, "both slots were used");
      assert.deepEqual(await w.store.listPools(), [{ name: "ils", slots: 2, running: 0 }]);
    },
  });

  Deno.test({
    name: `mapping (workers): a mapped enclave task is refused on workers [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.write(
        "map_enclave",
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({ id: "map_enclave", schedule: null, tasks: {
  load: task({ zone: "enclave", expand: () => [1, 2], run: (ctx) => ctx.item }),
} });
`,
      );
      await assert.rejects(
        startRun(w.store, await w.dag("map_enclave"), interval, {}, "triggered"),
        /mapped task "load" is in the enclave/,
      );
    },
  });
}
