/**
 * Data intervals from cron, evaluated in the DAG's time zone with cron-schedule. Cron-schedule
 * works on the process's local clock, so Carrel evaluates it on wall-clock times (the DAG's zone's
 * clock readings, held as UTC dates in a process running with `TZ=UTC`) and converts the fire
 * times back to instants, as Airflow's cron timetable does:
 *
 * - A schedule with a fixed time of day (`30 1 * * *`: two consecutive fire times share hour and
 *   minute) fires at that wall time: in a skipped hour the gap's length later (02:30 fires at
 *   03:30), and on a repeated wall time once, at its second occurrence (Airflow's `fold=1`: 01:30
 *   CST, not 01:30 CDT).
 * - Any other schedule (`0 * * * *`, `0,30 * * * *`) steps by the wall-clock distance to its
 *   next fire time in absolute time (Airflow's DST fix): an hourly schedule fires every hour
 *   across both jumps, the repeated hour included, so intervals stay an hour long.
 *
 * @module
 */
import { type Cron, parseCronExpression } from "cron-schedule";
import type { DataInterval, ResolvedDag } from "./dag.ts";

/**
 * Cron-schedule reads the process's local clock; Carrel feeds it wall-clock dates held as UTC, so
 * local time must be UTC. Deno applies a `TZ` change at once.
 */
function ensureUtc(): void {
  if (new Date(0).getTimezoneOffset() !== 0) Deno.env.set("TZ", "UTC");
}

const crons = new Map<string, Cron>();
function cronOf(expression: string): Cron {
  ensureUtc();
  let cron = crons.get(expression);
  if (!cron) {
    cron = parseCronExpression(expression);
    crons.set(expression, cron);
  }
  return cron;
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall-clock reading of `instant` in `timeZone`, as a date whose UTC fields hold it. */
export function toWall(instant: Date, timeZone: string): Date {
  if (timeZone === "UTC") return new Date(instant.getTime());
  const parts: Record<string, number> = {};
  for (const p of formatterOf(timeZone).formatToParts(instant)) {
    if (p.type !== "literal") parts[p.type] = Number(p.value);
  }
  return new Date(Date.UTC(
    parts.year!,
    parts.month! - 1,
    parts.day!,
    parts.hour!,
    parts.minute!,
    parts.second!,
    instant.getUTCMilliseconds(),
  ));
}

/**
 * The instant whose wall-clock reading in `timeZone` is `wall`. In a gap (spring forward), moved
 * forward by the gap's length; in an overlap (fall back), the earlier instant, or with `fold: 1`
 * the later one (as Python's `fold=1`).
 */
export function fromWall(wall: Date, timeZone: string, fold: 0 | 1 = 0): Date {
  if (timeZone === "UTC") return new Date(wall.getTime());
  const target = wall.getTime();
  const offsetAt = (t: number) => toWall(new Date(t), timeZone).getTime() - t;
  // Candidates from the offsets around the target; keep the earliest exact match.
  const offsets = new Set([
    offsetAt(target - 86_400_000),
    offsetAt(target),
    offsetAt(target + 86_400_000),
  ]);
  const exact = [...offsets].map((o) => target - o).filter((t) =>
    toWall(new Date(t), timeZone).getTime() === target
  )
    .sort((a, b) => a - b);
  if (exact.length > 0) return new Date(fold === 1 ? exact.at(-1)! : exact[0]!);
  // In a gap (spring forward): read the wall time with the offset in force before the gap, which
  // moves it forward by the gap's length (02:30 in a skipped hour fires at 03:30).
  return new Date(target - offsetAt(target - 86_400_000));
}

const fixedTimes = new Map<string, boolean>();
/**
 * Whether a cron expression fires at one fixed time of day: its next two fire times (from a
 * fixed reference) share hour and minute, Airflow's test for skipping its DST fix.
 */
export function isFixedTime(expression: string): boolean {
  let fixed = fixedTimes.get(expression);
  if (fixed === undefined) {
    const [a, b] = cronOf(expression).getNextDates(2, new Date(Date.UTC(2001, 0, 1)));
    fixed = a!.getUTCHours() === b!.getUTCHours() && a!.getUTCMinutes() === b!.getUTCMinutes();
    fixedTimes.set(expression, fixed);
  }
  return fixed;
}

/** Whole seconds: cron fires on whole minutes, and the wall clock is read to the second. */
const floorSecond = (t: number) => Math.floor(t / 1000) * 1000;

/** The first fire time strictly after `after`, or `null` for manual DAGs. */
export function nextFireAfter(
  dag: Pick<ResolvedDag, "schedule" | "timezone">,
  after: Date,
): Date | null {
  if (!dag.schedule) return null;
  const cron = cronOf(dag.schedule);
  let wall = toWall(after, dag.timezone);
  if (!isFixedTime(dag.schedule)) {
    // Airflow's DST fix: the wall-clock distance to the next fire time, added in absolute time.
    const next = cron.getNextDate(wall);
    return new Date(after.getTime() + (next.getTime() - wall.getTime()));
  }
  for (let i = 0; i < 5; i++) {
    const next = fromWall(cron.getNextDate(wall), dag.timezone, 1);
    if (next.getTime() > after.getTime()) return next;
    wall = new Date(cron.getNextDate(wall).getTime());
  }
  return null;
}

/** The last fire time at or before `at`, or `null`. */
export function fireAtOrBefore(
  dag: Pick<ResolvedDag, "schedule" | "timezone">,
  at: Date,
): Date | null {
  if (!dag.schedule) return null;
  const cron = cronOf(dag.schedule);
  const wall = toWall(at, dag.timezone);
  const probe = cron.getNextDate(new Date(floorSecond(wall.getTime()) - 1000));
  if (!isFixedTime(dag.schedule)) {
    if (probe.getTime() <= wall.getTime()) {
      return new Date(at.getTime() - (wall.getTime() - probe.getTime()));
    }
    const prev = cron.getPrevDate(wall);
    return new Date(at.getTime() - (wall.getTime() - prev.getTime()));
  }
  const candidate = fromWall(probe, dag.timezone, 1);
  if (candidate.getTime() <= at.getTime()) return candidate;
  // A wall time before `at`'s reading may still be later (its second occurrence): step back.
  let prevWall = cron.getPrevDate(wall);
  for (let i = 0; i < 5; i++) {
    const prev = fromWall(prevWall, dag.timezone, 1);
    if (prev.getTime() <= at.getTime()) return prev;
    prevWall = cron.getPrevDate(prevWall);
  }
  return null;
}

/**
 * The data interval whose logical date (start) is the last fire time at or before `date`; for a
 * manual DAG, the zero-length interval at `date`.
 *
 * @example
 * ```ts ignore
 * intervalAt(dag, new Date("2026-11-28T05:00:00Z")); // { start: 02:00 that day, end: 02:00 next day }
 * ```
 */
export function intervalAt(
  dag: Pick<ResolvedDag, "schedule" | "timezone">,
  date: Date,
): DataInterval {
  if (!dag.schedule) return { start: date, end: date };
  const start = fireAtOrBefore(dag, date) ?? date;
  return { start, end: nextFireAfter(dag, start)! };
}

/** The latest interval that has ended by `now` (what a scheduled run processes), or `null`. */
export function latestCompleteInterval(
  dag: Pick<ResolvedDag, "schedule" | "timezone" | "start">,
  now: Date = new Date(),
): DataInterval | null {
  if (!dag.schedule) return null;
  const end = fireAtOrBefore(dag, now);
  if (!end) return null;
  const start = fireAtOrBefore(dag, new Date(end.getTime() - 1));
  if (!start || (dag.start && start.getTime() < dag.start.getTime())) return null;
  return { start, end };
}

/** Every interval whose start lies in `[from, to]`, in order. */
export function intervalsBetween(
  dag: Pick<ResolvedDag, "schedule" | "timezone">,
  from: Date,
  to: Date,
  limit = 100_000,
): DataInterval[] {
  if (!dag.schedule) return [{ start: from, end: from }];
  const out: DataInterval[] = [];
  let start = fireAtOrBefore(dag, from);
  if (!start || start.getTime() < from.getTime()) {
    start = nextFireAfter(dag, new Date(from.getTime() - 1));
  }
  while (start && start.getTime() <= to.getTime() && out.length < limit) {
    const end = nextFireAfter(dag, start)!;
    out.push({ start, end });
    start = end;
  }
  return out;
}
