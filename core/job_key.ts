/**
 * Deterministic job keys: lowercase hex SHA-256 over the canonical JSON of
 * `{dag, task, interval: {start, end}, params, mapIndex}`. The same on every machine and process.
 *
 * @module
 */
import { createHash } from "node:crypto";

/**
 * Canonical JSON: object keys sorted by code point, no white space, `undefined` members dropped,
 * dates as ISO strings. Two equal values always give the same text.
 *
 * @example
 * ```ts
 * import { canonicalJson } from "./job_key.ts";
 * canonicalJson({ b: 1, a: [true, null] }); // '{"a":[true,null],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("Cannot canonicalize a non-finite number");
      return JSON.stringify(value);
    case "bigint":
      return value.toString();
    case "object": {
      if (value === null) return "null";
      if (value instanceof Date) return JSON.stringify(value.toISOString());
      // Loops and string concatenation: this runs for every job key and audit entry.
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          const v = value[i];
          out += (i === 0 ? "" : ",") + (v === undefined ? "null" : canonicalJson(v));
        }
        return out + "]";
      }
      const record = value as Record<string, unknown>;
      // The default sort compares UTF-16 code units, as `<` on strings does.
      const keys = Object.keys(record).sort();
      let out = "{";
      let first = true;
      for (const k of keys) {
        const v = record[k];
        if (v === undefined) continue;
        out += (first ? "" : ",") + JSON.stringify(k) + ":" + canonicalJson(v);
        first = false;
      }
      return out + "}";
    }
    default:
      throw new TypeError(`Cannot canonicalize a value of type ${typeof value}`);
  }
}

/**
 * Lowercase hex SHA-256 of a string's UTF-8 bytes.
 *
 * @example
 * ```ts
 * import { sha256Hex } from "./job_key.ts";
 * sha256Hex("abc").length; // 64
 * ```
 */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/** What identifies one task instance. */
export interface JobKeyInput {
  dag: string;
  task: string;
  interval: { start: Date; end: Date };
  params: Record<string, unknown>;
  /** `-1` for an unmapped task, as in Airflow. */
  mapIndex?: number;
}

/**
 * The job key of a task instance.
 *
 * @example
 * ```ts
 * import { jobKey } from "./job_key.ts";
 * const key = jobKey({
 *   dag: "circulation_sync",
 *   task: "extract",
 *   interval: { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") },
 *   params: {},
 * });
 * key.length; // 64
 * ```
 */
export function jobKey(input: JobKeyInput): string {
  return sha256Hex(canonicalJson({
    dag: input.dag,
    task: input.task,
    interval: { start: input.interval.start.toISOString(), end: input.interval.end.toISOString() },
    params: input.params,
    mapIndex: input.mapIndex ?? -1,
  }));
}

/**
 * The readable, stable run id of a DAG run: the DAG id and the logical date, e.g.
 * `circulation_sync@2026-11-28T02:00:00Z`.
 *
 * @example
 * ```ts
 * import { runIdFor } from "./job_key.ts";
 * runIdFor("demo", new Date("2026-11-28T00:00:00Z")); // "demo@2026-11-28T00:00:00Z"
 * ```
 */
export function runIdFor(dagId: string, logicalDate: Date): string {
  return `${dagId}@${logicalDate.toISOString().replace(".000Z", "Z")}`;
}

/** Splits a run id into its DAG id and logical date, or returns `undefined`. */
export function parseRunId(runId: string): { dagId: string; logicalDate: Date } | undefined {
  const at = runId.indexOf("@");
  if (at <= 0) return undefined;
  const date = new Date(runId.slice(at + 1));
  if (Number.isNaN(date.getTime())) return undefined;
  return { dagId: runId.slice(0, at), logicalDate: date };
}
