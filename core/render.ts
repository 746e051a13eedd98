/**
 * Renders a DAG's graph as text, Mermaid, Graphviz dot or JSON, with zones and privacy
 * checkpoints marked.
 *
 * @module
 */
import type { ResolvedDag } from "./dag.ts";

/** The graph formats `dags show` prints. */
export type GraphFormat = "text" | "mermaid" | "dot" | "json";

/** The JSON form of a DAG's graph. */
export function graphJson(dag: ResolvedDag) {
  return {
    id: dag.id,
    description: dag.description ?? null,
    file: dag.file ?? null,
    schedule: dag.schedule,
    timezone: dag.timezone,
    start: dag.start?.toISOString() ?? null,
    catchup: dag.catchup,
    maxActiveRuns: dag.maxActiveRuns,
    maxActiveTasks: dag.maxActiveTasks,
    params: Object.keys(dag.paramDefaults),
    tasks: dag.order.map((id) => {
      const t = dag.tasks.get(id)!;
      return {
        id,
        operator: t.operator,
        zone: t.zone,
        checkpoint: t.checkpoint,
        after: t.after,
        triggerRule: t.triggerRule,
        retries: t.retries,
        timeoutMs: t.timeoutMs ?? null,
        pool: t.pool ?? null,
      };
    }),
    edges: dag.order.flatMap((id) => dag.tasks.get(id)!.after.map((up) => ({ from: up, to: id }))),
  };
}

/**
 * Renders the graph.
 *
 * @example
 * ```ts ignore
 * console.log(renderGraph(dag, "mermaid"));
 * ```
 */
export function renderGraph(dag: ResolvedDag, format: GraphFormat): string {
  switch (format) {
    case "json":
      return JSON.stringify(graphJson(dag), null, 2);
    case "mermaid":
      return mermaid(dag);
    case "dot":
      return dot(dag);
    case "text":
      return text(dag);
  }
}

function label(dag: ResolvedDag, id: string): string {
  const t = dag.tasks.get(id)!;
  return t.operator === "task" ? id : `${id} (${t.operator})`;
}

function mermaid(dag: ResolvedDag): string {
  const lines = ["flowchart LR"];
  const enclave = dag.order.filter((id) =>
    dag.tasks.get(id)!.zone === "enclave" && !dag.tasks.get(id)!.checkpoint
  );
  const shared = dag.order.filter((id) => dag.tasks.get(id)!.zone === "shared");
  const node = (id: string) => {
    const t = dag.tasks.get(id)!;
    return t.checkpoint ? `${id}{{"${label(dag, id)}"}}` : `${id}["${label(dag, id)}"]`;
  };
  if (enclave.length) {
    lines.push(`  subgraph enclave["enclave: patron data"]`);
    for (const id of enclave) lines.push(`    ${node(id)}`);
    lines.push("  end");
  }
  for (const id of dag.order.filter((id) => dag.tasks.get(id)!.checkpoint)) {
    lines.push(`  ${node(id)}`);
  }
  if (shared.length) {
    lines.push(`  subgraph shared["shared"]`);
    for (const id of shared) lines.push(`    ${node(id)}`);
    lines.push("  end");
  }
  for (const id of dag.order) {
    for (const up of dag.tasks.get(id)!.after) lines.push(`  ${up} --> ${id}`);
  }
  lines.push("  classDef enclave fill:#fde2e2,stroke:#b91c1c");
  lines.push("  classDef checkpoint fill:#fef3c7,stroke:#b45309,stroke-width:2px");
  if (enclave.length) lines.push(`  class ${enclave.join(",")} enclave`);
  const cps = dag.order.filter((id) => dag.tasks.get(id)!.checkpoint);
  if (cps.length) lines.push(`  class ${cps.join(",")} checkpoint`);
  return lines.join("\n");
}

function dot(dag: ResolvedDag): string {
  const q = (s: string) => `"${s.replace(/"/g, '\\"')}"`;
  const lines = [
    `digraph ${q(dag.id)} {`,
    "  rankdir=LR;",
    "  node [shape=box, fontname=Helvetica];",
  ];
  const enclave = dag.order.filter((id) =>
    dag.tasks.get(id)!.zone === "enclave" && !dag.tasks.get(id)!.checkpoint
  );
  if (enclave.length) {
    lines.push(
      '  subgraph cluster_enclave { label="enclave: patron data"; style=filled; color="#fde2e2";',
    );
    for (const id of enclave) lines.push(`    ${q(id)} [label=${q(label(dag, id))}];`);
    lines.push("  }");
  }
  for (const id of dag.order) {
    const t = dag.tasks.get(id)!;
    if (t.checkpoint) {
      lines.push(
        `  ${q(id)} [label=${
          q(label(dag, id))
        }, shape=hexagon, style=filled, fillcolor="#fef3c7"];`,
      );
    } else if (t.zone === "shared") lines.push(`  ${q(id)} [label=${q(label(dag, id))}];`);
  }
  for (const id of dag.order) {
    for (const up of dag.tasks.get(id)!.after) lines.push(`  ${q(up)} -> ${q(id)};`);
  }
  lines.push("}");
  return lines.join("\n");
}

function text(dag: ResolvedDag): string {
  const lines = [
    `DAG ${dag.id}${dag.description ? `: ${dag.description}` : ""}`,
    `  file: ${dag.file ?? "-"}`,
    `  schedule: ${dag.schedule ?? "manual"} (${dag.timezone})`,
    "",
  ];
  const width = Math.max(...dag.order.map((id) => label(dag, id).length));
  for (const id of dag.order) {
    const t = dag.tasks.get(id)!;
    const zone = t.checkpoint ? "[checkpoint: enclave -> shared]" : `[${t.zone}]`;
    const after = t.after.length ? `after ${t.after.join(", ")}` : "start";
    lines.push(
      `  ${label(dag, id).padEnd(width)}  ${zone.padEnd(31)}  ${after}${
        t.triggerRule !== "all_success" ? `  (${t.triggerRule})` : ""
      }`,
    );
  }
  return lines.join("\n");
}
