/**
 * Privacy checkpoint checks: the last line of defence before records leave
 * for a discovery layer or warehouse. Checks each record and accumulates
 * value-free violations into a verdict. Fails closed.
 *
 * @module
 */

import type { z } from "zod";
import { describeZodIssues, formatCounts, strictSchema, typeName } from "./gate.ts";
import {
  createDetectors,
  createPiiStripper,
  createRecordScanner,
  type DetectorOptions,
  isPlainObject,
  isToken,
  joinPath,
  type PiiKeyOptions,
  safePathSegment,
} from "./pii.ts";

/** Names of checkpoint checks. Detector checks are `detector:<detector name>`. */
export type CheckName =
  | "upstream_tag"
  | "record"
  | "tokenized"
  | "allowed_fields"
  | "pii_key"
  | "schema"
  | `detector:${string}`;

/** One violation within one record. */
export interface CheckpointFinding {
  /** The check that failed. */
  check: CheckName;
  /** Field path, `(record)` for the record itself, or the tag for `upstream_tag`. */
  field: string;
  /** Extra value-free detail (schema checks only), e.g. `required`. */
  reason?: string;
}

/** An accumulated violation: a finding and how many times it occurred. */
export interface CheckpointViolation extends CheckpointFinding {
  /** Occurrences over all records (a record may count more than once for `[]` paths). */
  count: number;
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
  /** Records with at least one violation. */
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
}

/** A privacy checkpoint. */
export interface Checkpoint {
  /** Whether an upstream tag already failed the checkpoint (records are then not scanned). */
  readonly failedEarly: boolean;
  /** Checks one record and accumulates its violations. */
  check(record: unknown, position: number): CheckpointRecordResult;
  /** The verdict so far. */
  verdict(): CheckpointVerdict;
}

/** The upstream tag that fails a checkpoint immediately. */
export const RAW_PII_TAG = "pii:raw";

const RECORD_PATH = "(record)";

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
 *   depth (e-mail, phone, barcode, birth-date fields, patron-id patterns).
 *
 * An upstream tag `pii:raw` fails the verdict before any record is seen.
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
  const scanner = createRecordScanner(createDetectors(options.detectors ?? {}));
  const piiStripper = createPiiStripper(options.piiKeys ?? {});
  const strict = options.schema === undefined ? undefined : strictSchema(options.schema);
  const allow = options.allowFields === undefined ? undefined : buildAllowList(options.allowFields);

  const counts = new Map<string, CheckpointViolation>();
  let records = 0;
  let failedRecords = 0;

  function add(finding: CheckpointFinding): void {
    const key = `${finding.check}\u0000${finding.field}\u0000${finding.reason ?? ""}`;
    const existing = counts.get(key);
    if (existing) existing.count++;
    else counts.set(key, { ...finding, count: 1 });
  }

  const earlyFindings: CheckpointFinding[] = [];
  for (const tag of options.upstreamTags ?? []) {
    if (tag.trim().toLowerCase() === RAW_PII_TAG) {
      earlyFindings.push({ check: "upstream_tag", field: RAW_PII_TAG });
      break;
    }
  }
  for (const finding of earlyFindings) add(finding);
  const failedEarly = earlyFindings.length > 0;

  function checkTokenized(record: Record<string, unknown>, findings: CheckpointFinding[]): void {
    for (const { path, segments } of tokenizedSegments) {
      const bad = countNonTokens(record, segments, 0);
      for (let i = 0; i < bad; i++) findings.push({ check: "tokenized", field: path });
    }
  }

  const keyCache = new Map<string, { segment: string; pii: boolean }>();
  function keyInfo(key: string): { segment: string; pii: boolean } {
    let found = keyCache.get(key);
    if (found === undefined) {
      found = { segment: safePathSegment(key), pii: piiStripper.isPiiKey(key) };
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
    for (const key in value) {
      if (!Object.hasOwn(value, key)) continue;
      const info = keyInfo(key);
      const child = joinPath(path, info.segment);
      const inner = value[key];
      let childState = state;
      if (state === "partial") {
        childState = allowStateOf(allow, child);
        if (childState === "denied") findings.push({ check: "allowed_fields", field: child });
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
        if (strict !== undefined) {
          const parsed = strict.safeParse(record);
          if (!parsed.success) {
            for (const issue of describeZodIssues(parsed.error.issues, record)) {
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
      }
      const unique = dedupeAllowed(findings);
      for (const finding of unique) add(finding);
      if (unique.length > 0) failedRecords++;
      return { ok: unique.length === 0, position, findings: unique };
    },
    verdict(): CheckpointVerdict {
      const violations = [...counts.values()].map((v) => ({ ...v })).sort((a, b) =>
        b.count - a.count || compareText(violationLabel(a), violationLabel(b))
      );
      return { passed: violations.length === 0, records, failedRecords, violations };
    },
  };
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
 *     { check: "tokenized", field: "patron_id", count: 2 },
 *     { check: "detector:email", field: "notes", count: 1 },
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
