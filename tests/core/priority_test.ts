/**
 * Effective priorities (Airflow's `priority_weight_total`) against a plain walk of the graph, on
 * random DAGs with diamonds, mixed weight rules and weights, across the 32-task word boundaries
 * of the bit sets `effectivePriorities` uses.
 */
import assert from "node:assert/strict";
import { defineDag, effectivePriorities, resolveDag, task } from "../../core/dag.ts";

/** A seeded generator (mulberry32), so that a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every task reachable from `id` through `next`, each once, by a depth-first walk. */
function reachable(id: string, next: (id: string) => readonly string[]): Set<string> {
  const seen = new Set<string>();
  const stack = [...next(id)];
  while (stack.length > 0) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    stack.push(...next(x));
  }
  return seen;
}

const rules = ["downstream", "upstream", "absolute"] as const;

for (
  const [seed, n, uniform] of [[1, 5, true], [2, 33, false], [3, 70, true], [4, 97, false]] as const
) {
  Deno.test(`dag: effective priorities match a walk of the graph (seed ${seed}, ${n} tasks, ${uniform ? "same" : "mixed"} weights)`, () => {
    const rnd = random(seed);
    const ids = Array.from({ length: n }, (_, i) => `t${i}`);
    const tasks = Object.fromEntries(ids.map((id, i) => {
      // Up to three upstreams among the earlier tasks: chains, fans and diamonds.
      const after = [
        ...new Set(Array.from({ length: Math.floor(rnd() * 4) }, () => Math.floor(rnd() * i))),
      ]
        .filter((j) => j < i).map((j) => ids[j]!);
      return [
        id,
        task({
          after,
          priorityWeight: uniform ? 2 : 1 + Math.floor(rnd() * 9),
          weightRule: rules[Math.floor(rnd() * 3)]!,
          run: () => null,
        }),
      ];
    }));
    const dag = resolveDag(defineDag({ id: `p${seed}`, tasks }));
    const up = (id: string) => dag.tasks.get(id)!.after;
    const down = (id: string) => dag.downstream.get(id) ?? [];
    let checked = 0;
    for (const [id, t] of dag.tasks) {
      const others = t.weightRule === "absolute"
        ? new Set<string>()
        : reachable(id, t.weightRule === "downstream" ? down : up);
      let expected = t.priorityWeight;
      for (const o of others) expected += dag.tasks.get(o)!.priorityWeight;
      assert.equal(t.priority, expected, `task ${id} (${t.weightRule})`);
      if (others.size > 1) checked++;
    }
    if (n > 30) assert.ok(checked > n / 4, "the graph has tasks with several tasks up or down");
    // The exported function gives the same figures as resolving.
    const again = effectivePriorities(dag.tasks, dag.order, dag.downstream);
    for (const [id, t] of dag.tasks) assert.equal(again.get(id), t.priority);
  });
}

Deno.test("dag: a group name in after expands to every task of the group, nested groups included, in declaration order", () => {
  const dag = resolveDag(defineDag({
    id: "groups",
    tasks: {
      "extract.items": task({ run: () => 1 }),
      "extract.patrons.cards": task({ run: () => 1 }),
      "extract.patrons.names": task({ run: () => 1 }),
      "load": task({ after: ["extract"], run: () => 1 }),
      "report": task({ after: ["extract.patrons", "load"], run: () => 1 }),
    },
  }));
  assert.deepEqual(dag.tasks.get("load")!.after, [
    "extract.items",
    "extract.patrons.cards",
    "extract.patrons.names",
  ]);
  assert.deepEqual(dag.tasks.get("report")!.after, [
    "extract.patrons.cards",
    "extract.patrons.names",
    "load",
  ]);
});
