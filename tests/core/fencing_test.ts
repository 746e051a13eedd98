/**
 * Fencing of a local run: every write of the run's owner carries its lease token; once another
 * process holds the run, the owner's next write is refused, its attempts are aborted, and it
 * writes nothing more. A heartbeat that finds the lease gone stops the run the same way.
 */
import assert from "node:assert/strict";
import { defineDag, resolveDag, task } from "../../core/dag.ts";
import { LeaseLostError } from "../../core/run/attempt.ts";
import { executeRun } from "../../core/run/local.ts";
import { BACKENDS, notePostgresSkipped, testStore, waitFor } from "../test_utils.ts";

notePostgresSkipped();

const interval = {
  start: new Date("2026-08-01T00:00:00Z"),
  end: new Date("2026-08-02T00:00:00Z"),
};

/** Every audit entry of a run, as `operation:task`. */
async function trail(store: Awaited<ReturnType<typeof testStore>>, runId: string) {
  const out: string[] = [];
  for await (const e of store.iterateAudit({ correlationId: runId })) {
    out.push(`${e.operation}${e.taskId ? `:${e.taskId}` : ""}`);
  }
  return out;
}

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `fencing: a run taken over by another process gets no more writes from its old owner [${backend}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using store = await testStore(backend, "fence");
      const release = Promise.withResolvers<void>();
      const aborted: string[] = [];
      const ran: string[] = [];
      const dag = resolveDag(defineDag({
        id: "fenced",
        tasks: {
          a: task({
            run: async (ctx) => {
              ran.push("a");
              ctx.signal.addEventListener("abort", () => aborted.push("a"));
              await release.promise;
              return 1;
            },
          }),
          b: task({
            after: ["a"],
            run: (ctx) => {
              ran.push("b");
              ctx.signal.addEventListener("abort", () => aborted.push("b"));
              return new Promise((r) => setTimeout(r, 200));
            },
          }),
        },
      }));
      const running = executeRun({ dag, interval, params: {}, store, home: store.home });
      const runId = "fenced@2026-08-01T00:00:00Z";
      await waitFor(
        async () => (await store.listTaskInstances(runId)).some((t) => t.state === "running"),
      );
      // Another process takes the run over (as one does once the owner's lease has expired).
      assert.equal(
        await store.updateRun(runId, {
          owner: "elsewhere.example:1:new",
          leaseToken: "the-new-owner",
          leaseUntil: new Date(Date.now() + 60_000),
        }),
        true,
      );
      const before = await trail(store, runId);
      const head = await store.auditHead();
      release.resolve();
      await assert.rejects(running, (error: unknown) => {
        assert.ok(error instanceof LeaseLostError, String(error));
        assert.match(error.message, /another process took it over/);
        return true;
      });
      // Nothing more was written by the old owner: not a's end, not b's start or end.
      assert.deepEqual(await store.auditHead(), head);
      assert.deepEqual(await trail(store, runId), before);
      const tis = new Map((await store.listTaskInstances(runId)).map((t) => [t.taskId, t]));
      assert.equal(tis.get("a")!.state, "running");
      assert.equal(tis.get("b")!.state, "scheduled");
      const run = await store.getRun(runId);
      assert.equal(run!.leaseToken, "the-new-owner");
      // Whatever the old owner had started was aborted.
      for (const id of ran.filter((x) => x !== "a")) assert.ok(aborted.includes(id), id);
    },
  });

  Deno.test({
    name: `fencing: a heartbeat that finds the lease gone aborts the running attempts [${backend}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      await using store = await testStore(backend, "fencebeat");
      const dag = resolveDag(defineDag({
        id: "beat",
        tasks: {
          wait: task({
            run: (ctx) =>
              new Promise((_, reject) => {
                ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), {
                  once: true,
                });
              }),
          }),
        },
      }));
      const runId = "beat@2026-08-01T00:00:00Z";
      const running = executeRun({
        dag,
        interval,
        params: {},
        store,
        home: store.home,
        leaseMs: 300,
      });
      await waitFor(async () =>
        (await store.getTaskInstance(
          (await store.listTaskInstances(runId))[0]?.jobKey ?? "",
        ))?.state === "running"
      );
      await store.updateRun(runId, { owner: "elsewhere.example:1:new", leaseToken: "taken" });
      await assert.rejects(running, LeaseLostError);
      assert.equal((await store.listTaskInstances(runId))[0]!.state, "running");
    },
  });
}
