/**
 * What a zod object schema says about the records it accepts, in the path syntax of the privacy
 * operators (`patron_token`, `patron.token`, `holds[].patron_token`): every field path it declares,
 * whether a parsed record may lack it, and every key name it declares (the names messages may show,
 * see `field_names.ts`). Read-only: the schema is never changed.
 *
 * @module
 */
import type { z } from "zod";
import { joinPath } from "./pii.ts";

/** One declared field path. */
export interface SchemaPath {
  /** A parsed record may lack it: it, or an object above it, is optional, or it is under an array or a union. */
  mayBeAbsent: boolean;
  /** Its value is a map (`z.record`): the keys below it are data, not declared. */
  map: boolean;
}

/** What {@link schemaFields} finds. */
export interface SchemaFields {
  /** Declared paths. */
  paths: Map<string, SchemaPath>;
  /** Every key name declared at any depth. */
  names: Set<string>;
}

interface AnyDef {
  type: string;
  [key: string]: unknown;
}

/**
 * The zod definition types that wrap one schema in `innerType` (the shape of the data is that of
 * the inner schema, give or take `undefined` and `null`).
 */
export const WRAPPER_TYPES: ReadonlySet<string> = new Set([
  "optional",
  "nullable",
  "default",
  "prefault",
  "catch",
  "readonly",
  "nonoptional",
]);

/**
 * Lists the paths and key names of a schema. Object shapes are followed through `optional`,
 * `nullable`, `default`, `prefault`, `catch`, `readonly`, `nonoptional`, `array`, `union`,
 * `intersection`, `tuple` and the input side of `pipe`; `record` values are maps (their keys are
 * data); `lazy` schemas are not followed.
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { schemaFields } from "./schema_paths.ts";
 * const { paths, names } = schemaFields(z.object({
 *   patron_token: z.string(),
 *   holds: z.array(z.object({ pickup: z.string() })).optional(),
 * }));
 * [...paths.keys()]; // ["patron_token", "holds", "holds[]", "holds[].pickup"]
 * paths.get("holds[].pickup")?.mayBeAbsent; // true
 * [...names]; // ["patron_token", "holds", "pickup"]
 * ```
 */
export function schemaFields(schema: z.ZodType): SchemaFields {
  const paths = new Map<string, SchemaPath>();
  const names = new Set<string>();
  const add = (path: string, info: SchemaPath) => {
    const existing = paths.get(path);
    if (existing === undefined) paths.set(path, info);
    else {
      existing.mayBeAbsent ||= info.mayBeAbsent;
      existing.map ||= info.map;
    }
  };
  function visit(node: z.ZodType, path: string, absent: boolean, depth: number): void {
    if (depth > 64) return;
    const def = node._zod.def as unknown as AnyDef;
    if (WRAPPER_TYPES.has(def.type)) {
      visit(def["innerType"] as z.ZodType, path, absent || def.type === "optional", depth + 1);
      return;
    }
    switch (def.type) {
      case "object": {
        const shape = def["shape"] as Record<string, z.ZodType>;
        for (const key of Object.keys(shape)) {
          names.add(key);
          const child = joinPath(path, key);
          const inner = shape[key] as z.ZodType;
          const childAbsent = absent || isOptional(inner);
          add(child, { mayBeAbsent: childAbsent, map: false });
          visit(inner, child, childAbsent, depth + 1);
        }
        return;
      }
      case "array":
        add(`${path}[]`, { mayBeAbsent: true, map: false });
        visit(def["element"] as z.ZodType, `${path}[]`, true, depth + 1);
        return;
      case "tuple": {
        const items = [...def["items"] as z.ZodType[]];
        const rest = def["rest"] as z.ZodType | null | undefined;
        if (rest) items.push(rest);
        add(`${path}[]`, { mayBeAbsent: true, map: false });
        for (const item of items) visit(item, `${path}[]`, true, depth + 1);
        return;
      }
      case "union":
        for (const option of def["options"] as z.ZodType[]) visit(option, path, true, depth + 1);
        return;
      case "intersection":
        visit(def["left"] as z.ZodType, path, absent, depth + 1);
        visit(def["right"] as z.ZodType, path, absent, depth + 1);
        return;
      case "record":
        if (path !== "") add(path, { mayBeAbsent: absent, map: true });
        return;
      case "pipe":
        visit(def["in"] as z.ZodType, path, absent, depth + 1);
        return;
      default:
        return;
    }
  }
  visit(schema, "", false, 0);
  return { paths, names };
}

function isOptional(node: z.ZodType): boolean {
  let current = node;
  for (let i = 0; i < 64; i++) {
    const def = current._zod.def as unknown as AnyDef;
    if (def.type === "optional") return true;
    if (def.type === "default" || def.type === "prefault" || def.type === "catch") return false;
    if (def.type === "nullable" || def.type === "readonly" || def.type === "nonoptional") {
      current = def["innerType"] as z.ZodType;
      continue;
    }
    if (def.type === "pipe") {
      current = def["in"] as z.ZodType;
      continue;
    }
    return false;
  }
  return false;
}

/**
 * Whether `path` is declared by `fields`, or lies below a declared map (whose keys are data and
 * cannot be listed).
 *
 * @example
 * ```ts
 * import { z } from "zod";
 * import { declaresPath, schemaFields } from "./schema_paths.ts";
 * const fields = schemaFields(z.object({ a: z.string(), meta: z.record(z.string(), z.string()) }));
 * declaresPath(fields, "a"); // true
 * declaresPath(fields, "meta.anything"); // true
 * declaresPath(fields, "b"); // false
 * ```
 */
export function declaresPath(fields: SchemaFields, path: string): boolean {
  if (fields.paths.has(path)) return true;
  for (let i = path.indexOf("."); i !== -1; i = path.indexOf(".", i + 1)) {
    if (fields.paths.get(path.slice(0, i))?.map === true) return true;
  }
  return false;
}
