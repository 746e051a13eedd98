/**
 * A DAG's graph as SVG, laid out on the server by Graphviz (`@viz-js/viz`, WebAssembly): the
 * enclave and shared zones as filled clusters, privacy checkpoints as hexagons on the border
 * between them, and each task filled with its state's colour for a chosen run.
 *
 * @module
 */
import { instance, type Viz } from "@viz-js/viz";
import type { ResolvedDag } from "../core/dag.ts";
import type { TaskState } from "../core/state/store.ts";

/** Fill colours by task state (also used by the grid's CSS). */
export const STATE_COLOURS: Record<TaskState | "none", string> = {
  success: "#86efac",
  failed: "#fca5a5",
  running: "#93c5fd",
  queued: "#d4d4d8",
  scheduled: "#e4e4e7",
  up_for_retry: "#fde047",
  up_for_reschedule: "#a5f3fc",
  upstream_failed: "#fdba74",
  skipped: "#f9a8d4",
  none: "#ffffff",
};

/** Zone colours: cluster fill and border. */
export const ZONE_COLOURS = {
  enclave: { fill: "#fde2e2", stroke: "#b91c1c" },
  shared: { fill: "#e0f2fe", stroke: "#0369a1" },
  checkpoint: { fill: "#fef3c7", stroke: "#b45309" },
} as const;

let viz: Promise<Viz> | undefined;

const q = (s: string) => `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

/** The Graphviz source: zones as clusters, checkpoints between them, states as fills. */
export function graphDot(
  dag: ResolvedDag,
  options: { states?: ReadonlyMap<string, TaskState>; href?: (taskId: string) => string } = {},
): string {
  const lines = [
    `digraph ${q(dag.id)} {`,
    '  rankdir=LR; bgcolor="transparent"; fontname="Helvetica"; nodesep=0.3; ranksep=0.5;',
    '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=12, penwidth=1.5];',
    '  edge [color="#52525b", arrowsize=0.7];',
  ];
  const node = (id: string) => {
    const t = dag.tasks.get(id)!;
    const state = options.states?.get(id);
    const fill = STATE_COLOURS[state ?? "none"];
    const zone = t.checkpoint ? "checkpoint" : t.zone;
    const attrs = [
      `label=${q(t.operator === "task" ? id : `${id}\n${t.operator}`)}`,
      `fillcolor=${q(fill)}`,
      `color=${q(ZONE_COLOURS[zone].stroke)}`,
      `class=${q(`task zone-${zone} state-${state ?? "none"}`)}`,
      `id=${q(`task-${id}`)}`,
      `tooltip=${q(`${id}: ${state ?? "no run"} (${zone})`)}`,
    ];
    if (t.checkpoint) attrs.push("shape=hexagon", "penwidth=2.5");
    if (options.href) attrs.push(`URL=${q(options.href(id))}`, 'target="_top"');
    return `${q(id)} [${attrs.join(", ")}];`;
  };
  for (const zone of ["enclave", "shared"] as const) {
    const ids = dag.order.filter((id) => {
      const t = dag.tasks.get(id)!;
      return !t.checkpoint && t.zone === zone;
    });
    if (ids.length === 0) continue;
    const c = ZONE_COLOURS[zone];
    lines.push(
      `  subgraph cluster_${zone} {`,
      `    label=${
        q(zone === "enclave" ? "enclave: patron data" : "shared")
      }; style="filled,rounded"; fillcolor=${q(c.fill)}; color=${
        q(c.stroke)
      }; penwidth=2; fontcolor=${q(c.stroke)}; class=${q(`zone zone-${zone}`)}; id=${
        q(`zone-${zone}`)
      };`,
    );
    for (const id of ids) lines.push(`    ${node(id)}`);
    lines.push("  }");
  }
  for (const id of dag.order.filter((id) => dag.tasks.get(id)!.checkpoint)) {
    lines.push(`  ${node(id)}`);
  }
  for (const id of dag.order) {
    for (const up of dag.tasks.get(id)!.after) lines.push(`  ${q(up)} -> ${q(id)};`);
  }
  lines.push("}");
  return lines.join("\n");
}

/**
 * Renders the graph to SVG (without the XML prolog, ready to inline in a page).
 *
 * @example
 * ```ts ignore
 * import { graphSvg } from "./graph_svg.ts";
 * const svg = await graphSvg(dag, { states: new Map([["extract", "success"]]) });
 * ```
 */
export async function graphSvg(
  dag: ResolvedDag,
  options: { states?: ReadonlyMap<string, TaskState>; href?: (taskId: string) => string } = {},
): Promise<string> {
  viz ??= instance();
  const svg = (await viz).renderString(graphDot(dag, options), { format: "svg" });
  return svg.slice(svg.indexOf("<svg"));
}
