/**
 * What every benchmark module shares: the {@link Metric} shape of `deno task bench --json`
 * (CONTRACT.md section 3), a helper to build one with its ratio, and small timing helpers.
 *
 * @module
 */

/** One benchmark result, compared with a baseline measured in the same run. */
export interface Metric {
  /** Metric name, such as `executor.overhead_ms_per_task.pglite`. */
  name: string;
  /** Measured value. */
  value: number;
  /** Unit of `value`. */
  unit: string;
  /** What `value` is compared with, measured in the same run. */
  baseline: { name: string; value: number };
  /** `value / baseline.value`. */
  ratio: number;
  /** Additional details (sizes, rounds, secondary figures). */
  extra?: Record<string, unknown>;
}

/** A metric that was not measured, and why. */
export interface Skipped {
  /** Metric name. */
  name: string;
  /** Why it was not measured, such as `CARREL_BENCH_DATABASE_URL is not set`. */
  reason: string;
}

/** Options every `bench*` function takes. */
export interface BenchOptions {
  /** Smaller inputs and fewer rounds. */
  quick: boolean;
  /** Called for each metric the module cannot measure here (e.g. no PostgreSQL server). */
  onSkip?: (skipped: Skipped) => void;
  /**
   * Called when one part of a module fails while the rest can go on (e.g. the PostgreSQL server
   * is unreachable but PGlite figures are fine). Without it, such a failure is thrown.
   */
  onError?: (failure: { name: string; message: string }) => void;
}

/**
 * Rounds to `digits` significant digits, so that both 0.000412 and 41234.5 stay readable and
 * comparable. Non-finite numbers are returned unchanged.
 *
 * @example
 * ```ts
 * import { roundSignificant } from "./metric.ts";
 * roundSignificant(0.000412345); // 0.0004123
 * roundSignificant(41234.567); // 41230
 * ```
 */
export function roundSignificant(x: number, digits = 4): number {
  if (!Number.isFinite(x) || x === 0) return x;
  return Number(x.toPrecision(digits));
}

/**
 * Builds a metric; `ratio` is `value / baseline.value` rounded to 4 significant digits (0 when
 * the baseline is 0). Values are rounded to 4 significant digits too.
 *
 * @example
 * ```ts
 * import { metric } from "./metric.ts";
 * const m = metric("executor.windmill40_s", 0.5, "s", { name: "plain loop", value: 0.001 });
 * m.ratio; // 500
 * ```
 */
export function metric(
  name: string,
  value: number,
  unit: string,
  baseline: { name: string; value: number },
  extra?: Record<string, unknown>,
): Metric {
  const ratio = baseline.value === 0 ? 0 : value / baseline.value;
  const m: Metric = {
    name,
    value: roundSignificant(value),
    unit,
    baseline: { name: baseline.name, value: roundSignificant(baseline.value) },
    ratio: roundSignificant(ratio),
  };
  if (extra !== undefined) m.extra = extra;
  return m;
}

/** The median of `values` (NaN for none). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Runs `fn` `rounds` times and returns the median wall time of one call in milliseconds, with
 * every round's time.
 *
 * @example
 * ```ts
 * import { timeMedian } from "./metric.ts";
 * const { ms } = await timeMedian(5, () => new Promise((r) => setTimeout(r, 1)));
 * ```
 */
export async function timeMedian(
  rounds: number,
  fn: (round: number) => unknown | Promise<unknown>,
): Promise<{ ms: number; rounds: number[] }> {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const start = performance.now();
    await fn(i);
    times.push(performance.now() - start);
  }
  return { ms: median(times), rounds: times };
}
