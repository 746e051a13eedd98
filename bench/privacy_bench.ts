/**
 * Throughput of the privacy operators' per-record logic, each measured
 * against a minimal baseline over the same records in the same run.
 *
 * - `gate.records_per_s`: {@link createGate} (PII strip + deeply strict zod
 *   parse + summary bookkeeping). Baseline: a bare `schema.parse` loop with
 *   the non-strict schema, i.e. the validation cost alone.
 * - `checkpoint.records_per_s`: {@link createCheckpoint} with tokenized,
 *   allow-list, PII-key and all default detectors. Baseline: a loop calling
 *   `JSON.stringify` per record. Any checkpoint must visit every key and
 *   string of a record; V8's native serializer does exactly that with no
 *   checks, so it is an honest lower bound on the traversal cost.
 *
 * - `small_cells.groups_per_s`: {@link protectCounts} on monthly counts per
 *   branch x age band x format (20 x 7 x 6 groups a month, skewed so that many
 *   are below k = 10): primary and complementary suppression with the exact
 *   check. Baseline: the same table and all its totals summed by hand into a
 *   `Map` (what publishing it unprotected costs).
 *
 * `ratio` is `value / baseline.value`: 1 means as fast as the baseline, 0.5
 * half as fast. Each figure is the median of alternating rounds.
 *
 * Run directly: `deno run bench/privacy_bench.ts [--quick]`.
 *
 * @module
 */

import { z } from "zod";
import { createCheckpoint } from "../operators/privacy/checkpoint_checks.ts";
import { createGate } from "../operators/privacy/gate.ts";
import { protectCounts } from "../operators/privacy/small_cells.ts";
import type { Metric } from "./metric.ts";

export type { Metric };

const EVENTS = ["checkout", "checkin", "renew", "hold_fill"] as const;
const BRANCHES = ["MAIN", "EAST", "WEST", "NORTH", "BOOKMOBILE"] as const;
const TITLES = [
  "Pride and Prejudice",
  "The Left Hand of Darkness",
  "Things Fall Apart",
  "One Hundred Years of Solitude",
  "Beloved",
] as const;
const NOTES = [
  "",
  "Left at desk",
  "Damaged cover noted at return",
  "Renewed online",
  "Hold shelf, expires in 7 days",
] as const;

/** Circulation event as it leaves the ILS (before the gate). */
const circulationSchema = z.object({
  event_id: z.string(),
  event: z.enum(EVENTS),
  occurred_at: z.string(),
  item_id: z.string(),
  title: z.string(),
  call_number: z.string(),
  branch: z.enum(BRANCHES),
  due_date: z.string().nullable(),
  renewals: z.number().int().nonnegative(),
  notes: z.string(),
});

function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function pick<T>(items: readonly T[], random: () => number): T {
  return items[Math.floor(random() * items.length)] as T;
}

function hex64(random: () => number): string {
  let out = "";
  for (let i = 0; i < 8; i++) {
    out += Math.floor(random() * 2 ** 32).toString(16).padStart(8, "0");
  }
  return out;
}

/** Raw events: the schema's ten fields plus three PII keys the gate strips. */
function rawEvents(count: number): Record<string, unknown>[] {
  const random = lcg(7);
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < count; i++) {
    const day = String(1 + (i % 28)).padStart(2, "0");
    out.push({
      event_id: `ev-${i}`,
      event: pick(EVENTS, random),
      occurred_at: `2025-03-${day}T10:${String(i % 60).padStart(2, "0")}:00Z`,
      item_id: `i-${100000 + i}`,
      title: pick(TITLES, random),
      call_number: `PR${4000 + (i % 500)} .E${i % 9}`,
      branch: pick(BRANCHES, random),
      due_date: i % 4 === 0 ? null : `2025-04-${day}`,
      renewals: i % 3,
      notes: pick(NOTES, random),
      patron_id: 10000 + i,
      Patron_Barcode: `2123400${String(1000000 + i).slice(-7)}`,
      email: `reader${i}@example.org`,
    });
  }
  return out;
}

/** Tokenized events as they reach the checkpoint. */
function tokenizedEvents(count: number): Record<string, unknown>[] {
  const random = lcg(11);
  return rawEvents(count).map((event) => {
    const { patron_id: _id, Patron_Barcode: _barcode, email: _email, ...rest } = event;
    return { ...rest, patron_id: hex64(random) };
  });
}

/** Monthly counts per branch x age band x format, skewed: many groups below 10. */
function monthlyGroups(months: number): Record<string, unknown>[] {
  const random = lcg(13);
  const bands = ["0-12", "13-17", "18-24", "25-44", "45-64", "65+", "unknown"];
  const formats = ["book", "dvd", "cd", "magazine", "audiobook", "ebook"];
  const out: Record<string, unknown>[] = [];
  for (let m = 1; m <= months; m++) {
    for (let b = 0; b < 20; b++) {
      for (let a = 0; a < bands.length; a++) {
        for (let f = 0; f < formats.length; f++) {
          const count = Math.floor(random() * random() * 400 / (1 + f + (a === 6 ? 8 : 0)));
          if (count === 0) continue;
          out.push({
            month: `2026-${String(m).padStart(2, "0")}`,
            branch: `B${b}`,
            age_band: bands[a],
            format: formats[f],
            count,
          });
        }
      }
    }
  }
  return out;
}

function timeLoop(budgetMs: number, loop: () => number): number {
  let records = 0;
  const start = performance.now();
  let elapsed = 0;
  do {
    records += loop();
    elapsed = performance.now() - start;
  } while (elapsed < budgetMs);
  return records / (elapsed / 1000);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[mid] as number
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function compare(
  name: string,
  baselineName: string,
  rounds: number,
  budgetMs: number,
  subject: () => number,
  baseline: () => number,
): Metric {
  // Warm up both loops so the JIT has settled before measuring.
  timeLoop(Math.min(200, budgetMs), subject);
  timeLoop(Math.min(200, budgetMs), baseline);
  const subjectRates: number[] = [];
  const baselineRates: number[] = [];
  for (let round = 0; round < rounds; round++) {
    baselineRates.push(timeLoop(budgetMs, baseline));
    subjectRates.push(timeLoop(budgetMs, subject));
  }
  const value = Math.round(median(subjectRates));
  const base = Math.round(median(baselineRates));
  return {
    name,
    value,
    unit: "records/s",
    baseline: { name: baselineName, value: base },
    ratio: Math.round((value / base) * 1000) / 1000,
  };
}

/**
 * Measures the gate and checkpoint throughput against their baselines.
 * Quick mode takes a few seconds; full mode about half a minute.
 *
 * @example
 * ```ts
 * import { benchPrivacy } from "./privacy_bench.ts";
 * const metrics = await benchPrivacy({ quick: true });
 * for (const m of metrics) console.log(m.name, m.value, m.unit, m.ratio);
 * ```
 */
export async function benchPrivacy(opts: { quick: boolean }): Promise<Metric[]> {
  const rounds = opts.quick ? 3 : 5;
  const budgetMs = opts.quick ? 300 : 2500;
  const raw = rawEvents(2000);
  const tokenized = tokenizedEvents(2000);
  let sink = 0;

  const gateMetric = compare(
    "gate.records_per_s",
    "zod.parse.records_per_s",
    rounds,
    budgetMs,
    () => {
      const gate = createGate({ schema: circulationSchema, onInvalid: "quarantine" });
      for (let i = 0; i < raw.length; i++) {
        if (gate.check(raw[i], i).ok) sink++;
      }
      return raw.length;
    },
    () => {
      for (let i = 0; i < raw.length; i++) {
        if (circulationSchema.parse(raw[i]).renewals >= 0) sink++;
      }
      return raw.length;
    },
  );
  // Let pending tasks (e.g. a caller's timers) run between the two measurements.
  await new Promise((resolve) => setTimeout(resolve, 0));

  const allowFields = [...Object.keys(circulationSchema.shape), "patron_id"];
  const checkpointMetric = compare(
    "checkpoint.records_per_s",
    "json_stringify.records_per_s",
    rounds,
    budgetMs,
    () => {
      const checkpoint = createCheckpoint({ tokenized: ["patron_id"], allowFields });
      for (let i = 0; i < tokenized.length; i++) {
        if (checkpoint.check(tokenized[i], i).ok) sink++;
      }
      if (!checkpoint.verdict().passed) {
        throw new Error("Privacy bench failed: checkpoint rejected clean records");
      }
      return tokenized.length;
    },
    () => {
      for (let i = 0; i < tokenized.length; i++) sink += JSON.stringify(tokenized[i]).length & 1;
      return tokenized.length;
    },
  );
  await new Promise((resolve) => setTimeout(resolve, 0));

  const groups = monthlyGroups(opts.quick ? 2 : 6);
  const table = {
    by: ["month"],
    dimensions: ["branch", "age_band", "format"],
    sum: "count",
    k: 10,
  };
  const smallCellsMetric = compare(
    "small_cells.groups_per_s",
    "map_totals.groups_per_s",
    opts.quick ? 2 : 3,
    budgetMs,
    () => {
      sink += protectCounts(groups, table).stats.complementary;
      return groups.length;
    },
    () => {
      const totals = new Map<string, number>();
      for (const g of groups) {
        for (let mask = 0; mask < 8; mask++) {
          const key = `${g.month}|${mask & 1 ? "*" : g.branch}|${mask & 2 ? "*" : g.age_band}|${
            mask & 4 ? "*" : g.format
          }`;
          totals.set(key, (totals.get(key) ?? 0) + (g.count as number));
        }
      }
      sink += totals.size;
      return groups.length;
    },
  );
  if (sink < 0) throw new Error("Privacy bench failed: unreachable");
  return [gateMetric, checkpointMetric, smallCellsMetric];
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const metrics = await benchPrivacy({ quick });
  for (const metric of metrics) {
    console.log(
      `${metric.name}: ${metric.value} ${metric.unit} (${metric.baseline.name}: ${metric.baseline.value}, ratio ${metric.ratio})`,
    );
  }
}
