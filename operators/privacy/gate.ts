/**
 * Schema gate: strips PII keys from each record, then validates it against a
 * deeply strict zod object schema. Invalid records fail the run or go to
 * quarantine with value-free reasons.
 *
 * @module
 */

import { z } from "zod";
import { type FieldNamer, keyPosition, unnamedKey } from "./field_names.ts";
import {
  createPiiStripper,
  isPlainObject,
  joinPath,
  piiFieldNamer,
  type PiiKeyOptions,
} from "./pii.ts";
import { schemaFields, WRAPPER_TYPES } from "./schema_paths.ts";
import { compileFastSchema } from "./fast_schema.ts";

/** A value-free description of why a record failed validation. */
export interface GateIssue {
  /**
   * Field path (`items[].title`), or `(record)` for the record itself. Keys that are neither in the
   * schema nor on the PII-key list are shown by position: `{key 2}`.
   */
  path: string;
  /** Reason such as `required`, `unexpected field`, `expected string, received number`. */
  reason: string;
}

/** Result of checking one record. */
export type GateResult<T> =
  | {
    ok: true;
    position: number;
    /** The parsed record (PII keys stripped). */
    value: T;
    /** Stripped key counts by path for this record. */
    stripped: Record<string, number>;
  }
  | {
    ok: false;
    position: number;
    /** Why the record was rejected. Safe to store as a quarantine entry. */
    issues: GateIssue[];
    /** Stripped key counts by path for this record. */
    stripped: Record<string, number>;
  };

/** Running totals of a gate. */
export interface GateSummary {
  /** Records checked. */
  records: number;
  /** Records that passed. */
  passed: number;
  /** Records rejected and quarantined (`onInvalid: "quarantine"`). */
  quarantined: number;
  /** Records rejected, whether quarantined or failing the run. */
  rejected: number;
  /** Stripped PII key counts by path, over all records. */
  strippedByField: Record<string, number>;
  /** Rejected-record counts by `"path: reason"`. */
  invalidByFieldReason: Record<string, number>;
}

/** Options of {@link createGate}. */
export interface GateOptions<S extends z.ZodObject> {
  /** A zod object schema; the gate uses a deeply strict copy of it. */
  schema: S;
  /** Which keys count as PII and are stripped before validation. */
  pii?: PiiKeyOptions;
  /** `"fail"` (default) throws {@link GateError} on the first invalid record; `"quarantine"` returns it. */
  onInvalid?: "fail" | "quarantine";
}

/** A schema gate processing records one at a time. */
export interface Gate<T> {
  /** What happens to invalid records. */
  readonly onInvalid: "fail" | "quarantine";
  /** Strips and validates one record. Throws {@link GateError} in `"fail"` mode. */
  check(record: unknown, position: number): GateResult<T>;
  /** A copy of the running totals. */
  summary(): GateSummary;
}

/**
 * Thrown by a gate in `"fail"` mode on the first invalid record. Carries the
 * position and value-free issues, never the record.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { createGate, GateError } from "./gate.ts";
 * const gate = createGate({ schema: z.object({ title: z.string() }) });
 * try {
 *   gate.check({}, 0);
 * } catch (error) {
 *   if (error instanceof GateError) console.log(error.issues); // [{ path: "title", reason: "required" }]
 * }
 * ```
 */
export class GateError extends Error {
  /** Position of the rejected record. */
  readonly position: number;
  /** Why it was rejected. */
  readonly issues: GateIssue[];

  /** Builds the error; the message lists the issues. */
  constructor(position: number, issues: GateIssue[]) {
    super(
      `Schema gate rejected record at position ${position}: ${
        issues.map((i) => `${i.path}: ${i.reason}`).join("; ")
      }`,
    );
    this.name = "GateError";
    this.position = position;
    this.issues = issues;
  }
}

/**
 * Creates a schema gate. For each record it strips PII keys (case-insensitive,
 * `_`/`-` ignored, any depth), then parses it with a deeply strict copy of
 * `schema` (see {@link strictSchema}), so any field not declared rejects the
 * record as `unexpected field`. Issues, stripped-key counts and summaries name
 * a key only when the schema declares it or it is on the PII-key list; any
 * other key (it may be data: a barcode or a name used as a key) is shown by
 * its position among its object's keys, `{key 2}`.
 *
 * Throws at creation when the schema itself declares a PII key: every record
 * would then fail as `required`, so the configuration is rejected up front.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { createGate, formatGateFailure } from "./gate.ts";
 * const gate = createGate({
 *   schema: z.object({ title: z.string(), due: z.string() }),
 *   onInvalid: "quarantine",
 * });
 * gate.check({ title: "Emma", due: "2025-01-01", Patron_ID: 42 }, 0); // ok, patron id stripped
 * gate.check({ due: "2025-01-01", note: "x" }, 1); // rejected: title required, key 2 unexpected
 * formatGateFailure(gate.summary());
 * // "Schema gate rejected 1 of 2 records: title: required (1); {key 2}: unexpected field (1)"
 * ```
 */
export function createGate<S extends z.ZodObject>(options: GateOptions<S>): Gate<z.output<S>> {
  const { schema } = options;
  if (!(schema instanceof z.ZodObject)) {
    throw new TypeError("Schema gate misconfigured: schema must be a zod object schema");
  }
  const onInvalid = options.onInvalid ?? "fail";
  if (onInvalid !== "fail" && onInvalid !== "quarantine") {
    throw new TypeError('Schema gate misconfigured: onInvalid must be "fail" or "quarantine"');
  }
  const namer = piiFieldNamer(options.pii ?? {}, schemaFields(schema).names);
  const stripper = createPiiStripper(options.pii ?? {}, namer);
  const declaredPii: string[] = [];
  const strict = strictSchema(schema, (key) => stripper.isPiiKey(key), declaredPii);
  if (declaredPii.length > 0) {
    throw new TypeError(
      `Schema gate misconfigured: schema declares PII fields that are always stripped: ${
        declaredPii.map((p) => `"${p}"`).join(", ")
      }`,
    );
  }

  // Accepts what zod would, without its per-field allocations; zod decides everything else.
  const fast = compileFastSchema(strict);

  const totals: GateSummary = {
    records: 0,
    passed: 0,
    quarantined: 0,
    rejected: 0,
    strippedByField: {},
    invalidByFieldReason: {},
  };

  return {
    onInvalid,
    check(record: unknown, position: number): GateResult<z.output<S>> {
      totals.records++;
      // Nothing to strip and valid as it stands: parsed without the stripped copy first. The fast
      // path accepts only records whose schema keys are their own enumerable keys, so the copy
      // would have parsed to the same value.
      if (fast !== undefined && isPlainObject(record) && !stripper.mayStrip(record)) {
        const value = fast.parse(record);
        if (value !== undefined) {
          totals.passed++;
          return { ok: true, position, value: value as z.output<S>, stripped: {} };
        }
      }
      const { value: cleaned, stripped } = stripper.strip(record);
      for (const path in stripped) {
        totals.strippedByField[path] = (totals.strippedByField[path] ?? 0) + (stripped[path] ?? 0);
      }
      let issues: GateIssue[];
      if (isPlainObject(cleaned)) {
        const value = fast?.parse(cleaned);
        if (value !== undefined) {
          totals.passed++;
          return { ok: true, position, value: value as z.output<S>, stripped };
        }
        const parsed = strict.safeParse(cleaned);
        if (parsed.success) {
          totals.passed++;
          return { ok: true, position, value: parsed.data, stripped };
        }
        issues = describeZodIssues(parsed.error.issues, cleaned, namer);
      } else {
        issues = [{ path: "(record)", reason: `expected object, received ${typeName(cleaned)}` }];
      }
      totals.rejected++;
      for (const issue of issues) {
        const key = `${issue.path}: ${issue.reason}`;
        totals.invalidByFieldReason[key] = (totals.invalidByFieldReason[key] ?? 0) + 1;
      }
      if (onInvalid === "fail") throw new GateError(position, issues);
      totals.quarantined++;
      return { ok: false, position, issues, stripped };
    },
    summary(): GateSummary {
      return {
        ...totals,
        strippedByField: { ...totals.strippedByField },
        invalidByFieldReason: { ...totals.invalidByFieldReason },
      };
    },
  };
}

/**
 * Formats a gate summary as a one-line, value-free failure message. Entries
 * are sorted by count (descending), then by name; at most `limit` are listed.
 *
 * @example
 * ```ts
 * import { formatGateFailure } from "./gate.ts";
 * formatGateFailure({
 *   records: 10, passed: 7, quarantined: 3, rejected: 3, strippedByField: {},
 *   invalidByFieldReason: { "title: required": 2, "extra_note: unexpected field": 1 },
 * });
 * // "Schema gate rejected 3 of 10 records: title: required (2); extra_note: unexpected field (1)"
 * ```
 */
export function formatGateFailure(summary: GateSummary, limit = 20): string {
  const head = `Schema gate rejected ${summary.rejected} of ${summary.records} records`;
  const entries = formatCounts(summary.invalidByFieldReason, limit);
  return entries === "" ? head : `${head}: ${entries}`;
}

/** Formats `{ name: count }` as `name (count); ...`, largest first, at most `limit` entries. */
export function formatCounts(counts: Record<string, number>, limit = 20): string {
  const sorted = Object.entries(counts).sort((a, b) =>
    b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
  );
  const shown = sorted.slice(0, Math.max(0, limit)).map(([name, count]) => `${name} (${count})`);
  if (sorted.length > shown.length) shown.push(`and ${sorted.length - shown.length} more`);
  return shown.join("; ");
}

// ---------------------------------------------------------------------------
// Deep strictness
// ---------------------------------------------------------------------------

interface AnyDef {
  type: string;
  [key: string]: unknown;
}

function defOf(schema: z.ZodType): AnyDef {
  return schema._zod.def as unknown as AnyDef;
}

function cloneWith<T extends z.ZodType>(schema: T, patch: Record<string, unknown>): T {
  return schema.clone({ ...defOf(schema), ...patch } as unknown as T["_zod"]["def"]) as T;
}

/**
 * Returns a copy of `schema` in which every object schema reachable through
 * object shapes, `optional`, `nullable`, `default`, `prefault`, `catch`,
 * `readonly`, `nonoptional`, `array`, `union`, `record`, `tuple` and the input
 * side of `pipe` is strict (unknown keys reject, overriding `passthrough`,
 * `looseObject` and `catchall`). Schemas behind `lazy` and `intersection` are
 * left as they are. Object-level refinements are kept.
 *
 * When `isPiiKey` is given, the paths of declared keys it flags are pushed to
 * `piiPaths`.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { strictSchema } from "./gate.ts";
 * const strict = strictSchema(z.object({ item: z.object({ id: z.string() }) }));
 * strict.safeParse({ item: { id: "1", extra: 2 } }).success; // false
 * ```
 */
export function strictSchema<S extends z.ZodType>(
  schema: S,
  isPiiKey?: (key: string) => boolean,
  piiPaths: string[] = [],
): S {
  function visit<T extends z.ZodType>(node: T, path: string, depth: number): T {
    if (depth > 64) return node;
    const def = defOf(node);
    if (WRAPPER_TYPES.has(def.type)) {
      return cloneWith(node, { innerType: visit(def["innerType"] as z.ZodType, path, depth + 1) });
    }
    switch (def.type) {
      case "object": {
        const shape = def["shape"] as Record<string, z.ZodType>;
        const next: Record<string, z.ZodType> = {};
        for (const key of Object.keys(shape)) {
          const child = joinPath(path, key);
          if (isPiiKey?.(key)) piiPaths.push(child);
          next[key] = visit(shape[key] as z.ZodType, child, depth + 1);
        }
        return cloneWith(node, { shape: next, catchall: z.never() });
      }
      case "array":
        return cloneWith(node, {
          element: visit(def["element"] as z.ZodType, `${path}[]`, depth + 1),
        });
      case "union":
        return cloneWith(node, {
          options: (def["options"] as z.ZodType[]).map((o) => visit(o, path, depth + 1)),
        });
      case "record":
        return cloneWith(node, {
          valueType: visit(def["valueType"] as z.ZodType, joinPath(path, "{key}"), depth + 1),
        });
      case "tuple": {
        const rest = def["rest"] as z.ZodType | null | undefined;
        return cloneWith(node, {
          items: (def["items"] as z.ZodType[]).map((o) => visit(o, `${path}[]`, depth + 1)),
          rest: rest ? visit(rest, `${path}[]`, depth + 1) : rest,
        });
      }
      case "pipe":
        return cloneWith(node, { in: visit(def["in"] as z.ZodType, path, depth + 1) });
      default:
        return node;
    }
  }
  return visit(schema, "", 0);
}

// ---------------------------------------------------------------------------
// Issue descriptions
// ---------------------------------------------------------------------------

const SAFE_WORD = /^[a-z_]{1,32}$/;
const SAFE_CLASS = /^[A-Za-z_$][A-Za-z0-9_$]{0,63}$/;

/**
 * Turns zod issues into value-free `{ path, reason }` pairs, deduplicated.
 * Reasons are built from issue codes, paths and schema-side facts (expected
 * type, format name); issue messages are never used, since custom messages and
 * some built-in ones can embed the input. `input` is the parsed value; only
 * the type of the value at an issue path, and key positions, are read from it.
 * Paths name the keys `namer` knows (default: PII keys only) and show any
 * other key by position, `{key 2}`.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { describeZodIssues } from "./gate.ts";
 * import { piiFieldNamer } from "./pii.ts";
 * const input = { title: 3, ZZ9SENTINEL42: "x" };
 * const result = z.object({ title: z.string() }).strict().safeParse(input);
 * describeZodIssues(result.error!.issues, input, piiFieldNamer({}, ["title"]));
 * // [{ path: "title", reason: "expected string, received number" },
 * //  { path: "{key 2}", reason: "unexpected field" }]
 * ```
 */
export function describeZodIssues(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  namer: FieldNamer = piiFieldNamer(),
): GateIssue[] {
  const out: GateIssue[] = [];
  const seen = new Set<string>();
  const push = (path: string, reason: string) => {
    const shown = path === "" ? "(record)" : path;
    const key = `${shown}\u0000${reason}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ path: shown, reason });
  };
  for (const issue of issues) {
    const path = formatIssuePath(issue.path, namer, input);
    if (issue.code === "unrecognized_keys") {
      const parent = valueAt(input, issue.path).value;
      for (const key of issue.keys) {
        push(joinPath(path, namer.segment(key, keyPosition(parent, key))), "unexpected field");
      }
      continue;
    }
    push(path, issueReason(issue, input));
  }
  return out;
}

/**
 * Formats a zod issue path: keys joined with `.`, array indexes as `[]`. A key
 * `namer` does not know (default: any key off the PII-key list) is shown by its
 * position in `input` (`{key 2}`), or as `{key}` without an input.
 *
 * @example
 * ```ts
 * import { formatIssuePath } from "./gate.ts";
 * import { piiFieldNamer } from "./pii.ts";
 * formatIssuePath(["items", 3, "title"], piiFieldNamer({}, ["items", "title"])); // "items[].title"
 * formatIssuePath(["ZZ9SENTINEL42"], piiFieldNamer(), { a: 1, ZZ9SENTINEL42: 2 }); // "{key 2}"
 * ```
 */
export function formatIssuePath(
  path: readonly PropertyKey[],
  namer: FieldNamer = piiFieldNamer(),
  input?: unknown,
): string {
  let out = "";
  let current: unknown = input;
  for (const segment of path) {
    if (typeof segment === "number") out += "[]";
    else if (typeof segment === "string") {
      out = joinPath(out, namer.segment(segment, keyPosition(current, segment)));
    } else out = joinPath(out, unnamedKey());
    current = typeof current === "object" && current !== null
      ? (current as Record<PropertyKey, unknown>)[segment]
      : undefined;
  }
  return out;
}

function issueReason(issue: z.core.$ZodIssue, input: unknown): string {
  switch (issue.code) {
    case "invalid_type": {
      const found = valueAt(input, issue.path);
      if (!found.present || issue.expected === "nonoptional") return "required";
      return `expected ${safeWord(issue.expected, "another type")}, received ${
        typeName(found.value)
      }`;
    }
    case "too_small":
      if (issue.exact) return "wrong length";
      return sizeReason(issue.origin, "too short", "too few items", "too small");
    case "too_big":
      if (issue.exact) return "wrong length";
      return sizeReason(issue.origin, "too long", "too many items", "too large");
    case "invalid_format":
      return `invalid format: ${safeWord(issue.format, "pattern")}`;
    case "not_multiple_of":
      return "not a multiple of the required step";
    case "invalid_value":
      return "not an allowed value";
    case "invalid_union":
      return "no matching union variant";
    case "invalid_key":
      return "invalid key";
    case "invalid_element":
      return "invalid element";
    case "custom":
      return "failed custom check";
    default:
      return "invalid";
  }
}

function sizeReason(origin: string, text: string, items: string, other: string): string {
  if (origin === "string") return text;
  if (origin === "array" || origin === "set" || origin === "file") return items;
  return other;
}

function safeWord(word: unknown, fallback: string): string {
  return typeof word === "string" && SAFE_WORD.test(word) ? word : fallback;
}

function valueAt(
  input: unknown,
  path: readonly PropertyKey[],
): { present: boolean; value: unknown } {
  let current: unknown = input;
  for (const segment of path) {
    if (typeof current !== "object" || current === null) {
      return { present: false, value: undefined };
    }
    if (!Object.hasOwn(current, segment)) return { present: false, value: undefined };
    current = (current as Record<PropertyKey, unknown>)[segment];
  }
  return { present: current !== undefined, value: current };
}

/**
 * Names the type of a value for messages (`null`, `array`, `date`, `NaN`,
 * `object` for plain objects, the class name for other objects, else
 * `typeof`). Never the value itself.
 *
 * @example
 * ```ts
 * import { typeName } from "./gate.ts";
 * typeName([1]); // "array"
 * ```
 */
export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (value instanceof Date) return "date";
  if (typeof value === "number" && Number.isNaN(value)) return "NaN";
  if (typeof value === "object" && !isPlainObject(value)) {
    const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === "string" && SAFE_CLASS.test(name) ? name : "object";
  }
  return typeof value;
}
