/**
 * What the console shows, as plain JSON-ready objects: the JSON API returns them and the pages
 * render them, so both read the store the same way (through `core/state/history.ts` and the
 * store interface) and act through the same core functions as the CLI (`core/actions.ts`).
 *
 * @module
 */
import { recordedVersion } from "../core/dag_version.ts";
import { EMAIL_ADDRESS_PATTERN } from "@logtape/redaction";
import {
  type Actor,
  clearTask,
  setDagPaused,
  type Triggered,
  type TriggerMode,
  triggerRun,
} from "../core/actions.ts";
import {
  type Attempt,
  attemptsFromAudit,
  latestFinished,
  readAttemptLogs,
} from "../core/attempts.ts";
import { type AuditEntry, exportEntry } from "../core/audit.ts";
import { type AuditVerdict, verifyAudit } from "../core/audit_verify.ts";
import { type ComplianceItem, complianceItems } from "../core/compliance.ts";
import type { ResolvedDag } from "../core/dag.ts";
import { UsageError } from "../core/errors.ts";
import { loadDags, type LoadedDags } from "../core/loader.ts";
import { REDACTED_FIELDS } from "../core/log.ts";
import { graphJson } from "../core/render.ts";
import { nextFireAfter } from "../core/schedule.ts";
import { type History, historyOf } from "../core/state/history.ts";
import type { RunRecord, RunState, StateStore, TaskState } from "../core/state/store.ts";
import { scheduleInWords } from "./schedule_words.ts";

/** A request for something that does not exist (HTTP 404). */
export class NotFound extends Error {
  override name = "NotFound";
}

/** What the console reads from. */
export interface ConsoleSources {
  store: StateStore;
  /** `CARREL_HOME`, for the compliance checklist. */
  home: string;
  dagsDir: string;
  /** Who executes triggered runs (`CARREL_EXECUTOR`). */
  triggerMode?: TriggerMode;
  /** How long loaded DAG files are reused before the folder is read again. Default 5 s. */
  dagsTtlMs?: number;
}

/** A run in lists. */
export interface RunSummary {
  runId: string;
  dagId: string;
  logicalDate: string;
  state: RunState;
  runType: string;
  startedAt: string | null;
  endedAt: string | null;
  durationMs: number | null;
}

function runSummary(r: RunRecord): RunSummary {
  return {
    runId: r.runId,
    dagId: r.dagId,
    logicalDate: r.logicalDate.toISOString(),
    state: r.state,
    runType: r.runType,
    startedAt: r.startedAt?.toISOString() ?? null,
    endedAt: r.endedAt?.toISOString() ?? null,
    durationMs: r.startedAt && r.endedAt ? r.endedAt.getTime() - r.startedAt.getTime() : null,
  };
}

const MASK = "[REDACTED]";

function sensitiveKey(key: string): boolean {
  return REDACTED_FIELDS.some((p) =>
    typeof p === "string" ? p.toLowerCase() === key.toLowerCase() : p.test(key)
  );
}

/** Params as the console shows them: PII- or secret-named keys masked, e-mail addresses too. */
export function maskParams(params: Record<string, unknown>): Record<string, unknown> {
  const mask = (value: unknown, key: string): unknown => {
    if (sensitiveKey(key)) return MASK;
    if (typeof value === "string") {
      return value.replace(
        EMAIL_ADDRESS_PATTERN.pattern,
        EMAIL_ADDRESS_PATTERN.replacement as string,
      );
    }
    if (Array.isArray(value)) return value.map((v) => mask(v, ""));
    if (value && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mask(v, k)]));
    }
    return value;
  };
  return Object.fromEntries(Object.entries(params).map(([k, v]) => [k, mask(v, k)]));
}

/** Clamps a page size from a query parameter. */
export function pageSize(value: string | undefined, fallback: number, max: number): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new UsageError(`Invalid limit "${value.slice(0, 20)}": expected a whole number >= 1`);
  }
  return Math.min(n, max);
}

const RUN_STATES: readonly RunState[] = ["queued", "running", "success", "failed"];

/** Parses a run state filter. */
export function runStates(value: string | undefined): RunState[] | undefined {
  if (!value) return undefined;
  const states = value.split(",");
  for (const s of states) {
    if (!RUN_STATES.includes(s as RunState)) {
      throw new UsageError(
        `Invalid state "${s.slice(0, 20)}": expected ${RUN_STATES.join(", ")}`,
      );
    }
  }
  return states as RunState[];
}

/** The console's model over one store and one DAGs folder. */
export class ConsoleData {
  readonly history: History;
  #dags: { at: number; loaded: Promise<LoadedDags> } | undefined;
  #chain: { head: { seq: number; hash: string }; verdict: AuditVerdict; at: number } | undefined;

  constructor(readonly sources: ConsoleSources) {
    this.history = historyOf(sources.store);
  }

  get store(): StateStore {
    return this.sources.store;
  }

  /** The DAG files, read again when older than the TTL (changed files are re-imported). */
  dags(): Promise<LoadedDags> {
    const ttl = this.sources.dagsTtlMs ?? 5000;
    if (!this.#dags || Date.now() - this.#dags.at > ttl) {
      this.#dags = { at: Date.now(), loaded: loadDags(this.sources.dagsDir, { fresh: true }) };
    }
    return this.#dags.loaded;
  }

  /** One DAG, or NotFound. */
  async dag(id: string): Promise<ResolvedDag> {
    const dag = (await this.dags()).dags.get(id);
    if (!dag) throw new NotFound(`Unknown DAG "${id}"`);
    return dag;
  }

  /** One run, or NotFound. */
  async run(runId: string): Promise<RunRecord> {
    const run = await this.store.getRun(runId);
    if (!run) throw new NotFound(`Unknown run "${runId}"`);
    return run;
  }

  /** DAGs with their schedule, paused flag, next fire time and recent runs; failing first. */
  async dagList(recent = 10) {
    const { dags, errors } = await this.dags();
    const paused = await this.store.pausedDags();
    const ids = [...dags.keys()];
    const latest = await this.history.latestRuns(ids, recent);
    const now = new Date();
    const list = ids.map((id) => {
      const dag = dags.get(id)!;
      const runs = latest.get(id) ?? [];
      const from = dag.start && dag.start > now ? new Date(dag.start.getTime() - 1) : now;
      return {
        id,
        description: dag.description ?? null,
        file: dag.file ?? null,
        version: dag.version ?? null,
        schedule: dag.schedule,
        scheduleText: scheduleInWords(dag.schedule),
        timezone: dag.timezone,
        paused: paused.get(id) ?? false,
        nextRun: dag.schedule ? nextFireAfter(dag, from)?.toISOString() ?? null : null,
        tasks: dag.tasks.size,
        enclaveTasks: [...dag.tasks.values()].filter((t) => t.zone === "enclave").length,
        failing: runs[0]?.state === "failed",
        recentRuns: runs.map((r) => ({
          runId: r.runId,
          state: r.state,
          logicalDate: r.logicalDate.toISOString(),
        })),
      };
    });
    list.sort((a, b) => Number(b.failing) - Number(a.failing) || a.id.localeCompare(b.id));
    return { dags: list, errors };
  }

  /** One DAG's details: its graph (as `dags show --format json`), schedule and flags. */
  async dagDetail(id: string) {
    const dag = await this.dag(id);
    const paused = (await this.store.pausedDags()).get(id) ?? false;
    const now = new Date();
    return {
      ...graphJson(dag),
      version: dag.version ?? null,
      scheduleText: scheduleInWords(dag.schedule),
      paused,
      nextRun: dag.schedule ? nextFireAfter(dag, now)?.toISOString() ?? null : null,
    };
  }

  /** The grid: the latest runs (oldest first, as columns) by the DAG's tasks (rows). */
  async grid(dagId: string, options: { limit: number; before?: string | undefined }) {
    const dag = await this.dag(dagId);
    const page = await this.history.runsPage({
      dagId,
      limit: options.limit,
      ...(options.before ? { before: options.before } : {}),
    });
    const cells = await this.history.gridCells(page.runs.map((r) => r.runId));
    const byRun: Record<string, Record<string, { state: TaskState; tries: number }>> = {};
    for (const c of cells) {
      (byRun[c.runId] ??= {})[c.taskId] = { state: c.state, tries: c.tryNumber };
    }
    const known = new Set(dag.order);
    const extra = [...new Set(cells.map((c) => c.taskId).filter((t) => !known.has(t)))].sort();
    return {
      dagId,
      tasks: [...dag.order, ...extra].map((id) => ({
        id,
        zone: dag.tasks.get(id)?.zone ?? null,
        checkpoint: dag.tasks.get(id)?.checkpoint ?? false,
      })),
      runs: page.runs.map(runSummary).reverse(),
      cells: byRun,
      next: page.next,
    };
  }

  /** A page of runs, newest first. */
  async runs(
    filter: {
      dagId?: string | undefined;
      states?: RunState[] | undefined;
      before?: string | undefined;
      limit: number;
    },
  ) {
    let page;
    try {
      page = await this.history.runsPage({
        limit: filter.limit,
        ...(filter.dagId ? { dagId: filter.dagId } : {}),
        ...(filter.states ? { states: filter.states } : {}),
        ...(filter.before ? { before: filter.before } : {}),
      });
    } catch (error) {
      if (error instanceof RangeError) throw new UsageError(error.message);
      throw error;
    }
    return { runs: page.runs.map(runSummary), next: page.next };
  }

  /** One run: its tasks with attempts, records, quarantines and checkpoint verdicts. */
  async runDetail(runId: string) {
    const run = await this.run(runId);
    const [tis, audit, loaded] = await Promise.all([
      this.store.listTaskInstances(runId),
      this.history.runAudit(runId),
      this.dags(),
    ]);
    const dag = loaded.dags.get(run.dagId);
    const attempts = attemptsFromAudit(audit);
    const rank = new Map((dag?.order ?? []).map((id, i) => [id, i]));
    tis.sort((a, b) =>
      (rank.get(a.taskId) ?? 1e9) - (rank.get(b.taskId) ?? 1e9) || a.taskId.localeCompare(b.taskId)
    );
    const triggered = audit.find((e) => e.operation === "run:trigger");
    const end = audit.findLast((e) => e.operation === "run:end" || e.operation === "run:cancelled");
    return {
      ...runSummary(run),
      dataInterval: { start: run.intervalStart.toISOString(), end: run.intervalEnd.toISOString() },
      executor: run.executor,
      createdAt: run.createdAt.toISOString(),
      params: maskParams(run.params),
      keyVersion: run.keyVersion,
      dagVersion: recordedVersion(audit).dagVersion,
      carrelVersion: recordedVersion(audit).carrelVersion,
      currentDagVersion: dag?.version ?? null,
      triggeredBy: (triggered?.detail?.by as string | undefined) ?? null,
      endedBy: end?.operation ?? null,
      auditEntries: audit.length,
      tasks: tis.map((t) => {
        const list = attempts.get(t.taskId) ?? [];
        const last = latestFinished(list);
        const spec = dag?.tasks.get(t.taskId);
        return {
          taskId: t.taskId,
          state: t.state,
          zone: t.zone,
          checkpoint: spec?.checkpoint ?? false,
          operator: spec?.operator ?? null,
          tries: t.tryNumber,
          jobKey: t.jobKey,
          startedAt: t.startedAt?.toISOString() ?? null,
          endedAt: t.endedAt?.toISOString() ?? null,
          durationMs: t.startedAt && t.endedAt && t.endedAt >= t.startedAt
            ? t.endedAt.getTime() - t.startedAt.getTime()
            : null,
          error: t.error,
          outputKind: t.outputKind,
          records: last?.records ?? null,
          quarantined: last?.quarantined ?? 0,
          quarantineReasons: last?.quarantined ? last.quarantineReasons : {},
          checkpointVerdict: last?.checkpoint ?? null,
          attempts: list.map(attemptJson),
        };
      }),
    };
  }

  /** The attempts of one task of a run. */
  async attempts(runId: string, taskId: string) {
    await this.run(runId);
    const list = attemptsFromAudit(await this.history.runAudit(runId)).get(taskId) ?? [];
    return { runId, taskId, attempts: list.map(attemptJson) };
  }

  /** One attempt's log lines, paged. */
  async logs(
    runId: string,
    taskId: string,
    options: { attempt?: number | undefined; after?: number | undefined; limit: number },
  ) {
    const run = await this.run(runId);
    const tis = await this.store.listTaskInstances(runId);
    if (!tis.some((t) => t.taskId === taskId)) {
      throw new NotFound(`Unknown task "${taskId}" in run "${run.runId}"`);
    }
    let page;
    try {
      page = await readAttemptLogs(this.history, runId, taskId, options);
    } catch (error) {
      if (error instanceof RangeError) throw new NotFound(error.message);
      throw error;
    }
    return {
      runId,
      taskId,
      attempt: page.attempt ? attemptJson(page.attempt) : null,
      attempts: page.attempts,
      lines: page.lines.map((l) => ({
        id: l.id,
        at: l.at.toISOString(),
        level: l.level,
        category: l.category,
        message: l.message,
        properties: l.properties,
      })),
      next: page.next,
    };
  }

  /** Audit entries newest first, of one run or correlation id. */
  async audit(
    options: { correlationId?: string | undefined; before?: number | undefined; limit: number },
  ) {
    const page = await this.history.auditPage({
      limit: options.limit,
      ...(options.correlationId ? { correlationId: options.correlationId } : {}),
      ...(options.before !== undefined ? { before: options.before } : {}),
    });
    return { entries: page.entries.map(exportEntry), next: page.next };
  }

  /** Audit entries in chain order as JSON lines, in the `audit export` format. */
  async *auditExport(filter: { correlationId?: string; since?: Date }): AsyncIterable<string> {
    for await (const e of this.store.iterateAudit(filter)) {
      yield JSON.stringify(exportEntry(e as AuditEntry)) + "\n";
    }
  }

  /**
   * The audit chain's status: the same check as `audit verify`, over the whole chain. The verdict
   * is reused for up to `maxAgeMs` while the chain's head has not moved, so that busy pages do
   * not re-read a long trail on every view; `checkedAt` says when it was computed.
   */
  async chainStatus(maxAgeMs = 30_000): Promise<AuditVerdict & { checkedAt: string }> {
    const head = await this.store.auditHead();
    const cached = this.#chain;
    if (
      cached && cached.head.seq === head.seq && cached.head.hash === head.hash &&
      Date.now() - cached.at < maxAgeMs
    ) {
      return { ...cached.verdict, checkedAt: new Date(cached.at).toISOString() };
    }
    const at = Date.now();
    const verdict = await verifyAudit(this.store, { home: this.sources.home });
    this.#chain = { head, verdict, at };
    return { ...verdict, checkedAt: new Date(at).toISOString() };
  }

  /** The compliance checklist, as `compliance report --json`. */
  async compliance(): Promise<{ passed: boolean; items: ComplianceItem[] }> {
    const items = await complianceItems({
      home: this.sources.home,
      store: () => Promise.resolve(this.store),
      dags: () => this.dags(),
    });
    return { passed: !items.some((i) => i.required && i.status === "fail"), items };
  }

  /** Run duration and records per run over the latest runs of a DAG, oldest first. */
  async charts(dagId: string, limit: number) {
    const dag = await this.dag(dagId);
    const { runs } = await this.history.runsPage({ dagId, limit });
    const records = await this.history.taskRecords(runs.map((r) => r.runId));
    const byRun = new Map<string, Map<string, number>>();
    for (const r of records) {
      if (!byRun.has(r.runId)) byRun.set(r.runId, new Map());
      byRun.get(r.runId)!.set(r.taskId, r.records);
    }
    const leaves = dag.order.filter((id) => (dag.downstream.get(id) ?? []).length === 0);
    return {
      dagId,
      points: runs.map((r) => {
        const counts = byRun.get(r.runId) ?? new Map<string, number>();
        const leafCounts = leaves.map((l) => counts.get(l)).filter((n) => n !== undefined);
        const recordsOut = leafCounts.length
          ? leafCounts.reduce((a, b) => a + b, 0)
          : counts.size
          ? Math.max(...counts.values())
          : null;
        return {
          runId: r.runId,
          logicalDate: r.logicalDate.toISOString(),
          state: r.state,
          durationMs: r.startedAt && r.endedAt ? r.endedAt.getTime() - r.startedAt.getTime() : null,
          records: recordsOut,
        };
      }).reverse(),
    };
  }

  // ---- Actions: the same core functions as the CLI, audited with who did it -------------------

  /** Queues a run (as `dags trigger`). */
  async trigger(
    dagId: string,
    by: Actor,
    body: { date?: string; params?: Record<string, string> },
  ): Promise<Triggered> {
    const dag = await this.dag(dagId);
    let date: Date | undefined;
    if (body.date) {
      date = new Date(/^\d{4}-\d{2}-\d{2}$/.test(body.date) ? `${body.date}T00:00:00Z` : body.date);
      if (Number.isNaN(date.getTime())) {
        throw new UsageError(
          `Invalid date "${body.date.slice(0, 40)}": expected an ISO date such as 2026-11-28`,
        );
      }
    }
    return await triggerRun(this.store, dag, {
      by,
      date,
      params: body.params,
      mode: this.sources.triggerMode ?? "local",
    });
  }

  /** Clears a task instance (and its downstream) for re-execution (as `tasks clear`). */
  async clear(runId: string, taskId: string, by: Actor, downstream: boolean) {
    const run = await this.run(runId);
    const dag = await this.dag(run.dagId);
    const cleared = await clearTask(this.store, dag, runId, taskId, { downstream, by });
    return { runId, cleared };
  }

  /** Pauses or unpauses a DAG (as `dags pause|unpause`). */
  async pause(dagId: string, paused: boolean, by: Actor) {
    const dag = await this.dag(dagId);
    await setDagPaused(this.store, dag.id, paused, by);
    return { dagId: dag.id, paused };
  }
}

/** An attempt as the API returns it. */
export function attemptJson(a: Attempt) {
  return {
    attempt: a.attempt,
    recordedAttempt: a.recordedAttempt,
    state: a.state,
    recompute: a.recompute,
    startedAt: a.startedAt,
    endedAt: a.endedAt,
    durationMs: a.durationMs,
    records: a.records,
    quarantined: a.quarantined,
    quarantineReasons: a.quarantineReasons,
    checkpoint: a.checkpoint,
    counts: a.counts.map((c) => ({ operation: c.operation, records: c.records })),
  };
}
