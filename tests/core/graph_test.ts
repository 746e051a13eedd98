import assert from "node:assert/strict";
import { type DagConfig, defineDag, resolveDag, task, type TaskSpec } from "../../core/dag.ts";
import { DagError } from "../../core/errors.ts";
import { descendants } from "../../core/graph.ts";

const ok = () => 1;

function loadError(tasks: Record<string, TaskSpec>): string {
  try {
    resolveDag(defineDag({ id: "g", tasks } as DagConfig), "dags/g.ts");
  } catch (error) {
    assert.ok(error instanceof DagError, `expected a DagError, got ${error}`);
    return error.message;
  }
  assert.fail("expected the DAG to be rejected");
}

const resolve = (tasks: Record<string, TaskSpec>) =>
  resolveDag(defineDag({ id: "g", tasks } as DagConfig));

Deno.test("graph: an unknown upstream is named with the task that wants it", () => {
  assert.equal(
    loadError({ a: task({ run: ok }), b: task({ after: ["a", "extrct"], run: ok }) }),
    'Cannot load DAG "g" (dags/g.ts): task "b" depends on unknown task "extrct"',
  );
});

Deno.test("graph: a cycle is reported as its path in data-flow order", () => {
  // c feeds a, a feeds b, b feeds c.
  assert.equal(
    loadError({
      a: task({ after: ["c"], run: ok }),
      b: task({ after: ["a"], run: ok }),
      c: task({ after: ["b"], run: ok }),
    }),
    'Cannot load DAG "g" (dags/g.ts): cycle a -> b -> c -> a',
  );
  // A cycle that does not include the first task, with a tail leading into it.
  const message = loadError({
    start: task({ run: ok }),
    x: task({ after: ["start", "z"], run: ok }),
    y: task({ after: ["x"], run: ok }),
    z: task({ after: ["y"], run: ok }),
    tail: task({ after: ["z"], run: ok }),
  });
  const path = message.replace('Cannot load DAG "g" (dags/g.ts): cycle ', "").split(" -> ");
  assert.equal(path.length, 4, message);
  assert.equal(path[0], path[3]);
  assert.deepEqual(new Set(path), new Set(["x", "y", "z"]));
  // Every arrow is a real data-flow edge: the right task lists the left one in `after`.
  const after: Record<string, string[]> = { x: ["start", "z"], y: ["x"], z: ["y"] };
  for (let i = 0; i < 3; i++) assert.ok(after[path[i + 1]!]!.includes(path[i]!), message);
});

Deno.test("graph: a self-dependency is a one-task cycle", () => {
  assert.equal(
    loadError({ a: task({ run: ok }), b: task({ after: ["b"], run: ok }) }),
    'Cannot load DAG "g" (dags/g.ts): cycle b -> b',
  );
});

Deno.test("graph: topological order is stable, declaration order breaking ties", () => {
  const dag = resolve({
    load: task({ after: ["join"], run: ok }),
    zeta: task({ run: ok }),
    alpha: task({ run: ok }),
    join: task({ after: ["alpha", "zeta"], run: ok }),
    mid: task({ after: ["zeta"], run: ok }),
  });
  // Among ready tasks the earliest declared goes first: "load" (declared first) before "mid".
  assert.deepEqual(dag.order, ["zeta", "alpha", "join", "load", "mid"]);
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(
      resolve({
        load: task({ after: ["join"], run: ok }),
        zeta: task({ run: ok }),
        alpha: task({ run: ok }),
        join: task({ after: ["alpha", "zeta"], run: ok }),
        mid: task({ after: ["zeta"], run: ok }),
      }).order,
      dag.order,
    );
  }
  // Declaration order, not alphabetical: independent tasks keep their order.
  assert.deepEqual(
    resolve({ c: task({ run: ok }), a: task({ run: ok }), b: task({ run: ok }) }).order,
    [
      "c",
      "a",
      "b",
    ],
  );
  assert.deepEqual(dag.downstream.get("zeta"), ["join", "mid"]);
  assert.deepEqual(dag.downstream.get("load"), []);
  assert.deepEqual([...descendants(dag.downstream, ["alpha"])].sort(), ["join", "load"]);
  // Duplicate upstream ids count once.
  assert.deepEqual(
    resolve({ a: task({ run: ok }), b: task({ after: ["a", "a"], run: ok }) }).tasks.get("b")!
      .after,
    ["a"],
  );
});

Deno.test("graph: a shared task directly after an enclave task fails, naming the edge", () => {
  assert.equal(
    loadError({
      extract: task({ zone: "enclave", run: ok }),
      load: task({ after: ["extract"], run: ok }),
    }),
    'Cannot load DAG "g" (dags/g.ts): task "load" takes enclave data from "extract" without a privacy checkpoint: extract -> load',
  );
  // Enclave data stays enclave data two hops later, too.
  const message = loadError({
    extract: task({ zone: "enclave", run: ok }),
    clean: task({ zone: "enclave", after: ["extract"], run: ok }),
    report: task({ after: ["clean"], run: ok }),
  });
  assert.match(message, /: clean -> report$/);
});

Deno.test("graph: data leaves the enclave through a checkpoint-marked task", () => {
  const checkpoint: TaskSpec = { run: ok, after: ["extract"], checkpoint: true, zone: "inherit" };
  const dag = resolve({
    extract: task({ zone: "enclave", run: ok }),
    checkpoint,
    load: task({ after: ["checkpoint"], run: ok }),
  });
  assert.deepEqual(dag.order, ["extract", "checkpoint", "load"]);
  const cp = dag.tasks.get("checkpoint")!;
  assert.equal(cp.checkpoint, true);
  assert.equal(cp.zone, "enclave"); // it reads enclave data...
  assert.equal(cp.outputZone, "shared"); // ...and its output is shared
  assert.equal(dag.tasks.get("extract")!.outputZone, "enclave");
  assert.equal(dag.tasks.get("load")!.zone, "shared");
  // Without the mark, the same shape is refused.
  assert.match(
    loadError({
      extract: task({ zone: "enclave", run: ok }),
      checkpoint: { run: ok, after: ["extract"], zone: "inherit" },
      load: task({ after: ["checkpoint"], run: ok }),
    }),
    /checkpoint -> load$/,
  );
});

Deno.test('graph: zone "inherit" is enclave after enclave data and shared otherwise', () => {
  const inherit = (after: string[]): TaskSpec => ({ run: ok, after, zone: "inherit" });
  const dag = resolve({
    raw: task({ zone: "enclave", run: ok }),
    plain: task({ run: ok }),
    from_raw: inherit(["raw"]),
    from_plain: inherit(["plain"]),
    from_both: inherit(["plain", "raw"]),
    chained: inherit(["from_raw"]),
    root: inherit([]),
  });
  assert.equal(dag.tasks.get("from_raw")!.zone, "enclave");
  assert.equal(dag.tasks.get("from_plain")!.zone, "shared");
  assert.equal(dag.tasks.get("from_both")!.zone, "enclave");
  assert.equal(dag.tasks.get("chained")!.zone, "enclave");
  assert.equal(dag.tasks.get("root")!.zone, "shared");
  assert.equal(dag.tasks.get("from_raw")!.outputZone, "enclave");
  assert.equal(dag.tasks.get("from_plain")!.outputZone, "shared");
  // An inherited enclave zone is enforced like a declared one.
  assert.match(
    loadError({
      raw: task({ zone: "enclave", run: ok }),
      tokens: inherit(["raw"]),
      load: task({ after: ["tokens"], run: ok }),
    }),
    /tokens -> load$/,
  );
});

Deno.test("graph: a checkpoint's output is shared, even after shared upstreams", () => {
  const dag = resolve({
    plain: task({ run: ok }),
    cp: { run: ok, after: ["plain"], checkpoint: true },
    after: task({ after: ["cp"], run: ok }),
  });
  assert.equal(dag.tasks.get("cp")!.outputZone, "shared");
  assert.equal(dag.tasks.get("after")!.zone, "shared");
});
