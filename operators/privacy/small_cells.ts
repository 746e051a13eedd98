/**
 * Small-cell protection for aggregate outputs: counts of patrons or events per group (branch x age
 * band x format, per month) that leave the enclave must not single anyone out. A count below `k`
 * ("the only patron aged 90+ at the east branch borrowed three DVDs") is withheld, and so is enough
 * else that it cannot be worked back out of the totals.
 *
 * The method (threshold rule with complementary suppression, as national statistical offices
 * apply it to frequency tables):
 *
 * 1. **Aggregate.** Records are counted per group of `by` (independent tables, such as months) and
 *    `dimensions`; with `sum`, a column of the input is added instead of counting records.
 * 2. **Merge** (`method: "merge"`, optional). Along `mergeDimension`, the counts below k of each
 *    line (the cells that differ only in that dimension) are pooled into one level `(other)`;
 *    when the pool is still below k, the smallest other cells of the line join it until it
 *    reaches k. Lines whose total is below k are left to step 3. The totals are those of the
 *    merged table, so a pooled cell is not recoverable from them.
 * 3. **Primary suppression.** Every count from 1 to k-1 is withheld: cells and totals alike.
 *    Zero is not withheld (an empty group singles no one out).
 * 4. **Complementary suppression.** A reader knows every published count and every total (row,
 *    column, and all other margins, `(all)` in the output), and each total is the sum of its
 *    line. While some withheld count is *determined* by those equations (exactly, by linear
 *    algebra over the whole table: `cell_lattice.ts`), the smallest published positive count of
 *    one of its equations is withheld too. The result: no withheld count, cell or total, can be
 *    recomputed from what is published. This protects against exact recomputation; it does not
 *    bound how narrowly a withheld count can be *estimated* (each is at least 1, and the totals
 *    give upper bounds).
 *
 * The output has one row per non-zero group: the `by` and `dimensions` columns (`(all)` in a
 * dimension for a total over it, `(other)` for a merged level), the count (`null` when withheld)
 * and `suppressed`. Totals are included unless `totals: false`; the same cells are withheld
 * either way, so totals published elsewhere cannot undo the protection.
 *
 * {@link checkSmallCells} verifies such a table independently (the checkpoint's `smallCells`
 * option): no published count below k, totals that add up, and no withheld count recomputable.
 *
 * @module
 */
import { z } from "zod";
import type { TaskContext, TaskOptions, TaskSpec } from "../../core/mod.ts";
import { FatalTaskError, markPrivacySafe } from "../../core/mod.ts";
import { emitRecords, inputsAreArrays, upstreamRecords } from "../records_io.ts";
import { buildLattice, determinedNodes, fillLattice, type Lattice } from "./cell_lattice.ts";
import { declareOutputSchema } from "./output_schema.ts";

/** The value of a dimension in a row that totals over that dimension. */
export const TOTAL = "(all)";
/** The level that merged (pooled) small cells get. */
export const OTHER = "(other)";

/** What {@link checkSmallCells} verifies, and the columns of a protected table. */
export interface SmallCellsCheck {
  /** Columns that split the output into independent tables (for example the month). */
  by?: readonly string[];
  /** The table's dimensions (for example branch, age band, format). */
  dimensions: readonly string[];
  /** The count column (default `count`). */
  count?: string;
  /** The smallest count that may be published (counts 1 to k-1 are withheld). */
  k: number;
}

/** Options of {@link protectCounts} and the `smallCells` operator. */
export interface SmallCellsProtection extends SmallCellsCheck {
  /** An input column holding counts to add up; without it, each input record counts 1. */
  sum?: string;
  /** `"suppress"` (default) or `"merge"` (pool small cells along `mergeDimension` first). */
  method?: "suppress" | "merge";
  /** The dimension along which `"merge"` pools small cells into `(other)`. */
  mergeDimension?: string;
  /** Include the totals (rows with `(all)`), default `true`. */
  totals?: boolean;
}

/** Counts of a protection. */
export interface SmallCellsStats {
  /** Independent tables (distinct `by` values). */
  tables: number;
  /** Non-zero cells (groups) after merging. */
  cells: number;
  /** Cells and totals below k, withheld. */
  primary: number;
  /** Cells and totals withheld so that the primary ones cannot be recomputed. */
  complementary: number;
  /** Cells pooled into `(other)` (`"merge"` only). */
  merged: number;
  /** Rows written (cells, and totals unless `totals: false`). */
  rows: number;
}

/** The result of {@link protectCounts}. */
export interface ProtectedTable {
  rows: Record<string, unknown>[];
  stats: SmallCellsStats;
}

type Value = string | number | boolean | null;

function misconfigured(message: string): TypeError {
  return new TypeError(`Small-cell protection misconfigured: ${message}`);
}

function validateCheck(options: SmallCellsCheck): void {
  if (!Array.isArray(options.dimensions) || options.dimensions.length === 0) {
    throw misconfigured("dimensions needs at least one column");
  }
  if (!Number.isInteger(options.k) || options.k < 2) {
    throw misconfigured("k must be an integer >= 2");
  }
  const columns = [...(options.by ?? []), ...options.dimensions, options.count ?? "count"];
  if (new Set(columns).size !== columns.length) {
    throw misconfigured("by, dimensions and count must name different columns");
  }
}

/**
 * Validates protection options; throws a `TypeError` naming the problem.
 *
 * @example
 * ```ts
 * import { validateSmallCells } from "./small_cells.ts";
 * validateSmallCells({ dimensions: ["branch"], k: 10 }); // fine
 * ```
 */
export function validateSmallCells(options: SmallCellsProtection): void {
  validateCheck(options);
  const method = options.method ?? "suppress";
  if (method !== "suppress" && method !== "merge") {
    throw misconfigured('method must be "suppress" or "merge"');
  }
  if (method === "merge" && !options.dimensions.includes(options.mergeDimension ?? "")) {
    throw misconfigured('method "merge" needs mergeDimension, one of the dimensions');
  }
}

function dimensionValue(
  record: Record<string, unknown>,
  column: string,
  position: number,
): Value {
  const value = record[column] ?? null;
  if (value === TOTAL || value === OTHER) {
    throw markPrivacySafe(
      new FatalTaskError(
        `Cannot protect counts: "${column}" of record ${position} equals the marker "${value}"`,
      ),
    );
  }
  if (
    value === null || typeof value === "string" || typeof value === "number" ||
    typeof value === "boolean"
  ) return value;
  throw markPrivacySafe(
    new FatalTaskError(
      `Cannot protect counts: "${column}" of record ${position} is not a string, number or boolean`,
    ),
  );
}

function countValue(value: unknown, column: string, position: number): number {
  const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
    throw markPrivacySafe(
      new FatalTaskError(
        `Cannot protect counts: "${column}" of record ${position} is not a count (an integer >= 0)`,
      ),
    );
  }
  return n;
}

/** One independent table while it is built. */
interface Partition {
  by: Value[];
  /** Distinct levels per dimension, in order of first appearance. */
  levels: Map<string, number>[];
  values: Value[][];
  /** Cells: level indexes -> count. */
  cells: Map<string, { coords: number[]; count: number }>;
}

function levelOf(partition: Partition, d: number, value: Value): number {
  const key = JSON.stringify(value);
  let index = partition.levels[d]!.get(key);
  if (index === undefined) {
    index = partition.levels[d]!.size;
    partition.levels[d]!.set(key, index);
    partition.values[d]!.push(value);
  }
  return index;
}

/**
 * Aggregates records into tables of counts and protects them (see the module documentation).
 *
 * @example
 * ```ts
 * import { protectCounts } from "./small_cells.ts";
 * const events = [
 *   ...Array(30).fill({ branch: "MAIN", format: "book" }),
 *   ...Array(12).fill({ branch: "MAIN", format: "dvd" }),
 *   ...Array(25).fill({ branch: "EAST", format: "book" }),
 *   ...Array(2).fill({ branch: "EAST", format: "dvd" }),
 * ];
 * const { rows, stats } = protectCounts(events, { dimensions: ["branch", "format"], k: 10 });
 * stats.primary; // 1: EAST x dvd (2)
 * stats.complementary; // 3: with its totals published, a 2 x 2 table keeps no cell
 * rows.find((r) => r.branch === "(all)" && r.format === "(all)")?.count; // 69
 * ```
 */
export function protectCounts(
  records: Iterable<Record<string, unknown>>,
  options: SmallCellsProtection,
): ProtectedTable {
  validateSmallCells(options);
  const by = options.by ?? [];
  const dims = options.dimensions;
  const countColumn = options.count ?? "count";
  const partitions = new Map<string, Partition>();
  let position = 0;
  for (const record of records) {
    position++;
    const byValues = by.map((c) => dimensionValue(record, c, position));
    const partKey = JSON.stringify(byValues);
    let partition = partitions.get(partKey);
    if (partition === undefined) {
      partition = {
        by: byValues,
        levels: dims.map(() => new Map()),
        values: dims.map(() => []),
        cells: new Map(),
      };
      partitions.set(partKey, partition);
    }
    const coords = dims.map((c, d) => levelOf(partition!, d, dimensionValue(record, c, position)));
    const add = options.sum === undefined
      ? 1
      : countValue(record[options.sum], options.sum, position);
    const key = coords.join(",");
    const cell = partition.cells.get(key);
    if (cell) cell.count += add;
    else partition.cells.set(key, { coords, count: add });
  }
  const stats: SmallCellsStats = {
    tables: partitions.size,
    cells: 0,
    primary: 0,
    complementary: 0,
    merged: 0,
    rows: 0,
  };
  const rows: Record<string, unknown>[] = [];
  for (const partition of partitions.values()) {
    if (options.method === "merge") {
      stats.merged += mergeSmall(partition, dims.indexOf(options.mergeDimension!), options.k);
    }
    const levels = partition.values.map((v) => v.length);
    const lattice = buildLattice(levels);
    const cells = [...partition.cells.values()].filter((c) => c.count > 0);
    stats.cells += cells.length;
    const values = fillLattice(
      lattice,
      cells.map((c) => [c.coords, c.count] as [number[], number]),
    );
    const { withheld, primary, complementary } = suppress(lattice, values, options.k);
    stats.primary += primary;
    stats.complementary += complementary;
    const nodes: number[] = [];
    for (let node = 0; node < lattice.size; node++) {
      if (values[node]! > 0 && (options.totals !== false || lattice.isCell(node))) nodes.push(node);
    }
    const coordsOf = nodes.map((node) => lattice.coords(node));
    const order = nodes.map((_, i) => i).sort((a, b) => compareCoords(coordsOf[a]!, coordsOf[b]!));
    for (const i of order) {
      const node = nodes[i]!;
      const c = coordsOf[i]!;
      const row: Record<string, unknown> = {};
      by.forEach((column, j) => row[column] = partition.by[j]);
      dims.forEach((column, d) => {
        row[column] = c[d] === levels[d] ? TOTAL : partition.values[d]![c[d]!];
      });
      row[countColumn] = withheld[node] ? null : values[node];
      row.suppressed = withheld[node] === 1;
      rows.push(row);
    }
  }
  stats.rows = rows.length;
  return { rows, stats };
}

function compareCoords(a: number[], b: number[]): number {
  for (let d = 0; d < a.length; d++) if (a[d] !== b[d]) return a[d]! - b[d]!;
  return 0;
}

// Pools the small cells of each line along dimension `m` into the level OTHER. Returns how many
// cells were pooled.
function mergeSmall(partition: Partition, m: number, k: number): number {
  const lines = new Map<string, { key: string; coords: number[]; count: number }[]>();
  for (const [key, cell] of partition.cells) {
    const lineKey = cell.coords.map((v, d) => d === m ? "*" : v).join(",");
    let line = lines.get(lineKey);
    if (line === undefined) lines.set(lineKey, line = []);
    line.push({ key, ...cell });
  }
  let merged = 0;
  let other: number | undefined;
  for (const line of lines.values()) {
    const total = line.reduce((sum, c) => sum + c.count, 0);
    const small = line.filter((c) => c.count > 0 && c.count < k);
    if (small.length === 0 || total < k) continue;
    const pool = [...small];
    let pooled = pool.reduce((sum, c) => sum + c.count, 0);
    const rest = line.filter((c) => c.count >= k).sort((a, b) => a.count - b.count);
    while (pooled < k && rest.length > 0) {
      const next = rest.shift()!;
      pool.push(next);
      pooled += next.count;
    }
    if (pool.length < 2) continue;
    other ??= levelOf(partition, m, OTHER);
    for (const c of pool) partition.cells.delete(c.key);
    const coords = [...pool[0]!.coords];
    coords[m] = other;
    partition.cells.set(coords.join(","), { coords, count: pooled });
    merged += pool.length;
  }
  return merged;
}

/**
 * Primary and complementary suppression on a filled lattice (see the module documentation).
 * Returns the withheld nodes (1) and how many were withheld for each reason.
 *
 * @example
 * ```ts
 * import { buildLattice, fillLattice } from "./cell_lattice.ts";
 * import { suppress } from "./small_cells.ts";
 * const lattice = buildLattice([2, 2]);
 * const values = fillLattice(lattice, [[[0, 0], 3], [[0, 1], 20], [[1, 0], 30], [[1, 1], 40]]);
 * suppress(lattice, values, 10).primary; // 1 (the 3)
 * suppress(lattice, values, 10).complementary; // 3: the 20 (its row), the 30 (its column), the 40
 * ```
 */
export function suppress(
  lattice: Lattice,
  values: Float64Array,
  k: number,
): { withheld: Uint8Array; primary: number; complementary: number } {
  const withheld = new Uint8Array(lattice.size);
  let primary = 0;
  for (let node = 0; node < lattice.size; node++) {
    if (values[node]! > 0 && values[node]! < k) {
      withheld[node] = 1;
      primary++;
    }
  }
  let complementary = 0;
  if (primary === 0) return { withheld, primary, complementary };
  // The smallest published positive member of an equation (cells before totals on ties).
  const smallestPublished = (members: Iterable<number>): number | undefined => {
    let best: number | undefined;
    for (const node of members) {
      if (withheld[node] || values[node]! <= 0) continue;
      if (
        best === undefined || values[node]! < values[best]! || (
          values[node] === values[best] && node < best
        )
      ) best = node;
    }
    return best;
  };
  // Withheld members per equation; equations with exactly one wait in `single`.
  const unknowns = new Int32Array(lattice.equations.length);
  const single: number[] = [];
  lattice.equations.forEach((eq, id) => {
    for (const member of eq) if (withheld[member]) unknowns[id]!++;
    if (unknowns[id] === 1) single.push(id);
  });
  const withhold = (node: number | undefined): void => {
    if (node === undefined || withheld[node]) return;
    withheld[node] = 1;
    complementary++;
    for (const id of lattice.equationsOf[node]!) if (++unknowns[id]! === 1) single.push(id);
  };
  for (;;) {
    // Cheap pass: an equation with exactly one withheld member gives it away.
    while (single.length > 0) {
      const id = single.pop()!;
      if (unknowns[id] === 1) withhold(smallestPublished(lattice.equations[id]!));
    }
    // Exact pass: combinations of equations.
    const found = determinedNodes(lattice, withheld);
    if (found.size === 0) break;
    const touched = new Set<number>();
    for (const node of found) {
      const equations = lattice.equationsOf[node]!;
      if (equations.some((id) => touched.has(id))) continue;
      let chosen: number | undefined;
      let chosenId = -1;
      for (const id of equations) {
        const candidate = smallestPublished(lattice.equations[id]!);
        if (
          candidate !== undefined && (chosen === undefined || values[candidate]! < values[chosen]!)
        ) {
          chosen = candidate;
          chosenId = id;
        }
      }
      if (chosen === undefined) {
        chosen = smallestPublished(lattice.equations.flatMap((eq) => [...eq]));
      }
      withhold(chosen);
      if (chosenId >= 0) touched.add(chosenId);
    }
  }
  return { withheld, primary, complementary };
}

/** A problem {@link checkSmallCells} found (no values). */
export interface SmallCellsProblem {
  /** The column or columns concerned. */
  field: string;
  reason: string;
  /** Rows (or equations, or withheld counts) concerned. */
  count: number;
}

/** The rows of an aggregate output, as the checkpoint collects them. */
export type CellTable = Record<string, unknown>[];

/**
 * Verifies an aggregate output: every column present, no published count from 1 to k-1, and,
 * when the table carries its totals (`(all)` rows), totals that add up and no withheld count
 * (`null`) that the published counts and totals determine. Rows of a group absent from the table
 * count as 0.
 *
 * @example
 * ```ts
 * import { checkSmallCells } from "./small_cells.ts";
 * checkSmallCells([{ branch: "MAIN", count: 3 }], { dimensions: ["branch"], k: 10 });
 * // [{ field: "count", reason: "published count below k=10", count: 1 }]
 * ```
 */
export function checkSmallCells(rows: CellTable, check: SmallCellsCheck): SmallCellsProblem[] {
  validateCheck(check);
  const problems: SmallCellsProblem[] = [];
  if (rows.length === 0) return problems;
  const by = check.by ?? [];
  const dims = check.dimensions;
  const countColumn = check.count ?? "count";
  for (const column of [...by, ...dims, countColumn]) {
    if (!rows.some((row) => Object.hasOwn(row, column))) {
      problems.push({ field: column, reason: "no row carries this column", count: 1 });
    }
  }
  if (problems.length > 0) return problems;
  let small = 0;
  let notCounts = 0;
  let duplicates = 0;
  let unbalanced = 0;
  let recomputable = 0;
  const partitions = new Map<
    string,
    { levels: Map<string, number>[]; rows: Record<string, unknown>[] }
  >();
  for (const row of rows) {
    const value = row[countColumn];
    if (value !== null && value !== undefined) {
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
        notCounts++;
        continue;
      }
      if (value > 0 && value < check.k) small++;
    }
    const key = JSON.stringify(by.map((c) => row[c] ?? null));
    let partition = partitions.get(key);
    if (partition === undefined) {
      partitions.set(key, partition = { levels: dims.map(() => new Map()), rows: [] });
    }
    dims.forEach((c, d) => {
      const v = row[c] ?? null;
      if (v === TOTAL) return;
      const levelKey = JSON.stringify(v);
      if (!partition!.levels[d]!.has(levelKey)) {
        partition!.levels[d]!.set(levelKey, partition!.levels[d]!.size);
      }
    });
    partition.rows.push(row);
  }
  for (const partition of partitions.values()) {
    const hasTotals = partition.rows.some((row) => dims.some((c) => row[c] === TOTAL));
    if (!hasTotals) continue;
    const levels = partition.levels.map((m) => Math.max(1, m.size));
    const lattice = buildLattice(levels);
    const values = new Float64Array(lattice.size);
    const unknown = new Uint8Array(lattice.size);
    const seen = new Uint8Array(lattice.size);
    for (const row of partition.rows) {
      const coords = dims.map((c, d) => {
        const v = row[c] ?? null;
        return v === TOTAL ? levels[d]! : partition.levels[d]!.get(JSON.stringify(v))!;
      });
      const node = lattice.index(coords);
      if (seen[node]) {
        duplicates++;
        continue;
      }
      seen[node] = 1;
      const value = row[countColumn];
      if (value === null || value === undefined) unknown[node] = 1;
      else values[node] = value as number;
    }
    for (const eq of lattice.equations) {
      if (eq.some((member) => unknown[member])) continue;
      let sum = 0;
      for (let i = 1; i < eq.length; i++) sum += values[eq[i]!]!;
      if (sum !== values[eq[0]!]) unbalanced++;
    }
    recomputable += determinedNodes(lattice, unknown).size;
  }
  const counts = dims.join("+");
  if (small > 0) {
    problems.push({
      field: countColumn,
      reason: `published count below k=${check.k}`,
      count: small,
    });
  }
  if (notCounts > 0) {
    problems.push({
      field: countColumn,
      reason: "not a count (an integer >= 0 or null)",
      count: notCounts,
    });
  }
  if (duplicates > 0) {
    problems.push({ field: counts, reason: "group listed twice", count: duplicates });
  }
  if (unbalanced > 0) {
    problems.push({
      field: counts,
      reason: "totals do not add up (a withheld count can be recomputed)",
      count: unbalanced,
    });
  }
  if (recomputable > 0) {
    problems.push({
      field: counts,
      reason: "withheld count recomputable from the published counts and totals",
      count: recomputable,
    });
  }
  return problems;
}

/** The output schema of a protected table (for the checkpoint downstream). */
function outputSchema(options: SmallCellsProtection): z.ZodObject {
  const value = z.union([z.string(), z.number(), z.boolean(), z.null()]);
  const shape: Record<string, z.ZodType> = {};
  for (const column of [...(options.by ?? []), ...options.dimensions]) shape[column] = value;
  shape[options.count ?? "count"] = z.number().int().min(0).nullable();
  shape.suppressed = z.boolean();
  return z.object(shape);
}

/** Options of the `smallCells` operator. */
export interface SmallCellsOptions extends SmallCellsProtection, Omit<TaskOptions, "zone"> {}

/**
 * An operator that aggregates its upstream records into tables of counts and protects them with
 * the threshold rule and complementary suppression (see the module documentation). It runs in the
 * zone of its upstream (usually the enclave); put a `privacyCheckpoint` with the same `smallCells`
 * settings after it to let the table out.
 *
 * @example
 * ```ts ignore
 * import { smallCells } from "../mod.ts";
 * const protect = smallCells({
 *   after: ["extract"],
 *   by: ["month"],
 *   dimensions: ["branch", "age_band", "format"],
 *   sum: "count",
 *   k: 10,
 * });
 * ```
 */
export function smallCells(options: SmallCellsOptions): TaskSpec {
  const { by, dimensions, count, k, sum, method, mergeDimension, totals, ...taskOptions } = options;
  const protection: SmallCellsProtection = {
    dimensions,
    k,
    ...(by ? { by } : {}),
    ...(count ? { count } : {}),
    ...(sum ? { sum } : {}),
    ...(method ? { method } : {}),
    ...(mergeDimension ? { mergeDimension } : {}),
    ...(totals === undefined ? {} : { totals }),
  };
  validateSmallCells(protection);
  const spec: TaskSpec = {
    ...taskOptions,
    operator: "smallCells",
    zone: "inherit",
    run: async (ctx: TaskContext<unknown>) => {
      const input: Record<string, unknown>[] = [];
      for await (const record of upstreamRecords(ctx)) input.push(record);
      const { rows, stats } = protectCounts(input, protection);
      ctx.count("small_cells:protected", stats.rows, { k, ...stats });
      ctx.log.info(
        "Protected {cells} groups in {tables} tables with k={k}: {primary} below k and {complementary} complementary withheld",
        {
          cells: stats.cells,
          tables: stats.tables,
          k,
          primary: stats.primary,
          complementary: stats.complementary,
        },
      );
      async function* out(): AsyncIterable<Record<string, unknown>> {
        yield* rows;
      }
      return await emitRecords(ctx, out(), { asArray: inputsAreArrays(ctx), name: "cells" });
    },
  };
  return declareOutputSchema(spec, outputSchema(protection));
}
