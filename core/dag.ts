/**
 * DAG and task definitions: the authoring API (`defineDag`, `task`), the zod schema of a DAG
 * config, defaults, and validation into a resolved DAG the executor can run.
 *
 * @module
 */
import { z } from "zod";
import { parseCronExpression } from "cron-schedule";
import { type Duration, parseDuration } from "./duration.ts";
import { DagError } from "./errors.ts";
import { orderTasks } from "./graph.ts";
import type { TaskLogger } from "./log.ts";
import type { DatasetWriter, Workspace } from "./dataset.ts";

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
] as const;

/** When a task runs, given the final states of its upstream tasks. */
export type TriggerRule = typeof TRIGGER_RULES[number];

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
}

/** The options every task accepts. */
export interface TaskOptions {
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
}

/** A task as a DAG file declares it: what `task()` and the operators return. */
export interface TaskSpec<P = Record<string, unknown>> extends Omit<TaskOptions, "zone"> {
  run: (ctx: TaskContext<P>) => unknown;
  /** `"inherit"`: enclave when any upstream's output is enclave data (the privacy operators). */
  zone?: Zone | "inherit";
  /** The marker of a privacy checkpoint: the only task whose output may leave the enclave. */
  checkpoint?: boolean;
  /** The operator that made this spec, for display (`task`, `tokenize`, `schemaGate`, ...). */
  operator?: string;
}

/** Retry, delay and timeout defaults for every task of a DAG. */
export interface TaskDefaults {
  retries?: number;
  retryDelay?: Duration;
  retryBackoff?: "exponential" | "fixed";
  maxRetryDelay?: Duration;
  timeout?: Duration;
}

/** A DAG as a file declares it. */
export interface DagConfig<P extends Record<string, unknown> = Record<string, unknown>> {
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
}

const DAG_BRAND = Symbol.for("carrel.dag");

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

const taskSchema = z.object({
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
  triggerRule: z.enum(TRIGGER_RULES, { error: `expected one of ${TRIGGER_RULES.join(", ")}` })
    .optional(),
  description: z.string({ error: "expected a string" }).optional(),
  pool: z.string({ error: "expected a pool name" }).regex(/^[a-z][a-z0-9_]*$/, {
    error: "expected a pool name matching /^[a-z][a-z0-9_]*$/",
  }).optional(),
  checkpoint: z.boolean({ error: "expected a boolean" }).optional(),
  operator: z.string().optional(),
  outputTags: z.array(z.string()).optional(),
}, { error: "expected a task (use task({...}) or an operator)" }).strict();

/** An object's error: names unknown keys (`.strict()`), else `what`. */
const objectError = (what: string) => (issue: { code?: string; keys?: readonly string[] }) =>
  issue.code === "unrecognized_keys" && issue.keys
    ? `unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}`
    : what;

const defaultsSchema = z.object({
  retries: count("a number >= 0").optional(),
  retryDelay: duration.optional(),
  retryBackoff: z.enum(["exponential", "fixed"], { error: 'expected "exponential" or "fixed"' })
    .optional(),
  maxRetryDelay: duration.optional(),
  timeout: duration.optional(),
}, { error: objectError("expected an object") }).strict();

const dagSchema = z.object({
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
    z.string().regex(/^[a-z][a-z0-9_]*$/, {
      error: "expected task ids matching /^[a-z][a-z0-9_]*$/",
    }),
    taskSchema,
    {
      error: (issue) =>
        issue.code === "invalid_key"
          ? "expected task ids matching /^[a-z][a-z0-9_]*$/"
          : "expected an object of tasks",
    },
  ).refine((tasks) => Object.keys(tasks).length > 0, { error: "expected at least one task" }),
  tags: z.array(z.string()).optional(),
}, { error: objectError("expected a DAG config") }).strict();

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
  /** The spec as the file declared it (operators keep their options here). */
  spec: TaskSpec;
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
  for (const [id, raw] of Object.entries(c.tasks)) {
    const spec = config.tasks[id] as TaskSpec;
    const retryDelay = raw.retryDelay ?? defaults.retryDelay ?? "10s";
    const timeout = raw.timeout ?? defaults.timeout;
    tasks.set(id, {
      id,
      run: spec.run as (ctx: TaskContext) => unknown,
      after: [...new Set(raw.after ?? [])],
      zone: raw.zone === "enclave" ? "enclave" : "shared",
      outputZone: "shared",
      checkpoint: raw.checkpoint === true,
      operator: raw.operator ?? "task",
      retries: raw.retries ?? defaults.retries ?? 0,
      retryDelayMs: parseDuration(retryDelay)!,
      retryBackoff: raw.retryBackoff ?? defaults.retryBackoff ?? "exponential",
      maxRetryDelayMs: parseDuration(raw.maxRetryDelay ?? defaults.maxRetryDelay ?? "1h")!,
      timeoutMs: timeout === undefined ? undefined : parseDuration(timeout),
      triggerRule: raw.triggerRule ?? "all_success",
      description: raw.description,
      pool: raw.pool,
      outputTags: [...(raw.outputTags ?? [])],
      spec,
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
