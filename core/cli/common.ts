/**
 * Helpers shared by the CLI command groups: parsing flags into values, running a DAG run with
 * progress and signal handling.
 *
 * @module
 */
import type { Command } from "commander";
import { type ResolvedDag, resolveParams } from "../dag.ts";
import { DagError, UsageError } from "../errors.ts";
import { executeRun, type RunResult } from "../executor.ts";
import type { DataInterval } from "../dag.ts";
import type { RunType, StateStore } from "../state/store.ts";
import { CliContext } from "./context.ts";
import { Progress } from "./progress.ts";
import { intervalAt, latestCompleteInterval } from "../schedule.ts";
import { setupLogging } from "../log.ts";
import { assertNoSecretsInParams } from "../secrets.ts";
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

/** Parses an ISO date flag, or throws a usage error naming the flag. */
export function parseDateFlag(value: string | undefined, flag = "--date"): Date | undefined {
  if (value === undefined) return undefined;
  const date = new Date(/^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value);
  if (Number.isNaN(date.getTime())) {
    throw new UsageError(
      `Invalid ${flag} "${value}": expected an ISO date such as 2026-11-28 or 2026-11-28T02:00:00Z`,
    );
  }
  return date;
}

/** The interval a run processes: `--date` aligned to the schedule, else the latest complete one. */
export function chooseInterval(dag: ResolvedDag, date: Date | undefined): DataInterval {
  if (date) return intervalAt(dag, date);
  if (!dag.schedule) {
    const now = new Date();
    now.setUTCMilliseconds(0);
    return { start: now, end: now };
  }
  const latest = latestCompleteInterval(dag, new Date());
  if (!latest) {
    throw new UsageError(
      `Cannot choose a date for DAG "${dag.id}": no interval has ended since its start; pass --date`,
    );
  }
  return latest;
}

/** Resolves `--param` overrides against the DAG, as a usage error when they do not fit. */
export function paramsFor(
  dag: ResolvedDag,
  overrides: Record<string, string> | undefined,
): Record<string, unknown> {
  try {
    const params = resolveParams(dag, overrides ?? {});
    assertNoSecretsInParams(dag.id, params);
    return params;
  } catch (error) {
    if (error instanceof DagError) throw new UsageError(error.message);
    throw error;
  }
}

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
