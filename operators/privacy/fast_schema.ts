/**
 * A fast path in front of zod for the schemas the privacy operators apply to every record: flat
 * object schemas of strings, numbers and booleans (nullable or not) with side-effect-free checks
 * (regex and other string formats, lengths, integer and range checks, refinements).
 *
 * It only ever says "accepted" when zod would accept too, because it runs zod's own checks (each
 * check's `_zod.check`, in zod's order, honouring `when`) without zod's per-field payloads and
 * issue arrays; anything it is not sure about (a failing value, a schema construct it does not
 * know, a check that returns a promise or rewrites the value) answers `undefined`, and the caller
 * asks zod, which then reports the issues as before. A schema with any construct outside that
 * subset gets no fast path at all ({@link compileFastSchema} returns `undefined`).
 *
 * @module
 */
import type { z } from "zod";

/** What a fast path answers when it cannot vouch for a value: ask zod. */
const MISS: unique symbol = Symbol("miss");

interface ZodInternals {
  def: Record<string, unknown> & { type: string };
  traits: Set<string>;
  check?: (payload: Payload) => unknown;
}

interface Payload {
  value: unknown;
  issues: unknown[];
}

/** The check kinds whose `_zod.check` only reads the value (no overwrite, no transform). */
const PURE_CHECKS: ReadonlySet<string> = new Set([
  "string_format",
  "max_length",
  "min_length",
  "length_equals",
  "number_format",
  "greater_than",
  "less_than",
  "multiple_of",
  "custom",
]);

/** A zod schema's (or check's) internals; a check's definition has no `type`. */
function internals(schema: unknown, isCheck = false): ZodInternals | undefined {
  const zod = (schema as { _zod?: ZodInternals } | null)?._zod;
  if (zod === undefined || typeof zod !== "object" || !(zod.traits instanceof Set)) {
    return undefined;
  }
  if (typeof zod.def !== "object" || zod.def === null) return undefined;
  if (!isCheck && typeof zod.def.type !== "string") return undefined;
  return zod;
}

/** What generated code refers to: the miss marker and the schema's own objects. */
interface Refs {
  /** Key sets of strict objects. */
  keys: Set<string>[];
  /** Regular expressions of regex checks (zod's own objects). */
  patterns: RegExp[];
  /** Refinement functions (zod's own). */
  fns: ((value: unknown) => unknown)[];
  /** Other pure checks, run through zod's `_zod.check` on a reused payload. */
  generic: ((value: unknown) => boolean)[];
}

/**
 * A pure check zod has no cheaper form of here: true only when `_zod.check` adds no issue and
 * leaves the value as it was (`when` honoured as zod does).
 */
function genericCheck(c: ZodInternals): (value: unknown) => boolean {
  const run = c.check!;
  const when = c.def.when as ((payload: Payload) => boolean) | undefined;
  // One payload, reused; a re-entrant call (a refinement validating with this very schema) gets
  // its own.
  let shared: Payload | undefined = { value: undefined, issues: [] };
  return (value) => {
    const payload = shared ?? { value, issues: [] };
    shared = undefined;
    payload.value = value;
    try {
      if (when !== undefined && !when(payload)) return true;
      const result = run(payload);
      return result === undefined && payload.issues.length === 0 && payload.value === value;
    } finally {
      payload.issues.length = 0;
      payload.value = undefined;
      shared = payload;
    }
  };
}

/**
 * The statements that return the miss marker unless every check of a leaf passes, as `$ZodType`
 * lists them (the schema itself first when it is a check, as string formats are). `undefined`
 * when a check is not known pure.
 */
function genChecks(zod: ZodInternals, schema: unknown, v: string, refs: Refs): string | undefined {
  const own = (zod.def.checks ?? []) as unknown[];
  if (!Array.isArray(own)) return undefined;
  const all = zod.traits.has("$ZodCheck") ? [schema, ...own] : own;
  let code = "";
  for (const check of all) {
    const c = internals(check, true);
    const kind = c?.def.check;
    if (c === undefined || typeof kind !== "string" || !PURE_CHECKS.has(kind)) return undefined;
    if (typeof c.check !== "function") return undefined;
    const def = c.def;
    const plain = def.when === undefined;
    if (c.traits.has("$ZodCheckRegex") && def.pattern instanceof RegExp && plain) {
      // What $ZodCheckRegex does: reset, test.
      const i = refs.patterns.push(def.pattern) - 1;
      code += `P[${i}].lastIndex = 0; if (!P[${i}].test(${v})) return M;\n`;
    } else if (
      c.traits.has("$ZodCheckNumberFormat") && def.format === "safeint" && plain &&
      zod.def.type === "number"
    ) {
      // An integer within the safe range (what the format's check and range test accept).
      code += `if (!Number.isSafeInteger(${v})) return M;\n`;
    } else if (
      c.traits.has("$ZodCustom") && kind === "custom" && typeof def.fn === "function" && plain
    ) {
      // A refinement passes on a truthy result; a promise is zod's (it fails a sync parse).
      const i = refs.fns.push(def.fn as (value: unknown) => unknown) - 1;
      code += `{ const r = F[${i}](${v}); if (!r || r instanceof Promise) return M; }\n`;
    } else if (
      c.traits.has("$ZodCheckMaxLength") && typeof def.maximum === "number" &&
      zod.def.type === "string"
    ) {
      // Code points never outnumber UTF-16 units: within the maximum in units is within it.
      code += `if (${v}.length > ${def.maximum}) return M;\n`;
    } else {
      const i = refs.generic.push(genericCheck(c)) - 1;
      code += `if (!G[${i}](${v})) return M;\n`;
    }
  }
  return code;
}

interface Gen {
  /** Statements returning the miss marker when the value at `v` may be invalid. */
  code: string;
  /** An expression for zod's output of that value, after `code`. */
  out: string;
}

let counter = 0;

function genNode(
  schema: unknown,
  v: string,
  build: boolean,
  refs: Refs,
  depth: number,
): Gen | undefined {
  const zod = internals(schema);
  if (zod === undefined || depth > 32) return undefined;
  const def = zod.def;
  if (def.coerce) return undefined;
  switch (def.type) {
    case "string":
    case "number":
    case "boolean": {
      const base = def.type === "string"
        ? "$ZodString"
        : def.type === "number"
        ? "$ZodNumber"
        : "$ZodBoolean";
      if (!zod.traits.has(base)) return undefined;
      const checks = genChecks(zod, schema, v, refs);
      if (checks === undefined) return undefined;
      let code = `if (typeof ${v} !== "${def.type}") return M;\n`;
      if (def.type === "number") code += `if (!Number.isFinite(${v})) return M;\n`;
      return { code: code + checks, out: v };
    }
    case "nullable": {
      if (!zod.traits.has("$ZodNullable") || ((def.checks ?? []) as unknown[]).length > 0) {
        return undefined;
      }
      const inner = genNode(def.innerType, v, build, refs, depth + 1);
      if (inner === undefined) return undefined;
      if (inner.out === v) return { code: `if (${v} !== null) {\n${inner.code}}\n`, out: v };
      const o = `n${counter++}`;
      return {
        code: `let ${o} = null;\nif (${v} !== null) {\n${inner.code}${o} = ${inner.out};\n}\n`,
        out: o,
      };
    }
    case "object":
      return genObject(zod, v, build, refs, depth);
    default:
      return undefined;
  }
}

function genObject(
  zod: ZodInternals,
  v: string,
  build: boolean,
  refs: Refs,
  depth: number,
): Gen | undefined {
  const def = zod.def;
  if (!zod.traits.has("$ZodObject") || ((def.checks ?? []) as unknown[]).length > 0) {
    return undefined;
  }
  const catchall = def.catchall;
  let strict: boolean;
  if (catchall === undefined) strict = false;
  else if (internals(catchall)?.def.type === "never") strict = true;
  else return undefined;
  const shape = def.shape as Record<string, unknown> | undefined;
  if (typeof shape !== "object" || shape === null) return undefined;
  if (Object.getOwnPropertySymbols(shape).length > 0) return undefined;
  const keys = Object.keys(shape);
  let code = `if (typeof ${v} !== "object" || ${v} === null || Array.isArray(${v})) return M;\n`;
  // Every schema key must be an own enumerable key (counted as `for...in` yields them), so a
  // copy of the value (what the gate's PII strip makes) parses the same; strict: no other key.
  const keySet = refs.keys.push(new Set(keys)) - 1;
  const seen = `c${counter++}`;
  code += `let ${seen} = 0;\nfor (const k in ${v}) {\n`;
  code += `if (K[${keySet}].has(k) && H.call(${v}, k)) ${seen}++;\n`;
  code += strict ? `else return M;\n}\n` : `}\n`;
  code += `if (${seen} !== ${keys.length}) return M;\n`;
  const outs: string[] = [];
  for (const key of keys) {
    // Optional fields (absent keys) are zod's to judge; `__proto__` is not copied by zod.
    if (key === "__proto__" || internals(shape[key])?.def.type === "optional") return undefined;
    const literal = JSON.stringify(key);
    const f = `f${counter++}`;
    const field = genNode(shape[key], f, build, refs, depth + 1);
    if (field === undefined) return undefined;
    code += `if (!(${literal} in ${v})) return M;\nconst ${f} = ${v}[${literal}];\n${field.code}`;
    outs.push(`${literal}: ${field.out}`);
  }
  if (!build) return { code, out: v };
  const o = `o${counter++}`;
  // Keys in the shape's order, as zod assigns them.
  code += `const ${o} = { ${outs.join(", ")} };\n`;
  return { code, out: o };
}

function compile(schema: unknown, build: boolean): ((value: unknown) => unknown) | undefined {
  const refs: Refs = { keys: [], patterns: [], fns: [], generic: [] };
  const gen = genNode(schema, "input", build, refs, 0);
  if (gen === undefined) return undefined;
  try {
    const make = new Function(
      "M",
      "K",
      "P",
      "F",
      "G",
      "H",
      `"use strict";\nreturn function fastSchema(input) {\n${gen.code}return ${gen.out};\n};`,
    );
    return make(
      MISS,
      refs.keys,
      refs.patterns,
      refs.fns,
      refs.generic,
      Object.prototype.hasOwnProperty,
    );
  } catch {
    // No code generation here (a policy forbids it): zod alone decides.
    return undefined;
  }
}

/** A compiled fast path of one schema. */
export interface FastSchema {
  /**
   * The value zod's `safeParse` would give back (a fresh object, keys in the schema's order),
   * or `undefined` when zod must decide (the value may be invalid).
   */
  parse(value: unknown): Record<string, unknown> | undefined;
  /** True only when zod would accept `value`; `false` means "ask zod", not "invalid". */
  accepts(value: unknown): boolean;
}

/**
 * Compiles the fast path of an object schema (as {@link strictSchema} returns it, or any zod
 * object schema), or `undefined` when the schema holds a construct the fast path does not know:
 * then zod alone decides.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { compileFastSchema } from "./fast_schema.ts";
 * const fast = compileFastSchema(z.object({ id: z.string().regex(/^\d+$/) }).strict())!;
 * fast.accepts({ id: "42" }); // true
 * fast.accepts({ id: "x" }); // false: zod decides (and rejects)
 * fast.parse({ id: "42" }); // { id: "42" }
 * ```
 */
export function compileFastSchema(schema: z.ZodType): FastSchema | undefined {
  if (internals(schema)?.def.type !== "object") return undefined;
  const parse = compile(schema, true);
  const accepts = compile(schema, false);
  if (parse === undefined || accepts === undefined) return undefined;
  return {
    parse(value) {
      const out = parse(value);
      return out === MISS ? undefined : out as Record<string, unknown>;
    },
    accepts: (value) => accepts(value) !== MISS,
  };
}
