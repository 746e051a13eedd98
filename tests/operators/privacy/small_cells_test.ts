/**
 * Small-cell protection: primary suppression below k, complementary suppression checked by brute
 * force (every withheld count of a protected table has at least two values consistent with all
 * published counts and totals, while primary suppression alone lets the brute force recover the
 * count), the exact solver against brute force on random patterns, merging, and the independent
 * verification the checkpoint runs.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  buildLattice,
  determinedNodes,
  fillLattice,
} from "../../../operators/privacy/cell_lattice.ts";
import {
  checkSmallCells,
  OTHER,
  protectCounts,
  suppress,
  TOTAL,
} from "../../../operators/privacy/small_cells.ts";

type Row = Record<string, unknown>;

/** Expands a grid of counts into one event record per count (rows x columns). */
function events(grid: number[][], rows: string[], cols: string[]): Row[] {
  const out: Row[] = [];
  grid.forEach((line, r) =>
    line.forEach((n, c) => {
      for (let i = 0; i < n; i++) out.push({ branch: rows[r], format: cols[c] });
    })
  );
  return out;
}

const ROWS = ["MAIN", "EAST", "WEST"];
const COLS = ["book", "dvd", "cd"];

/** Count of a (branch, format) node in a protected table (`undefined`: not listed, i.e. 0). */
function cellOf(rows: Row[], branch: string, format: string): Row | undefined {
  return rows.find((r) => r.branch === branch && r.format === format);
}

/**
 * Every solution in non-negative integers of a 2-way table whose withheld cells are unknown and
 * whose published row, column and grand totals are known: the set of values each withheld cell
 * takes over all solutions. Independent of the code under test (plain backtracking, row by row).
 */
function feasibleValues(rows: Row[], k: number): Map<string, Set<number>> {
  const total = (branch: string, format: string) => cellOf(rows, branch, format)?.count;
  for (const b of [...ROWS, TOTAL]) {
    for (const f of COLS.concat(TOTAL)) {
      if (b === TOTAL || f === TOTAL) {
        assert.notEqual(total(b, f), null, `total ${b}/${f} is published in this scenario`);
      }
    }
  }
  const unknown: [number, number][] = [];
  const grid = ROWS.map((b, r) =>
    COLS.map((f, c) => {
      const v = total(b, f);
      if (v === null) unknown.push([r, c]);
      return v === null ? -1 : (v as number | undefined) ?? 0;
    })
  );
  const rowTotal = ROWS.map((b) => total(b, TOTAL) as number);
  const colTotal = COLS.map((f) => total(TOTAL, f) as number);
  const seen = new Map<string, Set<number>>(unknown.map(([r, c]) => [`${r},${c}`, new Set()]));
  const work = grid.map((line) => [...line]);
  const solve = (i: number) => {
    if (i === unknown.length) {
      for (let c = 0; c < COLS.length; c++) {
        if (work.reduce((sum, line) => sum + line[c]!, 0) !== colTotal[c]) return;
      }
      for (const [r, c] of unknown) seen.get(`${r},${c}`)!.add(work[r]![c]!);
      return;
    }
    const [r, c] = unknown[i]!;
    const lastInRow = !unknown.slice(i + 1).some(([r2]) => r2 === r);
    const known = work[r]!.reduce((sum, v, c2) => sum + (c2 === c || v < 0 ? 0 : v), 0);
    const range = lastInRow
      ? [rowTotal[r]! - known]
      : Array.from({ length: rowTotal[r]! - known + 1 }, (_, v) => v);
    for (const v of range) {
      if (v < 0 || v > colTotal[c]!) continue;
      work[r]![c] = v;
      solve(i + 1);
    }
    work[r]![c] = -1;
  };
  solve(0);
  void k;
  return seen;
}

const GRID = [
  [2, 14, 9],
  [11, 7, 13],
  [6, 10, 12],
];

Deno.test("smallCells: every count below k is withheld, cells and totals alike; zero is not", () => {
  const { rows, stats } = protectCounts(events(GRID, ROWS, COLS), {
    dimensions: ["branch", "format"],
    k: 5,
  });
  assert.equal(stats.primary, 1);
  assert.ok(stats.complementary >= 3);
  for (const row of rows) {
    const n = row.count;
    assert.ok(n === null || (typeof n === "number" && n >= 5), JSON.stringify(row));
    assert.equal(row.suppressed, n === null);
  }
  assert.equal(cellOf(rows, "MAIN", "book")?.count, null);
  assert.equal(cellOf(rows, TOTAL, TOTAL)?.count, 84);
  // A small total is withheld too.
  const thin = protectCounts(events([[1, 1], [20, 20]], ["A", "B"], ["x", "y"]), {
    dimensions: ["branch", "format"],
    k: 5,
  });
  assert.equal(cellOf(thin.rows, "A", TOTAL)?.count, null);
  // Zero cells are simply absent (0), never withheld.
  assert.equal(cellOf(thin.rows, "C", "x"), undefined);
  assert.deepEqual(checkSmallCells(thin.rows, { dimensions: ["branch", "format"], k: 5 }), []);
});

Deno.test("smallCells: a withheld cell cannot be recomputed from the row and column totals", () => {
  const { rows } = protectCounts(events(GRID, ROWS, COLS), {
    dimensions: ["branch", "format"],
    k: 5,
  });
  const feasible = feasibleValues(rows, 5);
  assert.ok(feasible.size >= 4, `withheld: ${[...feasible.keys()]}`);
  for (const [cell, values] of feasible) {
    assert.ok(values.size >= 2, `cell ${cell} is recomputable: only ${[...values]}`);
  }
  // The true value is among them (the brute force is sound).
  assert.ok(feasible.get("0,0")!.has(2));

  // Control: with primary suppression only, the brute force recovers the small cell exactly.
  const naive = rows.map((r) => ({ ...r }));
  for (const r of naive) {
    if (r.suppressed && !(r.branch === "MAIN" && r.format === "book")) {
      const b = ROWS.indexOf(r.branch as string);
      const f = COLS.indexOf(r.format as string);
      r.count = GRID[b]![f];
      r.suppressed = false;
    }
  }
  const recovered = feasibleValues(naive, 5);
  assert.deepEqual([...recovered.get("0,0")!], [2]);
  assert.deepEqual(checkSmallCells(naive, { dimensions: ["branch", "format"], k: 5 }), [
    {
      field: "branch+format",
      reason: "withheld count recomputable from the published counts and totals",
      count: 1,
    },
  ]);
});

Deno.test("cell lattice: the exact solver agrees with brute force on random withheld patterns", () => {
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let trial = 0; trial < 60; trial++) {
    const grid = ROWS.map(() => COLS.map(() => 1 + Math.floor(rand() * 5)));
    const withheld = ROWS.flatMap((_, r) => COLS.map((_, c) => [r, c] as [number, number]))
      .filter(() => rand() < 0.45);
    const rows: Row[] = [];
    const rowSum = grid.map((line) => line.reduce((a, b) => a + b, 0));
    const colSum = COLS.map((_, c) => grid.reduce((a, line) => a + line[c]!, 0));
    grid.forEach((line, r) =>
      line.forEach((n, c) => {
        const hidden = withheld.some(([r2, c2]) => r2 === r && c2 === c);
        rows.push({ branch: ROWS[r], format: COLS[c], count: hidden ? null : n });
      })
    );
    ROWS.forEach((b, r) => rows.push({ branch: b, format: TOTAL, count: rowSum[r] }));
    COLS.forEach((f, c) => rows.push({ branch: TOTAL, format: f, count: colSum[c] }));
    rows.push({ branch: TOTAL, format: TOTAL, count: rowSum.reduce((a, b) => a + b, 0) });
    const feasible = feasibleValues(rows, 2);
    const lattice = buildLattice([3, 3]);
    const unknown = new Uint8Array(lattice.size);
    for (const [r, c] of withheld) unknown[lattice.index([r, c])] = 1;
    const solved = determinedNodes(lattice, unknown);
    for (const [r, c] of withheld) {
      const unique = feasible.get(`${r},${c}`)!.size === 1;
      assert.equal(
        solved.has(lattice.index([r, c])),
        unique,
        `trial ${trial}: cell ${r},${c} of ${JSON.stringify(grid)} withheld ${
          JSON.stringify(withheld)
        }`,
      );
    }
  }
});

Deno.test("cell lattice: a bridge between two protected blocks is found (the line rule misses it)", () => {
  // Two 2x2 blocks of withheld cells joined by one withheld cell: every row and column holds two
  // or more withheld cells, yet the joining cell equals a combination of totals.
  const lattice = buildLattice([4, 4]);
  const unknown = new Uint8Array(lattice.size);
  const pattern = [[0, 0], [0, 1], [1, 0], [1, 1], [2, 2], [2, 3], [3, 2], [3, 3], [0, 2]];
  for (const c of pattern) unknown[lattice.index(c)] = 1;
  for (const eq of lattice.equations) {
    const withheld = [...eq].filter((node) => unknown[node]).length;
    assert.ok(withheld !== 1, "no single equation gives a cell away");
  }
  assert.deepEqual(
    [...determinedNodes(lattice, unknown)].map((n) => lattice.coords(n)),
    [[0, 2]],
  );
  // suppress() mends it: a table with small counts exactly on that pattern.
  const values = fillLattice(
    lattice,
    [0, 1, 2, 3].flatMap((r) =>
      [0, 1, 2, 3].map((c) =>
        [[r, c], pattern.some(([r2, c2]) => r2 === r && c2 === c) ? 2 : 20] as [number[], number]
      )
    ),
  );
  const { withheld } = suppress(lattice, values, 3);
  assert.equal(determinedNodes(lattice, withheld).size, 0);
});

Deno.test("smallCells: three dimensions by month, with totals, verified by the checkpoint check", () => {
  let seed = 3;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const input: Row[] = [];
  const branches = ["4", "5", "6", "7"];
  const bands = ["0-17", "18-34", "35-64", "65+"];
  const formats = ["book", "dvd", "cd"];
  for (const month of ["2026-01", "2026-02"]) {
    for (let i = 0; i < 900; i++) {
      input.push({
        month,
        branch: branches[Math.floor(rand() * rand() * 4)],
        age_band: bands[Math.floor(rand() * rand() * 4)],
        format: formats[Math.floor(rand() * rand() * 3)],
      });
    }
  }
  const check = { by: ["month"], dimensions: ["branch", "age_band", "format"], k: 10 };
  const { rows, stats } = protectCounts(input, check);
  assert.equal(stats.tables, 2);
  assert.ok(stats.primary > 0 && stats.complementary > 0, JSON.stringify(stats));
  assert.deepEqual(checkSmallCells(rows, check), []);
  for (const month of ["2026-01", "2026-02"]) {
    const grand = rows.find((r) =>
      r.month === month && r.branch === TOTAL && r.age_band === TOTAL && r.format === TOTAL
    );
    assert.equal(grand?.count, 900);
  }
  // Published counts add up to the published totals wherever nothing is withheld.
  const published = rows.filter((r) => r.count !== null && r.branch !== TOTAL);
  assert.ok(published.length > 0);
  // Tampering is caught: publishing one withheld count, or leaving a withheld row out.
  const withheldRow = rows.findIndex((r) => r.suppressed && r.branch !== TOTAL);
  const leaked = rows.map((r, i) => i === withheldRow ? { ...r, count: 12, suppressed: false } : r);
  assert.ok(checkSmallCells(leaked, check).length > 0);
  const omitted = rows.filter((_, i) => i !== withheldRow);
  assert.ok(checkSmallCells(omitted, check).length > 0);
  // A withheld count left out where nothing else in its lines is withheld: totals do not add up.
  const lone = [
    { month: "m", branch: "A", age_band: "x", format: "f", count: 12 },
    { month: "m", branch: TOTAL, age_band: "x", format: "f", count: 15 },
    { month: "m", branch: "A", age_band: TOTAL, format: "f", count: 12 },
    { month: "m", branch: "A", age_band: "x", format: TOTAL, count: 12 },
  ];
  assert.deepEqual(checkSmallCells(lone, check).map((p) => p.reason), [
    "totals do not add up (a withheld count can be recomputed)",
  ]);
  const small = rows.map((r, i) => i === withheldRow ? { ...r, count: 3, suppressed: false } : r);
  assert.ok(
    checkSmallCells(small, check).some((p) => p.reason === "published count below k=10"),
  );
  // Without totals the same cells are withheld.
  const bare = protectCounts(input, { ...check, totals: false });
  assert.ok(bare.rows.every((r) => r.branch !== TOTAL && r.age_band !== TOTAL));
  const cellsWithTotals = rows.filter((r) =>
    r.branch !== TOTAL && r.age_band !== TOTAL && r.format !== TOTAL
  );
  assert.deepEqual(bare.rows, cellsWithTotals);
});

Deno.test("smallCells merge: small cells of a line are pooled into (other), the rest suppressed", () => {
  const grid = [
    [30, 3, 2, 25],
    [40, 12, 11, 15],
  ];
  const cols = ["book", "dvd", "cd", "magazine"];
  const { rows, stats } = protectCounts(events(grid, ["MAIN", "EAST"], cols), {
    dimensions: ["branch", "format"],
    k: 10,
    method: "merge",
    mergeDimension: "format",
  });
  // MAIN's dvd (3) and cd (2) pool to 5, still below 10: the smallest other cell (25) joins.
  assert.equal(stats.merged, 3);
  const other = rows.find((r) => r.branch === "MAIN" && r.format === OTHER);
  assert.equal(other?.count, 30);
  assert.equal(cellOf(rows, "MAIN", "dvd"), undefined);
  assert.equal(cellOf(rows, "EAST", "dvd")?.count, 12);
  assert.deepEqual(checkSmallCells(rows, { dimensions: ["branch", "format"], k: 10 }), []);
  for (const row of rows) {
    assert.ok(row.count === null || (row.count as number) >= 10, JSON.stringify(row));
  }
  assert.throws(
    () => protectCounts([], { dimensions: ["branch"], k: 10, method: "merge" }),
    /mergeDimension/,
  );
});

Deno.test("smallCells: bad settings and bad input are refused without values", () => {
  assert.throws(() => protectCounts([], { dimensions: [], k: 10 }), /dimensions/);
  assert.throws(() => protectCounts([], { dimensions: ["a"], k: 1 }), /k must be/);
  assert.throws(
    () => protectCounts([], { dimensions: ["a"], by: ["a"], k: 10 }),
    /different columns/,
  );
  assert.throws(
    () => protectCounts([{ a: "x", n: "lots" }], { dimensions: ["a"], sum: "n", k: 10 }),
    /"n" of record 1 is not a count/,
  );
  assert.throws(
    () => protectCounts([{ a: TOTAL }], { dimensions: ["a"], k: 10 }),
    /"a" of record 1 equals the marker/,
  );
  assert.throws(
    () => protectCounts([{ a: { nested: "SENTINELVALUE" } }], { dimensions: ["a"], k: 10 }),
    (error: Error) => !error.message.includes("SENTINELVALUE"),
  );
  assert.deepEqual(checkSmallCells([{ branch: "A", n: 12 }], { dimensions: ["branch"], k: 10 }), [
    { field: "count", reason: "no row carries this column", count: 1 },
  ]);
});
