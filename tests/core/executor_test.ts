import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type DagConfig,
  defineDag,
  resolveDag,
  task,
  type TaskContext,
  type TaskSpec,
  type TriggerRule,
} from "../../core/dag.ts";
import { Dataset } from "../../core/dataset.ts";
import { SkipTask } from "../../core/errors.ts";
import type { ExecutorEvent, RunResult } from "../../core/run/events.ts";
import { type ExecuteOptions, executeRun } from "../../core/run/local.ts";
import { retryDelay } from "../../core/run/decide.ts";
import { PrivacySafeError } from "../../core/privacy/privacy_safe.ts";
import { BACKENDS, notePostgresSkipped, testStore, withTmpDir } from "../test_utils.ts";

notePostgresSkipped();

const interval = {
  start: new Date("2026-01-01T00:00:00Z"),
  end: new Date("2026-01-02T00:00:00Z"),
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when the signal aborts (or after `maxMs`, so a broken abort cannot hang the test). */
function aborted(signal: AbortSignal, maxMs = 5_000): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, maxMs);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

async function run(
  config: DagConfig,
  options: Partial<ExecuteOptions> = {},
): Promise<RunResult & { events: ExecutorEvent[] }> {
  await using dir = await withTmpDir();
  const events: ExecutorEvent[] = [];
  const result = await executeRun({
    dag: resolveDag(defineDag(config)),
    interval,
    params: {},
    home: dir.path,
    onEvent: (e) => events.push(e),
    ...options,
  });
  return { ...result, events };
}

function summary(result: RunResult, id: string) {
  const t = result.tasks.find((t) => t.taskId === id);
  assert.ok(t, `no task ${id}`);
  return t;
}
const stateOf = (result: RunResult, id: string) => summary(result, id).state;

// ---------------------------------------------------------------------------------------------
// Retries, backoff, timeouts

Deno.test("executor: a task failing twice succeeds on its third attempt with retries: 2", async () => {
  let calls = 0;
  const attempts: number[] = [];
  const result = await run({
    id: "retry_ok",
    tasks: {
      flaky: task({
        retries: 2,
        retryDelay: 5,
        retryBackoff: "fixed",
        run: (ctx) => {
          calls++;
          attempts.push(ctx.attempt);
          if (calls < 3) throw new Error(`transient ${calls}`);
          return "done";
        },
      }),
    },
  });
  assert.equal(result.state, "success");
  assert.equal(stateOf(result, "flaky"), "success");
  assert.equal(summary(result, "flaky").attempts, 3);
  assert.equal(calls, 3);
  assert.deepEqual(attempts, [1, 2, 3]);
  assert.equal(result.outputs.get("flaky"), "done");
  assert.deepEqual(
    result.events.filter((e) => e.type === "task:retry").map((e) =>
      e.type === "task:retry" && e.error
    ),
    ["transient 1", "transient 2"],
  );
});

Deno.test("executor: with retries: 1 the same task fails after two attempts", async () => {
  let calls = 0;
  const result = await run({
    id: "retry_fail",
    tasks: {
      flaky: task({
        retries: 1,
        retryDelay: 5,
        retryBackoff: "fixed",
        run: () => {
          calls++;
          if (calls < 3) throw new Error(`transient ${calls}`);
          return "done";
        },
      }),
    },
  });
  assert.equal(result.state, "failed");
  assert.equal(stateOf(result, "flaky"), "failed");
  assert.equal(summary(result, "flaky").attempts, 2);
  assert.equal(summary(result, "flaky").error, "transient 2");
  assert.equal(calls, 2);
});

Deno.test("executor: fixed backoff waits at least the delay between attempts", async () => {
  const marks: number[] = [];
  const result = await run({
    id: "fixed_wait",
    tasks: {
      flaky: task({
        retries: 2,
        retryDelay: "150ms",
        retryBackoff: "fixed",
        run: (ctx) => {
          marks.push(performance.now());
          if (ctx.attempt < 3) throw new Error("again");
          return 1;
        },
      }),
    },
  });
  assert.equal(result.state, "success");
  assert.equal(marks.length, 3);
  assert.ok(marks[1]! - marks[0]! >= 149, `waited ${marks[1]! - marks[0]!}ms`);
  assert.ok(marks[2]! - marks[1]! >= 149, `waited ${marks[2]! - marks[1]!}ms`);
  const delays = result.events.flatMap((e) => e.type === "task:retry" ? [e.delayMs] : []);
  assert.deepEqual(delays, [150, 150]);
});

Deno.test("executor: exponential backoff has jitter in [d/2, d], doubles, and is capped", () => {
  const t = { retryDelayMs: 1_000, retryBackoff: "exponential" as const, maxRetryDelayMs: 6_000 };
  // Attempt n has a ceiling of d * 2^(n-1), capped at maxRetryDelay.
  const ceilings = [1_000, 2_000, 4_000, 6_000, 6_000];
  for (const [i, ceiling] of ceilings.entries()) {
    const attempt = i + 1;
    assert.equal(retryDelay(t, attempt, () => 0), ceiling / 2, `attempt ${attempt} low`);
    assert.equal(retryDelay(t, attempt, () => 0.999999), ceiling, `attempt ${attempt} high`);
    assert.equal(retryDelay(t, attempt, () => 0.5), ceiling * 0.75, `attempt ${attempt} mid`);
    for (let k = 0; k < 50; k++) {
      const d = retryDelay(t, attempt);
      assert.ok(d >= ceiling / 2 && d <= ceiling, `attempt ${attempt}: ${d}`);
    }
  }
  // Doubling per attempt with the same random draw.
  assert.equal(retryDelay(t, 2, () => 0.3), 2 * retryDelay(t, 1, () => 0.3));
  assert.equal(retryDelay(t, 3, () => 0.3), 2 * retryDelay(t, 2, () => 0.3));
  // Fixed backoff ignores the attempt and the random draw.
  const fixed = { ...t, retryBackoff: "fixed" as const };
  assert.equal(retryDelay(fixed, 1, () => 0), 1_000);
  assert.equal(retryDelay(fixed, 7, () => 0.9), 1_000);
});

Deno.test("executor: exponential retries in a run use delays within the jittered bounds", async () => {
  const result = await run({
    id: "exp_wait",
    tasks: {
      flaky: task({
        retries: 2,
        retryDelay: 20,
        run: (ctx) => {
          if (ctx.attempt < 3) throw new Error("again");
          return 1;
        },
      }),
    },
  });
  assert.equal(result.state, "success");
  const delays = result.events.flatMap((e) => e.type === "task:retry" ? [e.delayMs] : []);
  assert.equal(delays.length, 2);
  assert.ok(delays[0]! >= 10 && delays[0]! <= 20, `first delay ${delays[0]}`);
  assert.ok(delays[1]! >= 20 && delays[1]! <= 40, `second delay ${delays[1]}`);
});

Deno.test("executor: a timeout aborts the attempt's signal and fails the task", async () => {
  let sawAbort = false;
  let attempts = 0;
  const result = await run({
    id: "timeout",
    tasks: {
      slow: task({
        timeout: "100ms",
        run: async (ctx) => {
          attempts++;
          await aborted(ctx.signal);
          sawAbort = ctx.signal.aborted;
          return "too late";
        },
      }),
      after: task({ after: ["slow"], run: () => 1 }),
    },
  });
  // Let the task's own continuation run.
  await sleep(10);
  assert.equal(sawAbort, true);
  assert.equal(attempts, 1);
  assert.equal(result.state, "failed");
  assert.equal(stateOf(result, "slow"), "failed");
  assert.equal(summary(result, "slow").error, 'Task "slow" timed out after 100ms');
  assert.equal(stateOf(result, "after"), "upstream_failed");
  assert.equal(result.outputs.has("slow"), false);
});

Deno.test("executor: a timed-out attempt is retried, and each attempt gets a fresh signal", async () => {
  const signals: boolean[] = [];
  const result = await run({
    id: "timeout_retry",
    tasks: {
      slow: task({
        timeout: 80,
        retries: 1,
        retryDelay: 5,
        retryBackoff: "fixed",
        run: async (ctx) => {
          signals.push(ctx.signal.aborted);
          if (ctx.attempt === 1) await aborted(ctx.signal);
          return ctx.attempt;
        },
      }),
    },
  });
  assert.equal(result.state, "success");
  assert.deepEqual(signals, [false, false]);
  assert.equal(result.outputs.get("slow"), 2);
  assert.equal(summary(result, "slow").attempts, 2);
});

// ---------------------------------------------------------------------------------------------
// Trigger rules

type Outcome = "ok" | "fail" | "skip";
const outcome = (o: Outcome): TaskSpec =>
  task({
    run: () => {
      if (o === "fail") throw new Error("planned failure");
      if (o === "skip") throw new SkipTask("planned skip");
      return o;
    },
  });

/** Runs upstreams with the given outcomes feeding `down` with `rule`; returns down's state. */
async function ruleCase(rule: TriggerRule, outcomes: Outcome[]): Promise<string> {
  const tasks: Record<string, TaskSpec> = {};
  outcomes.forEach((o, i) => (tasks[`up${i}`] = outcome(o)));
  let ran = false;
  tasks.down = task({
    after: Object.keys(tasks),
    triggerRule: rule,
    run: () => {
      ran = true;
      return "ran";
    },
  });
  const result = await run({ id: `rule_${rule}`, tasks });
  const state = stateOf(result, "down");
  assert.equal(ran, state === "success", `${rule} ${outcomes}: ran=${ran} but state ${state}`);
  assert.equal(summary(result, "down").executed, ran);
  return state;
}

const RULE_CASES: [TriggerRule, Outcome[], string][] = [
  ["all_success", ["ok", "ok"], "success"],
  ["all_success", ["ok", "fail"], "upstream_failed"],
  ["all_success", ["ok", "skip"], "skipped"],
  ["all_success", ["fail", "skip"], "upstream_failed"],
  ["all_failed", ["fail", "fail"], "success"],
  ["all_failed", ["fail", "ok"], "skipped"],
  ["all_failed", ["fail", "skip"], "skipped"],
  ["all_done", ["ok", "fail", "skip"], "success"],
  ["all_done", ["fail"], "success"],
  ["one_success", ["fail", "ok"], "success"],
  ["one_success", ["fail", "fail"], "upstream_failed"],
  ["one_success", ["skip", "skip"], "skipped"],
  ["one_success", ["fail", "skip"], "upstream_failed"],
  ["one_failed", ["ok", "fail"], "success"],
  ["one_failed", ["ok", "ok"], "skipped"],
  ["one_failed", ["ok", "skip"], "skipped"],
  ["none_failed", ["ok", "skip"], "success"],
  ["none_failed", ["skip", "skip"], "success"],
  ["none_failed", ["ok", "fail"], "upstream_failed"],
  ["none_failed_min_one_success", ["ok", "skip"], "success"],
  ["none_failed_min_one_success", ["skip", "skip"], "skipped"],
  ["none_failed_min_one_success", ["ok", "fail"], "upstream_failed"],
  ["always", ["fail", "fail"], "success"],
  ["always", ["skip", "ok"], "success"],
  // The rules Airflow added later, and its old names.
  ["all_skipped", ["skip", "skip"], "success"],
  ["all_skipped", ["skip", "ok"], "skipped"],
  ["all_skipped", ["skip", "fail"], "skipped"],
  ["one_done", ["fail", "skip"], "success"],
  ["one_done", ["ok", "skip"], "success"],
  ["one_done", ["skip", "skip"], "skipped"],
  ["none_skipped", ["ok", "fail"], "success"],
  ["none_skipped", ["ok", "skip"], "skipped"],
  ["none_skipped", ["fail", "fail"], "success"],
  ["all_done_min_one_success", ["ok", "fail"], "success"],
  ["all_done_min_one_success", ["fail", "fail"], "upstream_failed"],
  ["all_done_min_one_success", ["ok", "skip"], "skipped"],
  ["none_failed_or_skipped", ["ok", "skip"], "success"],
  ["none_failed_or_skipped", ["skip", "skip"], "skipped"],
  ["none_failed_or_skipped", ["ok", "fail"], "upstream_failed"],
  ["dummy", ["fail", "skip"], "success"],
];

for (
  const rule of [
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
    "always",
    "all_skipped",
    "one_done",
    "none_skipped",
    "all_done_min_one_success",
    "none_failed_or_skipped",
    "dummy",
  ] as const
) {
  Deno.test(`executor: trigger rule ${rule} follows Airflow`, async () => {
    const cases = RULE_CASES.filter(([r]) => r === rule);
    assert.ok(cases.length >= 1);
    for (const [, outcomes, expected] of cases) {
      assert.equal(await ruleCase(rule, outcomes), expected, `${rule} with ${outcomes.join(", ")}`);
    }
  });
}

Deno.test("executor: upstream_failed counts as failed for all_failed and one_failed", async () => {
  const result = await run({
    id: "uf_counts",
    tasks: {
      a: outcome("fail"),
      b: task({ after: ["a"], run: () => 1 }),
      c: task({ after: ["b"], triggerRule: "all_failed", run: () => "cleanup" }),
      d: task({ after: ["b"], triggerRule: "one_failed", run: () => "alert" }),
    },
  });
  assert.equal(stateOf(result, "b"), "upstream_failed");
  assert.equal(stateOf(result, "c"), "success");
  assert.equal(stateOf(result, "d"), "success");
});

Deno.test("executor: one_success fires as soon as one upstream succeeds", async () => {
  const order: string[] = [];
  const result = await run({
    id: "one_success_early",
    tasks: {
      fast: task({ run: () => order.push("fast") }),
      slow: task({
        run: async () => {
          await sleep(150);
          order.push("slow");
        },
      }),
      down: task({
        after: ["fast", "slow"],
        triggerRule: "one_success",
        run: () => order.push("down"),
      }),
    },
  });
  assert.equal(result.state, "success");
  assert.deepEqual(order, ["fast", "down", "slow"]);
});

Deno.test("executor: SkipTask skips downstream all_success tasks; none_failed ones still run", async () => {
  const ran: string[] = [];
  const result = await run({
    id: "skip_propagation",
    tasks: {
      check: task({
        run: () => {
          throw new SkipTask("No new records");
        },
      }),
      load: task({ after: ["check"], run: () => ran.push("load") }),
      report: task({ after: ["load"], run: () => ran.push("report") }),
      notify: task({ after: ["check"], triggerRule: "none_failed", run: () => ran.push("notify") }),
    },
  });
  assert.equal(stateOf(result, "check"), "skipped");
  assert.deepEqual(
    result.events.filter((e) => e.type === "task:skipped").map((e) =>
      e.type === "task:skipped" && [e.taskId, e.reason]
    ),
    [["check", "No new records"], ["load", "upstream skipped"], ["report", "upstream skipped"]],
  );
  assert.equal(stateOf(result, "load"), "skipped");
  assert.equal(stateOf(result, "report"), "skipped");
  assert.equal(stateOf(result, "notify"), "success");
  assert.deepEqual(ran, ["notify"]);
  // Leaves skipped or successful: the run succeeds.
  assert.equal(result.state, "success");
});

Deno.test("executor: failures propagate as upstream_failed; independent branches still run", async () => {
  const ran: string[] = [];
  const result = await run({
    id: "uf_propagation",
    tasks: {
      extract: outcome("fail"),
      transform: task({ after: ["extract"], run: () => ran.push("transform") }),
      load: task({ after: ["transform"], run: () => ran.push("load") }),
      other: task({ run: () => ran.push("other") }),
    },
  });
  assert.equal(stateOf(result, "extract"), "failed");
  assert.equal(summary(result, "extract").error, "planned failure");
  assert.equal(stateOf(result, "transform"), "upstream_failed");
  assert.equal(stateOf(result, "load"), "upstream_failed");
  assert.equal(stateOf(result, "other"), "success");
  assert.deepEqual(ran, ["other"]);
  assert.equal(result.state, "failed");
});

Deno.test("executor: the run state follows Airflow's leaf rule", async () => {
  // A failed task whose leaf (always) succeeds: the run succeeds.
  const cleanup = await run({
    id: "leaf_always",
    tasks: {
      work: outcome("fail"),
      cleanup: task({ after: ["work"], triggerRule: "always", run: () => 1 }),
    },
  });
  assert.equal(stateOf(cleanup, "work"), "failed");
  assert.equal(cleanup.state, "success");
  // A failed leaf fails the run even when the other leaves succeed.
  const leaf = await run({
    id: "leaf_failed",
    tasks: {
      a: outcome("ok"),
      b: outcome("ok"),
      c: task({ after: ["a"], run: () => 1 }),
      d: outcome("fail"),
    },
  });
  assert.equal(leaf.state, "failed");
  // An upstream_failed leaf fails the run too.
  const uf = await run({
    id: "leaf_uf",
    tasks: { a: outcome("fail"), b: task({ after: ["a"], run: () => 1 }) },
  });
  assert.equal(uf.state, "failed");
  // All success.
  const good = await run({
    id: "leaf_ok",
    tasks: { a: outcome("ok"), b: task({ after: ["a"], run: (ctx) => ctx.inputs.a }) },
  });
  assert.equal(good.state, "success");
  assert.equal(good.outputs.get("b"), "ok");
});

// ---------------------------------------------------------------------------------------------
// Parallelism and cancellation

Deno.test("executor: maxActiveTasks caps how many tasks run at once", async () => {
  let active = 0;
  let max = 0;
  let done = 0;
  const tasks: Record<string, TaskSpec> = {};
  for (let i = 0; i < 10; i++) {
    tasks[`t${i}`] = task({
      run: async () => {
        active++;
        max = Math.max(max, active);
        await sleep(30);
        active--;
        done++;
      },
    });
  }
  const result = await run({ id: "parallel", maxActiveTasks: 3, tasks });
  assert.equal(result.state, "success");
  assert.equal(done, 10);
  assert.equal(max, 3);
  assert.equal(active, 0);
});

Deno.test("executor: cancelling the run aborts running attempts; unstarted tasks never start", async () => {
  const controller = new AbortController();
  const started: string[] = [];
  let sawAbort = false;
  const result = await run({
    id: "cancel",
    maxActiveTasks: 1,
    tasks: {
      slow: task({
        retries: 3,
        retryDelay: 5,
        run: async (ctx) => {
          started.push("slow");
          setTimeout(() => controller.abort(), 30);
          await aborted(ctx.signal);
          sawAbort = ctx.signal.aborted;
        },
      }),
      next: task({ after: ["slow"], run: () => started.push("next") }),
      independent: task({ run: () => started.push("independent") }),
    },
  }, { signal: controller.signal });
  await sleep(10);
  assert.equal(sawAbort, true);
  assert.deepEqual(started, ["slow"]); // not retried, nothing else started
  assert.equal(result.state, "failed");
  assert.equal(stateOf(result, "slow"), "failed");
  assert.equal(summary(result, "slow").attempts, 1);
  assert.equal(summary(result, "slow").error, "Cancelled: the run was interrupted");
  assert.equal(summary(result, "next").executed, false);
  assert.equal(summary(result, "independent").executed, false);
  assert.equal(stateOf(result, "next"), "scheduled");
  assert.equal(stateOf(result, "independent"), "scheduled");
  assert.deepEqual(result.events.at(-1), {
    type: "run:end",
    runId: result.runId,
    state: "failed",
    durationMs: (result.events.at(-1) as { durationMs: number }).durationMs,
  });
});

// ---------------------------------------------------------------------------------------------
// Privacy

Deno.test("executor: enclave error messages are withheld; privacy-safe ones are kept", async () => {
  const result = await run({
    id: "enclave_errors",
    tasks: {
      extract: task({
        zone: "enclave",
        run: () => {
          throw new Error("patron P-123 has no barcode");
        },
      }),
      vetted: task({
        zone: "enclave",
        run: () => {
          throw new PrivacySafeError('field "patron_id" holds 3 values that are not tokens');
        },
      }),
      shared: task({
        run: () => {
          throw new Error("shared detail 42");
        },
      }),
    },
  });
  const withheld = summary(result, "extract").error!;
  assert.ok(!withheld.includes("P-123"), withheld);
  assert.ok(!withheld.includes("barcode"), withheld);
  assert.match(withheld, /^Error in enclave task "extract" \(message withheld/);
  assert.equal(
    summary(result, "vetted").error,
    'field "patron_id" holds 3 values that are not tokens',
  );
  assert.equal(summary(result, "shared").error, "shared detail 42");
  for (const e of result.events) assert.ok(!JSON.stringify(e).includes("P-123"), e.type);
});

for (const backend of BACKENDS) {
  Deno.test({
    name: `executor: an output over maxOutputBytes fails, pointing to datasets [${backend}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using store = await testStore(backend, "executor");
      let calls = 0;
      const result = await run({
        id: "big_output",
        tasks: {
          big: task({
            retries: 2,
            retryDelay: 5,
            run: () => {
              calls++;
              return Array.from({ length: 100 }, (_, i) => ({ i, text: "x".repeat(50) }));
            },
          }),
          small: task({ run: () => ({ ok: true }) }),
          secret: task({
            zone: "enclave",
            run: () => {
              throw new Error("patron P-123");
            },
          }),
        },
      }, { store, maxOutputBytes: 1024 });
      assert.equal(result.state, "failed");
      const big = summary(result, "big");
      assert.equal(big.state, "failed");
      assert.equal(calls, 1, "too large is not retried");
      assert.match(
        big.error!,
        /^Cannot store the output of task "big": .* exceeds the 1\.0 KiB limit/,
      );
      assert.match(
        big.error!,
        /return a dataset instead \(ctx\.dataset\(\) or an async generator\)/,
      );
      const stored = await store.getTaskInstance(big.jobKey);
      assert.equal(stored?.state, "failed");
      assert.equal(stored?.error, big.error);
      assert.equal(stored?.output, null);
      const small = await store.getTaskInstance(summary(result, "small").jobKey);
      assert.equal(small?.state, "success");
      assert.equal(small?.outputKind, "json");
      assert.deepEqual(small?.output, { ok: true });
      // Nothing of the enclave error reaches the store or the audit trail.
      const secret = await store.getTaskInstance(summary(result, "secret").jobKey);
      assert.equal(secret?.state, "failed");
      assert.ok(!secret!.error!.includes("P-123"));
      for await (const entry of store.iterateAudit()) {
        assert.ok(!JSON.stringify(entry).includes("P-123"));
      }
      const run_ = await store.getRun(result.runId);
      assert.equal(run_?.state, "failed");
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Datasets

Deno.test("executor: an async generator output becomes a dataset the downstream iterates", async () => {
  await using dir = await withTmpDir();
  let seen = 0;
  let sum = 0;
  let wasDataset = false;
  let records = -1;
  const result = await executeRun({
    dag: resolveDag(defineDag({
      id: "gen",
      tasks: {
        produce: task({
          run: async function* () {
            for (let i = 0; i < 1000; i++) yield { i };
          },
        }),
        consume: task({
          after: ["produce"],
          run: async (ctx: TaskContext) => {
            const input = ctx.inputs.produce;
            wasDataset = input instanceof Dataset;
            records = (input as Dataset).records;
            for await (const r of input as AsyncIterable<{ i: number }>) {
              seen++;
              sum += r.i;
            }
            return seen;
          },
        }),
      },
    })),
    interval,
    params: {},
    home: dir.path,
  });
  assert.equal(result.state, "success");
  assert.equal(wasDataset, true);
  assert.equal(records, 1000);
  assert.equal(seen, 1000);
  assert.equal(sum, (999 * 1000) / 2);
  const out = result.outputs.get("produce");
  assert.ok(out instanceof Dataset);
  assert.equal(out.ref.$dataset.encrypted, false);
  assert.match(out.ref.$dataset.path, /^runs\/gen\/.*\/produce\/produce\.jsonl$/);
  // A shared dataset stays readable after the run.
  const text = await Deno.readTextFile(join(dir.path, out.ref.$dataset.path));
  assert.equal(text.trim().split("\n").length, 1000);
  assert.equal(text.split("\n")[0], '{"i":0}');
});

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) await walk(p);
      else if (e.isFile) out.push(p);
    }
  };
  await walk(dir).catch(() => {});
  return out;
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("executor: enclave datasets are encrypted on disk and removed after the run", async () => {
  await using dir = await withTmpDir();
  const SENTINEL = "SENTINEL-patron-9f3c2b";
  const sentinel = new TextEncoder().encode(SENTINEL);
  let files: string[] = [];
  let plaintextOnDisk = true;
  let decrypted = 0;
  let modes: number[] = [];
  const result = await executeRun({
    dag: resolveDag(defineDag({
      id: "enclave_ds",
      tasks: {
        extract: task({
          zone: "enclave",
          run: async function* () {
            for (let i = 0; i < 200; i++) yield { patron_id: `${SENTINEL}-${i}`, n: i };
          },
        }),
        inspect: task({
          zone: "enclave",
          after: ["extract"],
          run: async (ctx: TaskContext) => {
            files = await filesUnder(dir.path);
            plaintextOnDisk = false;
            modes = [];
            for (const f of files) {
              if (contains(await Deno.readFile(f), sentinel)) plaintextOnDisk = true;
              modes.push((await Deno.stat(f)).mode! & 0o777);
            }
            for await (const r of ctx.inputs.extract as AsyncIterable<{ patron_id: string }>) {
              if (r.patron_id.startsWith(SENTINEL)) decrypted++;
            }
            return decrypted;
          },
        }),
      },
    })),
    interval,
    params: {},
    home: dir.path,
  });
  assert.equal(result.state, "success");
  assert.equal(decrypted, 200);
  const enclaveFiles = files.filter((f) => f.includes("/enclave/"));
  assert.equal(enclaveFiles.length, 1, files.join(", "));
  assert.match(enclaveFiles[0]!, /\/enclave\/enclave_ds\/.*\/extract\/extract\.jsonl\.enc$/);
  assert.ok(await Deno.stat(dir.path).then(() => true));
  assert.equal(plaintextOnDisk, false);
  assert.deepEqual(modes, modes.map(() => 0o600));
  // The enclave scratch of the run is gone.
  assert.deepEqual(await filesUnder(join(dir.path, "enclave")), []);
  await assert.rejects(Deno.stat(join(dir.path, "enclave", "enclave_ds")), Deno.errors.NotFound);
});
