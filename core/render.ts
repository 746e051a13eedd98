/**
 * Renders a DAG's graph as text, Mermaid, Graphviz dot or JSON, with zones and privacy
 * checkpoints marked.
 *
 * @module
 */
import type { ResolvedDag } from "./dag.ts";
import { groupOf } from "./group.ts";

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
        group: groupOf(id) ?? null,
        priority: t.priority,
      };
    }),
    groups: groupsOf(dag).map(([id, tasks]) => ({ id, tasks })),
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
    const n = mermaidId(id);
    return t.checkpoint ? `${n}{{"${label(dag, id)}"}}` : `${n}["${label(dag, id)}"]`;
  };
  if (enclave.length) {
    lines.push(`  subgraph enclave["enclave: patron data"]`);
    clusters(enclave, "    ", lines, (g, indent) => {
      lines.push(`${indent}subgraph cluster__enclave__${g.replaceAll(".", "__")}["group ${g}"]`);
      return "end";
    }, node);
    lines.push("  end");
  }
  clusters(dag.order.filter((id) => dag.tasks.get(id)!.checkpoint), "  ", lines, (g, indent) => {
    lines.push(`${indent}subgraph cluster__checkpoint__${g.replaceAll(".", "__")}["group ${g}"]`);
    return "end";
  }, node);
  if (shared.length) {
    lines.push(`  subgraph shared["shared"]`);
    clusters(shared, "    ", lines, (g, indent) => {
      lines.push(`${indent}subgraph cluster__shared__${g.replaceAll(".", "__")}["group ${g}"]`);
      return "end";
    }, node);
    lines.push("  end");
  }
  for (const id of dag.order) {
    for (const up of dag.tasks.get(id)!.after) {
      lines.push(`  ${mermaidId(up)} --> ${mermaidId(id)}`);
    }
  }
  lines.push("  classDef enclave fill:#fde2e2,stroke:#b91c1c");
  lines.push("  classDef checkpoint fill:#fef3c7,stroke:#b45309,stroke-width:2px");
  if (enclave.length) lines.push(`  class ${enclave.map(mermaidId).join(",")} enclave`);
  const cps = dag.order.filter((id) => dag.tasks.get(id)!.checkpoint);
  if (cps.length) lines.push(`  class ${cps.map(mermaidId).join(",")} checkpoint`);
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
  const cluster = (zone: string) => (g: string, indent: string) => {
    lines.push(`${indent}subgraph ${q(`cluster_${zone}.${g}`)} { label=${q(`group ${g}`)};`);
    return "}";
  };
  if (enclave.length) {
    lines.push(
      '  subgraph cluster_enclave { label="enclave: patron data"; style=filled; color="#fde2e2";',
    );
    clusters(enclave, "    ", lines, cluster("enclave"), (id) => {
      return `${q(id)} [label=${q(label(dag, id))}];`;
    });
    lines.push("  }");
  }
  const others = dag.order.filter((id) => {
    const t = dag.tasks.get(id)!;
    return t.checkpoint || t.zone === "shared";
  });
  clusters(others, "  ", lines, cluster("shared"), (id) => {
    const t = dag.tasks.get(id)!;
    return t.checkpoint
      ? `${q(id)} [label=${q(label(dag, id))}, shape=hexagon, style=filled, fillcolor="#fef3c7"];`
      : `${q(id)} [label=${q(label(dag, id))}];`;
  });
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
  const groups = groupsOf(dag);
  if (groups.length > 0) {
    lines.push("", "  groups:");
    for (const [g, ids] of groups) lines.push(`    ${g}: ${ids.join(", ")}`);
  }
  return lines.join("\n");
}

/** Every group (nested ones included) with the ids of all its tasks, in the DAG's order. */
export function groupsOf(dag: ResolvedDag): [string, string[]][] {
  const out = new Map<string, string[]>();
  for (const id of dag.order) {
    for (let g = groupOf(id); g !== undefined; g = groupOf(g)) {
      if (!out.has(g)) out.set(g, []);
      out.get(g)!.push(id);
    }
  }
  return [...out].sort(([a], [b]) => a.localeCompare(b));
}

/** A Mermaid node id for a task id: dots (groups) are not allowed in Mermaid ids. */
function mermaidId(id: string): string {
  return id.includes(".") ? `grp__${id.replaceAll(".", "__")}` : id;
}

/**
 * Emits `ids` nested in clusters by group: `open(group, indent)` writes a cluster's first line
 * and returns its closing line; `node(id)` is a task's line.
 */
function clusters(
  ids: readonly string[],
  indent: string,
  lines: string[],
  open: (group: string, indent: string) => string,
  node: (id: string) => string,
): void {
  const emit = (prefix: string | undefined, depth: string) => {
    const here = ids.filter((id) => groupOf(id) === prefix);
    for (const id of here) lines.push(`${depth}${node(id)}`);
    const children = new Set<string>();
    for (const id of ids) {
      let g = groupOf(id);
      while (g !== undefined && groupOf(g) !== prefix) g = groupOf(g);
      if (g !== undefined && g !== prefix && (prefix === undefined || g.startsWith(`${prefix}.`))) {
        children.add(g);
      }
    }
    for (const g of children) {
      const close = open(g, depth);
      emit(g, `${depth}  `);
      lines.push(`${depth}${close}`);
    }
  };
  emit(undefined, indent);
}
