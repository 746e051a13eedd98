/**
 * DAG and task definitions: the authoring API (`defineDag`, `task`), the zod schema of a DAG
 * config, defaults, and validation into a resolved DAG the executor can run.
 *
 * @module
 */
import { z } from "zod";
import { parseCronExpression } from "cron-schedule";
import { type Duration, parseDuration } from "./duration.ts";
import { DagError, errorMessage } from "./errors.ts";
import { orderTasks } from "./graph.ts";
import type { TaskLogger } from "./log.ts";
import type { DatasetWriter, Workspace } from "./dataset.ts";
import {
  type AlertOptions,
  alertShape,
  resolveAlerts,
  type ResolvedAlerts,
} from "./alerts/alert.ts";
import { resolve as resolvePath } from "node:path";
import { toFileUrl } from "./paths.ts";
import { registerSandboxedTasks } from "./sandbox/run.ts";
import {
  type Capabilities,
  capabilityProblems,
  type SandboxMode,
  sandboxMode,
  staticCapabilities,
  type TaskSandbox,
} from "./sandbox/capabilities.ts";

/** Where a task may run: `enclave` tasks may touch raw patron data; `shared` tasks may not. */
export type Zone = "shared" | "enclave";

/** Airflow's trigger rules, with Airflow's semantics. */
export const TRIGGER_RULES = [
  "all_success",
  "all_failed",
  "all_done",
  "one_success",
  "one_failed",
  "none_failed",
  "none_failed_min_one_success",
  "always",
  "all_skipped",
  "one_done",
  "none_skipped",
  "all_done_min_one_success",
] as const;

/** Airflow's older names, accepted and resolved to the rule they name. */
export const TRIGGER_RULE_ALIASES = {
  none_failed_or_skipped: "none_failed_min_one_success",
  dummy: "always",
} as const;

/** When a task runs, given the final states of its upstream tasks (aliases included). */
export type TriggerRule =
  | typeof TRIGGER_RULES[number]
  | keyof typeof TRIGGER_RULE_ALIASES;

/** The data interval of a run: `[start, end)`. */
export interface DataInterval {
  start: Date;
  end: Date;
}

/** What a task's `run` receives. */
export interface TaskContext<P = Record<string, unknown>> {
  dagId: string;
  taskId: string;
  runId: string;
  /** The task instance's job key: use it to write idempotently. */
  jobKey: string;
  /** The start of the data interval. */
  logicalDate: Date;
  dataInterval: DataInterval;
  params: P;
  /** 1-based attempt number. */
  attempt: number;
  /** Aborts at the attempt's timeout or when the run is cancelled. */
  signal: AbortSignal;
  /** Structured logger bound to the run's correlation id. Log counts and field names, never values. */
  log: TaskLogger;
  /** Upstream outputs by task id: JSON values or datasets. */
  inputs: Record<string, unknown>;
  /** Tags on upstream outputs by task id (for example `pii:raw`). */
  inputTags: Record<string, readonly string[]>;
  /** The zone this task runs in. */
  zone: Zone;
  /**
   * Creates a dataset in the run's workspace, encrypted when the task's output is enclave data.
   * `{ valueFree: true }` writes it in plaintext even in the enclave: only for data that holds no
   * patron values (quarantine reasons, token crosswalks).
   */
  dataset(name?: string, options?: { valueFree?: boolean }): Promise<DatasetWriter>;
  /** The run's workspace. */
  workspace: Workspace;
  /**
   * Records a count for the audit trail (for example `tokenized: 1420`). Counts only, never values.
   */
  count(operation: string, records: number, detail?: Record<string, unknown>): void;
  /** A mapped instance's item (`expand`): opaque, never stored or logged. Absent otherwise. */
  item?: unknown;
  /** A mapped instance's index (0-based), as in its id `load[3]`; absent otherwise. */
  mapIndex?: number;
}

/**
 * The options every task accepts (with its callbacks and SLA: `alerts/alert.ts`; its declared
 * capabilities: `sandbox/capabilities.ts`).
 */
export interface TaskOptions extends AlertOptions, Capabilities {
  /** `"strict"`: the body runs in a Worker with only the declared capabilities. */
  sandbox?: SandboxMode;
  /** Ids of upstream tasks. */
  after?: readonly string[];
  /** `"shared"` (default) or `"enclave"`. */
  zone?: Zone;
  /** Attempts after the first. */
  retries?: number;
  retryDelay?: Duration;
  retryBackoff?: "exponential" | "fixed";
  /** Cap for the exponential backoff. */
  maxRetryDelay?: Duration;
  /** Per attempt; the attempt's `ctx.signal` aborts at the limit. */
  timeout?: Duration;
  triggerRule?: TriggerRule;
  description?: string;
  /** A named concurrency pool (for example `"ils"`). */
  pool?: string;
  /** Tags on the task's output, such as `pii:raw` (a privacy checkpoint refuses it). */
  outputTags?: readonly string[];
  /**
   * Dynamic task mapping: one task instance per item (`load[0]`, `load[1]`, ...), each with its
   * own job key, state, retries and audit entries; `ctx.item` and `ctx.mapIndex` tell it which.
   * A function of `ctx` (with the upstream outputs in `ctx.inputs`) returning an array or an
   * iterable, or the id of an upstream task whose output (an array or a dataset) is mapped over.
   * It must give the same items each time (it is evaluated again on resume; items are never
   * stored). Zero items skip the task and, by the default trigger rule, its dependants.
   */
  expand?: string | ((ctx: TaskContext) => unknown);
  /** The most items `expand` may yield (default 10,000); more is an error. */
  mapLimit?: number;
  /**
   * Which ready task runs first when slots are short (an integer, default 1; higher first), as
   * Airflow's `priority_weight`, combined by `weightRule`.
   */
  priorityWeight?: number;
  /**
   * How the effective priority is computed, as Airflow's `weight_rule`: `"downstream"` (default:
   * own weight plus every downstream task's), `"upstream"` (plus every upstream task's) or
   * `"absolute"` (own weight only).
   */
  weightRule?: WeightRule;
  /**
   * A streaming, record-wise task: it reads each input once, start to end, and hands its records
   * on in the first dataset it creates that is not value-free. Consecutive streaming tasks run as
   * one pass, records handed over in memory (`core/run/fuse.ts`). `"output"`: only its output
   * streams (it reads its input more than once, so it can only head a pass).
   */
  stream?: boolean | "output";
}

/** Airflow's weight rules: how a task's effective priority is computed. */
export type WeightRule = "downstream" | "upstream" | "absolute";

/** A task as a DAG file declares it: what `task()` and the operators return. */
export interface TaskSpec<P = Record<string, unknown>> extends Omit<TaskOptions, "zone"> {
  run: (ctx: TaskContext<P>) => unknown;
  /** `"inherit"`: enclave when any upstream's output is enclave data (the privacy operators). */
  zone?: Zone | "inherit";
  /** The marker of a privacy checkpoint: the only task whose output may leave the enclave. */
  checkpoint?: boolean;
  /** The operator that made this spec, for display (`task`, `tokenize`, `schemaGate`, ...). */
  operator?: string;
  /**
   * Checks that need the rest of the DAG (an operator's options against its upstream tasks), run
   * when the DAG is loaded or validated. Returns the problems, one line each, naming fields, never
   * data; each is reported as `tasks.<id>: <problem>`.
   */
  validate?: (context: TaskValidationContext) => readonly string[];
}

/** What a task's `validate` hook receives: the DAG around it, already resolved. */
export interface TaskValidationContext {
  dagId: string;
  taskId: string;
  /** The task's direct upstream tasks, in the order of `after` (zones resolved). */
  upstream: readonly ResolvedTask[];
}

/** Retry, delay and timeout defaults for every task of a DAG. */
export interface TaskDefaults {
  retries?: number;
  retryDelay?: Duration;
  retryBackoff?: "exponential" | "fixed";
  maxRetryDelay?: Duration;
  timeout?: Duration;
  priorityWeight?: number;
  weightRule?: WeightRule;
}

/** A DAG as a file declares it. */
export interface DagConfig<P extends Record<string, unknown> = Record<string, unknown>>
  extends AlertOptions {
  /** `/^[a-z][a-z0-9_]*$/`, unique across files. */
  id: string;
  description?: string;
  /** A 5-field cron expression (or `@daily`, `@hourly`, ...), or `null` for manual runs only. */
  schedule?: string | null;
  /** The first data interval starts here. */
  start?: string | Date;
  /** No interval starts at or after this. */
  end?: string | Date;
  /** IANA name; cron is evaluated in it. */
  timezone?: string;
  catchup?: boolean;
  maxActiveRuns?: number;
  maxActiveTasks?: number;
  /** Defaults for `--param k=v`, or a zod schema of the params. */
  params?: P | z.ZodType<P>;
  defaults?: TaskDefaults;
  tasks: Record<string, TaskSpec<P>>;
  tags?: readonly string[];
  /** The time limit of each alert callback. Default 60s. */
  callbackTimeout?: Duration;
  /** `"strict"`: every task runs in a Worker with only its declared capabilities. */
  sandbox?: SandboxMode;
  /** The zone of each connection the tasks name (`{ koha: "enclave" }`). */
  connections?: Record<string, Zone>;
}

const DAG_BRAND = Symbol.for("carrel.dag");

/** The most items a mapped task may expand to unless its `mapLimit` says otherwise. */
export const DEFAULT_MAP_LIMIT = 10_000;

/** What `defineDag` returns: the config, branded so the loader can recognise it. */
export interface Dag<P extends Record<string, unknown> = Record<string, unknown>> {
  readonly [DAG_BRAND]: true;
  readonly config: DagConfig<P>;
}

/**
 * Declares a DAG. An identity helper for type inference; the loader validates it.
 *
 * @example
 * ```ts
 * import { defineDag, task } from "./mod.ts";
 * export default defineDag({
 *   id: "hello",
 *   schedule: null,
 *   tasks: { hello: task({ run: () => "hi" }) },
 * });
 * ```
 */
export function defineDag<P extends Record<string, unknown> = Record<string, unknown>>(
  config: DagConfig<P>,
): Dag<P> {
  return { [DAG_BRAND]: true, config };
}

/** True when a module's default export is a DAG made with `defineDag`. */
export function isDag(value: unknown): value is Dag {
  return typeof value === "object" && value !== null &&
    (value as Record<symbol, unknown>)[DAG_BRAND] === true;
}

/**
 * Declares a function task.
 *
 * @example
 * ```ts
 * import { task } from "./mod.ts";
 * const extract = task({ zone: "enclave", retries: 3, run: (ctx) => [{ at: ctx.logicalDate }] });
 * ```
 */
export function task<P = Record<string, unknown>>(
  spec: TaskOptions & { run: (ctx: TaskContext<P>) => unknown },
): TaskSpec<P> {
  return { operator: "task", ...spec };
}

// ---------------------------------------------------------------------------------------------
// Validation

const CRON_PRESETS: Record<string, string> = {
  "@hourly": "0 * * * *",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@weekly": "0 0 * * 0",
  "@monthly": "0 0 1 * *",
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
};

/** Expands a cron preset (`@daily`) to its 5-field form; other expressions pass through. */
export function expandCron(expression: string): string {
  return CRON_PRESETS[expression.trim()] ?? expression.trim();
}

const duration = z.union([z.number(), z.string()], { error: "expected a duration" }).refine(
  (v) => parseDuration(v) !== undefined,
  { error: 'expected a duration such as 500, "30s", "5m" or "1h"' },
);
const count = (what: string) =>
  z.number({ error: `expected ${what}` }).int({ error: `expected ${what}` }).min(0, {
    error: `expected ${what}`,
  });
const positive = (what: string) =>
  z.number({ error: `expected ${what}` }).int({ error: `expected ${what}` }).min(1, {
    error: `expected ${what}`,
  });
const dateLike = z.union([z.string(), z.date()], { error: "expected an ISO date" }).refine(
  (v) => !Number.isNaN(new Date(v).getTime()),
  { error: "expected an ISO date such as 2026-01-01T00:00:00Z" },
);

/**
 * An object's error: names unknown keys (`.strict()`) with the closest known key as a
 * suggestion (`unknown key "retires" (did you mean "retries"?)`), else `what`.
 */
function objectError(what: string, known: readonly string[]) {
  return (issue: { code?: string; keys?: readonly string[] }): string => {
    if (issue.code !== "unrecognized_keys" || !issue.keys) return what;
    const named = issue.keys.map((k) => {
      const near = closest(k, known);
      return near ? `"${k}" (did you mean "${near}"?)` : `"${k}"`;
    });
    return `unknown key${issue.keys.length > 1 ? "s" : ""} ${named.join(", ")}`;
  };
}

/** The known word within edit distance 2 (or a third of its length) of `word`, if any. */
export function closest(word: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** Levenshtein distance with adjacent transpositions counted as one edit. */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) rows[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      }
      rows[i]![j] = d;
    }
  }
  return rows[a.length]![b.length]!;
}

const TRIGGER_ALIAS_NAMES = Object.keys(
  TRIGGER_RULE_ALIASES,
) as (keyof typeof TRIGGER_RULE_ALIASES)[];

function capabilityList(what: string) {
  return z.union([
    z.array(z.string({ error: `expected ${what}` }), { error: `expected an array of ${what}` }),
    z.custom<(params: Record<string, unknown>) => readonly string[]>(
      (v) => typeof v === "function",
    ),
  ], { error: `expected an array of ${what} or a function of the params` });
}

const taskShape = {
  run: z.custom<(ctx: TaskContext) => unknown>((v) => typeof v === "function", {
    error: "expected a function",
  }),
  after: z.array(z.string({ error: "expected task ids" }), {
    error: "expected an array of task ids",
  })
    .optional(),
  zone: z.enum(["shared", "enclave", "inherit"], {
    error: 'expected "shared" or "enclave"',
  }).optional(),
  retries: count("a number >= 0").optional(),
  retryDelay: duration.optional(),
  retryBackoff: z.enum(["exponential", "fixed"], { error: 'expected "exponential" or "fixed"' })
    .optional(),
  maxRetryDelay: duration.optional(),
  timeout: duration.optional(),
  triggerRule: z.enum([...TRIGGER_RULES, ...TRIGGER_ALIAS_NAMES], {
    error: `expected one of ${TRIGGER_RULES.join(", ")} (or an alias: ${
      TRIGGER_ALIAS_NAMES.join(", ")
    })`,
  }).optional(),
  description: z.string({ error: "expected a string" }).optional(),
  pool: z.string({ error: "expected a pool name" }).regex(/^[a-z][a-z0-9_]*$/, {
    error: "expected a pool name matching /^[a-z][a-z0-9_]*$/",
  }).optional(),
  checkpoint: z.boolean({ error: "expected a boolean" }).optional(),
  operator: z.string().optional(),
  outputTags: z.array(z.string()).optional(),
  expand: z.union([
    z.string({ error: "expected a task id" }),
    z.custom<(ctx: TaskContext) => unknown>((v) => typeof v === "function"),
  ], { error: "expected an upstream task id or a function returning the items" }).optional(),
  mapLimit: positive("a number >= 1").optional(),
  priorityWeight: z.number({ error: "expected an integer" }).int({ error: "expected an integer" })
    .optional(),
  weightRule: z.enum(["downstream", "upstream", "absolute"], {
    error: 'expected "downstream", "upstream" or "absolute"',
  }).optional(),
  stream: z.union([z.boolean(), z.literal("output")], {
    error: 'expected a boolean or "output"',
  }).optional(),
  validate: z.custom<(context: TaskValidationContext) => readonly string[]>(
    (v) => typeof v === "function",
    { error: "expected a function" },
  ).optional(),
  ...alertShape,
  sandbox: z.enum(["strict", "none"], { error: 'expected "strict" or "none"' }).optional(),
  connections: capabilityList("connection names").optional(),
  reads: capabilityList("paths").optional(),
  writes: capabilityList("paths").optional(),
  env: capabilityList("variable names").optional(),
  keyring: z.boolean({ error: "expected a boolean" }).optional(),
};
const taskSchema = z.object(taskShape, {
  error: objectError("expected a task (use task({...}) or an operator)", Object.keys(taskShape)),
}).strict();

const defaultsShape = {
  retries: count("a number >= 0").optional(),
  retryDelay: duration.optional(),
  retryBackoff: z.enum(["exponential", "fixed"], { error: 'expected "exponential" or "fixed"' })
    .optional(),
  maxRetryDelay: duration.optional(),
  timeout: duration.optional(),
  priorityWeight: taskShape.priorityWeight,
  weightRule: taskShape.weightRule,
};
const defaultsSchema = z.object(defaultsShape, {
  error: objectError("expected an object", Object.keys(defaultsShape)),
}).strict();

/** A task id: a name, prefixed by its groups' names (`extract.patrons`). */
const TASK_ID = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$/;

const dagShape = {
  id: z.string({ error: "expected a DAG id" }).regex(/^[a-z][a-z0-9_]*$/, {
    error: "expected a DAG id matching /^[a-z][a-z0-9_]*$/",
  }),
  description: z.string({ error: "expected a string" }).optional(),
  schedule: z.string({ error: "expected a cron expression or null" }).nullable().optional()
    .superRefine((value, ctx) => {
      if (value === null || value === undefined) return;
      const expanded = expandCron(value);
      if (expanded.split(/\s+/).length !== 5) {
        ctx.addIssue({ code: "custom", message: "expected a 5-field cron expression or null" });
        return;
      }
      try {
        parseCronExpression(expanded);
      } catch {
        ctx.addIssue({ code: "custom", message: "expected a valid 5-field cron expression" });
      }
    }),
  start: dateLike.optional(),
  end: dateLike.optional(),
  timezone: z.string({ error: "expected an IANA time zone" }).refine((tz) => {
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, { error: "expected an IANA time zone such as UTC or America/Chicago" }).optional(),
  catchup: z.boolean({ error: "expected a boolean" }).optional(),
  maxActiveRuns: positive("a number >= 1").optional(),
  maxActiveTasks: positive("a number >= 1").optional(),
  params: z.union([
    z.custom<z.ZodType>((v) => v instanceof z.ZodType),
    z.record(z.string(), z.unknown()),
  ], { error: "expected an object of defaults or a zod schema" }).optional(),
  defaults: defaultsSchema.optional(),
  tasks: z.record(
    z.string().regex(TASK_ID, {
      error: `expected task ids matching /^[a-z][a-z0-9_]*$/ (in groups joined by ".")`,
    }),
    taskSchema,
    {
      error: (issue) =>
        issue.code === "invalid_key"
          ? `expected task ids matching /^[a-z][a-z0-9_]*$/ (in groups joined by ".")`
          : "expected an object of tasks",
    },
  ).refine((tasks) => Object.keys(tasks).length > 0, { error: "expected at least one task" }),
  tags: z.array(z.string()).optional(),
  ...alertShape,
  callbackTimeout: duration.optional(),
  sandbox: z.enum(["strict", "none"], { error: 'expected "strict" or "none"' }).optional(),
  connections: z.record(
    z.string(),
    z.enum(["shared", "enclave"], { error: 'expected "shared" or "enclave"' }),
  ).optional(),
};
const dagSchema = z.object(dagShape, {
  error: objectError("expected a DAG config", Object.keys(dagShape)),
}).strict();

/** A task after validation: defaults applied, durations in milliseconds, zone resolved. */
export interface ResolvedTask {
  id: string;
  run: (ctx: TaskContext) => unknown;
  after: string[];
  /** The declared zone (`inherit` resolved). */
  zone: Zone;
  /** The zone of its output: `shared` for a checkpoint, else its zone. */
  outputZone: Zone;
  checkpoint: boolean;
  operator: string;
  retries: number;
  retryDelayMs: number;
  retryBackoff: "exponential" | "fixed";
  maxRetryDelayMs: number;
  timeoutMs: number | undefined;
  triggerRule: TriggerRule;
  description: string | undefined;
  pool: string | undefined;
  outputTags: string[];
  /** The declared weight (default 1). */
  priorityWeight: number;
  weightRule: WeightRule;
  /** The effective priority: higher runs first (see {@link effectivePriorities}). */
  priority: number;
  /** The spec as the file declared it (operators keep their options here). */
  spec: TaskSpec;
  /** Its callbacks and SLA. */
  alerts: ResolvedAlerts;
  /** A mapped task: what it maps over (its instance `id` expands; see `core/run/mapping.ts`). */
  expand?: string | ((ctx: TaskContext) => unknown);
  /** A mapped task: the most items it may expand to. */
  mapLimit?: number;
  /** A mapped instance (`load[3]`): its task and index. */
  mapOf?: { task: string; index: number };
  /** Its sandbox mode and declared capabilities. */
  sandbox: TaskSandbox;
  /** The URL of the DAG file (set by the loader): what a sandbox Worker imports. */
  module?: string;
}

/** A DAG after validation. */
export interface ResolvedDag {
  id: string;
  description: string | undefined;
  /** 5-field cron or null. */
  schedule: string | null;
  start: Date | undefined;
  end: Date | undefined;
  timezone: string;
  catchup: boolean;
  maxActiveRuns: number;
  maxActiveTasks: number;
  /** Param defaults (from a plain object or the zod schema's defaults). */
  paramDefaults: Record<string, unknown>;
  paramSchema: z.ZodType | undefined;
  tasks: Map<string, ResolvedTask>;
  /** Task ids in a topological order. */
  order: string[];
  /** Downstream ids by task id. */
  downstream: Map<string, string[]>;
  file: string | undefined;
  tags: string[];
  /**
   * The DAG code version: the first 12 hex of the SHA-256 of its file, or of its file's and its
   * local modules' hashes when it imports any (set by the loader; see `dag_version.ts`).
   */
  version?: string;
  /** The run's callbacks and SLA. */
  alerts: ResolvedAlerts;
  /** The time limit of each alert callback. */
  callbackTimeoutMs: number;
  /**
   * `"strict"` when the DAG sets `sandbox: "strict"` and was loaded from a file: its run-level
   * callbacks then run in a sandbox (a task's follow the task's mode).
   */
  sandbox: SandboxMode;
  /** The hashes of its file and the local modules it imports, by path (set by the loader). */
  modules?: Record<string, string>;
}

/**
 * Expands `after` ids: each group name becomes every task of the group (`extract` ->
 * `extract.patrons`, `extract.items`, in declaration order); task ids and unknown ids pass
 * through. The groups are indexed once per DAG.
 */
function groupExpander(ids: readonly string[]): (after: readonly string[]) => string[] {
  const known = new Set(ids);
  const groups = new Map<string, string[]>();
  for (const id of ids) {
    for (let at = id.indexOf("."); at >= 0; at = id.indexOf(".", at + 1)) {
      const group = id.slice(0, at);
      const members = groups.get(group);
      if (members) members.push(id);
      else groups.set(group, [id]);
    }
  }
  return (after) => after.flatMap((ref) => known.has(ref) ? [ref] : groups.get(ref) ?? [ref]);
}

/** A task id that is also a group's name (`extract` and `extract.patrons`) is ambiguous. */
function groupConflicts(ids: readonly string[]): string | undefined {
  const known = new Set(ids);
  for (const id of ids) {
    for (let at = id.indexOf("."); at >= 0; at = id.indexOf(".", at + 1)) {
      const prefix = id.slice(0, at);
      if (known.has(prefix)) {
        return `tasks.${prefix}: a task has the name of the group of "${id}"; rename one`;
      }
    }
  }
  return undefined;
}

/** A trigger rule under its current name (`dummy` is `always`). */
function canonicalRule(rule: TriggerRule): TriggerRule {
  return (TRIGGER_RULE_ALIASES as Record<string, TriggerRule>)[rule] ?? rule;
}

/**
 * Each task's effective priority, as Airflow computes `priority_weight_total`: its own weight,
 * plus the weights of every task downstream of it (`downstream`) or upstream of it (`upstream`),
 * each counted once; `absolute` is its own weight only.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "./mod.ts";
 * const dag = resolveDag(defineDag({ id: "p", tasks: {
 *   a: task({ run: () => 1 }),
 *   b: task({ after: ["a"], priorityWeight: 5, run: () => 1 }),
 * } }));
 * dag.tasks.get("a")!.priority; // 6: its own 1 and b's 5
 * ```
 */
export function effectivePriorities(
  tasks: ReadonlyMap<string, Pick<ResolvedTask, "after" | "priorityWeight" | "weightRule">>,
  order: readonly string[],
  downstream: ReadonlyMap<string, readonly string[]>,
): Map<string, number> {
  const n = order.length;
  const index = new Map(order.map((id, i) => [id, i]));
  const weight = order.map((id) => tasks.get(id)!.priorityWeight);
  const uniform = weight.every((w) => w === weight[0]);
  const words = (n + 31) >>> 5;
  /**
   * Every task's transitive neighbours in one direction, as bit sets, built in one pass over the
   * topological order (each task's set is its neighbours' sets joined), so that a long chain
   * costs n^2/32 word operations instead of a walk per task.
   */
  const closure = (next: (id: string) => readonly string[], fromEnd: boolean) => {
    const sets = new Array<Uint32Array>(n);
    for (let k = 0; k < n; k++) {
      const i = fromEnd ? n - 1 - k : k;
      const bits = new Uint32Array(words);
      for (const neighbour of next(order[i]!)) {
        const j = index.get(neighbour)!;
        const theirs = sets[j]!;
        for (let w = 0; w < words; w++) bits[w]! |= theirs[w]!;
        bits[j >>> 5]! |= 1 << (j & 31);
      }
      sets[i] = bits;
    }
    return sets;
  };
  const rules = new Set(order.map((id) => tasks.get(id)!.weightRule));
  const below = rules.has("downstream") ? closure((x) => downstream.get(x) ?? [], true) : [];
  const above = rules.has("upstream") ? closure((x) => tasks.get(x)!.after, false) : [];
  const sum = (bits: Uint32Array): number => {
    let total = 0;
    for (let w = 0; w < words; w++) {
      let word = bits[w]!;
      if (word === 0) continue;
      if (uniform) {
        // Popcount: every task weighs the same.
        word -= (word >>> 1) & 0x55555555;
        word = (word & 0x33333333) + ((word >>> 2) & 0x33333333);
        total += (((word + (word >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
        continue;
      }
      for (let b = 0; b < 32; b++) if (word & (1 << b)) total += weight[(w << 5) + b]!;
    }
    return uniform ? total * (weight[0] ?? 0) : total;
  };
  const out = new Map<string, number>();
  order.forEach((id, i) => {
    const rule = tasks.get(id)!.weightRule;
    const others = rule === "absolute" ? 0 : sum((rule === "downstream" ? below : above)[i]!);
    out.set(id, weight[i]! + others);
  });
  return out;
}

/** Formats one zod issue as `path: message`. */
export function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join(".");
  return path ? `${path}: ${issue.message}` : issue.message;
}

function describe(id: string | undefined, file: string | undefined): string {
  const name = id ? `DAG "${id}"` : "DAG";
  return file ? `${name} (${file})` : name;
}

/**
 * Validates a DAG and resolves defaults, zones and order. Throws a `DagError` with one line per
 * problem, each naming the field: `Cannot load DAG "x" (dags/x.ts): tasks.load.retries: expected a
 * number >= 0`.
 *
 * @example
 * ```ts
 * import { defineDag, resolveDag, task } from "./mod.ts";
 * const dag = resolveDag(defineDag({ id: "a", tasks: { t: task({ run: () => 1 }) } }));
 * dag.order; // ["t"]
 * ```
 */
export function resolveDag<P extends Record<string, unknown>>(
  dag: Dag<P> | DagConfig<P>,
  file?: string,
): ResolvedDag {
  const config = (isDag(dag) ? dag.config : dag) as DagConfig;
  const rawId = typeof (config as { id?: unknown })?.id === "string"
    ? (config as { id: string }).id
    : undefined;
  const parsed = dagSchema.safeParse(config);
  if (!parsed.success) {
    const lines = parsed.error.issues.map(formatIssue);
    throw new DagError(`Cannot load ${describe(rawId, file)}: ${lines.join("; ")}`);
  }
  const c = parsed.data;
  const defaults = c.defaults ?? {};
  const tasks = new Map<string, ResolvedTask>();
  const ids = Object.keys(c.tasks);
  const groupProblem = groupConflicts(ids);
  const expandGroups = groupExpander(ids);
  if (groupProblem) throw new DagError(`Cannot load ${describe(c.id, file)}: ${groupProblem}`);
  for (const [id, raw] of Object.entries(c.tasks)) {
    const spec = config.tasks[id] as TaskSpec;
    const retryDelay = raw.retryDelay ?? defaults.retryDelay ?? "10s";
    const timeout = raw.timeout ?? defaults.timeout;
    // Mapping over an upstream's output makes it an upstream.
    const over = typeof raw.expand === "string" ? [raw.expand] : [];
    tasks.set(id, {
      id,
      run: spec.run as (ctx: TaskContext) => unknown,
      after: [...new Set([...expandGroups(raw.after ?? []), ...over])],
      zone: raw.zone === "enclave" ? "enclave" : "shared",
      outputZone: "shared",
      checkpoint: raw.checkpoint === true,
      operator: raw.operator ?? "task",
      retries: raw.retries ?? defaults.retries ?? 0,
      retryDelayMs: parseDuration(retryDelay)!,
      retryBackoff: raw.retryBackoff ?? defaults.retryBackoff ?? "exponential",
      maxRetryDelayMs: parseDuration(raw.maxRetryDelay ?? defaults.maxRetryDelay ?? "1h")!,
      timeoutMs: timeout === undefined ? undefined : parseDuration(timeout),
      triggerRule: canonicalRule(raw.triggerRule ?? "all_success"),
      description: raw.description,
      pool: raw.pool,
      outputTags: [...(raw.outputTags ?? [])],
      priorityWeight: raw.priorityWeight ?? defaults.priorityWeight ?? 1,
      weightRule: raw.weightRule ?? defaults.weightRule ?? "downstream",
      priority: 0,
      spec,
      alerts: resolveAlerts(spec),
      ...(raw.expand === undefined ? {} : {
        expand: raw.expand as NonNullable<ResolvedTask["expand"]>,
        mapLimit: raw.mapLimit ?? DEFAULT_MAP_LIMIT,
      }),
      sandbox: { mode: "none", capabilities: spec, connectionZones: c.connections ?? {} },
      // What a sandbox Worker imports (the loader sets the exact URL it imported).
      ...(file === undefined ? {} : { module: toFileUrl(resolvePath(file)) }),
    });
    if (raw.zone === "inherit") (tasks.get(id) as { zone: string }).zone = "inherit";
  }
  let order: string[];
  let downstream: Map<string, string[]>;
  try {
    ({ order, downstream } = orderTasks(c.id, tasks));
  } catch (error) {
    throw new DagError(`Cannot load ${describe(c.id, file)}: ${(error as Error).message}`);
  }
  for (const [id, p] of effectivePriorities(tasks, order, downstream)) tasks.get(id)!.priority = p;
  const problems: string[] = [];
  for (const id of order) {
    const t = tasks.get(id)!;
    t.sandbox.mode = sandboxMode(t.spec.sandbox, c.sandbox, t.zone, file !== undefined);
    const declared = staticCapabilities(t.spec);
    for (const p of capabilityProblems(t.zone, declared, t.sandbox.connectionZones)) {
      problems.push(`tasks.${id}: Task "${id}" ${p}`);
    }
    if (t.spec.validate === undefined) continue;
    const upstream = t.after.map((u) => tasks.get(u)!);
    try {
      for (const problem of t.spec.validate({ dagId: c.id, taskId: id, upstream })) {
        problems.push(`tasks.${id}: ${problem}`);
      }
    } catch (error) {
      problems.push(`tasks.${id}: ${errorMessage(error)}`);
    }
  }
  if (problems.length > 0) {
    throw new DagError(`Cannot load ${describe(c.id, file)}: ${problems.join("; ")}`);
  }
  // A strict run warms up the Workers of a DAG file's other tasks at its first attempt.
  if (file !== undefined) registerSandboxedTasks([...tasks.values()]);
  let paramDefaults: Record<string, unknown> = {};
  let paramSchema: z.ZodType | undefined;
  if (c.params instanceof z.ZodType) {
    paramSchema = c.params;
    const probe = paramSchema.safeParse({});
    if (probe.success && typeof probe.data === "object" && probe.data !== null) {
      paramDefaults = probe.data as Record<string, unknown>;
    }
  } else if (c.params) {
    paramDefaults = { ...c.params };
  }
  const start = c.start === undefined ? undefined : new Date(c.start);
  const end = c.end === undefined ? undefined : new Date(c.end);
  const schedule = c.schedule ? expandCron(c.schedule) : null;
  if (schedule && !start) {
    throw new DagError(
      `Cannot load ${describe(c.id, file)}: start: required when the DAG has a schedule`,
    );
  }
  return {
    id: c.id,
    description: c.description,
    schedule,
    start,
    end,
    timezone: c.timezone ?? "UTC",
    catchup: c.catchup ?? false,
    maxActiveRuns: c.maxActiveRuns ?? 1,
    maxActiveTasks: c.maxActiveTasks ?? 8,
    paramDefaults,
    paramSchema,
    tasks,
    order,
    downstream,
    file,
    tags: [...(c.tags ?? [])],
    alerts: resolveAlerts(config),
    callbackTimeoutMs: parseDuration(c.callbackTimeout ?? "60s")!,
    sandbox: c.sandbox === "strict" && file !== undefined ? "strict" : "none",
  };
}

/**
 * Merges `--param k=v` overrides into the DAG's params. Values are coerced to the type of the
 * default (numbers, booleans, JSON for objects and arrays); with a zod schema, the schema decides.
 * Unknown keys and invalid values are errors that name the key, never the value.
 */
export function resolveParams(
  dag: ResolvedDag,
  overrides: Record<string, string | unknown>,
): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...dag.paramDefaults };
  for (const [key, raw] of Object.entries(overrides)) {
    if (!dag.paramSchema && !(key in dag.paramDefaults)) {
      const known = Object.keys(dag.paramDefaults);
      throw new DagError(
        `Unknown param "${key}" for DAG "${dag.id}": ${
          known.length ? `known params are ${known.join(", ")}` : "it takes no params"
        }`,
      );
    }
    merged[key] = coerce(raw, dag.paramDefaults[key]);
  }
  if (dag.paramSchema) {
    let parsed = dag.paramSchema.safeParse(merged);
    if (!parsed.success) {
      // `--param n=5` arrives as text: try JSON values (numbers, booleans, objects) too.
      const typed = Object.fromEntries(
        Object.entries(merged).map(([k, v]) => {
          if (typeof v !== "string" || !(k in overrides)) return [k, v];
          try {
            return [k, JSON.parse(v)];
          } catch {
            return [k, v];
          }
        }),
      );
      const retry = dag.paramSchema.safeParse(typed);
      if (retry.success) parsed = retry;
    }
    if (!parsed.success) {
      throw new DagError(
        `Invalid params for DAG "${dag.id}": ${
          parsed.error.issues.map((i) => `${i.path.join(".") || "params"}: ${safeIssue(i)}`)
            .join("; ")
        }`,
      );
    }
    return parsed.data as Record<string, unknown>;
  }
  return merged;
}

function safeIssue(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case "invalid_type":
      return `expected ${issue.expected}`;
    case "too_small":
      return "too small";
    case "too_big":
      return "too big";
    case "invalid_format":
      return `expected ${issue.format}`;
    case "invalid_value":
      return "not an allowed value";
    case "unrecognized_keys":
      return `unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}`;
    default:
      return "invalid";
  }
}

function coerce(raw: unknown, example: unknown): unknown {
  if (typeof raw !== "string") return raw;
  switch (typeof example) {
    case "number": {
      const n = Number(raw);
      return raw.trim() !== "" && Number.isFinite(n) ? n : raw;
    }
    case "boolean":
      return raw === "true" ? true : raw === "false" ? false : raw;
    case "object":
      try {
        return JSON.parse(raw);
      } catch {
        return raw;
      }
    default:
      return raw;
  }
}
