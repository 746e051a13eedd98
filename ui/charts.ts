/**
 * Charts drawn on the server as SVG (no script, no inline style: colours are attributes): bars
 * over runs (duration, records) and a Gantt chart of a run's task attempts.
 *
 * @module
 */
import { formatDuration } from "../core/duration.ts";
import { escapeHtml } from "./html.ts";
import { STATE_COLOURS } from "./graph_svg.ts";

const RUN_COLOURS: Record<string, string> = {
  success: "#22c55e",
  failed: "#ef4444",
  running: "#3b82f6",
  queued: "#a1a1aa",
};

const e = escapeHtml;

function niceMax(max: number): number {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** One bar of a bar chart. */
export interface Bar {
  label: string;
  value: number | null;
  state: string;
  href?: string;
}

/**
 * A bar chart over runs (oldest left), each bar coloured by the run's state.
 *
 * @example
 * ```ts
 * import { barChart } from "./charts.ts";
 * barChart("Duration", [{ label: "r1", value: 1200, state: "success" }], (v) => `${v} ms`)
 *   .startsWith("<svg"); // true
 * ```
 */
export function barChart(
  title: string,
  bars: readonly Bar[],
  format: (v: number) => string,
  options: { id?: string } = {},
): string {
  const w = 720, h = 220, left = 70, right = 10, top = 28, bottom = 40;
  const values = bars.map((b) => b.value ?? 0);
  const max = niceMax(Math.max(0, ...values));
  const plotW = w - left - right, plotH = h - top - bottom;
  const step = bars.length ? plotW / bars.length : plotW;
  const bw = Math.max(1, Math.min(24, step * 0.8));
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}"${
      options.id ? ` id="${e(options.id)}"` : ""
    } aria-label="${e(title)}">`,
    `<title>${e(title)}</title>`,
    `<text x="${left}" y="16" font-size="13" font-weight="bold" fill="#18181b">${e(title)}</text>`,
  ];
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    out.push(
      `<line x1="${left}" x2="${w - right}" y1="${y}" y2="${y}" stroke="#e4e4e7"/>`,
      `<text x="${left - 6}" y="${y + 4}" font-size="10" text-anchor="end" fill="#52525b">${
        e(format((max * i) / 4))
      }</text>`,
    );
  }
  if (bars.length === 0) {
    out.push(
      `<text x="${left + plotW / 2}" y="${
        top + plotH / 2
      }" font-size="12" text-anchor="middle" fill="#71717a">no runs yet</text>`,
    );
  }
  bars.forEach((b, i) => {
    const x = left + i * step + (step - bw) / 2;
    const v = b.value ?? 0;
    const bh = b.value === null ? 0 : Math.max(1, (plotH * v) / max);
    const colour = RUN_COLOURS[b.state] ?? "#a1a1aa";
    const rect = `<rect class="bar state-${e(b.state)}" x="${x.toFixed(1)}" y="${
      (top + plotH - bh).toFixed(1)
    }" width="${bw.toFixed(1)}" height="${bh.toFixed(1)}" fill="${colour}"><title>${
      e(`${b.label}: ${b.value === null ? "n/a" : format(v)} (${b.state})`)
    }</title></rect>`;
    out.push(b.href ? `<a href="${e(b.href)}">${rect}</a>` : rect);
  });
  const first = bars[0], last = bars[bars.length - 1];
  if (first) {
    out.push(
      `<text x="${left}" y="${h - 12}" font-size="10" fill="#52525b">${
        e(first.label.slice(0, 19))
      }</text>`,
    );
  }
  if (last && bars.length > 1) {
    out.push(
      `<text x="${w - right}" y="${h - 12}" font-size="10" text-anchor="end" fill="#52525b">${
        e(last.label.slice(0, 19))
      }</text>`,
    );
  }
  out.push("</svg>");
  return out.join("");
}

/** One bar of the Gantt chart: an attempt of a task. */
export interface GanttBar {
  taskId: string;
  attempt: number;
  state: string;
  start: number;
  end: number | null;
  href?: string;
}

/**
 * A Gantt chart of a run's attempts: a row per task, a bar per attempt from its start to its end
 * (or now while it runs), coloured by how it ended.
 */
export function ganttChart(
  taskIds: readonly string[],
  bars: readonly GanttBar[],
  now = Date.now(),
): string {
  const rowH = 22, left = 160, right = 70, top = 24, w = 900;
  const h = top + taskIds.length * rowH + 10;
  const t0 = Math.min(...bars.map((b) => b.start), now);
  const t1 = Math.max(...bars.map((b) => b.end ?? now), t0 + 1);
  const span = t1 - t0;
  const plotW = w - left - right;
  const x = (t: number) => left + (plotW * (t - t0)) / span;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart gantt" id="gantt" role="img" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" aria-label="Task attempts over time">`,
    "<title>Task attempts over time</title>",
    `<text x="${left}" y="14" font-size="10" fill="#52525b">0</text>`,
    `<text x="${w - right}" y="14" font-size="10" text-anchor="end" fill="#52525b">${
      e(formatDuration(span))
    }</text>`,
  ];
  taskIds.forEach((id, i) => {
    const y = top + i * rowH;
    out.push(
      `<text x="${left - 8}" y="${y + 15}" font-size="11" text-anchor="end" fill="#18181b">${
        e(id)
      }</text>`,
      `<line x1="${left}" x2="${w - right}" y1="${y + rowH - 1}" y2="${
        y + rowH - 1
      }" stroke="#f4f4f5"/>`,
    );
  });
  for (const b of bars) {
    const row = taskIds.indexOf(b.taskId);
    if (row < 0) continue;
    const y = top + row * rowH + 3;
    const x0 = x(b.start), x1 = Math.max(x0 + 2, x(b.end ?? now));
    const colour = STATE_COLOURS[b.state as keyof typeof STATE_COLOURS] ??
      (b.state === "cancelled" ? STATE_COLOURS.failed : STATE_COLOURS.none);
    const d = (b.end ?? now) - b.start;
    const rect = `<rect class="attempt state-${e(b.state)}" x="${x0.toFixed(1)}" y="${y}" width="${
      (x1 - x0).toFixed(1)
    }" height="${rowH - 6}" rx="3" fill="${colour}" stroke="#52525b" stroke-width="0.5"><title>${
      e(`${b.taskId} attempt ${b.attempt}: ${b.state}, ${formatDuration(d)}`)
    }</title></rect>`;
    out.push(b.href ? `<a href="${e(b.href)}">${rect}</a>` : rect);
    out.push(
      `<text x="${(x1 + 4).toFixed(1)}" y="${y + 12}" font-size="10" fill="#52525b">${
        e(formatDuration(d))
      }</text>`,
    );
  }
  out.push("</svg>");
  return out.join("");
}
