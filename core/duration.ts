/**
 * Durations, the one home for them: milliseconds as a number, or strings such as `"500ms"`,
 * `"30s"` (or `"30sec"`), `"5m"` (or `"5min"`), `"1h"`, `"90d"`, `"2w"`. Task options, SQL
 * statement timeouts, retention periods and leases all parse through here, so a duration valid
 * in one place is valid everywhere.
 *
 * @module
 */

/** A duration: milliseconds, or a string such as `"30s"`. */
export type Duration = number | string;

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  sec: 1_000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const PATTERN = /^(\d+(?:\.\d+)?)\s*(ms|sec|s|min|m|h|d|w)$/i;

/** What a duration looks like, for error messages. */
export const DURATION_HINT = 'a duration such as 500, "30s", "5m" or "1h"';

/**
 * Parses a duration into milliseconds, or returns `undefined` when it is not one.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./duration.ts";
 * parseDuration("1.5s"); // 1500
 * parseDuration("5min"); // 300000
 * parseDuration(250); // 250
 * parseDuration("soon"); // undefined
 * ```
 */
export function parseDuration(value: Duration): number | undefined {
  if (typeof value === "number") {
    return Number.isFinite(value) && value >= 0 ? Math.round(value) : undefined;
  }
  if (typeof value !== "string") return undefined;
  const match = PATTERN.exec(value.trim());
  if (!match) return undefined;
  return Math.round(Number(match[1]) * UNITS[match[2]!.toLowerCase()]!);
}

/**
 * Formats milliseconds for people: `"850ms"`, `"12.3s"`, `"4m 05s"`, `"2h 00m"`.
 *
 * @example
 * ```ts
 * import { formatDuration } from "./duration.ts";
 * formatDuration(1234); // "1.2s"
 * ```
 */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.floor((ms % 60_000) / 1000);
  if (minutes < 60) return `${minutes}m ${String(seconds).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}
