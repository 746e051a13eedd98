/**
 * Privacy checkpoint checks: the last line of defence before records leave
 * for a discovery layer or warehouse. Checks each record and accumulates
 * value-free violations into a verdict. Fails closed.
 *
 * @module
 */

import type { z } from "zod";
import { createFieldNamer, pathKeys, unnamedKey } from "./field_names.ts";
import { describeZodIssues, formatCounts, strictSchema, typeName } from "./gate.ts";
import {
  createDetectors,
  createPiiStripper,
  createRecordScanner,
  type DetectorOptions,
  isPlainObject,
  isToken,
  joinPath,
  piiKeyMatcher,
  type PiiKeyOptions,
} from "./pii.ts";
import { schemaFields } from "./schema_paths.ts";
import { compileFastSchema } from "./fast_schema.ts";
import { type CellTable, checkSmallCells, type SmallCellsCheck } from "./small_cells.ts";

/** Names of checkpoint checks. Detector checks are `detector:<detector name>`. */
export type CheckName =
  | "upstream_tag"
  | "record"
  | "tokenized"
  | "allowed_fields"
  | "pii_key"
  | "schema"
  | "quasi_identifiers"
  | "small_cells"
  | `detector:${string}`;

/** One violation within one record. */
export interface CheckpointFinding {
  /** The check that failed. */
  check: CheckName;
  /**
   * Field path, `(record)` for the record itself, the tag for `upstream_tag`, the columns for
   * `quasi_identifiers` and `small_cells`. Keys that are not known safe are shown by position.
   */
  field: string;
  /** Extra value-free detail, e.g. `required`, `no record carries this path`. */
  reason?: string;
}

/** An accumulated violation: a finding and how many times it occurred. */
export interface CheckpointViolation extends CheckpointFinding {
  /** Occurrences over all records (a record may count more than once for `[]` paths). */
  count: number;
  /**
   * `record`: found in records, which quarantine can withhold one by one. `table`: about the
   * whole output (an upstream tag, a configured path no record carries, small cells), which
   * fails the checkpoint in any mode.
   */
  scope: "record" | "table";
}

/** Options of the quasi-identifier check (k-anonymity of a record-level output). */
export interface QuasiIdentifierCheck {
  /** Top-level columns whose combined values form a record's equivalence class. */
  columns: readonly string[];
  /** Each class must hold at least `k` records (or `k` individuals, with `individual`). */
  k: number;
  /**
   * A top-level column naming whom a record is about, such as `patron_token`. Each class must then
   * hold `k` different values of it, not only `k` records: ten loans of one patron are one person.
   * Use it for event-level outputs, where one individual has many records.
   */
  individual?: string;
}

/** Result of checking one record. */
export interface CheckpointRecordResult {
  /** Whether the record passed every check. */
  ok: boolean;
  /** Position of the record. */
  position: number;
  /** What failed, deduplicated. */
  findings: CheckpointFinding[];
}

/** The checkpoint verdict. */
export interface CheckpointVerdict {
  /** `true` only when no violation was found (including upstream tags). */
  passed: boolean;
  /** Records checked. */
  records: number;
  /**
   * Records with at least one record-level violation: what quarantine withholds (those in a
   * quasi-identifier class smaller than k included).
   */
  failedRecords: number;
  /** Violations, largest count first. */
  violations: CheckpointViolation[];
}

/** Options of {@link createCheckpoint}. */
export interface CheckpointOptions {
  /**
   * Paths (`patron_id`, `patron.token`, `holds[].patron_id`) that must hold a
   * token (64 lowercase hex characters) or `null`. Absent fields pass.
   */
  tokenized?: readonly string[];
  /**
   * A zod object schema every record must satisfy; it is made deeply strict,
   * so undeclared fields fail as `allowed_fields`, other issues as `schema`.
   */
  schema?: z.ZodObject;
  /**
   * Paths allowed in output. Listing a path allows its whole subtree; listing
   * `holds[].id` allows `holds` only down to `id`.
   */
  allowFields?: readonly string[];
  /** Which detectors run on every string value (all on by default). */
  detectors?: DetectorOptions;
  /**
   * PII key names that must not appear with a non-null value, except at
   * `tokenized` paths. Defaults to the PII stripper defaults; `{ keys: [] }`
   * disables the check.
   */
  piiKeys?: PiiKeyOptions;
  /** Tags of the upstream output; `pii:raw` fails the checkpoint at once. */
  upstreamTags?: readonly string[];
  /**
   * More key names that messages may show, beyond those of `schema`, `allowFields`, `tokenized`
   * and the PII-key list: for example the keys of the upstream gate's schema. Any other key is
   * reported by position (`{key 2}`).
   */
  knownFields?: Iterable<string>;
  /**
   * Fail (as a table-level violation) each `tokenized` or `allowFields` path that no record
   * carries, when there are records: a typo must not pass as "tokenized". Default `true`.
   */
  requireCarriedPaths?: boolean;
  /** Paths exempt from `requireCarriedPaths`: a schema lets records lack them. */
  mayBeAbsent?: Iterable<string>;
  /** Fails records in an equivalence class (over `columns`) smaller than `k`. */
  quasiIdentifiers?: QuasiIdentifierCheck;
  /** Verifies an aggregate output: no published count below k, no recomputable suppressed cell. */
  smallCells?: SmallCellsCheck;
}

/** A privacy checkpoint. */
export interface Checkpoint {
  /** Whether an upstream tag already failed the checkpoint (records are then not scanned). */
  readonly failedEarly: boolean;
  /** Checks one record and accumulates its violations. */
  check(record: unknown, position: number): CheckpointRecordResult;
  /** The verdict so far (table-level checks look at every record checked so far). */
  verdict(): CheckpointVerdict;
  /**
   * After the last `check`: whether a record that passed `check` falls in a quasi-identifier
   * class smaller than k (it is then withheld with the finding below). Always `false` without
   * `quasiIdentifiers`.
   */
  inSmallClass(record: unknown): boolean;
  /** The finding recorded for a record for which {@link Checkpoint.inSmallClass} is true. */
  readonly smallClassFinding: CheckpointFinding | undefined;
}

/** The upstream tag that fails a checkpoint immediately. */
export const RAW_PII_TAG = "pii:raw";

const RECORD_PATH = "(record)";

// Inside `for...in`, V8 answers `hasOwnProperty.call(object, key)` from the enumeration itself
// (about 4x faster per key than `Object.hasOwn`, which it does not special-case there).
const hasOwnProperty = Object.prototype.hasOwnProperty;

/**
 * Creates a privacy checkpoint. For each record it checks, in one pass where
 * possible:
 *
 * - `record`: the record is a plain object (anything else fails, unscanned);
 * - `tokenized`: each `tokenized` path holds a token or `null`;
 * - `allowed_fields`: no field outside `allowFields` (and, with a schema,
 *   none the strict schema rejects as unknown);
 * - `schema`: the strict schema accepts the record;
 * - `pii_key`: no PII-named key holds a non-null value outside `tokenized`;
 * - `detector:<name>`: no detector fires on any string value or key at any
 *   depth (e-mail, phone, barcode, birth-date fields, patron-id patterns);
 * - `quasi_identifiers` (when asked): among the records that pass the checks
 *   above, every class of equal values over the listed columns holds at
 *   least k records.
 *
 * Table-level checks fail the verdict as a whole: an upstream tag `pii:raw`
 * (before any record is seen), a `tokenized` or `allowFields` path that no
 * record carries, and (when asked) small cells in an aggregate output.
 *
 * Messages name a key only when it is known safe (declared in `schema`,
 * `allowFields`, `tokenized`, `knownFields`, or a PII key); any other key is
 * shown by its position, `{key 2}`.
 *
 * @example
 * ```ts
 * import { createCheckpoint, formatCheckpointFailure } from "./checkpoint_checks.ts";
 * const checkpoint = createCheckpoint({
 *   tokenized: ["patron_id"],
 *   allowFields: ["patron_id", "item_id", "notes"],
 * });
 * checkpoint.check({ patron_id: "12345", item_id: "i1", notes: "jo@example.org" }, 0);
 * const verdict = checkpoint.verdict();
 * verdict.passed; // false
 * formatCheckpointFailure(verdict);
 * // "Privacy checkpoint failed: detector:email: notes (1); tokenized: patron_id (1)"
 * ```
 */
export function createCheckpoint(options: CheckpointOptions = {}): Checkpoint {
  const tokenizedPaths = [...new Set(options.tokenized ?? [])];
  const tokenizedSet = new Set(tokenizedPaths);
  const tokenizedSegments = tokenizedPaths.map((path) => ({ path, segments: parsePath(path) }));
  const qi = options.quasiIdentifiers;
  if (qi !== undefined) validateQuasiIdentifiers(qi);
  const namer = createFieldNamer({
    knownKeys: [
      ...(options.knownFields ?? []),
      ...(options.schema === undefined ? [] : schemaFields(options.schema).names),
      ...pathKeys(options.allowFields ?? []),
      ...pathKeys(tokenizedPaths),
      ...(qi?.columns ?? []),
      ...(qi?.individual === undefined ? [] : [qi.individual]),
      ...(options.smallCells === undefined ? [] : smallCellColumns(options.smallCells)),
    ],
    isPiiKey: piiKeyMatcher(options.piiKeys ?? {}),
  });
  const scanner = createRecordScanner(createDetectors(options.detectors ?? {}), namer);
  const piiStripper = createPiiStripper(options.piiKeys ?? {}, namer);
  const strict = options.schema === undefined ? undefined : strictSchema(options.schema);
  // Vouches only for records zod accepts too; zod checks (and describes) every other one.
  const fast = strict === undefined ? undefined : compileFastSchema(strict);
  const allow = options.allowFields === undefined ? undefined : buildAllowList(options.allowFields);

  // Configured paths no record has carried yet (emptied as records carry them).
  const exempt = new Set(options.mayBeAbsent ?? []);
  const requireCarried = options.requireCarriedPaths ?? true;
  const unseenTokenized = new Map(
    requireCarried
      ? tokenizedSegments.filter((t) => !exempt.has(t.path)).map((t) => [t.path, t])
      : [],
  );
  const unseenAllowed = new Set(
    requireCarried ? (options.allowFields ?? []).filter((p) => !exempt.has(p)) : [],
  );

  const counts = new Map<string, CheckpointViolation>();
  let records = 0;
  let failedRecords = 0;

  function add(finding: CheckpointFinding, scope: "record" | "table" = "record"): void {
    const key = `${finding.check}\u0000${finding.field}\u0000${finding.reason ?? ""}`;
    const existing = counts.get(key);
    if (existing) existing.count++;
    else counts.set(key, { ...finding, count: 1, scope });
  }

  const earlyFindings: CheckpointFinding[] = [];
  for (const tag of options.upstreamTags ?? []) {
    if (tag.trim().toLowerCase() === RAW_PII_TAG) {
      earlyFindings.push({ check: "upstream_tag", field: RAW_PII_TAG });
      break;
    }
  }
  for (const finding of earlyFindings) add(finding, "table");
  const failedEarly = earlyFindings.length > 0;

  function checkTokenized(record: Record<string, unknown>, findings: CheckpointFinding[]): void {
    for (const { path, segments } of tokenizedSegments) {
      const bad = countNonTokens(record, segments, 0);
      for (let i = 0; i < bad; i++) findings.push({ check: "tokenized", field: path });
    }
    if (unseenTokenized.size > 0) {
      for (const [path, { segments }] of unseenTokenized) {
        if (carries(record, segments, 0)) unseenTokenized.delete(path);
      }
    }
  }

  // Quasi-identifier classes, counted over the records that pass every other check: records,
  // and with `individual` the distinct individuals among them (a class's size is then theirs).
  const classes = new Map<string, { records: number; individuals?: Set<unknown> }>();
  const qiField = qi?.columns.join("+") ?? "";
  const smallClassFinding: CheckpointFinding | undefined = qi === undefined ? undefined : {
    check: "quasi_identifiers",
    field: qiField,
    reason: qi.individual === undefined
      ? `class smaller than k=${qi.k}`
      : `class of fewer than k=${qi.k} distinct ${qi.individual}`,
  };
  const classKey = (record: Record<string, unknown>): string =>
    JSON.stringify(qi!.columns.map((column) => record[column] ?? null));
  const classSize = (c: { records: number; individuals?: Set<unknown> }): number =>
    c.individuals === undefined ? c.records : c.individuals.size;

  // Small cells: the aggregate table, kept whole (aggregates are small by nature).
  const table: CellTable | undefined = options.smallCells === undefined ? undefined : [];

  const keyCache = new Map<string, { name: string | undefined; pii: boolean }>();
  function keyInfo(key: string): { name: string | undefined; pii: boolean } {
    let found = keyCache.get(key);
    if (found === undefined) {
      const pii = piiStripper.isPiiKey(key);
      found = { name: pii || namer.known(key) ? key : undefined, pii };
      if (keyCache.size >= 4096) keyCache.clear();
      keyCache.set(key, found);
    }
    return found;
  }

  function walkFields(
    value: unknown,
    path: string,
    state: AllowState,
    findings: CheckpointFinding[],
  ): void {
    if (Array.isArray(value)) {
      const elementPath = `${path}[]`;
      const elementState = state === "partial" ? allowStateOf(allow, elementPath) : state;
      if (elementState === "denied" && state === "partial") {
        findings.push({ check: "allowed_fields", field: elementPath });
      }
      if (state === "partial" && value.length > 0) unseenAllowed.delete(elementPath);
      for (const element of value) walkFields(element, elementPath, elementState, findings);
      return;
    }
    if (!isPlainObject(value)) {
      if (state === "partial" && value !== null && value !== undefined && path !== "") {
        // Only sub-paths are allowed here, but a scalar sits at this path.
        findings.push({ check: "allowed_fields", field: path });
      }
      return;
    }
    let position = 0;
    for (const key in value) {
      if (!hasOwnProperty.call(value, key)) continue;
      position++;
      const info = keyInfo(key);
      const child = joinPath(path, info.name ?? unnamedKey(position));
      const inner = value[key];
      let childState = state;
      if (state === "partial") {
        // A key not known safe is never on the allow list: `{key 2}` matches no listed path.
        childState = info.name === undefined ? "denied" : allowStateOf(allow, child);
        if (childState === "denied") findings.push({ check: "allowed_fields", field: child });
        else if (inner !== undefined && unseenAllowed.size > 0) unseenAllowed.delete(child);
      }
      if (inner === null || inner === undefined) continue;
      if (info.pii && !tokenizedSet.has(child)) {
        findings.push({ check: "pii_key", field: child });
        continue;
      }
      if (typeof inner === "object" || childState === "partial") {
        walkFields(inner, child, childState, findings);
      }
    }
  }

  return {
    failedEarly,
    smallClassFinding,
    check(record: unknown, position: number): CheckpointRecordResult {
      records++;
      if (failedEarly) {
        failedRecords++;
        return { ok: false, position, findings: [...earlyFindings] };
      }
      const findings: CheckpointFinding[] = [];
      if (!isPlainObject(record)) {
        findings.push({
          check: "record",
          field: RECORD_PATH,
          reason: `expected object, received ${typeName(record)}`,
        });
      } else {
        checkTokenized(record, findings);
        walkFields(record, "", allow === undefined ? "allowed" : "partial", findings);
        if (strict !== undefined && !fast?.accepts(record)) {
          const parsed = strict.safeParse(record);
          if (!parsed.success) {
            for (const issue of describeZodIssues(parsed.error.issues, record, namer)) {
              if (issue.reason === "unexpected field") {
                findings.push({ check: "allowed_fields", field: issue.path });
              } else {
                findings.push({ check: "schema", field: issue.path, reason: issue.reason });
              }
            }
          }
        }
        for (const finding of scanner.scan(record)) {
          findings.push({ check: `detector:${finding.detector}`, field: finding.path });
        }
        if (table !== undefined) table.push(record);
      }
      const unique = dedupeAllowed(findings);
      for (const finding of unique) add(finding);
      if (unique.length > 0) failedRecords++;
      else if (qi !== undefined) {
        const row = record as Record<string, unknown>;
        const key = classKey(row);
        let found = classes.get(key);
        if (found === undefined) {
          found = { records: 0 };
          if (qi.individual !== undefined) found.individuals = new Set();
          classes.set(key, found);
        }
        found.records++;
        if (qi.individual !== undefined) found.individuals!.add(row[qi.individual] ?? null);
      }
      return { ok: unique.length === 0, position, findings: unique };
    },
    inSmallClass(record: unknown): boolean {
      if (qi === undefined || !isPlainObject(record)) return false;
      const found = classes.get(classKey(record));
      return found !== undefined && classSize(found) < qi.k;
    },
    verdict(): CheckpointVerdict {
      const all = [...counts.values()].map((v) => ({ ...v }));
      let withheld = failedRecords;
      if (qi !== undefined && smallClassFinding !== undefined) {
        let small = 0;
        for (const c of classes.values()) if (classSize(c) < qi.k) small += c.records;
        if (small > 0) all.push({ ...smallClassFinding, count: small, scope: "record" });
        withheld += small;
      }
      if (records > 0 && !failedEarly) {
        for (const path of unseenTokenized.keys()) {
          all.push({
            check: "tokenized",
            field: path,
            reason: NOT_CARRIED,
            count: 1,
            scope: "table",
          });
        }
        for (const path of unseenAllowed) {
          all.push({
            check: "allowed_fields",
            field: path,
            reason: NOT_CARRIED,
            count: 1,
            scope: "table",
          });
        }
      }
      if (table !== undefined && options.smallCells !== undefined && !failedEarly) {
        for (const v of checkSmallCells(table, options.smallCells)) {
          all.push({ check: "small_cells", ...v, scope: "table" });
        }
      }
      const violations = all.sort((a, b) =>
        b.count - a.count || compareText(violationLabel(a), violationLabel(b))
      );
      return { passed: violations.length === 0, records, failedRecords: withheld, violations };
    },
  };
}

const NOT_CARRIED = "no record carries this path";

/** Throws a `TypeError` naming the first bad setting of a quasi-identifier check. */
export function validateQuasiIdentifiers(qi: QuasiIdentifierCheck): void {
  if (!Array.isArray(qi.columns) || qi.columns.length === 0) {
    throw new TypeError(
      "Checkpoint misconfigured: quasiIdentifiers.columns needs at least one column",
    );
  }
  if (!Number.isInteger(qi.k) || qi.k < 2) {
    throw new TypeError("Checkpoint misconfigured: quasiIdentifiers.k must be an integer >= 2");
  }
  if (
    qi.individual !== undefined &&
    (typeof qi.individual !== "string" || qi.individual === "" ||
      qi.columns.includes(qi.individual))
  ) {
    throw new TypeError(
      "Checkpoint misconfigured: quasiIdentifiers.individual must be a column name not among its columns",
    );
  }
}

function smallCellColumns(check: SmallCellsCheck): string[] {
  return [...(check.by ?? []), ...check.dimensions, check.count ?? "count"];
}

/**
 * Formats a verdict as a one-line, value-free message.
 *
 * @example
 * ```ts
 * import { formatCheckpointFailure } from "./checkpoint_checks.ts";
 * formatCheckpointFailure({
 *   passed: false, records: 5, failedRecords: 3,
 *   violations: [
 *     { check: "tokenized", field: "patron_id", count: 2, scope: "record" },
 *     { check: "detector:email", field: "notes", count: 1, scope: "record" },
 *   ],
 * });
 * // "Privacy checkpoint failed: tokenized: patron_id (2); detector:email: notes (1)"
 * ```
 */
export function formatCheckpointFailure(verdict: CheckpointVerdict, limit = 20): string {
  if (verdict.passed) return `Privacy checkpoint passed: ${verdict.records} records`;
  const counts: Record<string, number> = {};
  for (const violation of verdict.violations) {
    const label = violationLabel(violation);
    counts[label] = (counts[label] ?? 0) + violation.count;
  }
  return `Privacy checkpoint failed: ${formatCounts(counts, limit)}`;
}

function violationLabel(finding: CheckpointFinding): string {
  const base = `${finding.check}: ${finding.field}`;
  return finding.reason === undefined ? base : `${base}: ${finding.reason}`;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// Keeps `[]`-path duplicates for tokenized values and detector hits (they
// count occurrences), but reports each allowed_fields/pii_key/schema path once
// per record, however many array elements carry it.
function dedupeAllowed(findings: CheckpointFinding[]): CheckpointFinding[] {
  if (findings.length < 2) return findings;
  const seen = new Set<string>();
  const out: CheckpointFinding[] = [];
  for (const finding of findings) {
    if (finding.check !== "tokenized" && !finding.check.startsWith("detector:")) {
      const key = `${finding.check}\u0000${finding.field}\u0000${finding.reason ?? ""}`;
      if (seen.has(key)) continue;
      seen.add(key);
    }
    out.push(finding);
  }
  return out;
}

type AllowState = "allowed" | "partial" | "denied";

interface AllowList {
  exact: Set<string>;
  prefixes: Set<string>;
}

function buildAllowList(paths: readonly string[]): AllowList {
  const exact = new Set<string>();
  const prefixes = new Set<string>();
  for (const path of paths) {
    exact.add(path);
    for (let i = 0; i < path.length; i++) {
      const char = path[i];
      if (char === ".") prefixes.add(path.slice(0, i));
      else if (char === "[" && path[i + 1] === "]") {
        prefixes.add(path.slice(0, i));
        if (i + 2 < path.length) prefixes.add(path.slice(0, i + 2));
      }
    }
  }
  return { exact, prefixes };
}

function allowStateOf(allow: AllowList | undefined, path: string): AllowState {
  if (allow === undefined || allow.exact.has(path)) return "allowed";
  return allow.prefixes.has(path) ? "partial" : "denied";
}

type PathSegment = { kind: "key"; key: string } | { kind: "each" };

function parsePath(path: string): PathSegment[] {
  const segments: PathSegment[] = [];
  for (const part of path.split(".")) {
    let name = part;
    let arrays = 0;
    while (name.endsWith("[]")) {
      name = name.slice(0, -2);
      arrays++;
    }
    if (name !== "") segments.push({ kind: "key", key: name });
    for (let i = 0; i < arrays; i++) segments.push({ kind: "each" });
  }
  return segments;
}

// Whether a value is present (null included) at `segments`, in at least one
// element for `[]` segments.
function carries(value: unknown, segments: PathSegment[], index: number): boolean {
  if (index === segments.length) return value !== undefined;
  if (value === null || value === undefined) return false;
  const segment = segments[index] as PathSegment;
  if (segment.kind === "each") {
    if (!Array.isArray(value)) return false;
    for (const element of value) if (carries(element, segments, index + 1)) return true;
    return false;
  }
  if (!isPlainObject(value) || !Object.hasOwn(value, segment.key)) return false;
  return carries(value[segment.key], segments, index + 1);
}

// Counts values at `segments` that are neither a token nor null. Absent
// fields pass; a scalar where the path expects an object or array fails
// (it could be the raw value under an unexpected shape).
function countNonTokens(value: unknown, segments: PathSegment[], index: number): number {
  if (index === segments.length) {
    return value === null || value === undefined || isToken(value) ? 0 : 1;
  }
  if (value === null || value === undefined) return 0;
  const segment = segments[index] as PathSegment;
  if (segment.kind === "each") {
    if (!Array.isArray(value)) return 1;
    let bad = 0;
    for (const element of value) bad += countNonTokens(element, segments, index + 1);
    return bad;
  }
  if (!isPlainObject(value)) return 1;
  if (!Object.hasOwn(value, segment.key)) return 0;
  return countNonTokens(value[segment.key], segments, index + 1);
}
