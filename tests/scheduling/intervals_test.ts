/**
 * Data intervals from cron in a DAG's time zone (pure): UTC schedules, daylight-saving jumps in
 * America/New_York, Europe/London and America/Chicago (as Airflow: fold=1, the DST fix), and which intervals the scheduler finds due.
 */
import assert from "node:assert/strict";
import { type DagConfig, defineDag, resolveDag, task } from "../../core/dag.ts";
import { dueIntervals } from "../../core/scheduler.ts";
import {
  fireAtOrBefore,
  fromWall,
  intervalAt,
  intervalsBetween,
  isFixedTime,
  latestCompleteInterval,
  nextFireAfter,
  toWall,
} from "../../core/schedule.ts";

const at = (iso: string) => new Date(iso);
const iso = (d: Date | null | undefined) => d?.toISOString() ?? null;
const starts = (xs: { start: Date }[]) => xs.map((i) => i.start.toISOString());
const pairs = (xs: { start: Date; end: Date }[]) =>
  xs.map((i) => `${i.start.toISOString()} -> ${i.end.toISOString()}`);

function dag(config: Partial<DagConfig> = {}) {
  return resolveDag(defineDag({
    id: "d",
    schedule: "0 2 * * *",
    start: "2026-01-01T00:00:00Z",
    tasks: { t: task({ run: () => 1 }) },
    ...config,
  }));
}

// ---------------------------------------------------------------------------------------------
// UTC

Deno.test("intervals: a daily cron in UTC gives back-to-back 24 h intervals", () => {
  const d = dag({ schedule: "0 2 * * *" });
  const xs = intervalsBetween(d, at("2026-01-01T00:00:00Z"), at("2026-01-04T02:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-01-01T02:00:00.000Z -> 2026-01-02T02:00:00.000Z",
    "2026-01-02T02:00:00.000Z -> 2026-01-03T02:00:00.000Z",
    "2026-01-03T02:00:00.000Z -> 2026-01-04T02:00:00.000Z",
    // `to` is inclusive: an interval starting exactly at `to` is in the range.
    "2026-01-04T02:00:00.000Z -> 2026-01-05T02:00:00.000Z",
  ]);
});

Deno.test("intervals: an hourly cron in UTC gives 1 h intervals; `from` on a fire time is included", () => {
  const d = dag({ schedule: "0 * * * *" });
  const xs = intervalsBetween(d, at("2026-05-10T10:00:00Z"), at("2026-05-10T13:30:00Z"));
  assert.deepEqual(starts(xs), [
    "2026-05-10T10:00:00.000Z",
    "2026-05-10T11:00:00.000Z",
    "2026-05-10T12:00:00.000Z",
    "2026-05-10T13:00:00.000Z",
  ]);
  for (const x of xs) assert.equal(x.end.getTime() - x.start.getTime(), 3_600_000);
  // `from` between fire times starts at the next one.
  assert.deepEqual(
    starts(intervalsBetween(d, at("2026-05-10T10:00:01Z"), at("2026-05-10T11:00:00Z"))),
    ["2026-05-10T11:00:00.000Z"],
  );
});

Deno.test("intervals: intervalAt, nextFireAfter and fireAtOrBefore in UTC", () => {
  const d = dag({ schedule: "0 2 * * *" });
  assert.equal(iso(nextFireAfter(d, at("2026-02-01T02:00:00Z"))), "2026-02-02T02:00:00.000Z");
  assert.equal(iso(nextFireAfter(d, at("2026-02-01T01:59:59Z"))), "2026-02-01T02:00:00.000Z");
  assert.equal(iso(fireAtOrBefore(d, at("2026-02-01T02:00:00Z"))), "2026-02-01T02:00:00.000Z");
  assert.equal(iso(fireAtOrBefore(d, at("2026-02-01T01:59:59Z"))), "2026-01-31T02:00:00.000Z");
  const i = intervalAt(d, at("2026-02-01T15:00:00Z"));
  assert.deepEqual([iso(i.start), iso(i.end)], [
    "2026-02-01T02:00:00.000Z",
    "2026-02-02T02:00:00.000Z",
  ]);
  // The latest complete interval is the one that ended most recently.
  const l = latestCompleteInterval(d, at("2026-02-01T15:00:00Z"))!;
  assert.deepEqual([iso(l.start), iso(l.end)], [
    "2026-01-31T02:00:00.000Z",
    "2026-02-01T02:00:00.000Z",
  ]);
  // Before the DAG's start nothing is complete.
  assert.equal(latestCompleteInterval(d, at("2026-01-02T01:00:00Z")), null);
});

Deno.test("intervals: a manual DAG has no fire times and a zero-length interval", () => {
  const d = dag({ schedule: null });
  assert.equal(nextFireAfter(d, at("2026-02-01T00:00:00Z")), null);
  assert.equal(latestCompleteInterval(d, at("2026-02-01T00:00:00Z")), null);
  const i = intervalAt(d, at("2026-02-01T00:00:00Z"));
  assert.equal(i.start.getTime(), i.end.getTime());
  assert.deepEqual(dueIntervals(d, undefined, at("2026-12-01T00:00:00Z")), []);
});

// ---------------------------------------------------------------------------------------------
// Daylight saving: America/New_York (2026: spring forward Mar 8 02:00 EST -> 03:00 EDT,
// fall back Nov 1 02:00 EDT -> 01:00 EST)

Deno.test("intervals: America/New_York `0 2 * * *` on the spring-forward day fires at 03:00 EDT (07:00Z)", () => {
  const d = dag({ timezone: "America/New_York" });
  const xs = intervalsBetween(d, at("2026-03-06T00:00:00Z"), at("2026-03-09T12:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-03-06T07:00:00.000Z -> 2026-03-07T07:00:00.000Z", // 02:00 EST
    "2026-03-07T07:00:00.000Z -> 2026-03-08T07:00:00.000Z", // 02:00 EST
    "2026-03-08T07:00:00.000Z -> 2026-03-09T06:00:00.000Z", // 02:00 skipped -> 03:00 EDT; 23 h
    "2026-03-09T06:00:00.000Z -> 2026-03-10T06:00:00.000Z", // 02:00 EDT
  ]);
  // Exactly one fire on that day.
  const day = xs.filter((x) => toWall(x.start, "America/New_York").getUTCDate() === 8);
  assert.equal(day.length, 1);
});

Deno.test("intervals: America/New_York `0 2 * * *` on the fall-back day fires once, at 02:00 EST (07:00Z)", () => {
  const d = dag({ timezone: "America/New_York" });
  const xs = intervalsBetween(d, at("2026-10-31T00:00:00Z"), at("2026-11-02T06:59:59Z"));
  assert.deepEqual(pairs(xs), [
    "2026-10-31T06:00:00.000Z -> 2026-11-01T07:00:00.000Z", // 02:00 EDT; 25 h
    "2026-11-01T07:00:00.000Z -> 2026-11-02T07:00:00.000Z", // 02:00 EST
  ]);
});

Deno.test("intervals: America/New_York `0 1 * * *` on the fall-back day fires once, at the second 01:00 (06:00Z, Airflow's fold=1)", () => {
  const d = dag({ schedule: "0 1 * * *", timezone: "America/New_York" });
  const xs = intervalsBetween(d, at("2026-10-31T00:00:00Z"), at("2026-11-02T12:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-10-31T05:00:00.000Z -> 2026-11-01T06:00:00.000Z", // 01:00 EDT; 25 h
    "2026-11-01T06:00:00.000Z -> 2026-11-02T06:00:00.000Z", // second 01:00 (EST)
    "2026-11-02T06:00:00.000Z -> 2026-11-03T06:00:00.000Z", // 01:00 EST
  ]);
  // The first 01:00 (05:00Z) is not a fire time.
  assert.equal(iso(nextFireAfter(d, at("2026-10-31T05:00:00Z"))), "2026-11-01T06:00:00.000Z");
  assert.equal(iso(fireAtOrBefore(d, at("2026-11-01T05:30:00Z"))), "2026-10-31T05:00:00.000Z");
  assert.equal(iso(fireAtOrBefore(d, at("2026-11-01T06:30:00Z"))), "2026-11-01T06:00:00.000Z");
});

Deno.test("intervals: America/New_York hourly cron across both jumps: no duplicate and no missing instant", () => {
  const d = dag({ schedule: "0 * * * *", timezone: "America/New_York" });
  // Spring forward: 01:00 EST (06:00Z), then 03:00 EDT (07:00Z): one fire for the skipped hour.
  assert.deepEqual(
    starts(intervalsBetween(d, at("2026-03-08T05:00:00Z"), at("2026-03-08T08:00:00Z"))),
    [
      "2026-03-08T05:00:00.000Z",
      "2026-03-08T06:00:00.000Z",
      "2026-03-08T07:00:00.000Z",
      "2026-03-08T08:00:00.000Z",
    ],
  );
  // Fall back: both 01:00s fire (05:00Z EDT, 06:00Z EST), as Airflow's DST fix does.
  const xs = intervalsBetween(d, at("2026-11-01T04:00:00Z"), at("2026-11-01T08:00:00Z"));
  assert.deepEqual(starts(xs), [
    "2026-11-01T04:00:00.000Z",
    "2026-11-01T05:00:00.000Z",
    "2026-11-01T06:00:00.000Z",
    "2026-11-01T07:00:00.000Z",
    "2026-11-01T08:00:00.000Z",
  ]);
  // Intervals always tile: each ends where the next starts.
  for (let i = 1; i < xs.length; i++) {
    assert.equal(xs[i - 1]!.end.getTime(), xs[i]!.start.getTime());
  }
});

// ---------------------------------------------------------------------------------------------
// Daylight saving: Europe/London (2026: spring forward Mar 29 01:00 GMT -> 02:00 BST,
// fall back Oct 25 02:00 BST -> 01:00 GMT)

Deno.test("intervals: Europe/London `30 1 * * *` in the skipped hour fires an hour later (02:30 BST = 01:30Z)", () => {
  const d = dag({ schedule: "30 1 * * *", timezone: "Europe/London" });
  const xs = intervalsBetween(d, at("2026-03-28T00:00:00Z"), at("2026-03-30T12:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-03-28T01:30:00.000Z -> 2026-03-29T01:30:00.000Z", // 01:30 GMT
    "2026-03-29T01:30:00.000Z -> 2026-03-30T00:30:00.000Z", // 01:30 skipped -> 02:30 BST; 23 h
    "2026-03-30T00:30:00.000Z -> 2026-03-31T00:30:00.000Z", // 01:30 BST
  ]);
});

Deno.test("intervals: Europe/London `30 1 * * *` on the fall-back day fires once, at the second 01:30 (01:30Z)", () => {
  const d = dag({ schedule: "30 1 * * *", timezone: "Europe/London" });
  const xs = intervalsBetween(d, at("2026-10-24T00:00:00Z"), at("2026-10-26T12:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-10-24T00:30:00.000Z -> 2026-10-25T01:30:00.000Z", // 01:30 BST; 25 h
    "2026-10-25T01:30:00.000Z -> 2026-10-26T01:30:00.000Z", // second 01:30 (GMT)
    "2026-10-26T01:30:00.000Z -> 2026-10-27T01:30:00.000Z", // 01:30 GMT
  ]);
});

Deno.test("intervals: Europe/London `0 2 * * *` on both jump days", () => {
  const d = dag({ schedule: "0 2 * * *", timezone: "Europe/London" });
  // 02:00 exists on Mar 29 (BST) and on Oct 25 (GMT, after the repeated hour).
  assert.deepEqual(
    starts(intervalsBetween(d, at("2026-03-29T00:00:00Z"), at("2026-03-29T23:00:00Z"))),
    ["2026-03-29T01:00:00.000Z"],
  );
  assert.deepEqual(
    starts(intervalsBetween(d, at("2026-10-25T00:00:00Z"), at("2026-10-25T23:00:00Z"))),
    ["2026-10-25T02:00:00.000Z"],
  );
});

Deno.test("intervals: toWall and fromWall round-trip, gaps move forward, overlaps take the earlier instant", () => {
  const z = "America/New_York";
  const wall = (s: string) => new Date(`${s}Z`); // wall-clock reading held as UTC fields
  assert.equal(iso(toWall(at("2026-07-01T16:00:00Z"), z)), "2026-07-01T12:00:00.000Z");
  assert.equal(iso(fromWall(wall("2026-07-01T12:00:00"), z)), "2026-07-01T16:00:00.000Z");
  assert.equal(iso(fromWall(wall("2026-01-15T12:00:00"), z)), "2026-01-15T17:00:00.000Z");
  // Gap: 02:30 on Mar 8 does not exist -> 03:30 EDT.
  assert.equal(iso(fromWall(wall("2026-03-08T02:30:00"), z)), "2026-03-08T07:30:00.000Z");
  // Overlap: 01:30 on Nov 1 happens twice -> the EDT one.
  assert.equal(iso(fromWall(wall("2026-11-01T01:30:00"), z)), "2026-11-01T05:30:00.000Z");
});

// ---------------------------------------------------------------------------------------------
// dueIntervals

Deno.test("dueIntervals: with catchup, every missed interval since start, oldest first", () => {
  const d = dag({ catchup: true, start: "2026-01-01T02:00:00Z" });
  const now = at("2026-01-05T03:00:00Z");
  assert.deepEqual(starts(dueIntervals(d, undefined, now)), [
    "2026-01-01T02:00:00.000Z",
    "2026-01-02T02:00:00.000Z",
    "2026-01-03T02:00:00.000Z",
    "2026-01-04T02:00:00.000Z",
  ]);
  // The interval that has not ended (Jan 5 02:00 -> Jan 6 02:00) is not due.
  // After the last scheduled run, only the later ones.
  assert.deepEqual(starts(dueIntervals(d, at("2026-01-02T02:00:00Z"), now)), [
    "2026-01-03T02:00:00.000Z",
    "2026-01-04T02:00:00.000Z",
  ]);
  assert.deepEqual(dueIntervals(d, at("2026-01-04T02:00:00Z"), now), []);
  // A start between fire times: the first interval starts at the next fire time.
  const d2 = dag({ catchup: true, start: "2026-01-01T00:00:00Z" });
  assert.equal(
    iso(dueIntervals(d2, undefined, at("2026-01-03T00:00:00Z"))[0]?.start),
    "2026-01-01T02:00:00.000Z",
  );
  // Nothing is due before the first interval ends.
  assert.deepEqual(dueIntervals(d, undefined, at("2026-01-02T01:59:59Z")), []);
});

Deno.test("dueIntervals: with catchup, `end` stops the intervals and the limit caps them", () => {
  const d = dag({ catchup: true, start: "2026-01-01T02:00:00Z", end: "2026-01-03T02:00:00Z" });
  // Intervals start before `end` only.
  assert.deepEqual(starts(dueIntervals(d, undefined, at("2026-02-01T00:00:00Z"))), [
    "2026-01-01T02:00:00.000Z",
    "2026-01-02T02:00:00.000Z",
  ]);
  assert.deepEqual(dueIntervals(d, at("2026-01-02T02:00:00Z"), at("2026-02-01T00:00:00Z")), []);
  const open = dag({ catchup: true, start: "2026-01-01T02:00:00Z", schedule: "0 * * * *" });
  const capped = dueIntervals(open, undefined, at("2026-03-01T00:00:00Z"), 5);
  assert.equal(capped.length, 5);
  assert.equal(iso(capped[0]!.start), "2026-01-01T02:00:00.000Z");
});

Deno.test("dueIntervals: with catchup in America/New_York across spring forward", () => {
  const d = dag({ catchup: true, start: "2026-03-07T00:00:00Z", timezone: "America/New_York" });
  assert.deepEqual(pairs(dueIntervals(d, undefined, at("2026-03-10T12:00:00Z"))), [
    "2026-03-07T07:00:00.000Z -> 2026-03-08T07:00:00.000Z",
    "2026-03-08T07:00:00.000Z -> 2026-03-09T06:00:00.000Z",
    "2026-03-09T06:00:00.000Z -> 2026-03-10T06:00:00.000Z",
  ]);
});

Deno.test("dueIntervals: without catchup, only the latest complete interval, nothing when it already ran", () => {
  const d = dag({ catchup: false, start: "2026-01-01T02:00:00Z" });
  const now = at("2026-01-05T03:00:00Z");
  assert.deepEqual(pairs(dueIntervals(d, undefined, now)), [
    "2026-01-04T02:00:00.000Z -> 2026-01-05T02:00:00.000Z",
  ]);
  assert.deepEqual(starts(dueIntervals(d, at("2026-01-01T02:00:00Z"), now)), [
    "2026-01-04T02:00:00.000Z",
  ]);
  assert.deepEqual(dueIntervals(d, at("2026-01-04T02:00:00Z"), now), []);
  // Later than the latest (a backfill or trigger ahead of it): still nothing.
  assert.deepEqual(dueIntervals(d, at("2026-01-05T02:00:00Z"), now), []);
  // Nothing before the start, nothing once `end` has passed.
  assert.deepEqual(dueIntervals(d, undefined, at("2026-01-02T01:00:00Z")), []);
  const ended = dag({ catchup: false, start: "2026-01-01T02:00:00Z", end: "2026-01-03T00:00:00Z" });
  assert.deepEqual(dueIntervals(ended, undefined, now), []);
});

Deno.test("dueIntervals: a paused-in-time DAG (start in the future) has nothing due", () => {
  const d = dag({ catchup: true, start: "2027-01-01T00:00:00Z" });
  assert.deepEqual(dueIntervals(d, undefined, at("2026-06-01T00:00:00Z")), []);
});

// ---------------------------------------------------------------------------------------------
// Daylight saving as Airflow: America/Chicago, fall back 2026-11-01 02:00 CDT -> 01:00 CST

Deno.test("intervals: America/Chicago hourly across the 2026-11-01 fall-back fires at 07:00Z too (no two-hour interval)", () => {
  const d = dag({ schedule: "@hourly", timezone: "America/Chicago" });
  const xs = intervalsBetween(d, at("2026-11-01T05:00:00Z"), at("2026-11-01T09:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-11-01T05:00:00.000Z -> 2026-11-01T06:00:00.000Z", // 00:00 CDT
    "2026-11-01T06:00:00.000Z -> 2026-11-01T07:00:00.000Z", // 01:00 CDT
    "2026-11-01T07:00:00.000Z -> 2026-11-01T08:00:00.000Z", // 01:00 CST (the repeated hour)
    "2026-11-01T08:00:00.000Z -> 2026-11-01T09:00:00.000Z", // 02:00 CST
    "2026-11-01T09:00:00.000Z -> 2026-11-01T10:00:00.000Z",
  ]);
  // The local day of the fall-back has 25 hourly runs.
  const day = intervalsBetween(d, at("2026-11-01T05:00:00Z"), at("2026-11-02T05:59:59Z"));
  assert.equal(day.length, 25);
  for (const x of day) assert.equal(x.end.getTime() - x.start.getTime(), 3_600_000);
  // Inside the repeated hour, each reading belongs to its own interval.
  assert.equal(iso(intervalAt(d, at("2026-11-01T06:30:00Z")).start), "2026-11-01T06:00:00.000Z");
  assert.equal(iso(intervalAt(d, at("2026-11-01T07:30:00Z")).start), "2026-11-01T07:00:00.000Z");
  assert.equal(iso(nextFireAfter(d, at("2026-11-01T06:00:00Z"))), "2026-11-01T07:00:00.000Z");
});

Deno.test("intervals: America/Chicago `30 1 * * *` fires at the second 01:30 (CST, 07:30Z) on the fall-back day", () => {
  const d = dag({ schedule: "30 1 * * *", timezone: "America/Chicago" });
  const xs = intervalsBetween(d, at("2026-10-31T00:00:00Z"), at("2026-11-02T12:00:00Z"));
  assert.deepEqual(pairs(xs), [
    "2026-10-31T06:30:00.000Z -> 2026-11-01T07:30:00.000Z", // 01:30 CDT; 25 h
    "2026-11-01T07:30:00.000Z -> 2026-11-02T07:30:00.000Z", // second 01:30 (CST)
    "2026-11-02T07:30:00.000Z -> 2026-11-03T07:30:00.000Z", // 01:30 CST
  ]);
  assert.equal(isFixedTime("30 1 * * *"), true);
  assert.equal(isFixedTime("0 * * * *"), false);
  // The first 01:30 (CDT, 06:30Z) is not a fire time.
  assert.equal(iso(fireAtOrBefore(d, at("2026-11-01T06:30:00Z"))), "2026-10-31T06:30:00.000Z");
});
