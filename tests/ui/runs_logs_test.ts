/**
 * `runs logs RUN TASK [--attempt N] [--json]` and the quarantined counts of `runs show`, driven
 * through the CLI as a user would: log lines are stored per attempt (also when a worker process
 * ran the task), attempts are told apart, errors name the run, task and attempt, and quarantined
 * records show with their value-free reasons.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BACKENDS, notePostgresSkipped, OPERATORS_MOD } from "../test_utils.ts";
import { assertExit, oneJson, world, writeDag } from "../e2e/helpers.ts";
import { Progress } from "../../cli/progress.ts";

notePostgresSkipped();

const KEY = "console-test-key-0123456789abcdef0123";

/** `flaky` fails its first attempt; `gate` quarantines one of three records. */
const DAG = `
import { z } from "zod";
import { schemaGate } from ${JSON.stringify(OPERATORS_MOD)};
export default defineDag({
  id: "logs_dag",
  schedule: null,
  tasks: {
    flaky: task({
      retries: 2,
      retryDelay: 10,
      run: async (ctx) => {
        ctx.log.info("flaky attempt {n} begins", { n: ctx.attempt });
        if (!exists(M + "/flaky-failed")) {
          touch(M + "/flaky-failed");
          ctx.log.warn("flaky attempt {n} gives up", { n: ctx.attempt });
          throw new Error("first attempt fails");
        }
        ctx.log.info("flaky attempt {n} succeeds", { n: ctx.attempt });
        return [{ title: "a" }, { title: "b" }, { title: 7 }];
      },
    }),
    gate: schemaGate({
      after: ["flaky"],
      schema: z.object({ title: z.string() }),
      onInvalid: "quarantine",
    }),
  },
});
`;

for (const backend of BACKENDS) {
  Deno.test({
    name: `runs logs reads each attempt's lines; runs show has quarantined counts [${backend}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using w = await world(backend, "runs_logs", { env: { PII_HMAC_KEY: KEY } });
      await writeDag(w, "logs_dag", DAG);
      const run = await w.run(["dags", "run", "logs_dag", "--date", "2026-03-01", "--json"]);
      assertExit(run, 0);
      const runId = oneJson(run).runId as string;

      const first = oneJson(
        await w.run(["runs", "logs", runId, "flaky", "--attempt", "1", "--json"]),
      );
      assert.equal(first.attempt, 1);
      assert.equal(first.attempts, 2);
      assert.equal(first.state, "up_for_retry");
      const firstText = first.lines.map((l: { message: string }) => l.message).join("\n");
      assert.match(firstText, /flaky attempt 1 begins/);
      assert.match(firstText, /flaky attempt 1 gives up/);
      assert.doesNotMatch(firstText, /attempt 2/);

      const latest = oneJson(await w.run(["runs", "logs", runId, "flaky", "--json"]));
      assert.equal(latest.attempt, 2, "the latest attempt by default");
      assert.equal(latest.state, "success");
      const latestText = latest.lines.map((l: { message: string }) => l.message).join("\n");
      assert.match(latestText, /flaky attempt 2 succeeds/);
      assert.doesNotMatch(latestText, /attempt 1/);
      assert.ok(
        latest.lines.every((l: { level: string; at: string }) =>
          ["info", "warning", "debug", "error"].includes(l.level) && !Number.isNaN(Date.parse(l.at))
        ),
      );

      const text = await w.run(["runs", "logs", runId, "flaky", "--attempt", "1"]);
      assertExit(text, 0);
      assert.match(text.stdout, /attempt 1 of 2: up_for_retry/);
      assert.match(text.stdout, /WARNING\s+flaky attempt 1 gives up/);

      const missing = await w.run(["runs", "logs", runId, "flaky", "--attempt", "9"]);
      assertExit(missing, 2);
      assert.match(missing.stderr, /Task "flaky" of run ".*" has attempts 1 to 2, not 9/);
      const unknownTask = await w.run(["runs", "logs", runId, "nope"]);
      assertExit(unknownTask, 2);
      assert.match(unknownTask.stderr, /Unknown task "nope" in run ".*": tasks are flaky, gate/);
      const unknownRun = await w.run(["runs", "logs", "logs_dag@2020-01-01T00:00:00Z", "flaky"]);
      assertExit(unknownRun, 2);
      assert.match(unknownRun.stderr, /Unknown run "logs_dag@2020-01-01T00:00:00Z"/);

      const shown = oneJson(await w.run(["runs", "show", runId, "--json"]));
      const gate = shown.tasks.find((t: { taskId: string }) => t.taskId === "gate");
      assert.equal(gate.quarantined, 1);
      assert.equal(gate.records, 2);
      assert.deepEqual(Object.values(gate.quarantineReasons), [1]);
      assert.match(Object.keys(gate.quarantineReasons)[0]!, /^title: /);
      const table = await w.run(["runs", "show", runId]);
      assertExit(table, 0);
      assert.match(table.stdout, /QUARANTINED/);
      assert.match(table.stdout, /gate: 1 quarantined: title: /);

      // Nothing persisted by `tasks test` shows up in the run's logs.
      const before = oneJson(await w.run(["runs", "logs", runId, "flaky", "--json"])).lines.length;
      assertExit(
        await w.run(["tasks", "test", "logs_dag", "flaky", "--date", "2026-03-01"]),
        0,
      );
      const after = oneJson(await w.run(["runs", "logs", runId, "flaky", "--json"])).lines.length;
      assert.equal(after, before);
    },
  });
}

if (BACKENDS.includes("postgres")) {
  Deno.test({
    name: "runs logs reads the lines a worker process wrote [postgres]",
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using w = await world("postgres", "runs_logs_worker", { env: { PII_HMAC_KEY: KEY } });
      await writeDag(w, "logs_dag", DAG);
      const trig = await w.run([
        "dags",
        "trigger",
        "logs_dag",
        "--date",
        "2026-03-02",
        "--workers",
        "--json",
      ]);
      assertExit(trig, 0);
      const runId = oneJson(trig).runId as string;
      // A retry waits for its delay: workers that exit when idle are started until the run ends.
      for (let i = 0; i < 20; i++) {
        assertExit(await w.run(["worker", "--exit-when-idle", "--lease", "5"]), 0);
        const state = oneJson(await w.run(["runs", "show", runId, "--json"])).state;
        if (state === "success" || state === "failed") break;
      }
      const attempts = oneJson(await w.run(["runs", "logs", runId, "flaky", "--json"]));
      assert.equal(attempts.attempts, 2);
      assert.equal(attempts.state, "success");
      assert.match(
        attempts.lines.map((l: { message: string }) => l.message).join("\n"),
        /flaky attempt 2 succeeds/,
      );
      const first = oneJson(
        await w.run(["runs", "logs", runId, "flaky", "--attempt", "1", "--json"]),
      );
      assert.match(
        first.lines.map((l: { message: string }) => l.message).join("\n"),
        /flaky attempt 1 gives up/,
      );
    },
  });
}

Deno.test("the progress line shows quarantined records when the event carries counts", () => {
  const written: string[] = [];
  const progress = new Progress({
    writeSync: (p) => (written.push(new TextDecoder().decode(p)), p.length),
    isTerminal: () => false,
  });
  const success = {
    type: "task:success" as const,
    runId: "d@2026-01-01T00:00:00Z",
    taskId: "gate",
    attempt: 1,
    durationMs: 12,
    records: 4,
  };
  progress.event({ ...success, counts: { "gate:checked": 5, "gate:quarantined": 1 } } as never);
  progress.event(success);
  progress.stop();
  assert.match(written[0]!, /gate\s+success\s+12ms\s+4 records, 1 quarantined\n$/);
  assert.doesNotMatch(written[1]!, /quarantined/);
});
