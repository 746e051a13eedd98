/**
 * Attempts that survive a crash, through the CLI on both stores: a process killed while a task
 * waits for its retry keeps the try number, the retry budget and the retry's time when the run
 * is resumed; a task that crashes its own process is retried by its budget only (each lost
 * attempt counts) when the scheduler continues the interrupted run; `tasks test` runs a task's
 * body whatever its trigger rule.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runIdFor } from "../../core/job_key.ts";
import { BACKENDS, notePostgresSkipped, spawnCli } from "../test_utils.ts";
import {
  assertExit,
  byTask,
  executed,
  oneJson,
  query,
  type World,
  world,
  writeDag,
} from "../e2e/helpers.ts";

notePostgresSkipped();

/** Starts `carrel <args>` and resolves once a line of its stderr matches `pattern`. */
async function until(w: World, args: string[], pattern: RegExp) {
  const child = spawnCli(args, { cwd: w.dir, env: w.env });
  const lines: string[] = [];
  let found = false;
  const reader = (async () => {
    let buffer = "";
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      buffer += text;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      lines.push(...parts);
      if (parts.some((l) => pattern.test(l))) return (found = true);
    }
    return false;
  })();
  const drainOut = child.stdout.pipeTo(new WritableStream());
  if (!(await reader)) {
    await child.status;
    throw new Error(`carrel ${args.join(" ")} ended before ${pattern}:\n${lines.join("\n")}`);
  }
  return {
    child,
    found,
    lines,
    async kill() {
      child.kill("SIGKILL");
      const status = await child.status;
      await drainOut.catch(() => {});
      return status;
    },
  };
}

/** The lines of a marks file (one per execution). */
async function marks(w: World, name: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(join(w.marks, name))).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

for (const backend of BACKENDS) {
  Deno.test(`crash: killed while a task waits for its retry, \`runs resume\` keeps its try, budget and time [${backend}]`, async () => {
    await using w = await world(backend, "retrywait");
    await writeDag(
      w,
      "waits",
      `export default defineDag({
  id: "waits",
  schedule: null,
  tasks: {
    flaky: task({ retries: 2, retryDelay: "6s", retryBackoff: "fixed", run: async (ctx: any) => {
      await Deno.writeTextFile(M + "/flaky", ctx.attempt + " " + Date.now() + "\\n", { append: true });
      if (ctx.attempt === 1) throw new Error("the first attempt fails");
      return ctx.attempt;
    } }),
    after: task({ after: ["flaky"], run: (ctx: any) => ctx.inputs.flaky }),
  },
});`,
    );
    const date = "2026-07-01T00:00:00Z";
    const runId = runIdFor("waits", new Date(date));
    const first = await until(
      w,
      ["dags", "run", "waits", "--date", date, "--json"],
      /flaky\s+up_for_retry in 6(\.0)?s: the first attempt fails/,
    );
    const status = await first.kill();
    assert.equal(status.signal, "SIGKILL");

    const resumed = await w.run(["runs", "resume", runId, "--json"]);
    assertExit(resumed, 0);
    const doc = oneJson(resumed);
    assert.equal(doc.state, "success");
    const t = byTask(doc);
    assert.equal(t.flaky.state, "success");
    assert.equal(t.flaky.attempts, 2, "the crash did not give it a new budget");
    assert.equal(t.flaky.output, 2);
    assert.deepEqual(executed(doc), ["after", "flaky"]);
    // Progress says the second attempt of three, never "attempt 1 of 3" again.
    assert.match(resumed.stderr, /flaky\s+started \(attempt 2 of 3\)/);
    assert.doesNotMatch(resumed.stderr, /attempt 1 of 3/);
    // The retry waited for its time, recorded before the crash.
    const runs = (await marks(w, "flaky")).map((l) => l.split(" ").map(Number));
    assert.deepEqual(runs.map(([a]) => a), [1, 2]);
    assert.ok(
      runs[1]![1]! - runs[0]![1]! >= 5_900,
      `attempt 2 came ${runs[1]![1]! - runs[0]![1]!}ms after attempt 1 (retry delay 6s)`,
    );
    // The trail shows one retry and no reset.
    const ops = (await query<{ operation: string }>(
      w,
      "SELECT operation FROM audit_log WHERE correlation_id = $1 AND task_id = 'flaky' ORDER BY seq",
      [runId],
    )).map((r) => r.operation);
    assert.deepEqual(ops, ["task:start", "task:retry", "task:start", "task:success"]);
  });

  Deno.test(`crash: a task that crashes its process is retried by its budget only when the scheduler continues the run [${backend}]`, async () => {
    await using w = await world(backend, "crashloop");
    await writeDag(
      w,
      "crashy",
      `export default defineDag({
  id: "crashy",
  schedule: null,
  tasks: {
    crash: task({ retries: 1, retryDelay: 0, run: async (ctx: any) => {
      await Deno.writeTextFile(M + "/crash", ctx.attempt + " " + Deno.pid + "\\n", { append: true });
      Deno.kill(Deno.pid, "SIGKILL");
      await new Promise(() => {});
    } }),
  },
});`,
    );
    const date = "2026-07-02T00:00:00Z";
    const runId = runIdFor("crashy", new Date(date));
    // The run's process dies with attempt 1.
    const run = await w.run(["dags", "run", "crashy", "--date", date, "--json"]);
    assert.notEqual(run.code, 0);
    assert.deepEqual((await marks(w, "crash")).map((l) => l.split(" ")[0]), ["1"]);
    // The scheduler finds the run interrupted and continues it: attempt 1 counts, attempt 2
    // runs (and crashes the scheduler).
    const second = await w.run(["scheduler", "--once", "--json"]);
    assert.notEqual(second.code, 0);
    assert.deepEqual((await marks(w, "crash")).map((l) => l.split(" ")[0]), ["1", "2"]);
    // Again: attempt 2 counts too, and no attempt is left: the run ends failed.
    const third = await w.run(["scheduler", "--once", "--json"]);
    assertExit(third, 1);
    const out = JSON.parse(third.stdout);
    assert.deepEqual(out.resumed, [runId]);
    assert.equal(out.runs[0].state, "failed");
    const crash = byTask(out.runs[0]).crash;
    assert.equal(crash.state, "failed");
    assert.equal(crash.attempts, 2);
    assert.match(crash.error, /^Lost: the process running attempt 2 is gone/);
    // And that is the end of it: nothing more runs.
    const fourth = await w.run(["scheduler", "--once", "--json"]);
    assertExit(fourth, 0);
    assert.deepEqual(JSON.parse(fourth.stdout).resumed, []);
    assert.equal((await marks(w, "crash")).length, 2);
    const lost = await query<{ status: string }>(
      w,
      "SELECT status FROM audit_log WHERE correlation_id = $1 AND operation = 'task:lost' ORDER BY seq",
      [runId],
    );
    assert.deepEqual(lost.map((r) => r.status), ["up_for_retry", "failed"]);
  });
}

Deno.test("tasks test runs an all_failed task's body with successful inputs (no dependency checks)", async () => {
  await using w = await world("pglite", "tasktest");
  await writeDag(
    w,
    "alerts",
    `export default defineDag({
  id: "alerts",
  schedule: null,
  tasks: {
    load: task({ run: () => 1 }),
    alert: task({ after: ["load"], triggerRule: "all_failed", run: (ctx: any) => {
      ctx.count("alerts_sent", 1);
      return { alerted: ctx.inputs.load };
    } }),
  },
});`,
  );
  const input = join(w.dir, "input.json");
  await Deno.writeTextFile(input, JSON.stringify({ load: 7 }));
  const r = await w.run(["tasks", "test", "alerts", "alert", "--input", input, "--json"]);
  assertExit(r, 0);
  const doc = oneJson(r);
  assert.equal(doc.state, "success");
  assert.deepEqual(doc.output, { alerted: 7 });
  assert.deepEqual(doc.counts, { alerts_sent: 1 });
  assert.equal(doc.persisted, false);
  const text = await w.run(["tasks", "test", "alerts", "alert", "--input", input]);
  assertExit(text, 0);
  assert.match(text.stdout, /Task alerts\.alert: success/);
  assert.doesNotMatch(text.stdout, /skipped/);
});
