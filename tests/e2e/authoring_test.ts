/**
 * End-to-end authoring checks through the CLI: a future logical date is refused unless
 * `--allow-future`; a run records its DAG version (file and local modules) and the Carrel version,
 * `runs show` displays them, and resuming under changed code asks for `--allow-changed`, or is
 * refused (naming the task) when a task changed under a succeeded job key.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CARREL_VERSION } from "../../core/version.ts";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";
import { assertExit, oneJson, query, show, world, writeDag } from "./helpers.ts";

notePostgresSkipped();

const FUTURE = `
export default defineDag({
  id: "nightly",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: { only: task({ run: async (ctx) => { await mark(ctx); return 1; } }) },
});
`;

/** `extract` succeeds; `load` fails while the marks folder holds a file named "fail". */
const versioned = (extractBody: string) => `
import { LIMIT } from "./_lib.ts";
export default defineDag({
  id: "versioned",
  schedule: null,
  tasks: {
    extract: task({ run: async (ctx) => { await mark(ctx); ${extractBody} } }),
    load: task({ after: ["extract"], run: async (ctx) => {
      await mark(ctx);
      if (exists(M + "/fail")) throw new Error("planned failure");
      return LIMIT;
    } }),
  },
});
`;

for (const backend of BACKENDS) {
  Deno.test(`dags run: a future logical date is refused unless --allow-future [${backend}]`, async () => {
    await using w = await world(backend, "future");
    await writeDag(w, "nightly", FUTURE);
    const future = new Date(Date.now() + 3 * 86_400_000).toISOString().slice(0, 10);
    const refused = await w.run(["dags", "run", "nightly", "--date", future]);
    assertExit(refused, 2);
    assert.match(refused.stderr, /Cannot run DAG "nightly": the logical date .* is in the future/);
    assert.match(refused.stderr, /--allow-future/);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(w.marks)), [], "nothing ran");
    const allowed = await w.run(["dags", "run", "nightly", "--date", future, "--allow-future"]);
    assertExit(allowed, 0);
    // A past date needs no flag.
    assertExit(await w.run(["dags", "run", "nightly", "--date", "2026-02-01"]), 0);
    // Queuing one for the scheduler is refused the same way.
    const queued = await w.run(["dags", "trigger", "nightly", "--date", future]);
    assertExit(queued, 2);
    assert.match(queued.stderr, /is in the future; pass --allow-future/);
    assertExit(
      await w.run(["dags", "trigger", "nightly", "--date", future, "--allow-future"]),
      0,
    );
  });

  Deno.test(`runs: a run records its DAG and Carrel versions; a changed DAG needs --allow-changed, a task changed under a succeeded job key is refused [${backend}]`, async () => {
    await using w = await world(backend, "versions");
    await Deno.writeTextFile(join(w.dags, "_lib.ts"), "export const LIMIT = 10;\n");
    await writeDag(w, "versioned", versioned("return 1;"));
    await Deno.writeTextFile(join(w.marks, "fail"), "x");
    const first = await w.run(["dags", "run", "versioned", "--date", "2026-02-01", "--json"]);
    assertExit(first, 1);
    const runId = oneJson(first).runId as string;

    const shown = oneJson(await w.run(["runs", "show", runId, "--json"]));
    assert.match(shown.dagVersion, /^[0-9a-f]{12}$/);
    assert.equal(shown.carrelVersion, CARREL_VERSION);
    assert.deepEqual(Object.keys(shown.modules).sort(), ["_lib.ts", "versioned.ts"]);
    assert.equal(shown.dagChanged, false);
    const text = await w.run(["runs", "show", runId]);
    assert.match(
      text.stdout,
      new RegExp(
        `DAG version ${shown.dagVersion} \\(its file and 1 local module\\), Carrel ${CARREL_VERSION}\\n`,
      ),
    );

    // A succeeded task's definition changes: refused, even with --allow-changed, naming it.
    await writeDag(w, "versioned", versioned("return 2;"));
    for (const flags of [[], ["--allow-changed"]]) {
      const r = await w.run(["runs", "resume", runId, ...flags]);
      assertExit(r, 2);
      assert.match(
        r.stderr,
        /Cannot resume run ".*": the DAG "versioned" changed .*; changed tasks: extract\), and task "extract" changed under a succeeded job key; clear it first \(tasks clear versioned extract --run /,
        show(r),
      );
    }
    const changedShow = oneJson(await w.run(["runs", "show", runId, "--json"]));
    assert.equal(changedShow.dagChanged, true);
    assert.deepEqual(changedShow.changedTasks, ["extract"]);
    // `dags run` of the same interval resumes it too, under the same guard.
    assertExit(await w.run(["dags", "run", "versioned", "--date", "2026-02-01"]), 2);

    // The task back as it was; only the local module changes: --allow-changed is asked for.
    await writeDag(w, "versioned", versioned("return 1;"));
    await Deno.writeTextFile(join(w.dags, "_lib.ts"), "export const LIMIT = 20;\n");
    const asked = await w.run(["runs", "resume", runId]);
    assertExit(asked, 2);
    assert.match(asked.stderr, /pass --allow-changed to resume it with the current code/);
    assert.doesNotMatch(asked.stderr, /changed tasks/, "no task definition changed");
    await Deno.remove(join(w.marks, "fail"));
    const resumed = await w.run(["runs", "resume", runId, "--allow-changed", "--json"]);
    assertExit(resumed, 0);
    assert.match(
      resumed.stderr,
      /Note: DAG "versioned" changed since run .* resuming with the current code/,
    );
    const doc = oneJson(resumed);
    assert.equal(doc.state, "success");
    assert.equal(doc.tasks.find((t: { taskId: string }) => t.taskId === "load").state, "success");

    // The run now records the version it resumed under; the change is in its audit trail.
    const after = oneJson(await w.run(["runs", "show", runId, "--json"]));
    assert.notEqual(after.dagVersion, shown.dagVersion);
    assert.equal(after.dagChanged, false);
    assert.notEqual(after.modules["_lib.ts"], shown.modules["_lib.ts"]);
    const ops = await query<{ operation: string }>(
      w,
      "SELECT operation FROM audit_log WHERE correlation_id = $1 AND operation LIKE 'run:%' ORDER BY seq",
      [runId],
    );
    assert.ok(ops.map((o) => o.operation).includes("run:dag_changed"), JSON.stringify(ops));
  });
}
