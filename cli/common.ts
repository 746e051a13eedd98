/**
 * Helpers shared by the CLI command groups: parsing flags into values, running a DAG run with
 * progress and signal handling.
 *
 * @module
 */
import type { Command } from "commander";
import { UsageError } from "../core/errors.ts";
import type { RunResult } from "../core/run/events.ts";
import { executeRun } from "../core/run/local.ts";
import type { DataInterval, ResolvedDag } from "../core/dag.ts";
import type { RunType, StateStore } from "../core/state/store.ts";
import { CliContext } from "./context.ts";
import { Progress } from "./progress.ts";
import { setupLogging } from "../core/log.ts";
import { join } from "node:path";

/** The outcome of a command: its exit code. */
export interface CommandState {
  exitCode: number;
}

/** Collects repeated `--param k=v` flags. */
export function collectParam(
  value: string,
  previous: Record<string, string> = {},
): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new UsageError(`Invalid --param "${value.split("=")[0]}": expected key=value`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

const ISO_DATE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

/**
 * Parses an ISO date flag strictly, or throws a usage error naming the flag: the calendar date
 * must exist (`2026-02-30` is refused, not read as March 2), the year must be 0001-9999, and the
 * time (when given) must be a real time of day.
 *
 * @example
 * ```ts
 * import { parseDateFlag } from "./common.ts";
 * parseDateFlag("2026-11-28")?.toISOString(); // "2026-11-28T00:00:00.000Z"
 * ```
 */
export function parseDateFlag(value: string | undefined, flag = "--date"): Date | undefined {
  if (value === undefined) return undefined;
  const invalid = (why: string) =>
    new UsageError(
      `Invalid ${flag} "${value}": ${why}; expected an ISO date such as 2026-11-28 or 2026-11-28T02:00:00Z`,
    );
  const m = ISO_DATE.exec(value.trim());
  if (!m) throw invalid("not an ISO date");
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (year < 1) throw invalid("the year must be 0001 or later");
  if (month < 1 || month > 12) throw invalid(`there is no month ${m[2]}`);
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() -
    (month === 2 && !(year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)) ? 1 : 0);
  if (day < 1 || day > daysInMonth) throw invalid(`${m[1]}-${m[2]} has no day ${m[3]}`);
  if (m[4] !== undefined && (Number(m[4]) > 23 || Number(m[5]) > 59 || Number(m[6] ?? 0) > 59)) {
    throw invalid("not a time of day");
  }
  const zone = m[7];
  if (zone && zone.toUpperCase() !== "Z" && Number(zone.slice(1, 3)) > 23) {
    throw invalid("not a UTC offset");
  }
  const date = new Date(m[4] === undefined ? `${m[1]}-${m[2]}-${m[3]}T00:00:00Z` : value.trim());
  if (Number.isNaN(date.getTime())) throw invalid("not a date");
  if (date.getUTCFullYear() < 1 || date.getUTCFullYear() > 9999) {
    throw invalid("the year must be 0001-9999");
  }
  return date;
}

/** Shared with the console: the interval and params of a run (`core/actions.ts`). */
export { chooseInterval, paramsFor } from "../core/actions.ts";

/** Configures logging for a command: the rotating file always, stderr when asked. */
export function startLogging(ctx: CliContext, options: { console?: boolean } = {}): void {
  setupLogging({
    logDir: join(ctx.home, "logs"),
    console: options.console ?? Deno.env.get("CARREL_LOG_CONSOLE") === "1",
  });
}

/**
 * Runs a DAG run with progress output and SIGINT/SIGTERM cancellation. Progress goes to stdout,
 * or to stderr when stdout carries `--json`.
 */
export async function runWithProgress(
  options: {
    dag: ResolvedDag;
    interval: DataInterval;
    params: Record<string, unknown>;
    store: StateStore | undefined;
    home: string;
    json: boolean;
    runType?: RunType;
  },
): Promise<RunResult> {
  const progress = new Progress(options.json ? Deno.stderr : Deno.stdout);
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  try {
    return await executeRun({
      dag: options.dag,
      interval: options.interval,
      params: options.params,
      ...(options.store ? { store: options.store } : {}),
      home: options.home,
      runType: options.runType ?? "manual",
      signal: controller.signal,
      onEvent: progress.event,
    });
  } finally {
    progress.stop();
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
}

/** Adds `--json` to a command. */
export function withJson(cmd: Command): Command {
  return cmd.option("--json", "print exactly one JSON document on stdout");
}
