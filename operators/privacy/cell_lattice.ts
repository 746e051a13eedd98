/**
 * The lattice of a table of counts and all its margins, and which withheld counts the published
 * ones determine.
 *
 * A table over dimensions d = 1..n with `levels[d]` levels each has one node per combination of
 * levels, where each coordinate may also be the total over its dimension: the cells (no total),
 * the one-way margins, ..., the grand total. Every node that totals a dimension equals the sum of
 * its children along it: `(branch = MAIN, age = total) = sum over age of (MAIN, age)`. These are
 * the additivity equations a reader of the published counts can use.
 *
 * With some counts withheld (unknown), a withheld count is *determined* when the equations fix its
 * value, whatever the other withheld counts are: when the unit vector of that unknown lies in the
 * row space of the equations restricted to the unknowns. {@link determinedNodes} decides this
 * exactly, by Gaussian elimination modulo two 26-bit primes (integer arithmetic that stays exact in
 * doubles). Modulo a prime an unknown can only look *more* determined than it is (never less,
 * unless the prime divides a minor of the system, which for both primes at once does not happen in
 * practice), so the answer errs on the side of withholding more.
 *
 * @module
 */

/** A table's lattice of cells and margins. */
export interface Lattice {
  /** Levels per dimension; coordinate `levels[d]` is the total over dimension d. */
  readonly levels: readonly number[];
  /** Number of nodes: the product of `levels[d] + 1`. */
  readonly size: number;
  /** The node of some coordinates. */
  index(coords: readonly number[]): number;
  /** The coordinates of a node. */
  coords(node: number): number[];
  /** Whether a node is a cell (no coordinate is a total). */
  isCell(node: number): boolean;
  /** Every additivity equation as `[parent, ...children]`: parent = sum of children. */
  readonly equations: readonly Int32Array[];
  /** The equations each node takes part in (indexes into `equations`). */
  readonly equationsOf: readonly (readonly number[])[];
}

/**
 * The largest lattice {@link buildLattice} accepts (cells and totals). The exact check is dense
 * linear algebra over the withheld counts: a table of 100 x 10 x 8 (10,000 nodes) takes seconds,
 * 200 x 10 x 10 (24,000) about five. Split larger tables with `by`, or coarsen a dimension.
 */
export const MAX_LATTICE_NODES = 50_000;

/**
 * Builds the lattice of a table with `levels[d]` levels per dimension.
 *
 * @example
 * ```ts
 * import { buildLattice } from "./cell_lattice.ts";
 * const lattice = buildLattice([2, 3]); // 2 rows, 3 columns
 * lattice.size; // 12: 6 cells, 2 row totals, 3 column totals, the grand total
 * lattice.equations.length; // 2 rows + 3 columns + 2 ways to the grand total = 7
 * ```
 */
export function buildLattice(levels: readonly number[]): Lattice {
  const strides: number[] = [];
  let size = 1;
  for (const l of levels) {
    if (!Number.isInteger(l) || l < 1) throw new RangeError("Lattice levels must be integers >= 1");
    strides.push(size);
    size *= l + 1;
  }
  if (size > MAX_LATTICE_NODES) {
    throw new RangeError(
      `Table too large for small-cell protection: ${size} cells and margins (at most ${MAX_LATTICE_NODES}); partition it with "by"`,
    );
  }
  const coords = (node: number): number[] => {
    const out: number[] = [];
    let rest = node;
    for (const l of levels) {
      out.push(rest % (l + 1));
      rest = Math.floor(rest / (l + 1));
    }
    return out;
  };
  const equations: Int32Array[] = [];
  const equationsOf: number[][] = Array.from({ length: size }, () => []);
  for (let node = 0; node < size; node++) {
    const c = coords(node);
    for (let d = 0; d < levels.length; d++) {
      const l = levels[d]!;
      if (c[d] !== l) continue;
      const eq = new Int32Array(l + 1);
      eq[0] = node;
      const base = node - l * strides[d]!;
      for (let v = 0; v < l; v++) eq[v + 1] = base + v * strides[d]!;
      const id = equations.length;
      equations.push(eq);
      for (const member of eq) equationsOf[member]!.push(id);
    }
  }
  return {
    levels,
    size,
    index: (c) => {
      let node = 0;
      for (let d = 0; d < levels.length; d++) node += c[d]! * strides[d]!;
      return node;
    },
    coords,
    isCell: (node) => coords(node).every((v, d) => v < levels[d]!),
    equations,
    equationsOf,
  };
}

/**
 * Fills every node of a lattice from its cells: each cell's count is added to the cell and to
 * every margin above it.
 *
 * @example
 * ```ts
 * import { buildLattice, fillLattice } from "./cell_lattice.ts";
 * const lattice = buildLattice([2, 2]);
 * const values = fillLattice(lattice, [[[0, 0], 3], [[1, 1], 4]]);
 * values[lattice.index([2, 2])]; // 7, the grand total
 * ```
 */
export function fillLattice(
  lattice: Lattice,
  cells: Iterable<[readonly number[], number]>,
): Float64Array {
  const values = new Float64Array(lattice.size);
  const n = lattice.levels.length;
  const subsets = 1 << n;
  const target = new Array<number>(n);
  for (const [c, count] of cells) {
    for (let mask = 0; mask < subsets; mask++) {
      for (let d = 0; d < n; d++) target[d] = mask & (1 << d) ? lattice.levels[d]! : c[d]!;
      values[lattice.index(target)]! += count;
    }
  }
  return values;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let f = 2; f * f <= n; f++) if (n % f === 0) return false;
  return true;
}

function primeBelow(n: number): number {
  let p = n - 1;
  while (!isPrime(p)) p--;
  return p;
}

// Below 2^26: a product of two residues stays below 2^52, exact in a double.
const P1 = primeBelow(2 ** 26);
const P2 = primeBelow(P1);

function inverse(a: number, p: number): number {
  let [oldR, r] = [a, p];
  let [oldS, s] = [1, 0];
  while (r !== 0) {
    const q = Math.floor(oldR / r);
    [oldR, r] = [r, oldR - q * r];
    [oldS, s] = [s, oldS - q * s];
  }
  return ((oldS % p) + p) % p;
}

/** An echelon basis of a row space modulo `p`: pivot column -> normalized row. */
class ModBasis {
  readonly rows = new Map<number, Float64Array>();
  constructor(readonly p: number, readonly width: number) {}

  /** Reduces `row` in place against the basis; returns the first column left nonzero, or -1. */
  reduce(row: Float64Array): number {
    const p = this.p;
    for (let c = 0; c < this.width; c++) {
      const f = row[c]!;
      if (f === 0) continue;
      const pivot = this.rows.get(c);
      if (pivot === undefined) return c;
      for (let j = c; j < this.width; j++) {
        const b = pivot[j]!;
        if (b !== 0) row[j] = (row[j]! - ((f * b) % p) + p) % p;
      }
    }
    return -1;
  }

  insert(row: Float64Array): void {
    const c = this.reduce(row);
    if (c === -1) return;
    const inv = inverse(row[c]!, this.p);
    for (let j = c; j < this.width; j++) if (row[j] !== 0) row[j] = (row[j]! * inv) % this.p;
    this.rows.set(c, row);
  }

  contains(unit: number): boolean {
    const row = new Float64Array(this.width);
    row[unit] = 1;
    return this.reduce(row) === -1;
  }
}

/**
 * The unknown nodes whose values the equations determine, given every other node's value.
 * `unknown[node]` is 1 for a withheld node. Only `candidates` (default: every unknown) are tested.
 *
 * @example
 * ```ts
 * import { buildLattice, determinedNodes } from "./cell_lattice.ts";
 * const lattice = buildLattice([2, 2]);
 * const unknown = new Uint8Array(lattice.size);
 * unknown[lattice.index([0, 0])] = 1; // one withheld cell: its row total gives it away
 * determinedNodes(lattice, unknown).size; // 1
 * unknown[lattice.index([0, 1])] = 1;
 * unknown[lattice.index([1, 0])] = 1;
 * unknown[lattice.index([1, 1])] = 1; // a 2x2 block: every row and column has two unknowns
 * determinedNodes(lattice, unknown).size; // 0
 * ```
 */
export function determinedNodes(
  lattice: Lattice,
  unknown: Uint8Array,
  candidates?: Iterable<number>,
): Set<number> {
  const column = new Map<number, number>();
  for (let node = 0; node < lattice.size; node++) if (unknown[node]) column.set(node, column.size);
  const found = new Set<number>();
  if (column.size === 0) return found;
  const tested = [...(candidates ?? column.keys())].filter((node) => unknown[node]);
  const rows: [number, number][][] = [];
  for (const eq of lattice.equations) {
    const entries: [number, number][] = [];
    for (let i = 0; i < eq.length; i++) {
      const col = column.get(eq[i]!);
      if (col !== undefined) entries.push([col, i === 0 ? 1 : -1]);
    }
    if (entries.length > 0) rows.push(entries);
  }
  for (const p of [P1, P2]) {
    const basis = new ModBasis(p, column.size);
    for (const entries of rows) {
      const row = new Float64Array(column.size);
      for (const [col, coefficient] of entries) row[col] = (row[col]! + coefficient + p) % p;
      basis.insert(row);
    }
    for (const node of tested) if (basis.contains(column.get(node)!)) found.add(node);
  }
  return found;
}
