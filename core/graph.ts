/**
 * Graph checks: unknown upstream ids, cycles (reported as a path), topological order, zone
 * resolution and the privacy-zone rule.
 *
 * @module
 */
import type { ResolvedTask, Zone } from "./dag.ts";

/** The order of a DAG's tasks and its downstream edges. */
export interface TaskGraph {
  order: string[];
  downstream: Map<string, string[]>;
}

/**
 * Orders the tasks topologically (declaration order breaks ties), resolves `inherit` zones, and
 * checks the zone rule: a shared task may not take input from an enclave task except through a
 * privacy checkpoint. Throws an `Error` naming the unknown id, the cycle path or the edge.
 *
 * @example
 * ```ts ignore
 * import { orderTasks } from "./graph.ts";
 * const { order } = orderTasks("demo", tasks); // ["extract", "tokens", "checkpoint", "load"]
 * ```
 */
export function orderTasks(_dagId: string, tasks: Map<string, ResolvedTask>): TaskGraph {
  const downstream = new Map<string, string[]>();
  for (const id of tasks.keys()) downstream.set(id, []);
  for (const t of tasks.values()) {
    for (const up of t.after) {
      if (!tasks.has(up)) {
        throw new Error(`task "${t.id}" depends on unknown task "${up}"`);
      }
      if (up === t.id) throw new Error(`cycle ${t.id} -> ${t.id}`);
      downstream.get(up)!.push(t.id);
    }
  }
  const cycle = findCycle(tasks);
  if (cycle) throw new Error(`cycle ${cycle.join(" -> ")}`);

  // Kahn's algorithm; ties broken by declaration order, so the order is stable.
  const position = new Map([...tasks.keys()].map((id, i) => [id, i]));
  const indegree = new Map<string, number>();
  for (const t of tasks.values()) indegree.set(t.id, t.after.length);
  const ready = [...tasks.keys()].filter((id) => indegree.get(id) === 0);
  const order: string[] = [];
  while (ready.length > 0) {
    ready.sort((a, b) => position.get(a)! - position.get(b)!);
    const id = ready.shift()!;
    order.push(id);
    for (const down of downstream.get(id)!) {
      const left = indegree.get(down)! - 1;
      indegree.set(down, left);
      if (left === 0) ready.push(down);
    }
  }

  // Zones in topological order: `inherit` takes enclave when any upstream's output is enclave data.
  for (const id of order) {
    const t = tasks.get(id)!;
    const upstreamEnclave = t.after.some((up) => tasks.get(up)!.outputZone === "enclave");
    if ((t.zone as Zone | "inherit") === "inherit") {
      t.zone = upstreamEnclave || t.checkpoint ? "enclave" : "shared";
    }
    if (t.checkpoint) t.zone = "enclave";
    t.outputZone = t.checkpoint ? "shared" : t.zone;
  }
  for (const id of order) {
    const t = tasks.get(id)!;
    if (t.zone !== "shared") continue;
    for (const up of t.after) {
      if (tasks.get(up)!.outputZone === "enclave") {
        throw new Error(
          `task "${t.id}" takes enclave data from "${up}" without a privacy checkpoint: ${up} -> ${t.id}`,
        );
      }
    }
  }
  return { order, downstream };
}

function findCycle(tasks: Map<string, ResolvedTask>): string[] | undefined {
  const WHITE = 0, GREY = 1, BLACK = 2;
  const color = new Map<string, number>();
  const stack: string[] = [];
  const visit = (id: string): string[] | undefined => {
    color.set(id, GREY);
    stack.push(id);
    for (const up of tasks.get(id)!.after) {
      const c = color.get(up) ?? WHITE;
      if (c === GREY) {
        // The cycle runs from `up` along the stack back to `id`; print it in data-flow order.
        // Start at `up`, where the search entered the cycle (the first declared task of it).
        const loop = [up, ...stack.slice(stack.indexOf(up) + 1).reverse()];
        return [...loop, up];
      }
      if (c === WHITE) {
        const found = visit(up);
        if (found) return found;
      }
    }
    stack.pop();
    color.set(id, BLACK);
    return undefined;
  };
  for (const id of tasks.keys()) {
    if ((color.get(id) ?? WHITE) === WHITE) {
      const found = visit(id);
      if (found) return found;
    }
  }
  return undefined;
}

/** All tasks downstream of the given ones (transitively), not including them. */
export function descendants(
  downstream: Map<string, string[]>,
  from: Iterable<string>,
): Set<string> {
  const seen = new Set<string>();
  const todo = [...from];
  while (todo.length > 0) {
    const id = todo.pop()!;
    for (const d of downstream.get(id) ?? []) {
      if (!seen.has(d)) {
        seen.add(d);
        todo.push(d);
      }
    }
  }
  return seen;
}
