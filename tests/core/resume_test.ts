import assert from "node:assert/strict";
import { type DagConfig, defineDag, resolveDag, type ResolvedDag, task } from "../../core/dag.ts";
import type { ExecutorEvent, RunResult } from "../../core/run/events.ts";
import { type ExecuteOptions, executeRun, RunBusyError } from "../../core/run/local.ts";
import { runIdFor } from "../../core/job_key.ts";
import {
  intervalAt,
  intervalsBetween,
  latestCompleteInterval,
  nextFireAfter,
} from "../../core/schedule.ts";
import { BACKENDS, notePostgresSkipped, testStore } from "../test_utils.ts";

notePostgresSkipped();

type Store = Awaited<ReturnType<typeof testStore>>;

const interval = {
  start: new Date("2026-01-01T00:00:00Z"),
  end: new Date("2026-01-02T00:00:00Z"),
};

function summary(result: RunResult, id: string) {
  const t = result.tasks.find((t) => t.taskId === id);
  assert.ok(t, `no task ${id}`);
  return t;
}

async function operations(store: Store, runId: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of store.iterateAudit({ correlationId: runId })) {
    out.push(e.taskId ? `${e.operation}:${e.taskId}` : e.operation);
  }
  return out;
}

for (const backend of BACKENDS) {
  let shared: Promise<Store> | undefined;
  const storeFor = () => (shared ??= testStore(backend, "resume"));
  const test = (name: string, fn: (store: Store) => Promise<void>, last = false) =>
    Deno.test({
      name: `resume: ${name} [${backend}]`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        const store = await storeFor();
        try {
          await fn(store);
        } finally {
          if (last) await store.close();
        }
      },
    });
  const exec = (
    store: Store,
    dag: ResolvedDag,
    options: Partial<ExecuteOptions> = {},
  ): Promise<RunResult & { events: ExecutorEvent[] }> => {
    const events: ExecutorEvent[] = [];
    return executeRun({
      dag,
      interval,
      params: {},
      store,
      home: store.home,
      onEvent: (e) => events.push(e),
      ...options,
    }).then((r) => ({ ...r, events }));
  };

  test("a rerun executes only failed and downstream tasks; a third executes nothing", async (store) => {
    const calls: Record<string, number> = { a: 0, b: 0, c: 0, d: 0 };
    let failB = true;
    let bInput: unknown;
    const dag = resolveDag(defineDag({
      id: "r_rerun",
      tasks: {
        a: task({ run: () => (calls.a!++, { rows: 3, names: ["x"] }) }),
        b: task({
          after: ["a"],
          run: (ctx) => {
            calls.b!++;
            bInput = ctx.inputs.a;
            if (failB) throw new Error("b broke");
            return (ctx.inputs.a as { rows: number }).rows * 2;
          },
        }),
        c: task({ after: ["b"], run: (ctx) => (calls.c!++, ctx.inputs.b) }),
        d: task({ run: () => (calls.d!++, "independent") }),
      },
    }));

    const first = await exec(store, dag);
    assert.equal(first.state, "failed");
    assert.deepEqual(first.tasks.map((t) => [t.taskId, t.state]), [
      ["a", "success"],
      ["b", "failed"],
      ["c", "upstream_failed"],
      ["d", "success"],
    ]);
    assert.deepEqual(calls, { a: 1, b: 1, c: 0, d: 1 });
    const stored = await store.getRun(first.runId);
    assert.equal(stored?.state, "failed");
    assert.equal(stored?.owner, null);

    failB = false;
    const second = await exec(store, dag);
    assert.equal(second.runId, first.runId);
    assert.equal(second.state, "success");
    assert.deepEqual(calls, { a: 1, b: 2, c: 1, d: 1 });
    // b got a's output back from the store, as the same JSON value.
    assert.deepEqual(bInput, { rows: 3, names: ["x"] });
    assert.equal(second.outputs.get("c"), 6);
    assert.deepEqual(second.tasks.map((t) => [t.taskId, t.state, t.executed]), [
      ["a", "success", false],
      ["b", "success", true],
      ["c", "success", true],
      ["d", "success", false],
    ]);
    // Attempts count every execution of the job key.
    assert.equal(summary(second, "b").attempts, 2);
    const start = second.events.find((e) => e.type === "run:start");
    assert.deepEqual(start && start.type === "run:start" && [start.resumed, start.alreadyDone], [
      true,
      2,
    ]);
    const tis = await store.listTaskInstances(first.runId);
    assert.deepEqual(tis.map((t) => [t.taskId, t.state]), [
      ["a", "success"],
      ["b", "success"],
      ["c", "success"],
      ["d", "success"],
    ]);
    assert.equal((await store.listRuns({ dagId: "r_rerun" })).length, 1);

    const third = await exec(store, dag);
    assert.equal(third.state, "success");
    assert.deepEqual(calls, { a: 1, b: 2, c: 1, d: 1 });
    assert.ok(third.tasks.every((t) => !t.executed && t.state === "success"));
    assert.equal(third.events.filter((e) => e.type === "task:start").length, 0);
    assert.equal(third.events.filter((e) => e.type === "task:done_before").length, 4);
  });

  test("an enclave task is recomputed when its checkpoint downstream had failed", async (store) => {
    let extracts = 0;
    let checkpoints = 0;
    let failCheckpoint = true;
    let seen: unknown;
    const dag = resolveDag(defineDag({
      id: "r_enclave",
      tasks: {
        extract: task({
          zone: "enclave",
          run: () => {
            extracts++;
            return [{ patron_id: "P-SECRET-1" }, { patron_id: "P-SECRET-2" }];
          },
        }),
        checkpoint: {
          after: ["extract"],
          zone: "inherit",
          checkpoint: true,
          run: (ctx) => {
            checkpoints++;
            seen = ctx.inputs.extract;
            if (failCheckpoint) throw new Error("checkpoint refused");
            return { records: (ctx.inputs.extract as unknown[]).length };
          },
        },
        load: task({ after: ["checkpoint"], run: (ctx) => ctx.inputs.checkpoint }),
      },
    } as DagConfig));

    const first = await exec(store, dag);
    assert.equal(first.state, "failed");
    assert.equal(summary(first, "extract").state, "success");
    assert.equal(summary(first, "checkpoint").state, "failed");
    assert.equal(summary(first, "load").state, "upstream_failed");
    // The enclave output was never stored.
    const extractTi = await store.getTaskInstance(summary(first, "extract").jobKey);
    assert.equal(extractTi?.outputKind, "enclave");
    assert.equal(extractTi?.output, null);

    failCheckpoint = false;
    seen = undefined;
    const second = await exec(store, dag);
    assert.equal(second.state, "success");
    assert.equal(extracts, 2, "the enclave task ran again to feed the checkpoint");
    assert.equal(checkpoints, 2);
    assert.deepEqual(seen, [{ patron_id: "P-SECRET-1" }, { patron_id: "P-SECRET-2" }]);
    assert.deepEqual(second.outputs.get("load"), { records: 2 });
    assert.equal(summary(second, "extract").state, "success");
    assert.equal(summary(second, "extract").executed, true);
    const ops = await operations(store, first.runId);
    assert.ok(ops.includes("task:recompute:extract"), ops.join(", "));
    assert.ok(ops.includes("task:recomputed:extract"), ops.join(", "));
    // Still nothing of the enclave data in the store.
    const after = await store.getTaskInstance(summary(first, "extract").jobKey);
    assert.equal(after?.state, "success");
    assert.equal(after?.output, null);
    for (const ti of await store.listTaskInstances(first.runId)) {
      assert.ok(!JSON.stringify(ti).includes("P-SECRET"), ti.taskId);
    }

    // Everything succeeded now: no recomputation is needed.
    const third = await exec(store, dag);
    assert.equal(third.state, "success");
    assert.equal(extracts, 2);
  });

  test("a stale running run of a dead owner is taken over", async (store) => {
    const deadPid = 999_999;
    assert.equal(
      await Deno.stat(`/proc/${deadPid}`).then(() => true, () => false),
      false,
      "pid 999999 must not exist for this test",
    );
    let calls = 0;
    let fail = true;
    const dag = resolveDag(defineDag({
      id: "r_takeover",
      tasks: {
        work: task({
          run: () => {
            calls++;
            if (fail) throw new Error("first time");
            return "done";
          },
        }),
      },
    }));
    const first = await exec(store, dag);
    assert.equal(first.state, "failed");
    // As if a process had been killed mid-run: running, owned, leased for another hour.
    const dead = `${Deno.hostname()}:${deadPid}:dead`;
    const leaseUntil = new Date(Date.now() + 3_600_000);
    assert.equal(
      await store.updateRun(first.runId, { state: "running", owner: dead, leaseUntil }),
      true,
    );
    await store.updateTaskInstance(summary(first, "work").jobKey, {
      state: "running",
      owner: dead,
      leaseUntil,
    });
    fail = false;
    const second = await exec(store, dag);
    assert.equal(second.state, "success");
    assert.equal(calls, 2);
    const run = await store.getRun(first.runId);
    assert.equal(run?.state, "success");
    assert.equal(run?.owner, null);
    const ti = await store.getTaskInstance(summary(first, "work").jobKey);
    assert.equal(ti?.state, "success");
    assert.equal(ti?.owner, null);
    const takeovers = [];
    for await (const e of store.iterateAudit({ correlationId: first.runId })) {
      if (e.operation === "run:takeover") takeovers.push(e.detail);
    }
    assert.deepEqual(takeovers, [{ reason: "owner process gone" }]);
  });

  test("a run owned by a live process with a valid lease is refused", async (store) => {
    assert.equal(await Deno.stat("/proc/1").then(() => true, () => false), true);
    let calls = 0;
    const dag = resolveDag(defineDag({
      id: "r_busy",
      tasks: { work: task({ run: () => ++calls }) },
    }));
    const first = await exec(store, dag);
    assert.equal(first.state, "success");
    assert.equal(calls, 1);
    const runId = first.runId;
    assert.equal(runId, runIdFor("r_busy", interval.start));
    // A live process on this host (pid 1), and a process on another host (judged by its lease).
    for (const owner of [`${Deno.hostname()}:1:live`, "another-host.example:4242:abcd"]) {
      await store.updateRun(runId, {
        state: "running",
        owner,
        leaseUntil: new Date(Date.now() + 3_600_000),
      });
      const head = await store.auditHead();
      await assert.rejects(exec(store, dag), (error: unknown) => {
        assert.ok(error instanceof RunBusyError, String(error));
        assert.equal(
          error.message,
          `Cannot run "${runId}": another process is running it (owner ${owner}); wait for it or stop it`,
        );
        return true;
      });
      assert.equal(calls, 1, "nothing ran");
      const run = await store.getRun(runId);
      assert.equal(run?.owner, owner);
      assert.equal(run?.state, "running");
      assert.deepEqual(await store.auditHead(), head, "a refused run records nothing");
    }

    // Once the other host's lease has expired, the run is taken over.
    await store.updateRun(runId, { leaseUntil: new Date(Date.now() - 1_000) });
    const taken = await exec(store, dag);
    assert.equal(taken.state, "success");
    assert.equal(calls, 1, "its task had succeeded already");
    assert.equal((await store.getRun(runId))?.owner, null);
    const reasons = [];
    for await (const e of store.iterateAudit({ correlationId: runId })) {
      if (e.operation === "run:takeover") reasons.push(e.detail?.reason);
    }
    assert.deepEqual(reasons, ["lease expired"]);
  });

  test(
    "different params for the same logical date are refused, naming the key only",
    async (store) => {
      let calls = 0;
      const dag = resolveDag({
        id: "r_params",
        params: { since: "", limit: 10 },
        tasks: { work: task({ run: () => ++calls }) },
      } as DagConfig);
      const first = await exec(store, dag, { params: { since: "2026-01-01", limit: 10 } });
      assert.equal(first.state, "success");
      await assert.rejects(
        exec(store, dag, { params: { since: "SECRET-2026-02-02", limit: 10 } }),
        (error: unknown) => {
          assert.ok(error instanceof RunBusyError);
          assert.equal(
            error.message,
            'Cannot run "r_params@2026-01-01T00:00:00Z": it exists with different params (since); clear it or use its params',
          );
          assert.ok(!error.message.includes("SECRET"));
          return true;
        },
      );
      assert.equal(calls, 1);
      // The same params, in another key order, resume the same run.
      const again = await exec(store, dag, { params: { limit: 10, since: "2026-01-01" } });
      assert.equal(again.state, "success");
      assert.equal(calls, 1);
    },
    true,
  );
}

// ---------------------------------------------------------------------------------------------
// Schedules and intervals (no store). Cron is evaluated with the process in TZ=UTC.

const scheduled = (schedule: string, timezone = "UTC") =>
  resolveDag(defineDag({
    id: "sched",
    schedule,
    timezone,
    start: "2026-01-01T00:00:00Z",
    tasks: { t: task({ run: () => 1 }) },
  }));
const iso = (i: { start: Date; end: Date } | null) =>
  i && [i.start.toISOString(), i.end.toISOString()];

Deno.test("schedule: a daily UTC cron gives day-long intervals at 02:00", () => {
  const dag = scheduled("0 2 * * *");
  assert.deepEqual(iso(intervalAt(dag, new Date("2026-11-28T05:00:00Z"))), [
    "2026-11-28T02:00:00.000Z",
    "2026-11-29T02:00:00.000Z",
  ]);
  // A fire time belongs to the interval it starts.
  assert.deepEqual(iso(intervalAt(dag, new Date("2026-11-28T02:00:00Z"))), [
    "2026-11-28T02:00:00.000Z",
    "2026-11-29T02:00:00.000Z",
  ]);
  assert.deepEqual(iso(intervalAt(dag, new Date("2026-11-28T01:59:59.999Z"))), [
    "2026-11-27T02:00:00.000Z",
    "2026-11-28T02:00:00.000Z",
  ]);
  assert.equal(
    nextFireAfter(dag, new Date("2026-11-28T02:00:00Z"))?.toISOString(),
    "2026-11-29T02:00:00.000Z",
  );
  // Manual DAGs: a zero-length interval at the date, and no next fire.
  const manual = resolveDag(
    defineDag({ id: "m", schedule: null, tasks: { t: task({ run: () => 1 }) } }),
  );
  const at = new Date("2026-05-05T05:05:05Z");
  assert.deepEqual(iso(intervalAt(manual, at)), [at.toISOString(), at.toISOString()]);
  assert.equal(nextFireAfter(manual, at), null);
  assert.equal(latestCompleteInterval(manual, at), null);
});

Deno.test("schedule: latestCompleteInterval is the last interval that has ended", () => {
  const dag = scheduled("0 2 * * *");
  assert.deepEqual(iso(latestCompleteInterval(dag, new Date("2026-11-28T05:00:00Z"))), [
    "2026-11-27T02:00:00.000Z",
    "2026-11-28T02:00:00.000Z",
  ]);
  // At the fire time itself the interval has just ended.
  assert.deepEqual(iso(latestCompleteInterval(dag, new Date("2026-11-28T02:00:00Z"))), [
    "2026-11-27T02:00:00.000Z",
    "2026-11-28T02:00:00.000Z",
  ]);
  assert.deepEqual(iso(latestCompleteInterval(dag, new Date("2026-11-28T01:59:00Z"))), [
    "2026-11-26T02:00:00.000Z",
    "2026-11-27T02:00:00.000Z",
  ]);
  // Nothing complete before the DAG's start.
  assert.equal(latestCompleteInterval(dag, new Date("2026-01-01T12:00:00Z")), null);
  assert.deepEqual(iso(latestCompleteInterval(dag, new Date("2026-01-02T03:00:00Z"))), [
    "2026-01-01T02:00:00.000Z",
    "2026-01-02T02:00:00.000Z",
  ]);
});

Deno.test("schedule: intervalsBetween counts every start in [from, to], contiguously", () => {
  const dag = scheduled("0 2 * * *");
  const january = intervalsBetween(
    dag,
    new Date("2026-01-01T00:00:00Z"),
    new Date("2026-01-31T00:00:00Z"),
  );
  assert.equal(january.length, 30);
  assert.equal(january[0]!.start.toISOString(), "2026-01-01T02:00:00.000Z");
  assert.equal(january.at(-1)!.start.toISOString(), "2026-01-30T02:00:00.000Z");
  for (let i = 1; i < january.length; i++) {
    assert.equal(january[i]!.start.getTime(), january[i - 1]!.end.getTime());
  }
  // Both ends inclusive when they are fire times.
  assert.equal(
    intervalsBetween(dag, new Date("2026-01-01T02:00:00Z"), new Date("2026-01-31T02:00:00Z"))
      .length,
    31,
  );
  assert.equal(
    intervalsBetween(
      scheduled("@hourly"),
      new Date("2026-01-01T00:00:00Z"),
      new Date("2026-01-01T23:59:00Z"),
    )
      .length,
    24,
  );
  assert.equal(
    intervalsBetween(dag, new Date("2026-01-05T03:00:00Z"), new Date("2026-01-05T04:00:00Z"))
      .length,
    0,
  );
});

Deno.test("schedule: DST in America/New_York: a skipped 02:00 fires at 03:00 EDT, a repeated hour once", () => {
  const dag = scheduled("0 2 * * *", "America/New_York");
  // Spring forward on 2026-03-08: 02:00 does not exist; it fires at 03:00 EDT = 07:00Z.
  assert.equal(
    nextFireAfter(dag, new Date("2026-03-07T07:00:00Z"))?.toISOString(),
    "2026-03-08T07:00:00.000Z",
  );
  assert.deepEqual(
    intervalsBetween(dag, new Date("2026-03-07T00:00:00Z"), new Date("2026-03-09T23:00:00Z")).map(
      iso,
    ),
    [
      ["2026-03-07T07:00:00.000Z", "2026-03-08T07:00:00.000Z"], // 02:00 EST
      ["2026-03-08T07:00:00.000Z", "2026-03-09T06:00:00.000Z"], // 03:00 EDT, a 23-hour day
      ["2026-03-09T06:00:00.000Z", "2026-03-10T06:00:00.000Z"], // 02:00 EDT
    ],
  );
  assert.deepEqual(iso(intervalAt(dag, new Date("2026-03-08T12:00:00Z"))), [
    "2026-03-08T07:00:00.000Z",
    "2026-03-09T06:00:00.000Z",
  ]);
  // Fall back on 2026-11-01: 02:00 EST = 07:00Z, once; that day has 25 hours.
  const fall = intervalsBetween(
    dag,
    new Date("2026-10-31T00:00:00Z"),
    new Date("2026-11-02T23:00:00Z"),
  );
  assert.deepEqual(fall.map(iso), [
    ["2026-10-31T06:00:00.000Z", "2026-11-01T07:00:00.000Z"],
    ["2026-11-01T07:00:00.000Z", "2026-11-02T07:00:00.000Z"],
    ["2026-11-02T07:00:00.000Z", "2026-11-03T07:00:00.000Z"],
  ]);
  const onNov1 = fall.filter((i) => i.start.toISOString().startsWith("2026-11-01"));
  assert.equal(onNov1.length, 1);
  // 01:30 happens twice that night: it fires once, at the second (EST) occurrence, as Airflow
  // (fold=1).
  assert.deepEqual(
    intervalsBetween(
      scheduled("30 1 * * *", "America/New_York"),
      new Date("2026-11-01T00:00:00Z"),
      new Date("2026-11-01T23:00:00Z"),
    ).map(iso),
    [["2026-11-01T06:30:00.000Z", "2026-11-02T06:30:00.000Z"]],
  );
});
