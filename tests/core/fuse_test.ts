import assert from "node:assert/strict";
import { join } from "node:path";
import { z } from "zod";
import {
  Dataset,
  defineDag,
  executeRun,
  resolveDag,
  task,
  type TaskContext,
} from "../../core/mod.ts";
import { privacyCheckpoint, schemaGate, tokenize, upstreamRecords } from "../../operators/mod.ts";
import { fusedChain } from "../../core/run/fuse.ts";
import type { AuditInput } from "../../core/audit.ts";
import { KEY_ENV } from "../privacy/run_helpers.ts";
import { BACKENDS, testStore, withTmpDir } from "../test_utils.ts";

const at = new Date("2026-01-01T00:00:00Z");
const N = 2_000;

const Row = z.object({
  circ: z.number().int(),
  patron_token: z.string(),
  at: z.string(),
  nested: z.object({ k: z.number() }),
}).strict();

/** What each task body did, to tell which ones ran again. */
type Calls = Record<string, number>;

/**
 * source (enclave, not streaming) -> shape (stream) -> tokens -> gate -> sink (shared).
 * `failAt`: `gate`'s input makes `shape` throw at that record on its first attempt.
 */
function pipelineDag(calls: Calls, home: string, opts: { failShapeAt?: number } = {}) {
  const bump = (id: string) => calls[id] = (calls[id] ?? 0) + 1;
  return resolveDag(defineDag({
    id: "fuse_test",
    tasks: {
      source: task({
        zone: "enclave",
        run: async function* () {
          bump("source");
          for (let i = 0; i < N; i++) {
            yield {
              circ: i,
              patron: i % 7 === 0 ? 1000 + i : `P-${i % 97}`,
              at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)),
              nested: { k: i / 4 },
              dropped: undefined,
              ...(i % 100 === 0 ? { junk: "x" } : {}),
            };
          }
        },
      }),
      shape: task({
        zone: "enclave",
        after: ["source"],
        stream: true,
        retries: 1,
        retryDelay: "0s",
        run: async (ctx: TaskContext) => {
          bump("shape");
          const out = await ctx.dataset("shaped");
          let n = 0;
          try {
            for await (const r of upstreamRecords(ctx)) {
              n++;
              if (opts.failShapeAt === n && ctx.attempt === 1) {
                throw new Error("shape failed on purpose");
              }
              const { patron, junk: _junk, ...rest } = r;
              await out.write({ ...rest, patron_id: patron });
            }
          } catch (error) {
            await out.abort();
            throw error;
          }
          ctx.count("shape:records", n);
          return await out.close();
        },
      }),
      tokens: tokenize({
        after: ["shape"],
        fields: ["patron_id"],
        rename: { patron_id: "patron_token" },
        env: KEY_ENV,
      }),
      gate: schemaGate({ after: ["tokens"], schema: Row }),
      sink: task({
        zone: "enclave",
        after: ["gate"],
        run: async (ctx: TaskContext) => {
          bump("sink");
          const lines: string[] = [];
          for await (const r of upstreamRecords(ctx)) lines.push(JSON.stringify(r));
          await Deno.writeTextFile(join(home, "out.jsonl"), lines.join("\n") + "\n");
          return lines.length;
        },
      }),
    },
  }));
}

function countsOf(entries: AuditInput[]): string[] {
  return entries.filter((e) => e.status === "counted").map((e) =>
    `${e.taskId} ${e.operation} ${e.recordCount} ${JSON.stringify(e.detail ?? {})}`
  ).sort();
}

async function runOnce(fusion: boolean, opts: { failShapeAt?: number } = {}) {
  await using dir = await withTmpDir();
  const calls: Calls = {};
  const audit: AuditInput[] = [];
  const dag = pipelineDag(calls, dir.path, opts);
  const result = await executeRun({
    dag,
    interval: { start: at, end: at },
    params: {},
    home: dir.path,
    fusion,
    onAudit: (e) => audit.push(...e),
  });
  const bytes = await Deno.readTextFile(join(dir.path, "out.jsonl")).catch(() => "");
  return { result, calls, audit, bytes, dag };
}

Deno.test("fusion: streaming tasks of one zone form one chain; others end it", () => {
  const dag = pipelineDag({}, "/nonexistent");
  const view = new Map(
    dag.order.map((id) => [id, { state: "scheduled", tryNumber: 0, maxTries: 1 } as never]),
  );
  assert.deepEqual(fusedChain(dag, "shape", view), ["shape", "tokens", "gate"]);
  assert.deepEqual(fusedChain(dag, "tokens", view), ["tokens", "gate"]);
  assert.deepEqual(fusedChain(dag, "source", view), ["source"], "source does not stream");
  const done = new Map(view);
  done.set("gate", { state: "success", tryNumber: 1, maxTries: 1 } as never);
  assert.deepEqual(fusedChain(dag, "shape", done), ["shape", "tokens"], "a finished task ends it");
});

Deno.test("fusion: fused and unfused runs give byte-identical outputs and the same counts", async () => {
  const fused = await runOnce(true);
  const plain = await runOnce(false);
  assert.equal(fused.result.state, "success");
  assert.equal(plain.result.state, "success");
  assert.equal(fused.bytes.split("\n").length - 1, N);
  assert.equal(fused.bytes, plain.bytes);
  assert.deepEqual(countsOf(fused.audit), countsOf(plain.audit));
  assert.ok(countsOf(fused.audit).some((c) => c.startsWith("tokens tokenize:count")));
  // Each task has its own start and end in the trail, fused or not.
  const ends = (a: AuditInput[]) =>
    a.filter((e) => e.operation === "task:success").map((e) => e.taskId).sort();
  assert.deepEqual(ends(fused.audit), ends(plain.audit));
  assert.equal(ends(fused.audit).length, 5);
  // The fused tasks' outputs were handed over in memory, never written.
  const shaped = fused.result.outputs.get("shape") as Dataset;
  assert.equal(shaped.ref.$dataset.streamed, true);
  assert.equal(shaped.records, N);
  assert.equal((plain.result.outputs.get("shape") as Dataset).ref.$dataset.streamed, undefined);
  assert.deepEqual(fused.calls, { source: 1, shape: 1, sink: 1 });
});

Deno.test("fusion: a failure in the middle of a pass resumes without re-running finished upstream tasks", async () => {
  const fused = await runOnce(true, { failShapeAt: 1_500 });
  const plain = await runOnce(false);
  assert.equal(fused.result.state, "success");
  const tries = Object.fromEntries(fused.result.tasks.map((t) => [t.taskId, t.attempts]));
  assert.deepEqual(tries, { source: 1, shape: 2, tokens: 1, gate: 1, sink: 1 });
  assert.equal(fused.calls.source, 1, "the finished upstream task ran once");
  assert.equal(fused.bytes, plain.bytes);
  assert.deepEqual(countsOf(fused.audit), countsOf(plain.audit));
  const retried = fused.audit.filter((e) =>
    e.operation === "task:retry" || e.operation === "task:failed"
  );
  assert.deepEqual(retried.map((e) => `${e.taskId} ${e.operation}`), ["shape task:retry"]);
  const starts = fused.audit.filter((e) => e.operation === "task:start").map((e) => e.taskId);
  assert.deepEqual(starts, ["source", "shape", "shape", "tokens", "gate", "sink"]);
});

Deno.test("fusion: a failure of a later task in the pass keeps the earlier ones' work", async () => {
  // tokens fails (a number where a string is expected is fine; an object is not) on its first try.
  await using dir = await withTmpDir();
  let gateRuns = 0;
  const dag = resolveDag(defineDag({
    id: "fuse_fail_late",
    tasks: {
      a: task({
        zone: "enclave",
        stream: true,
        run: async function* () {
          for (let i = 0; i < 3_000; i++) yield { i, v: `x${i}` };
        },
      }),
      b: task({
        zone: "enclave",
        after: ["a"],
        stream: true,
        run: async function* (ctx: TaskContext) {
          for await (const r of upstreamRecords(ctx)) yield { ...r, b: true };
        },
      }),
      c: task({
        zone: "enclave",
        after: ["b"],
        stream: true,
        retries: 1,
        retryDelay: "0s",
        run: async function* (ctx: TaskContext) {
          gateRuns++;
          let n = 0;
          for await (const r of upstreamRecords(ctx)) {
            if (++n === 2_000 && ctx.attempt === 1) throw new Error("c failed on purpose");
            yield { ...r, c: true };
          }
        },
      }),
      d: task({
        zone: "enclave",
        after: ["c"],
        run: async (ctx: TaskContext) => {
          let n = 0;
          for await (const r of upstreamRecords(ctx)) if (r.b && r.c) n++;
          return n;
        },
      }),
    },
  }));
  const result = await executeRun({
    dag,
    interval: { start: at, end: at },
    params: {},
    home: dir.path,
    fusion: true,
  });
  assert.equal(result.state, "success");
  assert.equal(result.outputs.get("d"), 3_000);
  const tries = Object.fromEntries(result.tasks.map((t) => [t.taskId, t.attempts]));
  assert.deepEqual(tries, { a: 1, b: 1, c: 2, d: 1 });
  assert.equal(gateRuns, 2);
  // b finished in the re-run of the pass's first part, so c's retry read it from a dataset.
  assert.equal((result.outputs.get("b") as Dataset).ref.$dataset.streamed, undefined);
});

for (const backend of BACKENDS) {
  Deno.test(`fusion (${backend}): each fused task is recorded with its own state and counts`, async () => {
    await using dir = await withTmpDir();
    const store = await testStore(backend, "fuse");
    try {
      const dag = pipelineDag({}, dir.path);
      const result = await executeRun({
        dag,
        interval: { start: at, end: at },
        params: {},
        home: dir.path,
        store,
        fusion: true,
      });
      assert.equal(result.state, "success");
      for (const t of result.tasks) assert.equal(t.state, "success", t.taskId);
      const lines = (await Deno.readTextFile(join(dir.path, "out.jsonl"))).trim().split("\n");
      assert.equal(lines.length, N);
      // Resuming the finished run runs nothing again.
      const again = await executeRun({
        dag,
        interval: { start: at, end: at },
        params: {},
        home: dir.path,
        store,
        fusion: true,
      });
      assert.equal(again.state, "success");
      assert.ok(again.tasks.every((t) => !t.executed));
    } finally {
      await store.close();
    }
  });
}

Deno.test("fusion: a task that stops reading early still hands its records on", async () => {
  await using dir = await withTmpDir();
  const dag = resolveDag(defineDag({
    id: "fuse_take",
    tasks: {
      a: task({
        zone: "enclave",
        stream: true,
        run: async function* () {
          for (let i = 0; i < 5_000; i++) yield { i };
        },
      }),
      take: task({
        zone: "enclave",
        after: ["a"],
        stream: true,
        run: async function* (ctx: TaskContext) {
          let n = 0;
          for await (const r of upstreamRecords(ctx)) {
            yield r;
            if (++n === 100) return;
          }
        },
      }),
      c: task({
        zone: "enclave",
        after: ["take"],
        stream: true,
        run: async function* (ctx: TaskContext) {
          for await (const r of upstreamRecords(ctx)) yield { ...r, c: true };
        },
      }),
      d: task({
        zone: "enclave",
        after: ["c"],
        run: async (ctx: TaskContext) => {
          let n = 0;
          for await (const r of upstreamRecords(ctx)) if (r.c) n++;
          return n;
        },
      }),
    },
  }));
  for (const fusion of [true, false]) {
    const result = await executeRun({
      dag,
      interval: { start: at, end: at },
      params: {},
      home: dir.path,
      fusion,
    });
    assert.equal(result.state, "success", `fusion ${fusion}`);
    assert.equal(result.outputs.get("d"), 100, `fusion ${fusion}`);
    assert.ok(result.tasks.every((t) => t.attempts === 1 && t.state === "success"));
  }
});

Deno.test("fusion: a checkpoint is never fed by a pipe, but what it publishes streams on", () => {
  const dag = resolveDag(defineDag({
    id: "fuse_checkpoint",
    tasks: {
      src: task({ zone: "enclave", run: () => [] }),
      tokens: tokenize({ after: ["src"], fields: ["patron_id"], env: KEY_ENV }),
      checkpoint: privacyCheckpoint({
        after: ["tokens"],
        tokenized: ["patron_id"],
        allowFields: ["patron_id"],
      }),
      load: task({ after: ["checkpoint"], stream: true, run: () => 0 }),
    },
  }));
  const view = new Map(
    dag.order.map((id) => [id, { state: "scheduled", tryNumber: 0, maxTries: 1 } as never]),
  );
  assert.deepEqual(fusedChain(dag, "tokens", view), ["tokens"]);
  assert.deepEqual(fusedChain(dag, "checkpoint", view), ["checkpoint", "load"]);
});
