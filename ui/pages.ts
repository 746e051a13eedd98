/**
 * The console's pages, rendered on the server from the same objects the JSON API returns
 * (`ui/data.ts`). No inline script or style: behaviour comes from `/assets/console.js`, looks
 * from `/assets/console.css`, graphs and charts are SVG made here.
 *
 * @module
 */
import { describeBreak } from "../core/audit_verify.ts";
import type { ResolvedDag } from "../core/dag.ts";
import { formatDuration } from "../core/duration.ts";
import type { TaskState } from "../core/state/store.ts";
import type { AuthConfig, Principal } from "./auth.ts";
import { barChart, type GanttBar, ganttChart } from "./charts.ts";
import { type ConsoleData, NotFound } from "./data.ts";
import { graphSvg, STATE_COLOURS } from "./graph_svg.ts";
import { escapeHtml, Html, html, path, query, raw } from "./html.ts";

/** What every page knows about the request. */
export interface PageContext {
  principal: Principal;
  csrf: string;
  /** The current path and query (forms come back here). */
  path: string;
  /** A notice from the previous action. */
  flash: string | null;
}

const canAct = (ctx: PageContext) => ctx.principal.role === "operator";

/** `2026-11-30 17:13:54Z`, or a dash. */
function time(iso: string | null | undefined): string {
  if (!iso) return "–";
  return iso.replace("T", " ").replace(/\.\d{3}Z$/, "Z");
}

function duration(ms: number | null | undefined): string {
  return ms === null || ms === undefined ? "–" : formatDuration(ms);
}

function badge(state: string | null | undefined): Html {
  const s = state ?? "none";
  return html`<span class="badge state-${s}">${s}</span>`;
}

function zoneBadge(zone: string | null, checkpoint = false): Html {
  if (checkpoint) return html`<span class="zone zone-checkpoint">checkpoint</span>`;
  return zone ? html`<span class="zone zone-${zone}">${zone}</span>` : html``;
}

function layout(ctx: PageContext | null, title: string, body: Html, options: {
  live?: boolean;
  csrf?: string;
} = {}): Html {
  const csrf = ctx?.csrf ?? options.csrf ?? "";
  const nav = ctx
    ? html`
      <nav>
            <a href="/">DAGs</a><a href="/runs">Runs</a><a href="/audit">Audit</a><a href="/compliance">Compliance</a>
          </nav>
      <div class="user">
            <span class="who">${ctx.principal.name}</span> <span class="role">${ctx.principal
              .role}</span>
            ${ctx.principal.name === "local" ? html`` : html`
              <form method="post" action="/logout"
                class="inline"><input type="hidden" name="csrf" value="${csrf}"><button class="link">Log out</button></form>
            `}
          </div>
    `
    : html``;
  return html`
    <!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="csrf-token" content="${csrf}">
        <title>${title} · Carrel</title>
        <link rel="icon" href="/assets/favicon.svg">
        <link rel="stylesheet" href="/assets/console.css">
        <script src="/assets/console.js" defer></script>
      </head>
      <body${options.live ? raw(' data-live="1"') : raw("")}>
        <header><a class="brand" href="/">Carrel</a>${nav}</header>
        <main>
    ${ctx?.flash ? html`<p class="flash" role="status">${ctx.flash}</p>` : html``}
    ${body}
        </main>
        </body>
        </html>
  `;
}

/** A form that posts an action with the CSRF token and comes back to this page. */
function actionForm(
  ctx: PageContext,
  action: string,
  label: string,
  fields: Html = html``,
  options: { confirm?: string; className?: string } = {},
): Html {
  if (!canAct(ctx)) return html``;
  return html`
    <form method="post" action="${action}" class="action ${options.className ??
      ""}" ${options.confirm
      ? html`
        data-confirm="${options.confirm}"
      `
      : html``}>
    <input type="hidden" name="csrf" value="${ctx.csrf}">
    <input type="hidden" name="next" value="${ctx.path}">
    ${fields}<button type="submit">${label}</button>
    </form>
  `;
}

function pauseForm(ctx: PageContext, dagId: string, paused: boolean): Html {
  return actionForm(
    ctx,
    path("api", "v1", "dags", dagId, paused ? "unpause" : "pause"),
    paused ? "Unpause" : "Pause",
    html``,
    { className: "pause" },
  );
}

function triggerForm(ctx: PageContext, dag: { id: string; params: string[] }): Html {
  return actionForm(
    ctx,
    path("api", "v1", "dags", dag.id, "trigger"),
    "Trigger run",
    html`<label>Logical date <input type="text" name="date" placeholder="default: latest interval" size="22"></label>
${
      dag.params.length
        ? html`<label>Params <textarea name="params" rows="2" cols="28" placeholder="${
          dag.params.map((p) => `${p}=`).join("\n")
        }"></textarea></label>`
        : html``
    }`,
    { className: "trigger" },
  );
}

function dagTabs(dagId: string, current: string): Html {
  const tabs = [
    ["grid", "Grid", path("dags", dagId)],
    ["graph", "Graph", path("dags", dagId, "graph")],
    ["charts", "Charts", path("dags", dagId, "charts")],
    ["runs", "Runs", "/runs" + query({ dag: dagId })],
  ];
  return html`<nav class="tabs">${
    tabs.map(([id, label, href]) =>
      html`
        <a href="${href!}" ${id === current ? raw(' class="current"') : raw("")}>${label}</a>
      `
    )
  }</nav>`;
}

async function dagHeader(ctx: PageContext, data: ConsoleData, dagId: string, tab: string) {
  const dag = await data.dagDetail(dagId);
  return html`<div class="dag-head">
<h1>${dag.id} ${dag.paused ? html`<span class="badge paused">paused</span>` : html``}</h1>
<p class="meta">${dag.description ?? ""}</p>
<p class="meta"><span class="schedule">${dag.scheduleText}</span>${
    dag.schedule
      ? html`
        <code>${dag.schedule}</code> (${dag.timezone})
      `
      : html``
  }${
    dag.nextRun
      ? html`
        · next ${time(dag.nextRun)}
      `
      : html``
  } · ${dag.file ?? ""}${
    dag.version
      ? html`
        · version <code>${dag.version}</code>
      `
      : html``
  }</p>
<div class="actions">${triggerForm(ctx, dag)}${pauseForm(ctx, dag.id, dag.paused)}</div>
${dagTabs(dag.id, tab)}
</div>`;
}

/** `/`: the DAGs, failing first. */
export async function dagsPage(ctx: PageContext, data: ConsoleData): Promise<Html> {
  const { dags, errors } = await data.dagList();
  const rows = dags.map((d) =>
    html`
      <tr class="dag${d.failing ? " failing" : ""}" data-dag="${d.id}">
        <td><a href="${path("dags", d.id)}">${d.id}</a>${d.description
          ? html`<div class="meta">${d.description}</div>`
          : html``}</td>
        <td><span class="schedule">${d.scheduleText}</span>${d.schedule
          ? html`<div class="meta"><code>${d.schedule}</code> ${d.timezone}</div>`
          : html``}</td>
        <td>${time(d.nextRun)}</td>
        <td>${d.paused ? html`<span class="badge paused">paused</span>` : html`active`} ${pauseForm(
          ctx,
          d.id,
          d.paused,
        )}</td>
        <td class="recent">${[...d.recentRuns].reverse().map((r) =>
          html`<a class="dot state-${r.state}" href="${
            path("runs", r.runId)
          }" title="${r.runId}: ${r.state}"></a>`
        )}</td>
        <td>${d.tasks}${d.enclaveTasks
          ? html`
            <span class="meta">(${d.enclaveTasks} enclave)</span>
          `
          : html``}</td>
      </tr>
    `
  );
  return layout(
    ctx,
    "DAGs",
    html`
      <h1>DAGs</h1>
      <table class="list" id="dags">
        <thead>
          <tr>
            <th>DAG</th>
            <th>Schedule</th>
            <th>Next run</th>
            <th>Paused</th>
            <th>Recent runs</th>
            <th>Tasks</th>
          </tr>
        </thead>
        <tbody>${rows.length ? rows : html`
          <tr>
            <td colspan="6">No DAGs in the DAGs folder</td>
          </tr>
        `}</tbody>
      </table>
      ${errors.length
        ? html`
          <h2>Load errors</h2>
          <ul class="errors">${errors.map((e) =>
            html`<li><code>${e.file}</code>: ${e.message}</li>`
          )}</ul>
        `
        : html``}
    `,
  );
}

/** `/dags/:dag`: the grid of runs by tasks. */
export async function gridPage(
  ctx: PageContext,
  data: ConsoleData,
  dagId: string,
  options: { limit: number; before?: string | undefined },
): Promise<Html> {
  const head = await dagHeader(ctx, data, dagId, "grid");
  const grid = await data.grid(dagId, options);
  const live = grid.runs.some((r) => r.state === "running" || r.state === "queued");
  const header = grid.runs.map((r) =>
    html`
      <th
        class="run"><a class="dot state-${r.state}" href="${path("runs", r.runId)}" title="${r
          .runId}: ${r.state}"></a><span class="date">${r.logicalDate.slice(5, 16).replace(
            "T",
            " ",
          )}</span></th>
    `
  );
  // The grid is the largest page (tasks x runs cells): its body is built as plain strings, each
  // value escaped once.
  const runs = grid.runs.map((r) => ({
    r,
    href: escapeHtml(path("runs", r.runId, "tasks") + "/"),
  }));
  const rows = raw(
    grid.tasks.map((t) => {
      const id = escapeHtml(t.id);
      const seg = escapeHtml(encodeURIComponent(t.id));
      let row = `<tr data-task="${id}"><th class="task">${id} ${
        zoneBadge(t.zone, t.checkpoint).text
      }</th>`;
      for (const { r, href } of runs) {
        const cell = grid.cells[r.runId]?.[t.id];
        const state = cell?.state ?? "none";
        const tries = cell && cell.tries > 1 ? ` · ${cell.tries} tries` : "";
        row +=
          `<td class="cell state-${state}"><a href="${href}${seg}" title="${id} · ${state}${tries}"></a></td>`;
      }
      return row + "</tr>";
    }).join("\n"),
  );
  return layout(
    ctx,
    `${dagId} grid`,
    html`${head}
${
      grid.runs.length === 0 ? html`<p>No runs yet.</p>` : html`
        <div class="grid-wrap">
          <table class="grid" id="grid">
            <thead>
              <tr><th></th>${header}</tr>
            </thead>
            <tbody>${rows}</tbody>
          </table>
        </div>
      `
    }
${legend()}
<p class="pager">${
      grid.next
        ? html`<a href="${
          path("dags", dagId) + query({ before: grid.next, limit: options.limit })
        }">Older runs</a>`
        : html``
    } ${options.before ? html`<a href="${path("dags", dagId)}">Newest runs</a>` : html``}</p>`,
    { live },
  );
}

function legend(): Html {
  return html`<p class="legend">${
    (Object.keys(STATE_COLOURS) as (TaskState | "none")[]).map((s) =>
      html`
        <span class="cell-key state-${s}"></span>${s === "none" ? "no instance" : s}
      `
    )
  }</p>`;
}

/** The SVG of a DAG, coloured by the states of one run's task instances. */
export async function graphFor(
  data: ConsoleData,
  dagId: string,
  runId: string | undefined,
): Promise<string> {
  const dag = await data.dag(dagId);
  let states: Map<string, TaskState> | undefined;
  if (runId) {
    const run = await data.run(runId);
    if (run.dagId !== dag.id) throw new NotFound(`Run "${runId}" is not a run of "${dag.id}"`);
    states = new Map((await data.store.listTaskInstances(runId)).map((t) => [t.taskId, t.state]));
  }
  return await graphSvg(dag as ResolvedDag, {
    ...(states ? { states } : {}),
    ...(runId ? { href: (taskId: string) => path("runs", runId, "tasks", taskId) } : {}),
  });
}

/** `/dags/:dag/graph`: the graph, zones and checkpoints drawn, states of a chosen run. */
export async function graphPage(
  ctx: PageContext,
  data: ConsoleData,
  dagId: string,
  runId: string | undefined,
): Promise<Html> {
  const head = await dagHeader(ctx, data, dagId, "graph");
  const { runs } = await data.runs({ dagId, limit: 25 });
  const chosen = runId ?? runs[0]?.runId;
  const svg = await graphFor(data, dagId, chosen);
  return layout(
    ctx,
    `${dagId} graph`,
    html`${head}
<form method="get" action="${path("dags", dagId, "graph")}" class="inline pick-run">
<label>Run <select name="run">${
      runs.map((r) =>
        html`
          <option value="${r.runId}" ${r.runId === chosen ? raw(" selected") : raw("")}>${time(
            r.logicalDate,
          )} · ${r.state}</option>
        `
      )
    }</select></label> <button type="submit">Show</button></form>
<div class="graph" id="graph">${raw(svg)}</div>
<p class="legend">
<span class="cell-key zone-key-enclave"></span>enclave zone (patron data)
<span class="cell-key zone-key-shared"></span>shared zone
<span class="cell-key zone-key-checkpoint"></span>privacy checkpoint (the only door out of the enclave)
</p>
${legend()}`,
  );
}

/** `/dags/:dag/charts`: duration and records per run over time. */
export async function chartsPage(
  ctx: PageContext,
  data: ConsoleData,
  dagId: string,
): Promise<Html> {
  const head = await dagHeader(ctx, data, dagId, "charts");
  const { points } = await data.charts(dagId, 100);
  const bars = (pick: (p: typeof points[number]) => number | null) =>
    points.map((p) => ({
      label: p.logicalDate,
      value: pick(p),
      state: p.state,
      href: path("runs", p.runId),
    }));
  return layout(
    ctx,
    `${dagId} charts`,
    html`${head}
<div class="charts">
${
      raw(
        barChart("Run duration", bars((p) => p.durationMs), (v) => formatDuration(v), {
          id: "chart-duration",
        }),
      )
    }
${
      raw(barChart(
        "Records per run (written by the final tasks)",
        bars((p) => p.records),
        (v) => String(Math.round(v)),
        { id: "chart-records" },
      ))
    }
</div>
<p class="meta">The latest ${points.length} runs, oldest on the left; bars are coloured by run state.</p>`,
  );
}

/** `/runs`: runs newest first, filtered by DAG and state, paged. */
export async function runsPage(
  ctx: PageContext,
  data: ConsoleData,
  filter: {
    dagId?: string | undefined;
    states?: ("queued" | "running" | "success" | "failed")[] | undefined;
    before?: string | undefined;
    limit: number;
  },
): Promise<Html> {
  const page = await data.runs(filter);
  const rows = page.runs.map((r) =>
    html`
      <tr>
        <td><a href="${path("runs", r.runId)}">${r.runId}</a></td>
        <td>${badge(r.state)}</td>
        <td>${r.runType}</td>
        <td>${time(r.startedAt)}</td>
        <td>${duration(r.durationMs)}</td>
      </tr>
    `
  );
  const state = filter.states?.join(",") ?? "";
  return layout(
    ctx,
    "Runs",
    html`
      <h1>Runs${filter.dagId
        ? html`
          of ${filter.dagId}
        `
        : html``}</h1>
      <form method="get" action="/runs" class="inline filters">
      <label>DAG <input name="dag" value="${filter.dagId ?? ""}" size="20"></label>
      <label>State <select name="state">${["", "queued", "running", "success", "failed"].map((s) =>
        html`
          <option value="${s}" ${s === state ? raw(" selected") : raw("")}>${s || "any"}</option>
        `
      )}</select></label> <button type="submit">Filter</button></form>
      <table class="list" id="runs">
        <thead>
          <tr>
            <th>Run</th>
            <th>State</th>
            <th>Type</th>
            <th>Started</th>
            <th>Duration</th>
          </tr>
        </thead>
        <tbody>${rows.length ? rows : html`
          <tr>
            <td colspan="5">No runs</td>
          </tr>
        `}</tbody>
      </table>
      <p class="pager">${page.next
        ? html`<a href="${
          "/runs" + query({ dag: filter.dagId, state, before: page.next, limit: filter.limit })
        }">Older runs</a>`
        : html``}</p>
    `,
  );
}

function reasons(r: Record<string, number>): Html {
  const entries = Object.entries(r);
  if (entries.length === 0) return html``;
  return html`<ul class="reasons">${entries.map(([k, n]) => html`<li>${k}: ${n}</li>`)}</ul>`;
}

function verdict(
  v: {
    passed: boolean;
    records: number | null;
    failedRecords: number | null;
    violations: { check: string; field: string | null; count: number }[];
  } | null,
): Html {
  if (!v) return html``;
  return html`<span class="verdict ${v.passed ? "passed" : "failed"}">${
    v.passed ? "passed" : "failed"
  }</span>${
    v.records !== null
      ? html`
        ${v.records} records
      `
      : html``
  }${
    v.violations.length
      ? html`<ul class="reasons">${
        v.violations.map((x) =>
          html`<li>${x.check}${x.field ? `: ${x.field}` : ""} (${x.count})</li>`
        )
      }</ul>`
      : html``
  }`;
}

/** `/runs/:run`: a run's attempts as a Gantt chart, its tasks, counts, verdicts and params. */
export async function runPage(ctx: PageContext, data: ConsoleData, runId: string): Promise<Html> {
  const run = await data.runDetail(runId);
  const bars: GanttBar[] = run.tasks.flatMap((t) =>
    t.attempts.map((a) => ({
      taskId: t.taskId,
      attempt: a.attempt,
      state: a.state,
      start: Date.parse(a.startedAt),
      end: a.endedAt ? Date.parse(a.endedAt) : null,
      href: path("runs", runId, "tasks", t.taskId) + query({ attempt: a.attempt }),
    }))
  );
  const live = run.state === "running" || run.state === "queued";
  const changed = run.dagVersion && run.currentDagVersion &&
    run.dagVersion !== run.currentDagVersion;
  const rows = run.tasks.map((t) =>
    html`
      <tr data-task="${t.taskId}">
        <td><a href="${path("runs", runId, "tasks", t.taskId)}">${t.taskId}</a> ${zoneBadge(
          t.zone,
          t.checkpoint,
        )}</td>
        <td>${badge(t.state)}</td>
        <td>${t.tries}</td>
        <td>${duration(t.durationMs)}</td>
        <td class="num">${t.records ?? "–"}</td>
        <td class="num quarantined">${t.quarantined}${reasons(t.quarantineReasons)}</td>
        <td>${verdict(t.checkpointVerdict)}</td>
        <td class="error">${t.error ?? ""}</td>
        <td>${actionForm(
          ctx,
          path("api", "v1", "runs", runId, "tasks", t.taskId, "clear"),
          "Clear",
          html`<label class="small"><input type="checkbox" name="downstream" checked> downstream</label>`,
          { confirm: `Clear ${t.taskId} for re-execution?`, className: "clear" },
        )}</td>
      </tr>
    `
  );
  const params = Object.entries(run.params);
  return layout(
    ctx,
    run.runId,
    html`
      <h1>Run ${run.runId} ${badge(run.state)}</h1>
      <p
        class="meta"><a href="${path("dags", run.dagId)}">${run
          .dagId}</a> · <a href="${path("dags", run.dagId, "graph") +
          query({ run: run.runId })}">graph of this run</a> · <a href="${"/audit" +
          query({ run: run.runId })}">audit entries (${run.auditEntries})</a></p>
      <dl class="facts">
        <dt>Data interval</dt>
        <dd>${time(run.dataInterval.start)} to ${time(run.dataInterval.end)}</dd>
        <dt>Type</dt>
        <dd>${run.runType}${run.triggeredBy
          ? html`
            by ${run.triggeredBy}
          `
          : html``} · executor ${run.executor}</dd>
        <dt>Started</dt>
        <dd>${time(run.startedAt)}</dd>
        <dt>Ended</dt>
        <dd>${time(run.endedAt)} (${duration(run.durationMs)})</dd>
        <dt>DAG version</dt>
        <dd>${run.dagVersion ? html`<code>${run.dagVersion}</code>` : "not recorded"}${changed
          ? html`
            <span
              class="badge state-up_for_retry">the DAG file changed since (now <code>${run
                .currentDagVersion}</code>)</span>
          `
          : html``}${run.carrelVersion
          ? html`
            · Carrel <code>${run.carrelVersion}</code>
          `
          : html``}</dd>
        <dt>Key version</dt>
        <dd>${run.keyVersion ?? "–"}</dd>
        <dt>Params</dt>
        <dd>${params.length
          ? html`<table class="params">${
            params.map(([k, v]) =>
              html`
                <tr>
                  <th>${k}</th>
                  <td><code>${JSON.stringify(v)}</code></td>
                </tr>
              `
            )
          }</table>`
          : "none"}</dd>
      </dl>
      <h2>Attempts</h2>
      <div class="gantt-wrap">${raw(ganttChart(run.tasks.map((t) => t.taskId), bars))}</div>
      <h2>Tasks</h2>
      <table class="list" id="tasks">
        <thead>
          <tr>
            <th>Task</th>
            <th>State</th>
            <th>Tries</th>
            <th>Duration</th>
            <th>Records</th>
            <th>Quarantined</th>
            <th>Checkpoint</th>
            <th>Error</th>
            <th></th>
          </tr>
        </thead>
        <tbody>${rows}</tbody>
      </table>
    `,
    { live },
  );
}

/** `/runs/:run/tasks/:task`: one attempt and its log lines. */
export async function attemptPage(
  ctx: PageContext,
  data: ConsoleData,
  runId: string,
  taskId: string,
  options: { attempt?: number | undefined; after?: number | undefined },
): Promise<Html> {
  const logs = await data.logs(runId, taskId, { ...options, limit: 200 });
  const { attempts } = await data.attempts(runId, taskId);
  const run = await data.run(runId);
  const a = logs.attempt;
  const lines = logs.lines.map((l) =>
    html`
      <tr class="level-${l.level}" data-id="${l.id}">
        <td class="at">${time(l.at)}</td>
        <td class="level">${l.level}</td>
        <td class="msg">${l.message}</td>
      </tr>
    `
  );
  const more = logs.next === null
    ? html``
    : html`<p class="pager"><a class="more" data-more="${
      path("api", "v1", "runs", runId, "tasks", taskId, "logs") +
      query({ attempt: a?.attempt, after: logs.next, limit: 200 })
    }" href="${
      path("runs", runId, "tasks", taskId) + query({ attempt: a?.attempt, after: logs.next })
    }">More lines</a></p>`;
  return layout(
    ctx,
    `${taskId} · ${runId}`,
    html`
      <h1>${taskId} <span class="meta">in</span> <a href="${path(
        "runs",
        runId,
      )}">${runId}</a> ${badge(run.state)}</h1>
      <nav class="attempts">${attempts.map((x) =>
        html`
          <a href="${path("runs", runId, "tasks", taskId) + query({ attempt: x.attempt })}"
            class="attempt state-${x.state}${x.attempt === a?.attempt
              ? " current"
              : ""}">attempt ${x.attempt}: ${x.state}</a>
        `
      )}</nav>
      ${a
        ? html`<dl class="facts">
<dt>Attempt</dt><dd>${a.attempt} of ${logs.attempts} ${badge(a.state)}${
          a.recompute ? " (recomputed for a resumed run)" : ""
        }</dd>
<dt>Started</dt><dd>${time(a.startedAt)}</dd><dt>Ended</dt><dd>${time(a.endedAt)} (${
          duration(a.durationMs)
        })</dd>
<dt>Records</dt><dd>${a.records ?? "–"}</dd>
<dt>Quarantined</dt><dd class="quarantined">${a.quarantined}${reasons(a.quarantineReasons)}</dd>
${
          a.checkpoint
            ? html`
              <dt>Checkpoint</dt>
              <dd>${verdict(a.checkpoint)}</dd>
            `
            : html``
        }
<dt>Counts</dt><dd>${
          a.counts.length
            ? a.counts.map((c) =>
              html`
                <span class="count">${c.operation}: ${c.records ?? "–"}</span>
              `
            )
            : "none"
        }</dd>
</dl>`
        : html`<p>No attempt of this task is recorded in the audit trail.</p>`}
      <h2>Log</h2>
      <table class="log" id="log">
        <tbody>${lines.length ? lines : html`
          <tr class="empty">
            <td>No log lines${options.after ? " after this point" : ""}</td>
          </tr>
        `}</tbody>
      </table>
      ${more}
    `,
  );
}

/** `/audit`: the chain's status, entries by run or correlation id, export. */
export async function auditPage(
  ctx: PageContext,
  data: ConsoleData,
  filter: { correlationId?: string | undefined; before?: number | undefined },
): Promise<Html> {
  const [verdict, page] = await Promise.all([
    data.chainStatus(),
    data.audit({ ...filter, limit: 100 }),
  ]);
  const rows = page.entries.map((e) =>
    html`
      <tr>
        <td class="num">${e.seq}</td>
        <td class="at">${time(e.timestamp)}</td>
        <td><a href="${"/audit" + query({ correlation: e.correlation_id })}">${e
          .correlation_id}</a></td>
        <td>${e.task_id ?? ""}</td>
        <td>${e.operation}</td>
        <td>${e.status}</td>
        <td class="num">${e.record_count ?? ""}</td>
        <td>${e.key_version ?? ""}</td>
        <td class="detail"><code>${e.detail ? JSON.stringify(e.detail) : ""}</code></td>
      </tr>
    `
  );
  const exportHref = "/api/v1/audit/export" + query({ correlation: filter.correlationId });
  return layout(
    ctx,
    "Audit",
    html`
      <h1>Audit trail</h1>
      <p class="chain ${verdict.ok ? "ok" : "broken"}" id="chain-status">${verdict.ok
        ? html`
          Chain intact: ${verdict.entries} entries verified, head <code>${verdict.head.slice(
            0,
            16,
          )}</code> <span
            class="meta">(checked ${time(verdict.checkedAt)})</span>
        `
        : html`Chain broken at ${describeBreak(verdict)} (${verdict.entries} entries read)`}</p>
      <form method="get" action="/audit" class="inline filters">
      <label>Run or correlation id <input name="correlation" value="${filter.correlationId ??
        ""}" size="48"></label>
      <button type="submit">Filter</button> <a href="${exportHref}" download>Export (JSON lines)</a></form>
      <table class="list" id="audit">
        <thead>
          <tr>
            <th>Seq</th>
            <th>Time</th>
            <th>Correlation</th>
            <th>Task</th>
            <th>Operation</th>
            <th>Status</th>
            <th>Records</th>
            <th>Key</th>
            <th>Detail</th>
          </tr>
        </thead>
        <tbody>${rows.length ? rows : html`
          <tr>
            <td colspan="9">No entries</td>
          </tr>
        `}</tbody>
      </table>
      <p class="pager">${page.next !== null
        ? html`<a href="${
          "/audit" + query({ correlation: filter.correlationId, before: page.next })
        }">Older entries</a>`
        : html``}</p>
    `,
  );
}

/** `/compliance`: the compliance report as a page. */
export async function compliancePage(ctx: PageContext, data: ConsoleData): Promise<Html> {
  const report = await data.compliance();
  return layout(
    ctx,
    "Compliance",
    html`
      <h1>Compliance report</h1>
      <p class="chain ${report.passed ? "ok" : "broken"}" id="compliance-status">${report.passed
        ? "All required items pass"
        : `${
          report.items.filter((i) => i.required && i.status === "fail").length
        } required item(s) fail`}</p>
      <table class="list" id="compliance">
        <thead>
          <tr>
            <th>Status</th>
            <th>Control</th>
            <th>Item</th>
            <th>Detail</th>
          </tr>
        </thead>
        <tbody>${report.items.map((i) =>
          html`
            <tr data-item="${i.id}">
              <td><span class="badge check-${i.status}">${i.status}</span></td>
              <td>${i.control}</td>
              <td>${i.title}</td>
              <td>${i.detail}</td>
            </tr>
          `
        )}</tbody>
      </table>
    `,
  );
}

/** `/login`. */
export function loginPage(
  auth: AuthConfig,
  csrf: string,
  next: string,
  error: string | null,
): Html {
  return layout(
    null,
    "Log in",
    html`<h1>Log in</h1>
${error ? html`<p class="flash error" role="alert">${error}</p>` : html``}
<form method="post" action="/login" class="login">
<input type="hidden" name="csrf" value="${csrf}">
<input type="hidden" name="next" value="${next}">
${
      auth.users?.size
        ? html`<label>User <input name="name" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>`
        : html``
    }
${
      auth.token
        ? html`<label>Token <input name="token" type="password" autocomplete="off"></label>`
        : html``
    }
<button type="submit">Log in</button>
</form>`,
    { csrf },
  );
}

/** An error as a page. */
export function errorPage(
  status: number,
  message: string,
  principal: Principal | null,
  csrf: string,
): Html {
  const ctx = principal ? { principal, csrf, path: "/", flash: null } : null;
  return layout(
    ctx,
    `Error ${status}`,
    html`
      <h1>${status === 404 ? "Not found" : status === 403 ? "Refused" : "Error"}</h1>
      <p class="flash error" role="alert" id="error">${message}</p>
      <p><a href="/">Back to the DAGs</a></p>
    `,
    { csrf },
  );
}
