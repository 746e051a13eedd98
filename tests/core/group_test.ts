/**
 * Task groups: namespaced ids, `after` resolved inside the group first, dependencies on a group
 * (every task of it) and of a group (its first tasks), nesting, conflicts, a run in dependency
 * order, and the graph drawn with groups as clusters (text, Mermaid, dot, JSON).
 */
import assert from "node:assert/strict";
import { defineDag, resolveDag, task } from "../../core/dag.ts";
import { group } from "../../core/group.ts";
import { renderGraph } from "../../core/render.ts";
import { executeRun } from "../../core/run/local.ts";
import { withTmpDir } from "../test_utils.ts";

const ok = () => 1;

function nightly(order: string[] = []) {
  const t = (id: string, after: string[] = []) =>
    task({
      after,
      run: () => {
        order.push(id);
        return id;
      },
    });
  return defineDag({
    id: "nightly",
    tasks: {
      start: t("start"),
      ...group("extract", {
        patrons: t("patrons"),
        items: t("items", ["patrons"]),
        ...group("marc", { read: t("read"), fix: t("fix", ["read"]) }),
      }, { after: ["start"] }),
      load: t("load", ["extract"]),
      report: t("report", ["extract.marc"]),
    },
  });
}

Deno.test("group: ids are namespaced, after resolves inside the group, a group's after reaches its first tasks", () => {
  const dag = resolveDag(nightly());
  assert.deepEqual([...dag.tasks.keys()].sort(), [
    "extract.items",
    "extract.marc.fix",
    "extract.marc.read",
    "extract.patrons",
    "load",
    "report",
    "start",
  ]);
  assert.deepEqual(dag.tasks.get("extract.items")!.after, ["extract.patrons"]);
  assert.deepEqual(dag.tasks.get("extract.marc.fix")!.after, ["extract.marc.read"]);
  // The group's `after` goes to the tasks with no upstream inside the group.
  assert.deepEqual(dag.tasks.get("extract.patrons")!.after, ["start"]);
  assert.deepEqual(dag.tasks.get("extract.marc.read")!.after, ["start"]);
  // Depending on a group is depending on every task of it (nested groups too).
  assert.deepEqual(dag.tasks.get("load")!.after, [
    "extract.patrons",
    "extract.items",
    "extract.marc.read",
    "extract.marc.fix",
  ]);
  assert.deepEqual(dag.tasks.get("report")!.after, ["extract.marc.read", "extract.marc.fix"]);
});

Deno.test("group: bad names, a task named like a group, and unknown ids are load errors", () => {
  assert.throws(() => group("Extract", { a: task({ run: ok }) }), /Invalid group id "Extract"/);
  assert.throws(() => group("empty", {}), /Group "empty" has no tasks/);
  assert.throws(
    () =>
      resolveDag(defineDag({
        id: "x",
        tasks: { extract: task({ run: ok }), ...group("extract", { a: task({ run: ok }) }) },
      })),
    /tasks\.extract: a task has the name of the group of "extract\.a"/,
  );
  assert.throws(
    () =>
      resolveDag(defineDag({
        id: "x",
        tasks: { ...group("g", { a: task({ run: ok }) }), b: task({ after: ["h"], run: ok }) },
      })),
    /"h"/,
  );
  // A dotted id written by hand must still be a chain of names.
  assert.throws(
    () => resolveDag(defineDag({ id: "x", tasks: { "a..b": task({ run: ok }) } })),
    /expected task ids matching/,
  );
});

Deno.test("group: a run executes the group's tasks in dependency order and the dependants after all of them", async () => {
  await using dir = await withTmpDir();
  const order: string[] = [];
  const result = await executeRun({
    dag: resolveDag(nightly(order)),
    interval: { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") },
    params: {},
    home: dir.path,
  });
  assert.equal(result.state, "success");
  assert.equal(order.length, 7);
  const at = (id: string) => order.indexOf(id);
  assert.equal(at("start"), 0);
  assert.ok(at("patrons") < at("items"));
  assert.ok(at("read") < at("fix"));
  for (const id of ["patrons", "items", "read", "fix"]) assert.ok(at(id) < at("load"), id);
  assert.ok(at("fix") < at("report"));
  assert.equal(result.outputs.get("extract.marc.fix"), "fix");
});

Deno.test("group: dags show draws groups as clusters in text, Mermaid and dot, and lists them in JSON", () => {
  const dag = resolveDag(nightly());
  const text = renderGraph(dag, "text");
  assert.match(
    text,
    /groups:\n {4}extract: extract\.patrons, extract\.items, extract\.marc\.read, extract\.marc\.fix\n {4}extract\.marc: extract\.marc\.read, extract\.marc\.fix/,
  );
  const mermaid = renderGraph(dag, "mermaid");
  assert.match(mermaid, /subgraph cluster__shared__extract\["group extract"\]/);
  assert.match(mermaid, /subgraph cluster__shared__extract__marc\["group extract\.marc"\]/);
  // Mermaid ids carry no dots; edges use the same ids as the nodes.
  assert.match(mermaid, /grp__extract__patrons\["extract\.patrons"\]/);
  assert.match(mermaid, /start --> grp__extract__patrons/);
  assert.doesNotMatch(mermaid.replace(/\["[^"]*"\]/g, ""), /[a-z]\.[a-z]/);
  // The nested cluster sits inside its parent's.
  const outer = mermaid.indexOf("cluster__shared__extract[");
  const inner = mermaid.indexOf("cluster__shared__extract__marc[");
  assert.ok(outer >= 0 && inner > outer);
  const dot = renderGraph(dag, "dot");
  assert.match(dot, /subgraph "cluster_shared\.extract" \{ label="group extract";/);
  assert.match(dot, /subgraph "cluster_shared\.extract\.marc" \{ label="group extract\.marc";/);
  assert.equal((dot.match(/\{/g) ?? []).length, (dot.match(/\}/g) ?? []).length);
  const json = JSON.parse(renderGraph(dag, "json"));
  assert.deepEqual(json.groups.map((g: { id: string }) => g.id), ["extract", "extract.marc"]);
  assert.equal(
    json.tasks.find((t: { id: string }) => t.id === "extract.marc.fix").group,
    "extract.marc",
  );
});
