/**
 * End-to-end `tasks test` (one task alone, inputs from a file or from the latest persisted run,
 * nothing persisted), `dags test` (everything, nothing persisted) and `tasks clear --downstream`
 * followed by `runs resume`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";
import {
  assertExit,
  assertRunShape,
  counts,
  dumpAllTables,
  executed,
  listFiles,
  oneJson,
  world,
  writeDag,
} from "./helpers.ts";

notePostgresSkipped();

/** `rows` returns an async generator: a shared dataset under `CARREL_HOME/runs`. */
const TT = `
export default defineDag({
  id: "tt",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    up: task({ run: async (ctx) => {
      await mark(ctx);
      return { n: 21 };
    } }),
    rows: task({ run: async (ctx) => {
      await mark(ctx);
      return (async function* () {
        for (let i = 0; i < 3; i++) yield { i };
      })();
    } }),
    target: task({ after: ["up", "rows"], run: async (ctx: any) => {
      await mark(ctx);
      let rows = 0;
      for await (const _ of ctx.inputs.rows) rows++;
      ctx.log.info("target counted {rows} rows", { rows });
      return { doubled: ctx.inputs.up.n * 2, rows };
    } }),
    down: task({ after: ["target"], run: async (ctx) => {
      await mark(ctx);
    } }),
    other: task({ run: async (ctx) => {
      await mark(ctx);
    } }),
  },
});
`;

const TT_TASKS = ["up", "rows", "target", "down", "other"];

const CLR = `
export default defineDag({
  id: "clr",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    a: task({ run: async (ctx) => {
      await mark(ctx);
      return { n: 1 };
    } }),
    b: task({ after: ["a"], run: async (ctx: any) => {
      await mark(ctx);
      return { n: ctx.inputs.a.n + 1 };
    } }),
    c: task({ after: ["b"], run: async (ctx: any) => {
      await mark(ctx);
      await Deno.writeTextFile(M + "/c-input", JSON.stringify(ctx.inputs.b));
    } }),
    d: task({ after: ["a"], run: async (ctx) => {
      await mark(ctx);
    } }),
  },
});
`;

for (const backend of BACKENDS) {
  Deno.test(`tasks test runs one task alone and dags test runs all; neither persists [${backend}]`, async () => {
    await using w = await world(backend, "ttest");
    await writeDag(w, "tt", TT);
    const day = "2026-07-01";
    const date = `${day}T02:00:00Z`;

    const persisted = await w.run(["dags", "run", "tt", "--date", date, "--json"]);
    assertExit(persisted, 0);
    assert.equal(oneJson(persisted).state, "success");
    assert.deepEqual(await counts(w, day, TT_TASKS), {
      up: 1,
      rows: 1,
      target: 1,
      down: 1,
      other: 1,
    });
    const listBefore = await w.run(["runs", "list", "--json"]);
    assertExit(listBefore, 0);
    const runsBefore = oneJson(listBefore);
    assert.equal(runsBefore.length, 1);
    const runFiles = await listFiles(join(w.home, "runs"));
    assert(runFiles.length > 0, "the persisted run wrote its dataset under CARREL_HOME/runs");
    const storeBefore = await dumpAllTables(w);

    // --input: the upstream outputs come from the file; only the target executes.
    const input = join(w.dir, "input.json");
    await Deno.writeTextFile(input, JSON.stringify({ up: { n: 5 }, rows: [{ i: 0 }, { i: 1 }] }));
    const fromFile = await w.run([
      "tasks",
      "test",
      "tt",
      "target",
      "--date",
      date,
      "--input",
      input,
    ]);
    assertExit(fromFile, 0);
    assert.match(fromFile.stdout, /"doubled": 10/);
    assert.match(fromFile.stdout, /"rows": 2/);
    assert.deepEqual(await counts(w, day, TT_TASKS), {
      up: 1,
      rows: 1,
      target: 2,
      down: 1,
      other: 1,
    });

    // No --input: the upstream outputs of the latest persisted run (JSON and dataset).
    const fromRun = await w.run(["tasks", "test", "tt", "target", "--date", date, "--json"]);
    assertExit(fromRun, 0);
    const doc = oneJson(fromRun);
    assert.equal(doc.taskId, "target");
    assert.equal(doc.state, "success");
    assert.deepEqual(doc.output, { doubled: 42, rows: 3 });
    assert.deepEqual(await counts(w, day, TT_TASKS), {
      up: 1,
      rows: 1,
      target: 3,
      down: 1,
      other: 1,
    });

    // dags test: everything executes again (the persisted success is not consulted).
    const test = await w.run(["dags", "test", "tt", "--date", date, "--json"]);
    assertExit(test, 0);
    const tested = oneJson(test);
    assertRunShape(tested);
    assert.equal(tested.state, "success");
    assert.deepEqual(executed(tested), [...TT_TASKS].sort());
    assert.deepEqual(await counts(w, day, TT_TASKS), {
      up: 2,
      rows: 2,
      target: 4,
      down: 2,
      other: 2,
    });

    const listAfter = await w.run(["runs", "list", "--json"]);
    assertExit(listAfter, 0);
    assert.deepEqual(oneJson(listAfter), runsBefore);
    assert.deepEqual(await listFiles(join(w.home, "runs")), runFiles);
    assert.deepEqual(await listFiles(join(w.home, "tmp")), [], "no scratch files left behind");
    assert.equal(await dumpAllTables(w), storeBefore, "the store did not change");
  });

  Deno.test(`tasks clear --downstream then runs resume re-executes exactly those tasks [${backend}]`, async () => {
    await using w = await world(backend, "clear");
    await writeDag(w, "clr", CLR);
    const day = "2026-08-01";
    const all = ["a", "b", "c", "d"];

    const first = await w.run(["dags", "run", "clr", "--date", `${day}T02:00:00Z`, "--json"]);
    assertExit(first, 0);
    const runId = oneJson(first).runId;
    assert.deepEqual(await counts(w, day, all), { a: 1, b: 1, c: 1, d: 1 });

    const clear = await w.run([
      "tasks",
      "clear",
      "clr",
      "b",
      "--run",
      runId,
      "--downstream",
      "--json",
    ]);
    assertExit(clear, 0);
    const cleared = oneJson(clear);
    assert.equal(cleared.runId, runId);
    assert.deepEqual([...cleared.cleared].sort(), ["b", "c"]);

    const resumed = await w.run(["runs", "resume", runId, "--json"]);
    assertExit(resumed, 0);
    const doc = oneJson(resumed);
    assertRunShape(doc);
    assert.equal(doc.state, "success");
    assert.deepEqual(executed(doc), ["b", "c"]);
    assert.deepEqual(await counts(w, day, all), { a: 1, b: 2, c: 2, d: 1 });
    assert.deepEqual(JSON.parse(await Deno.readTextFile(join(w.marks, "c-input"))), { n: 2 });
  });
}
