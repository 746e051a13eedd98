/**
 * End-to-end resumes: after a task failure (`runs resume`), after `kill -9` in the middle of a
 * task (`dags run` again, and `runs resume`), and after SIGTERM/SIGINT (cancellation recorded,
 * then finished). Each DAG task appends a line to a mark file per execution, so the tests count
 * exactly what ran.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runIdFor } from "../../core/job_key.ts";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";
import {
  assertExit,
  assertNoStack,
  assertRunShape,
  byTask,
  counts,
  executed,
  oneJson,
  query,
  show,
  spawn,
  waitForFile,
  type World,
  world,
  writeDag,
} from "./helpers.ts";

notePostgresSkipped();

const FLAKY = `
const OK = M + "/ok";
export default defineDag({
  id: "flaky",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    a: task({ run: async (ctx) => {
      await mark(ctx);
      return { n: 1 };
    } }),
    side: task({ run: async (ctx) => {
      await mark(ctx);
      return "side";
    } }),
    flaky: task({ after: ["a"], retries: 0, run: async (ctx: any) => {
      await mark(ctx);
      if (!exists(OK)) throw new Error("marker file absent");
      return { n: ctx.inputs.a.n + 1 };
    } }),
    down: task({ after: ["flaky"], run: async (ctx: any) => {
      await mark(ctx);
      await Deno.writeTextFile(M + "/down-input", JSON.stringify(ctx.inputs.flaky));
      return null;
    } }),
    down2: task({ after: ["down"], run: async (ctx) => {
      await mark(ctx);
    } }),
  },
});
`;

/**
 * `slow` sleeps (honouring ctx.signal) only on its first execution for a day, after writing
 * `<day>.started`; on later executions it returns at once.
 */
const SLOW = `
export default defineDag({
  id: "slow",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    a: task({ run: async (ctx) => {
      await mark(ctx);
      return { n: 1 };
    } }),
    b: task({ run: async (ctx) => {
      await mark(ctx);
      return "b";
    } }),
    slow: task({ after: ["a", "b"], retries: 0, run: async (ctx: any) => {
      await mark(ctx);
      const first = M + "/" + day(ctx) + ".first";
      if (!exists(first)) {
        touch(first);
        touch(M + "/" + day(ctx) + ".started");
        await sleep(60_000, ctx.signal);
      }
      return { n: ctx.inputs.a.n + 10 };
    } }),
    after: task({ after: ["slow"], run: async (ctx: any) => {
      await mark(ctx);
      await Deno.writeTextFile(M + "/" + day(ctx) + ".after-input", JSON.stringify(ctx.inputs.slow));
    } }),
  },
});
`;

const SLOW_TASKS = ["a", "b", "slow", "after"];

/** Starts a run of `slow` for `day`, waits for the long task to be sleeping, sends `signal`. */
async function interrupt(w: World, day: string, signal: Deno.Signal, json = false) {
  const s = spawn(w, [
    "dags",
    "run",
    "slow",
    "--date",
    `${day}T02:00:00Z`,
    ...(json ? ["--json"] : []),
  ]);
  await waitForFile(s, join(w.marks, `${day}.started`));
  s.child.kill(signal);
  return await s.output;
}

/** The audit entries of a run with that operation (their `detail` as text). */
async function auditOf(w: World, runId: string, operation: string): Promise<string[]> {
  const rows = await query<{ detail: unknown }>(
    w,
    "SELECT detail FROM audit_log WHERE correlation_id = $1 AND operation = $2 ORDER BY seq",
    [runId, operation],
  );
  return rows.map((r) => JSON.stringify(r.detail));
}

async function readJson(path: string): Promise<unknown> {
  return JSON.parse(await Deno.readTextFile(path));
}

for (const backend of BACKENDS) {
  Deno.test(`runs resume after a failed task re-executes only it and its downstream [${backend}]`, async () => {
    await using w = await world(backend, "fail");
    await writeDag(w, "flaky", FLAKY);
    const day = "2026-02-03";
    const all = ["a", "side", "flaky", "down", "down2"];

    const failed = await w.run(["dags", "run", "flaky", "--date", `${day}T02:00:00Z`, "--json"]);
    assertExit(failed, 1);
    const run = oneJson(failed);
    assertRunShape(run);
    assert.equal(run.state, "failed");
    const t = byTask(run);
    assert.equal(t.a.state, "success");
    assert.equal(t.side.state, "success");
    assert.equal(t.flaky.state, "failed");
    assert.match(t.flaky.error, /marker file absent/);
    assert.equal(t.down.state, "upstream_failed");
    assert.equal(t.down2.state, "upstream_failed");
    assert.deepEqual(await counts(w, day, all), { a: 1, side: 1, flaky: 1, down: 0, down2: 0 });

    await Deno.writeTextFile(join(w.marks, "ok"), "");
    const resumed = await w.run(["runs", "resume", run.runId, "--json"]);
    assertExit(resumed, 0);
    const doc = oneJson(resumed);
    assertRunShape(doc);
    assert.equal(doc.runId, run.runId);
    assert.equal(doc.state, "success");
    assert.deepEqual(executed(doc), ["down", "down2", "flaky"]);
    for (const task of doc.tasks) {
      assert.equal(task.state, "success", task.taskId);
      assert.equal(task.jobKey, t[task.taskId].jobKey, `job key of ${task.taskId}`);
    }
    assert.equal(byTask(doc).flaky.attempts, 2);
    assert.deepEqual(await counts(w, day, all), { a: 1, side: 1, flaky: 2, down: 1, down2: 1 });
    // `flaky` got a's output back from the store as the value it was.
    assert.deepEqual(await readJson(join(w.marks, "down-input")), { n: 2 });
  });

  Deno.test(`kill -9 in the middle of a task: dags run and runs resume finish the run [${backend}]`, async () => {
    await using w = await world(backend, "kill");
    await writeDag(w, "slow", SLOW);
    const cases: [string, string][] = [["2026-05-01", "dags run"], ["2026-05-02", "runs resume"]];
    for (const [day, how] of cases) {
      const runId = runIdFor("slow", new Date(`${day}T02:00:00Z`));
      const killed = await interrupt(w, day, "SIGKILL", true);
      assert.equal(killed.signal, "SIGKILL", `${how}: ${JSON.stringify(killed)}`);
      assert.deepEqual(await counts(w, day, SLOW_TASKS), { a: 1, b: 1, slow: 1, after: 0 });

      const again = how === "dags run"
        ? await w.run(["dags", "run", "slow", "--date", `${day}T02:00:00Z`, "--json"])
        : await w.run(["runs", "resume", runId, "--json"]);
      assertExit(again, 0);
      const doc = oneJson(again);
      assertRunShape(doc);
      assert.equal(doc.runId, runId, how);
      assert.equal(doc.state, "success", `${how}: ${show(again)}`);
      assert.deepEqual(executed(doc), ["after", "slow"], how);
      for (const task of doc.tasks) assert.equal(task.state, "success", `${how}: ${task.taskId}`);
      assert.deepEqual(
        await counts(w, day, SLOW_TASKS),
        { a: 1, b: 1, slow: 2, after: 1 },
        how,
      );
      assert.deepEqual(await readJson(join(w.marks, `${day}.after-input`)), { n: 11 }, how);
      // Taken over because the owner process is gone, not because its lease ran out.
      const takeovers = await auditOf(w, runId, "run:takeover");
      assert.equal(takeovers.length, 1, `${how}: ${takeovers.join(", ")}`);
      assert.match(takeovers[0]!, /owner process gone/, how);
    }
  });

  Deno.test(`SIGTERM and SIGINT cancel a run, recorded as failed; it can be finished [${backend}]`, async () => {
    await using w = await world(backend, "term");
    await writeDag(w, "slow", SLOW);

    // SIGTERM, then `runs show` and `runs resume`.
    const day = "2026-06-01";
    const runId = runIdFor("slow", new Date(`${day}T02:00:00Z`));
    const term = await interrupt(w, day, "SIGTERM");
    assert.notEqual(term.code, 0, JSON.stringify(term));
    assert.equal(term.signal, null, "the CLI handled SIGTERM and exited by itself");
    assertNoStack(term.stderr);
    const shown = await w.run(["runs", "show", runId, "--json"]);
    assertExit(shown, 0);
    const doc = oneJson(shown);
    assertRunShape(doc);
    assert.equal(doc.state, "failed");
    const t = byTask(doc);
    assert.equal(t.a.state, "success");
    assert.equal(t.b.state, "success");
    assert.equal(t.slow.state, "failed");
    assert.match(t.slow.error ?? "", /cancel/i);
    assert.notEqual(t.after.state, "success");
    const resumed = await w.run(["runs", "resume", runId, "--json"]);
    assertExit(resumed, 0);
    const done = oneJson(resumed);
    assert.equal(done.state, "success");
    assert.deepEqual(executed(done), ["after", "slow"]);
    assert.deepEqual(await counts(w, day, SLOW_TASKS), { a: 1, b: 1, slow: 2, after: 1 });
    assert.deepEqual(await readJson(join(w.marks, `${day}.after-input`)), { n: 11 });

    // SIGINT (Ctrl-C), then `dags run` again.
    const day2 = "2026-06-02";
    const int = await interrupt(w, day2, "SIGINT", true);
    assert.notEqual(int.code, 0, JSON.stringify(int));
    assert.equal(int.signal, null, "the CLI handled SIGINT and exited by itself");
    assertNoStack(int.stderr);
    const cancelled = JSON.parse(int.stdout);
    assert.equal(cancelled.state, "failed");
    assert.match(byTask(cancelled).slow.error ?? "", /cancel/i);
    const again = await w.run(["dags", "run", "slow", "--date", `${day2}T02:00:00Z`, "--json"]);
    assertExit(again, 0);
    assert.deepEqual(executed(oneJson(again)), ["after", "slow"]);
    assert.deepEqual(await counts(w, day2, SLOW_TASKS), { a: 1, b: 1, slow: 2, after: 1 });
  });
}
