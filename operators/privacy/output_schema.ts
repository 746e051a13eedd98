/**
 * Output schemas that operators declare for the records they hand on: a `schemaGate` declares its
 * schema, `smallCells` the columns of its table. A `privacyCheckpoint` directly downstream reads
 * them when the DAG is validated, to check its configured paths against them and to know which key
 * names its messages may show.
 *
 * @module
 */
import type { z } from "zod";

const declared = new WeakMap<object, z.ZodObject>();

/**
 * Declares the schema of the records a task spec outputs; returns the spec.
 *
 * @example
 * ```ts ignore
 * import { z } from "zod";
 * import { task } from "carrel";
 * import { declareOutputSchema } from "./output_schema.ts";
 * const enrich = declareOutputSchema(task({ run: () => [] }), z.object({ item_id: z.string() }));
 * ```
 */
export function declareOutputSchema<T extends object>(spec: T, schema: z.ZodObject): T {
  declared.set(spec, schema);
  return spec;
}

/**
 * The schema a task spec declared for its output, if any.
 *
 * @example
 * ```ts ignore
 * import { declaredOutputSchema } from "./output_schema.ts";
 * declaredOutputSchema(dag.tasks.get("gate")!.spec); // the gate's zod schema
 * ```
 */
export function declaredOutputSchema(spec: object): z.ZodObject | undefined {
  return declared.get(spec);
}
