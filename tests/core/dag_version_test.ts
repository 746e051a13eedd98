import assert from "node:assert/strict";
import { defineDag, resolveDag, task } from "../../core/dag.ts";
import { versionRecord } from "../../core/dag_version.ts";

const dagWith = (retries: number) =>
  resolveDag(defineDag({
    id: "versioned",
    tasks: {
      extract: task({ run: () => 1 }),
      load: task({ after: ["extract"], retries, run: () => 2 }),
    },
  }));

Deno.test("dag version: a DAG loaded again with a changed task records the new task hash", () => {
  const before = versionRecord(dagWith(1));
  const after = versionRecord(dagWith(3));
  assert.equal(after.tasks.extract, before.tasks.extract);
  assert.notEqual(after.tasks.load, before.tasks.load);
});

Deno.test("dag version: each record is the caller's own copy", () => {
  const dag = dagWith(1);
  const first = versionRecord(dag);
  const expected = { ...first.tasks };
  first.tasks.load = "changed";
  first.modules.x = "y";
  const second = versionRecord(dag);
  assert.deepEqual(second.tasks, expected);
  assert.deepEqual(second.modules, {});
});
